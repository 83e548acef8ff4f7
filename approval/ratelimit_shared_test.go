package approval

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/store"
)

func openMemStore(t *testing.T) store.Store {
	t.Helper()
	st, err := store.OpenBadger(store.BadgerOptions{InMemory: true}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestSharedLimiterCountsAcrossInstances(t *testing.T) {
	st := openMemStore(t)
	clock := newFakeClock()
	limit := Limit{Events: 5, Per: 10 * time.Minute}
	// Start on a window's edge, so the weights below are exact.
	clock.Advance(limit.Per - time.Duration(clock.Now().UnixNano()%int64(limit.Per)))
	a := NewSharedLimiter(limit, st, "login_per_ip", clock.Now, nil)
	b := NewSharedLimiter(limit, st, "login_per_ip", clock.Now, nil)
	got := allowN(a, "203.0.113.7", 3) + allowN(b, "203.0.113.7", 3)
	if got != 5 {
		t.Fatalf("two instances allowed %d of 6 events at once; want 5 together", got)
	}
	if !a.Allow("198.51.100.1") {
		t.Error("another key was refused")
	}
	// A whole window later only the previous window's weight is left;
	// two windows later, everything.
	clock.Advance(10 * time.Minute)
	if a.Allow("203.0.113.7") {
		t.Error("allowed right after a full window: the previous window still weighs in fully")
	}
	clock.Advance(5 * time.Minute)
	if got := allowN(b, "203.0.113.7", 5); got != 3 {
		t.Errorf("halfway through the next window %d events fit; want 3 (half the previous window's 5 still counts)", got)
	}
	clock.Advance(20 * time.Minute)
	if got := allowN(a, "203.0.113.7", 10); got != 5 {
		t.Errorf("after two idle windows %d of 10 fit; want 5", got)
	}
}

func TestSharedLimiterUnlimitedTouchesNoStore(t *testing.T) {
	l := NewSharedLimiter(Limit{}, nil, "off", nil, nil)
	if got := allowN(l, "k", 100); got != 100 {
		t.Errorf("unlimited allowed %d of 100", got)
	}
}

func TestSharedLimiterKeepsNoAddressInTheStore(t *testing.T) {
	st := openMemStore(t)
	l := NewSharedLimiter(Limit{Events: 1, Per: time.Minute}, st, "login_per_ip", nil, nil)
	l.Allow("203.0.113.7")
	n := 0
	st.Scan(t.Context(), "ratelimit/", func(k string, _ []byte) bool {
		n++
		if strings.Contains(k, "203.0.113.7") {
			t.Errorf("store key %q names the client address", k)
		}
		return true
	})
	if n != 1 {
		t.Errorf("%d rate-limit keys; want 1", n)
	}
}

func TestSharedLimiterRetryAfterEndsWhenAllowed(t *testing.T) {
	st := openMemStore(t)
	limit := Limit{Events: 4, Per: 10 * time.Minute}
	for _, into := range []time.Duration{0, 3 * time.Minute, 9 * time.Minute} {
		clock := newFakeClock()
		clock.Advance(limit.Per - time.Duration(clock.Now().UnixNano()%int64(limit.Per)) + into)
		l := NewSharedLimiter(limit, st, "retry"+into.String(), clock.Now, nil)
		if d := l.RetryAfter("k"); d != 0 {
			t.Fatalf("%v into a window: RetryAfter of a fresh key = %v, want 0", into, d)
		}
		allowN(l, "k", 4)
		d := l.RetryAfter("k")
		if d <= 0 || d > 2*limit.Per {
			t.Fatalf("%v into a window, after 4 of 4: RetryAfter = %v; want a wait within two windows", into, d)
		}
		clock.Advance(d - time.Second)
		if l.Allow("k") {
			t.Fatalf("%v into a window: allowed 1s before the RetryAfter of %v", into, d)
		}
		clock.Advance(2 * time.Second)
		if !l.Allow("k") {
			t.Fatalf("%v into a window: refused 1s after the RetryAfter of %v", into, d)
		}
	}
}

func TestSharedLimiterRefundGivesAnEventBackOnEveryInstance(t *testing.T) {
	st := openMemStore(t)
	clock := newFakeClock()
	limit := Limit{Events: 3, Per: time.Hour}
	a := NewSharedLimiter(limit, st, "code_failures_per_identity", clock.Now, nil)
	b := NewSharedLimiter(limit, st, "code_failures_per_identity", clock.Now, nil)
	if got := allowN(a, "kim", 3); got != 3 {
		t.Fatalf("%d of 3 allowed", got)
	}
	b.Refund("kim")
	if !a.Allow("kim") {
		t.Fatal("a refund on one instance must make room on another")
	}
	if b.Allow("kim") {
		t.Fatal("a refund gives back one event, not more")
	}
	b.Refund("nobody")
	if got := allowN(a, "nobody", 5); got != 3 {
		t.Fatalf("a refund of a key never counted changed it: %d of 5 allowed, want 3", got)
	}
}
