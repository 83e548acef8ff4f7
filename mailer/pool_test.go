package mailer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/mailauth/caddy-mailauth/store"
	"github.com/mailauth/caddy-mailauth/test/limitedsmtp"
)

// These tests run against test/limitedsmtp, an SMTP server (go-smtp) that
// refuses connections over its limit with 421 and messages over its rate
// with 451 4.7.1, as corporate relays do.

func startLimited(t *testing.T, l limitedsmtp.Limits) *limitedsmtp.Server {
	t.Helper()
	srv, err := limitedsmtp.Start(l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func limitedConfig(srv *limitedsmtp.Server) ServerConfig {
	return ServerConfig{
		Host: "127.0.0.1", Port: srv.Port, TLS: TLSNone,
		From: "Access Gateway <noreply@gateway.example.com>", Timeout: 5 * time.Second,
	}
}

func plainMessage(id string, servers ...string) *Message {
	return &Message{ID: id, Servers: servers, To: id + "@example.com", Subject: "Sign in " + id,
		Text: "Open the link", ExpiresAt: time.Now().Add(15 * time.Minute)}
}

// sendAll sends n messages from 16 goroutines, as the outbox does, and
// returns the errors.
func sendAll(t *testing.T, s *SMTP, n int, servers ...string) []error {
	t.Helper()
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		next = make(chan int)
	)
	for range 16 {
		wg.Go(func() {
			for i := range next {
				if _, err := send(t, s, plainMessage(fmt.Sprintf("m%03d", i), servers...)); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return errs
}

func TestSMTPSendsABurstOverItsFewSessions(t *testing.T) {
	srv := startLimited(t, limitedsmtp.Limits{Connections: 5})
	s := mustSMTP(t, map[string]ServerConfig{"relay": limitedConfig(srv)})
	t.Cleanup(func() { s.Close() })

	if errs := sendAll(t, s, 60, "relay"); len(errs) > 0 {
		t.Fatalf("%d of 60 sends failed, first: %v", len(errs), errs[0])
	}
	st := srv.Stats()
	if st.Accepted != 60 {
		t.Errorf("the server accepted %d messages; want 60", st.Accepted)
	}
	if st.Connections != DefaultConnections || st.MaxOpen > DefaultConnections {
		t.Errorf("60 messages took %d connections (%d open at once); want %d, each carrying message after message",
			st.Connections, st.MaxOpen, DefaultConnections)
	}
	if got := s.Dials()["relay"]; got != uint64(DefaultConnections) {
		t.Errorf("Dials() = %d; want %d, what the server saw", got, DefaultConnections)
	}
}

func TestIdleSessionIsClosedAfterIdleTimeoutAndRedialedForTheNextMail(t *testing.T) {
	srv := startLimited(t, limitedsmtp.Limits{})
	cfg := limitedConfig(srv)
	cfg.IdleTimeout = 150 * time.Millisecond
	s := mustSMTP(t, map[string]ServerConfig{"relay": cfg})
	t.Cleanup(func() { s.Close() })

	if _, err := send(t, s, plainMessage("m1", "relay")); err != nil {
		t.Fatal(err)
	}
	if open := srv.Stats().Open; open != 1 {
		t.Fatalf("right after a send %d sessions are open; want the 1 kept for the next mail", open)
	}
	waitFor(t, "the idle session to be closed", func() bool { return srv.Stats().Open == 0 })
	if _, err := send(t, s, plainMessage("m2", "relay")); err != nil {
		t.Fatalf("the mail after the idle session was closed: %v", err)
	}
	if st := srv.Stats(); st.Connections != 2 || st.Accepted != 2 {
		t.Errorf("server saw %d connections and %d messages; want 2 and 2 (a new session after the idle close)", st.Connections, st.Accepted)
	}
}

func TestSessionTheServerDroppedIsReplacedWithoutFailingTheMail(t *testing.T) {
	// The relay drops idle clients sooner than we close them.
	srv := startLimited(t, limitedsmtp.Limits{IdleTimeout: 100 * time.Millisecond})
	s := mustSMTP(t, map[string]ServerConfig{"relay": limitedConfig(srv)})
	t.Cleanup(func() { s.Close() })

	if _, err := send(t, s, plainMessage("m1", "relay")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the server to drop the idle session", func() bool { return srv.Stats().Open == 0 })
	if _, err := send(t, s, plainMessage("m2", "relay")); err != nil {
		t.Fatalf("a mail on a session the server had dropped failed (%v); want it sent on a new one", err)
	}
	if st := srv.Stats(); st.Accepted != 2 || st.Connections != 2 {
		t.Errorf("server saw %d connections and %d messages; want 2 and 2", st.Connections, st.Accepted)
	}
}

func TestServerAtItsRateDefersTheMailUntilASlotFrees(t *testing.T) {
	srv := startLimited(t, limitedsmtp.Limits{})
	cfg := limitedConfig(srv)
	cfg.Rate = Rate{Messages: 3, Per: time.Minute}
	s := mustSMTP(t, map[string]ServerConfig{"relay": cfg})
	t.Cleanup(func() { s.Close() })

	var first time.Time
	for i := range 3 {
		if _, err := send(t, s, plainMessage(fmt.Sprintf("m%d", i), "relay")); err != nil {
			t.Fatalf("send %d within the rate: %v", i, err)
		}
		if i == 0 {
			first = time.Now()
		}
	}
	if n, next := s.Capacity(time.Now()); n != 0 || next.IsZero() {
		t.Errorf("Capacity after 3 of 3/1m = %d, next %v; want 0 and when the first slot frees", n, next)
	}
	_, err := send(t, s, plainMessage("m3", "relay"))
	var d *DeferredError
	if !errors.As(err, &d) {
		t.Fatalf("the 4th mail of a 3/1m server returned %v; want a DeferredError", err)
	}
	if d.Until.Before(first.Add(time.Minute-time.Second)) || d.Until.After(first.Add(time.Minute+time.Second)) {
		t.Errorf("deferred until %v; want about a minute after the first send (%v)", d.Until, first)
	}
	if errors.Is(err, ErrPermanent) {
		t.Errorf("a deferral must be temporary: %v", err)
	}
	if got := srv.Stats().Accepted; got != 3 {
		t.Errorf("server accepted %d; want 3: the 4th must not be sent at all", got)
	}
}

func TestMailSpreadsOverTheNextServerWhenTheFirstIsAtItsRate(t *testing.T) {
	first, second := startLimited(t, limitedsmtp.Limits{}), startLimited(t, limitedsmtp.Limits{})
	slow := limitedConfig(first)
	slow.Rate = Rate{Messages: 4, Per: time.Hour}
	s := mustSMTP(t, map[string]ServerConfig{"first": slow, "second": limitedConfig(second)})
	t.Cleanup(func() { s.Close() })

	if errs := sendAll(t, s, 20, "first", "second"); len(errs) > 0 {
		t.Fatalf("%d sends failed, first: %v", len(errs), errs[0])
	}
	if a, b := first.Stats().Accepted, second.Stats().Accepted; a != 4 || b != 16 {
		t.Errorf("first took %d and second %d; want 4 (its rate) and 16", a, b)
	}
	if th := first.Stats().Throttled; th != 0 {
		t.Errorf("first refused %d messages for its rate; the client should never have asked", th)
	}
}

func TestThrottlingServerIsBackedOffAndTheMailGoesToTheNext(t *testing.T) {
	// The relay's rate is unknown to us: it says 451 4.7.1 after two.
	first, second := startLimited(t, limitedsmtp.Limits{Messages: 2, Window: time.Hour}), startLimited(t, limitedsmtp.Limits{})
	s := mustSMTP(t, map[string]ServerConfig{"first": limitedConfig(first), "second": limitedConfig(second)})
	t.Cleanup(func() { s.Close() })
	var throttled []string
	s.OnThrottle(func(server string, until time.Time, err error) { throttled = append(throttled, server) })

	for i := range 6 {
		if _, err := send(t, s, plainMessage(fmt.Sprintf("m%d", i), "first", "second")); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if a, b := first.Stats().Accepted, second.Stats().Accepted; a != 2 || b != 4 {
		t.Errorf("first took %d and second %d; want 2 and 4", a, b)
	}
	if th := first.Stats().Throttled; th != 1 {
		t.Errorf("first was asked %d times over its rate; want 1, then it is backed off", th)
	}
	if len(throttled) != 1 || throttled[0] != "first" {
		t.Errorf("OnThrottle saw %v; want [first] once", throttled)
	}
	// With nowhere else to go, the mail waits for the backoff.
	_, err := send(t, s, plainMessage("alone", "first"))
	var d *DeferredError
	if !errors.As(err, &d) || d.Until.Before(time.Now()) {
		t.Fatalf("mail for the backed-off server alone returned %v; want a DeferredError until the backoff ends", err)
	}
}

func TestConnectionRefusedWith421IsABackoffNotAFailure(t *testing.T) {
	srv := startLimited(t, limitedsmtp.Limits{Connections: 1})
	// Another client holds the relay's only connection.
	other := mustSMTP(t, map[string]ServerConfig{"relay": limitedConfig(srv)})
	t.Cleanup(func() { other.Close() })
	if _, err := send(t, other, plainMessage("other", "relay")); err != nil {
		t.Fatal(err)
	}
	s := mustSMTP(t, map[string]ServerConfig{"relay": limitedConfig(srv)})
	t.Cleanup(func() { s.Close() })
	_, err := send(t, s, plainMessage("m1", "relay"))
	var d *DeferredError
	if !errors.As(err, &d) {
		t.Fatalf("a 421 at connect returned %v; want a DeferredError (back off, keep the attempt)", err)
	}
	if se := lastServerError(err); se == nil || se.code != 421 {
		t.Errorf("the deferral should carry the server's 421, got %v", se)
	}
	if st := srv.Stats(); st.Refused != 1 {
		t.Errorf("server refused %d connections; want 1", st.Refused)
	}
}

func TestOutboxKeepsARelayWithinItsRateWithoutUsingUpAttempts(t *testing.T) {
	// 5 connections and 5 messages a second, the bench's relay scaled down.
	srv := startLimited(t, limitedsmtp.Limits{Connections: 5, Messages: 5, Window: time.Second})
	cfg := limitedConfig(srv)
	cfg.Rate = Rate{Messages: 5, Per: time.Second}
	s := mustSMTP(t, map[string]ServerConfig{"relay": cfg})
	t.Cleanup(func() { s.Close() })
	db, err := store.OpenBadger(store.BadgerOptions{InMemory: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	var mu sync.Mutex
	kinds := map[EventKind]int{}
	o := NewOutbox(db, s, zaptest.NewLogger(t), func(e Event) {
		mu.Lock()
		kinds[e.Kind]++
		mu.Unlock()
	})
	o.poll = 50 * time.Millisecond
	for i := range 20 {
		if err := o.Enqueue(context.Background(), plainMessage(fmt.Sprintf("m%02d", i), "relay")); err != nil {
			t.Fatal(err)
		}
	}
	run(t, o)
	sent := func() int {
		mu.Lock()
		defer mu.Unlock()
		return kinds[EventSent]
	}
	deadline := time.Now().Add(15 * time.Second)
	for sent() < 20 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	st := srv.Stats()
	if st.Accepted != 20 {
		t.Fatalf("the relay accepted %d of 20 within 15s", st.Accepted)
	}
	if st.Throttled != 0 || st.Refused != 0 {
		t.Errorf("the relay refused %d messages for its rate and %d connections; want none", st.Throttled, st.Refused)
	}
	if most := srv.MaxInWindow(); most > 5 {
		t.Errorf("%d messages in one second; the rate is 5", most)
	}
	mu.Lock()
	defer mu.Unlock()
	if kinds[EventRetry] != 0 || kinds[EventFailed] != 0 || kinds[EventSent] != 20 {
		t.Errorf("events %v; want 20 sent and no retry or failure", kinds)
	}
}
