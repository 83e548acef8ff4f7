package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailauth/caddy-mailauth/store"
)

// The cases for Scan, Log and Notifier; Run includes them.

func scanFindsLiveKeysUnderPrefix(t *testing.T, s store.Store) {
	mustPut(t, s, "session/a", []byte("1"), 0)
	mustPut(t, s, "session/b", []byte("2"), time.Hour)
	mustPut(t, s, "session/c", []byte("3"), ttl)
	mustPut(t, s, "sessions", []byte("not under the prefix"), 0)
	mustPut(t, s, "login/a", []byte("x"), 0)
	mustEnqueue(t, s, "session/q", []byte("outbox, not a key"), 0)
	time.Sleep(expiryWait)
	got := map[string]string{}
	if err := s.Scan(t.Context(), "session/", func(k string, v []byte) bool {
		got[k] = string(v)
		return true
	}); err != nil {
		t.Fatalf("Scan: %v", err)
	}
	want := map[string]string{"session/a": "1", "session/b": "2"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Scan(session/) = %v; want %v (expired and other keys left out)", got, want)
	}
}

func scanStopsWhenFnSaysSo(t *testing.T, s store.Store) {
	for i := range 20 {
		mustPut(t, s, "k/"+strconv.Itoa(i), []byte("v"), 0)
	}
	n := 0
	if err := s.Scan(t.Context(), "k/", func(string, []byte) bool { n++; return n < 3 }); err != nil {
		t.Fatalf("Scan: %v", err)
	}
	if n != 3 {
		t.Errorf("fn ran %d times after returning false on the 3rd; want 3", n)
	}
}

func appendNumbersRecordsFromOne(t *testing.T, s store.Store) {
	ctx := t.Context()
	if _, err := s.LastRecord(ctx, "audit"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("LastRecord of an empty log: %v; want ErrNotFound", err)
	}
	var seen []*store.LogRecord
	appendValues := func(values ...string) {
		t.Helper()
		err := s.Append(ctx, "audit", 0, func(last *store.LogRecord) ([][]byte, error) {
			seen = append(seen, last)
			var out [][]byte
			for _, v := range values {
				out = append(out, []byte(v))
			}
			return out, nil
		})
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
	appendValues("a")
	appendValues("b", "c")
	appendValues("d")
	if seen[0] != nil {
		t.Errorf("build of the first append got last=%+v; want nil", seen[0])
	}
	if l := seen[1]; l == nil || l.Seq != 1 || string(l.Value) != "a" {
		t.Errorf("build of the second append got last=%+v; want seq 1 \"a\"", l)
	}
	if l := seen[2]; l == nil || l.Seq != 3 || string(l.Value) != "c" {
		t.Errorf("build of the third append got last=%+v; want seq 3 \"c\"", l)
	}
	recs, err := s.ReadLog(ctx, "audit", 0, 10)
	if err != nil {
		t.Fatalf("ReadLog: %v", err)
	}
	if got, want := logString(recs), "1:a 2:b 3:c 4:d"; got != want {
		t.Errorf("ReadLog(0, 10) = %s; want %s", got, want)
	}
	recs, err = s.ReadLog(ctx, "audit", 2, 2)
	if err != nil {
		t.Fatalf("ReadLog: %v", err)
	}
	if got, want := logString(recs), "2:b 3:c"; got != want {
		t.Errorf("ReadLog(2, 2) = %s; want %s", got, want)
	}
	last, err := s.LastRecord(ctx, "audit")
	if err != nil || last.Seq != 4 || string(last.Value) != "d" {
		t.Errorf("LastRecord = %+v, %v; want seq 4 \"d\"", last, err)
	}
	if recs, err := s.ReadLog(ctx, "other", 0, 10); err != nil || len(recs) != 0 {
		t.Errorf("ReadLog of another log = %s, %v; want nothing", logString(recs), err)
	}
}

func appendWritesNothingWhenBuildFails(t *testing.T, s store.Store) {
	ctx := t.Context()
	boom := errors.New("boom")
	err := s.Append(ctx, "audit", 0, func(*store.LogRecord) ([][]byte, error) { return [][]byte{[]byte("x")}, boom })
	if !errors.Is(err, boom) {
		t.Errorf("Append with a failing build = %v; want its error", err)
	}
	if _, err := s.LastRecord(ctx, "audit"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("LastRecord after a failed append: %v; want ErrNotFound", err)
	}
}

// concurrentAppendsFormOneChain has every value name the record before it,
// as the audit hash chain does, from several appenders at once: the result
// must be one gapless chain.
func concurrentAppendsFormOneChain(t *testing.T, s store.Store) {
	ctx := t.Context()
	const writers, each = 8, 15
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				err := s.Append(ctx, "chain", 0, func(last *store.LogRecord) ([][]byte, error) {
					prev := "genesis"
					if last != nil {
						prev = string(last.Value)
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
	recs, err := s.ReadLog(ctx, "chain", 0, writers*each+10)
	if err != nil {
		t.Fatalf("ReadLog: %v", err)
	}
	if len(recs) != writers*each {
		t.Fatalf("%d records; want %d", len(recs), writers*each)
	}
	prev := "genesis"
	for i, r := range recs {
		v := string(r.Value)
		if r.Seq != uint64(i+1) {
			t.Fatalf("record %d has seq %d", i, r.Seq)
		}
		if _, after, _ := bytes.Cut(r.Value, []byte("<")); !bytes.HasPrefix(after, []byte(firstLink(prev))) {
			t.Fatalf("record %d (%s) does not follow %s", r.Seq, v, prev)
		}
		prev = v
	}
}

// firstLink is the part of a chain value that names itself.
func firstLink(v string) string {
	if i := bytes.IndexByte([]byte(v), '<'); i >= 0 {
		return v[:i]
	}
	return v
}

func expiredRecordsLeaveLogButChainGoesOn(t *testing.T, s store.Store) {
	ctx := t.Context()
	appendOne := func(v string, life time.Duration) {
		t.Helper()
		if err := s.Append(ctx, "audit", life, func(*store.LogRecord) ([][]byte, error) { return [][]byte{[]byte(v)}, nil }); err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
	appendOne("old", ttl)
	appendOne("older", ttl)
	time.Sleep(expiryWait)
	appendOne("new", time.Hour)
	recs, err := s.ReadLog(ctx, "audit", 0, 10)
	if err != nil {
		t.Fatalf("ReadLog: %v", err)
	}
	if got, want := logString(recs), "3:new"; got != want {
		t.Errorf("ReadLog after expiry = %s; want %s", got, want)
	}
}

func publishReachesSubscribersOfTheTopic(t *testing.T, s store.Store) {
	ctx := t.Context()
	got := make(chan string, 10)
	cancel := s.Subscribe("login/1", func(p []byte) { got <- "1:" + string(p) })
	cancel2 := s.Subscribe("login/2", func(p []byte) { got <- "2:" + string(p) })
	defer cancel2()
	// A networked backend may take a moment to establish its
	// subscription; publish until the first message arrives.
	deadline := time.Now().Add(5 * time.Second)
	var first string
	for first == "" {
		if err := s.Publish(ctx, "login/1", []byte("hello")); err != nil {
			t.Fatalf("Publish: %v", err)
		}
		select {
		case first = <-got:
		case <-time.After(50 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("no message within 5s of publishing")
			}
		}
	}
	if first != "1:hello" {
		t.Fatalf("got %q; want 1:hello", first)
	}
	drain(got)
	cancel()
	if err := s.Publish(ctx, "login/1", []byte("after cancel")); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if err := s.Publish(ctx, "login/2", []byte("two")); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	select {
	case m := <-got:
		if m != "2:two" {
			t.Errorf("got %q; want only 2:two (nothing after cancel)", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no message on login/2 within 5s")
	}
	time.Sleep(100 * time.Millisecond)
	if m := drain(got); len(m) > 0 {
		t.Errorf("unexpected messages %v", m)
	}
}

func drain(c chan string) []string {
	var out []string
	for {
		select {
		case m := <-c:
			out = append(out, m)
		default:
			return out
		}
	}
}

func logString(recs []store.LogRecord) string {
	parts := make([]string, len(recs))
	for i, r := range recs {
		parts[i] = strconv.FormatUint(r.Seq, 10) + ":" + string(r.Value)
	}
	return strings.Join(parts, " ")
}
