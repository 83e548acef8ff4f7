package store_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/mailauth/caddy-mailauth/store"
	"github.com/mailauth/caddy-mailauth/store/storetest"
	"github.com/mailauth/caddy-mailauth/test/redisserver"
)

// prefixes numbers the key prefixes, so that stores sharing a server are
// each empty when they open.
var prefixes atomic.Int64

func uniquePrefix() string {
	return "t" + strconv.FormatInt(prefixes.Add(1), 10) + ":"
}

func openRedis(tb testing.TB, opts store.RedisOptions) *store.Redis {
	tb.Helper()
	s, err := store.OpenRedis(tb.Context(), opts, zaptest.NewLogger(tb))
	if err != nil {
		tb.Fatalf("OpenRedis: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestRedisConforms(t *testing.T) {
	srv := redisserver.Start(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return openRedis(t, store.RedisOptions{URL: srv.URL(), KeyPrefix: uniquePrefix()})
	})
}

func BenchmarkRedis(b *testing.B) {
	srv := redisserver.Start(b)
	storetest.Bench(b, func(b *testing.B) store.Store {
		return openRedis(b, store.RedisOptions{URL: srv.URL(), KeyPrefix: uniquePrefix()})
	})
}

// openPair opens two stores on one server and prefix, each with its own
// connection pool, as two Caddy instances would.
func openPair(t *testing.T) (a, b *store.Redis) {
	t.Helper()
	srv := redisserver.Start(t)
	opts := store.RedisOptions{URL: srv.URL(), KeyPrefix: uniquePrefix()}
	return openRedis(t, opts), openRedis(t, opts)
}

func TestRedisConcurrentTakesAcrossTwoPools(t *testing.T) {
	a, b := openPair(t)
	const rounds, takers = 10, 50
	for round := range rounds {
		key := "token/" + strconv.Itoa(round)
		if err := a.Put(t.Context(), key, []byte(key), time.Hour); err != nil {
			t.Fatalf("Put: %v", err)
		}
		var (
			start   = make(chan struct{})
			wg      sync.WaitGroup
			winners atomic.Int32
		)
		for i := range takers {
			s := a
			if i%2 == 1 {
				s = b
			}
			wg.Go(func() {
				<-start
				v, err := s.Take(t.Context(), key)
				switch {
				case err == nil:
					if string(v) != key {
						t.Errorf("round %d: Take returned %q; want %q", round, v, key)
					}
					winners.Add(1)
				case !errors.Is(err, store.ErrNotFound):
					t.Errorf("round %d: Take failed with %v; losers must get ErrNotFound", round, err)
				}
			})
		}
		close(start)
		wg.Wait()
		if n := winners.Load(); n != 1 {
			t.Fatalf("round %d: %d of %d Takes from two pools got the token; want exactly 1", round, n, takers)
		}
	}
}

func TestRedisMessageOfAClaimerThatClosedGoesToAnotherAfterTheLease(t *testing.T) {
	ctx := t.Context()
	a, b := openPair(t)
	if err := a.Enqueue(ctx, "m1", []byte("mail"), time.Time{}, time.Hour, store.PriorityHigh); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	const lease = 500 * time.Millisecond
	leased := time.Now()
	items, err := a.Claim(ctx, leased, 10, lease)
	if err != nil || len(items) != 1 {
		t.Fatalf("Claim by A = %+v, %v; want m1", items, err)
	}
	// A dies without Ack or Retry.
	if err := a.Close(); err != nil {
		t.Fatalf("Close A: %v", err)
	}
	if items, err := b.Claim(ctx, time.Now(), 10, lease); err != nil || len(items) != 0 {
		t.Fatalf("Claim by B during A's lease = %+v, %v; want nothing", items, err)
	}
	time.Sleep(time.Until(leased.Add(lease)))
	items, err = b.Claim(ctx, time.Now(), 10, time.Minute)
	if err != nil || len(items) != 1 || items[0].ID != "m1" || string(items[0].Payload) != "mail" {
		t.Fatalf("Claim by B after A's lease = %+v, %v; want m1: a message was lost with its claimer", items, err)
	}
	if err := b.Ack(ctx, "m1"); err != nil {
		t.Fatalf("Ack by B: %v", err)
	}
	if n, err := b.OutboxLen(ctx); err != nil || n != 0 {
		t.Errorf("OutboxLen after B's Ack = %d, %v; want 0", n, err)
	}
}

func TestRedisAppendsFromTwoClientsFormOneChain(t *testing.T) {
	ctx := t.Context()
	a, b := openPair(t)
	const writers, each = 6, 10 // per client
	var wg sync.WaitGroup
	for w := range 2 * writers {
		s := a
		if w%2 == 1 {
			s = b
		}
		wg.Go(func() {
			for i := range each {
				err := s.Append(ctx, "chain", time.Hour, func(last *store.LogRecord) ([][]byte, error) {
					prev := "0"
					if last != nil {
						prev = strconv.FormatUint(last.Seq, 10)
					}
					return [][]byte{[]byte(fmt.Sprintf("%d.%d<%s", w, i, prev))}, nil
				})
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	recs, err := b.ReadLog(ctx, "chain", 0, 1000)
	if err != nil {
		t.Fatalf("ReadLog: %v", err)
	}
	if len(recs) != 2*writers*each {
		t.Fatalf("%d records; want %d", len(recs), 2*writers*each)
	}
	for i, r := range recs {
		want := fmt.Sprintf("<%d", i)
		if r.Seq != uint64(i+1) || !strings.HasSuffix(string(r.Value), want) {
			t.Fatalf("record %d is seq %d %q; want seq %d built on record %d", i, r.Seq, r.Value, i+1, i)
		}
	}
}

func TestRedisPublishReachesSubscribersOfAnotherClient(t *testing.T) {
	a, b := openPair(t)
	got := make(chan string, 1)
	cancel := a.Subscribe("login/1", func(p []byte) { got <- string(p) })
	defer cancel()
	// OpenRedis returns once subscribed, so the first publish must arrive.
	if err := b.Publish(t.Context(), "login/1", []byte("approved")); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	select {
	case m := <-got:
		if m != "approved" {
			t.Errorf("A's subscriber got %q; want %q", m, "approved")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("A's subscriber got nothing within 5s of B's Publish")
	}
}

func TestRedisRecoversWhenTheServerRestarts(t *testing.T) {
	ctx := t.Context()
	srv := redisserver.Start(t)
	s := openRedis(t, store.RedisOptions{URL: srv.URL(), KeyPrefix: uniquePrefix()})
	got := make(chan string, 100)
	defer s.Subscribe("topic", func(p []byte) { got <- string(p) })()

	srv.Stop()
	if err := s.Ping(ctx); err == nil {
		t.Fatal("Ping succeeded while the server is stopped; fail-closed checks rely on it failing")
	}
	if err := s.Put(ctx, "k", []byte("v"), 0); err == nil {
		t.Error("Put succeeded while the server is stopped")
	}

	srv.Restart(t)
	deadline := time.Now().Add(15 * time.Second)
	for s.Ping(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatal("Ping still fails 15s after the server came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := s.Put(ctx, "k", []byte("v"), 0); err != nil {
		t.Fatalf("Put after the restart: %v", err)
	}
	// The subscription comes back by itself, after a reconnect delay.
	for {
		if err := s.Publish(ctx, "topic", []byte("back")); err != nil {
			t.Fatalf("Publish after the restart: %v", err)
		}
		select {
		case <-got:
			return
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no event received within 15s of the server coming back: the subscription did not reconnect")
		}
	}
}

func TestRedisKeysStayUnderTheirKeyPrefix(t *testing.T) {
	ctx := t.Context()
	srv := redisserver.Start(t)
	a := openRedis(t, store.RedisOptions{URL: srv.URL(), KeyPrefix: "a:"})
	b := openRedis(t, store.RedisOptions{URL: srv.URL(), KeyPrefix: "b:"})
	for _, s := range []*store.Redis{a, b} {
		if err := s.Put(ctx, "k", []byte(fmt.Sprintf("%p", s)), 0); err != nil {
			t.Fatalf("Put: %v", err)
		}
	}
	if err := a.Enqueue(ctx, "m", nil, time.Time{}, 0, store.PriorityHigh); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	if err := a.Append(ctx, "audit", 0, func(*store.LogRecord) ([][]byte, error) { return [][]byte{[]byte("x")}, nil }); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if got, err := b.Get(ctx, "k"); err != nil || string(got) != fmt.Sprintf("%p", b) {
		t.Errorf("b.Get(k) = %q, %v; want b's own value: prefixes share keys", got, err)
	}
	if n, err := b.OutboxLen(ctx); err != nil || n != 0 {
		t.Errorf("b.OutboxLen = %d, %v; want 0: a's outbox leaked into b's", n, err)
	}
	if _, err := b.LastRecord(ctx, "audit"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("b.LastRecord(audit) = %v; want ErrNotFound: a's log leaked into b's", err)
	}

	raw := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer raw.Close()
	keys, err := raw.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatalf("KEYS: %v", err)
	}
	if len(keys) == 0 {
		t.Fatal("the server holds no keys after writes")
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, "a:") && !strings.HasPrefix(k, "b:") {
			t.Errorf("key %q is outside both KeyPrefixes", k)
		}
	}
}

func TestRedisScanTakesGlobCharactersLiterally(t *testing.T) {
	srv := redisserver.Start(t)
	s := openRedis(t, store.RedisOptions{URL: srv.URL(), KeyPrefix: "[x]*?\\:"})
	for _, k := range []string{"a*b", "a?c", "a[b]", `a\d`, "abc", "axb"} {
		if err := s.Put(t.Context(), k, []byte(k), 0); err != nil {
			t.Fatalf("Put(%q): %v", k, err)
		}
	}
	for prefix, want := range map[string]string{"a*": "a*b", "a?": "a?c", "a[": "a[b]", `a\`: `a\d`, "ab": "abc"} {
		var got []string
		if err := s.Scan(t.Context(), prefix, func(k string, v []byte) bool {
			if k != string(v) {
				t.Errorf("Scan(%q) passed %q with value %q", prefix, k, v)
			}
			got = append(got, k)
			return true
		}); err != nil {
			t.Fatalf("Scan(%q): %v", prefix, err)
		}
		if len(got) != 1 || got[0] != want {
			t.Errorf("Scan(%q) found %q; want only %q (glob characters in a prefix are literal)", prefix, got, want)
		}
	}
}

func TestRedisOutlivesTheContextItWasOpenedWith(t *testing.T) {
	srv := redisserver.Start(t)
	ctx, cancel := context.WithCancel(t.Context())
	s, err := store.OpenRedis(ctx, store.RedisOptions{URL: srv.URL(), KeyPrefix: uniquePrefix()}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("OpenRedis: %v", err)
	}
	defer s.Close()
	cancel()
	got := make(chan string, 1)
	defer s.Subscribe("topic", func(p []byte) { got <- string(p) })()
	if err := s.Publish(t.Context(), "topic", []byte("still here")); err != nil {
		t.Fatalf("Publish after the open context ended: %v", err)
	}
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s: the subscription ended with the context OpenRedis was given")
	}
}

func TestRedisCloseTwiceReturnsTheFirstResult(t *testing.T) {
	srv := redisserver.Start(t)
	s, err := store.OpenRedis(t.Context(), store.RedisOptions{URL: srv.URL()}, nil)
	if err != nil {
		t.Fatalf("OpenRedis: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v; want the first result, nil", err)
	}
}

func TestOpenRedisOnAClosedPortNamesTheAddress(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s, err := store.OpenRedis(ctx, store.RedisOptions{URL: "redis://" + addr + "/0", DialTimeout: time.Second}, nil)
	if err == nil {
		s.Close()
		t.Fatalf("OpenRedis on the closed port %s succeeded", addr)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "store: redis: ") || !strings.Contains(msg, addr) {
		t.Errorf("OpenRedis error %q; want it prefixed and naming %s", msg, addr)
	}
}

func TestOpenRedisRejectsInvalidOptions(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	const url = "redis://127.0.0.1:6379/0"
	tests := []struct {
		name string
		opts store.RedisOptions
		want string // the field the error must name
	}{
		{"no URL", store.RedisOptions{}, "URL"},
		{"other scheme", store.RedisOptions{URL: "http://127.0.0.1:6379"}, "URL"},
		{"unix socket", store.RedisOptions{URL: "unix:///run/redis.sock"}, "URL"},
		{"bad database", store.RedisOptions{URL: "redis://127.0.0.1:6379/x"}, "URL"},
		{"skip_verify", store.RedisOptions{URL: "rediss://127.0.0.1:6379/0?skip_verify=true"}, "skip_verify"},
		{"sentinels without master", store.RedisOptions{SentinelAddrs: []string{"127.0.0.1:26379"}}, "MasterName"},
		{"master without sentinels", store.RedisOptions{URL: url, MasterName: "mymaster"}, "MasterName"},
		{"sentinels and cluster", store.RedisOptions{SentinelAddrs: []string{"a:1"}, MasterName: "m", ClusterAddrs: []string{"b:1"}}, "ClusterAddrs"},
		{"host beside sentinels", store.RedisOptions{URL: url, SentinelAddrs: []string{"a:1"}, MasterName: "m"}, "URL"},
		{"cluster database", store.RedisOptions{URL: "redis://:pw@/2", ClusterAddrs: []string{"a:1"}}, "URL"},
		{"cluster without hash tag", store.RedisOptions{ClusterAddrs: []string{"a:1"}, KeyPrefix: "mailauth:"}, "KeyPrefix"},
		{"cluster with empty hash tag", store.RedisOptions{ClusterAddrs: []string{"a:1"}, KeyPrefix: "{}:"}, "KeyPrefix"},
		{"empty cluster address", store.RedisOptions{ClusterAddrs: []string{""}}, "ClusterAddrs"},
		{"CA without TLS", store.RedisOptions{URL: url, TLSCA: ca}, "TLSCA"},
		{"CA file missing", store.RedisOptions{URL: url, TLS: true, TLSCA: ca + ".missing"}, "TLSCA"},
		{"CA file without PEM", store.RedisOptions{URL: url, TLS: true, TLSCA: ca}, "TLSCA"},
		{"negative pool", store.RedisOptions{URL: url, PoolSize: -1}, "PoolSize"},
		{"negative dial timeout", store.RedisOptions{URL: url, DialTimeout: -time.Second}, "DialTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := store.OpenRedis(t.Context(), tt.opts, nil)
			if err == nil {
				s.Close()
				t.Fatalf("OpenRedis(%+v) succeeded; want an error naming %s", tt.opts, tt.want)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "store: redis: ") || !strings.Contains(msg, tt.want) {
				t.Errorf("OpenRedis error %q; want it prefixed and naming %s", msg, tt.want)
			}
		})
	}
}

func TestOpenRedisKeepsTheURLPasswordOutOfErrors(t *testing.T) {
	_, err := store.OpenRedis(t.Context(), store.RedisOptions{URL: "redis://user:s3cret@127.0.0.1:port/0"}, nil)
	if err == nil {
		t.Fatal("OpenRedis with a bad port succeeded")
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("OpenRedis error %q repeats the password", err)
	}
}
