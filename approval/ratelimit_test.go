package approval

import (
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// allowN calls Allow n times and returns how many were allowed.
func allowN(l RateLimiter, key string, n int) int {
	ok := 0
	for range n {
		if l.Allow(key) {
			ok++
		}
	}
	return ok
}

func TestLimiterAllowsBurstThenRefuses(t *testing.T) {
	l := NewLimiter(Limit{Events: 5, Per: 15 * time.Minute}, newFakeClock().Now)
	for i := range 5 {
		if !l.Allow("alice") {
			t.Fatalf("event %d of a burst of 5 was refused", i+1)
		}
	}
	if l.Allow("alice") {
		t.Fatal("the 6th event within the window was allowed; want it refused")
	}
}

func TestLimiterRefillsOneEventPerInterval(t *testing.T) {
	clk := newFakeClock()
	l := NewLimiter(Limit{Events: 5, Per: 15 * time.Minute}, clk.Now)
	if got := allowN(l, "alice", 5); got != 5 {
		t.Fatalf("allowed %d of the first 5 events, want 5", got)
	}
	clk.Advance(3*time.Minute - time.Nanosecond)
	if l.Allow("alice") {
		t.Fatal("an event was allowed 1ns before one event (15m/5 = 3m) had refilled")
	}
	clk.Advance(time.Nanosecond)
	if !l.Allow("alice") {
		t.Fatal("an event was refused 3m after the burst, when one event had refilled")
	}
	if l.Allow("alice") {
		t.Fatal("a second event was allowed when only one had refilled")
	}
	clk.Advance(15 * time.Minute)
	if got := allowN(l, "alice", 10); got != 5 {
		t.Fatalf("after a whole idle window, %d of 10 events were allowed; want the full burst of 5", got)
	}
}

func TestLimiterDoesNotCountRefusedEvents(t *testing.T) {
	clk := newFakeClock()
	l := NewLimiter(Limit{Events: 5, Per: 15 * time.Minute}, clk.Now)
	allowN(l, "ip", 5)
	for i := range 179 {
		clk.Advance(time.Second)
		if l.Allow("ip") {
			t.Fatalf("a retry %ds after the burst was allowed; the first event refills at 3m", i+1)
		}
	}
	clk.Advance(time.Second)
	// 3m after the burst one event has refilled, however often the client
	// was refused in between.
	if !l.Allow("ip") {
		t.Fatal("179 refused retries pushed the refill past 3m; refused events must not count")
	}
}

func TestLimiterRefundGivesAnEventBack(t *testing.T) {
	l := NewLimiter(Limit{Events: 3, Per: time.Hour}, newFakeClock().Now)
	if got := allowN(l, "kim", 3); got != 3 {
		t.Fatalf("%d of a burst of 3 allowed", got)
	}
	l.Refund("kim")
	if !l.Allow("kim") {
		t.Fatal("after a refund one more event must fit")
	}
	if l.Allow("kim") {
		t.Fatal("a refund gives back one event, not more")
	}
	l.Refund("nobody") // never counted: nothing to give back
	if got := allowN(l, "nobody", 5); got != 3 {
		t.Fatalf("a refund of an untracked key changed its burst: %d of 5 allowed, want 3", got)
	}
}

func TestLimiterKeysAreIndependent(t *testing.T) {
	l := NewLimiter(Limit{Events: 3, Per: time.Hour}, newFakeClock().Now)
	if got := allowN(l, "192.0.2.1", 10); got != 3 {
		t.Fatalf("key 192.0.2.1 got %d of 10 events, want 3", got)
	}
	if got := allowN(l, "192.0.2.2", 10); got != 3 {
		t.Fatalf("key 192.0.2.2 got %d of 10 events after another key was drained, want its own 3", got)
	}
}

func TestLimiterOffNeverLimits(t *testing.T) {
	off, err := ParseLimit("off")
	if err != nil {
		t.Fatalf("ParseLimit(off): %v", err)
	}
	l := NewLimiter(off, newFakeClock().Now)
	if got := allowN(l, "alice", 100_000); got != 100_000 {
		t.Fatalf("an off limiter allowed %d of 100000 events, want all", got)
	}
	if l.Len() != 0 {
		t.Fatalf("an off limiter tracks %d keys, want none", l.Len())
	}
	if l.Limit().String() != "off" {
		t.Fatalf("an off limiter's limit prints as %q, want off", l.Limit())
	}
}

func TestLimiterCountsExactlyUnderConcurrency(t *testing.T) {
	l := NewLimiter(Limit{Events: 50, Per: time.Hour}, newFakeClock().Now)
	var shared, own atomic.Int64
	var wg sync.WaitGroup
	for g := range 100 {
		wg.Go(func() {
			for range 100 {
				if l.Allow("shared") {
					shared.Add(1)
				}
				if l.Allow("own-" + strconv.Itoa(g)) {
					own.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if shared.Load() != 50 {
		t.Fatalf("100 goroutines got %d events on one key with a limit of 50, want exactly 50", shared.Load())
	}
	if own.Load() != 100*50 {
		t.Fatalf("100 goroutines got %d events on their own keys, want 50 each (5000)", own.Load())
	}
}

func TestLimiterMemoryStaysBounded(t *testing.T) {
	l := NewLimiter(Limit{Events: 5, Per: 15 * time.Minute}, newFakeClock().Now)
	for i := range 1_000_000 {
		if !l.Allow("k" + strconv.Itoa(i)) {
			t.Fatalf("new key %d was refused; a new key must always get its first event", i)
		}
	}
	if n := l.Len(); n > MaxLimiterKeys {
		t.Fatalf("after 1M distinct keys the limiter tracks %d, want at most %d", n, MaxLimiterKeys)
	}
}

func TestLimiterFloodDoesNotEvictADrainedBucket(t *testing.T) {
	l := NewLimiter(Limit{Events: 5, Per: 15 * time.Minute}, newFakeClock().Now)
	l.maxKeys = 1000
	allowN(l, "victim@example.com", 5)
	for i := range 100_000 {
		l.Allow("flood-" + strconv.Itoa(i))
	}
	if l.Len() > l.maxKeys {
		t.Fatalf("the flood left %d keys, want at most %d", l.Len(), l.maxKeys)
	}
	if l.Allow("victim@example.com") {
		t.Fatal("a flood of fresh keys evicted the drained victim bucket; want the least-drained buckets evicted first")
	}
}

func TestLimiterFullTableEvictsFullBucketsFirst(t *testing.T) {
	clk := newFakeClock()
	l := NewLimiter(Limit{Events: 2, Per: time.Minute}, clk.Now)
	l.maxKeys = 100
	for i := range 100 {
		l.Allow("old-" + strconv.Itoa(i))
	}
	clk.Advance(30 * time.Second) // old buckets are full again; no sweep yet
	l.Allow("new")
	if n := l.Len(); n > 100-limiterSampleSize+1 {
		t.Fatalf("a new key on a full table of full buckets left %d keys; want every sampled full bucket dropped", n)
	}
}

func TestLimiterSweepsIdleKeys(t *testing.T) {
	clk := newFakeClock()
	l := NewLimiter(Limit{Events: 5, Per: 15 * time.Minute}, clk.Now)
	for i := range 1000 {
		l.Allow("k" + strconv.Itoa(i))
	}
	clk.Advance(15 * time.Minute)
	l.Allow("fresh")
	if n := l.Len(); n != 1 {
		t.Fatalf("one window after 1000 keys went idle the limiter tracks %d keys, want 1 (idle keys swept)", n)
	}
}

func TestLimiterPanicsOnLimitWithoutWindow(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("NewLimiter accepted 5 events per 0s; want a panic rather than a limiter that never refills")
		}
	}()
	NewLimiter(Limit{Events: 5}, nil)
}

func TestParseLimit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Limit
		err  string
	}{
		{in: "5/15m", want: Limit{5, 15 * time.Minute}},
		{in: "10/1m", want: Limit{10, time.Minute}},
		{in: "100/h", want: Limit{100, time.Hour}},
		{in: "3/s", want: Limit{3, time.Second}},
		{in: "20/m", want: Limit{20, time.Minute}},
		{in: "50/1h30m", want: Limit{50, 90 * time.Minute}},
		{in: "5/15m0s", want: Limit{5, 15 * time.Minute}},
		{in: "off", want: Limit{}},
		{in: "", err: `"" is not a rate limit: want <events>/<window>`},
		{in: "5", err: `"5" is not a rate limit`},
		{in: "/15m", err: `"/15m" is not a rate limit`},
		{in: "5/", err: `"5/" is not a rate limit`},
		{in: "Off", err: `"Off" is not a rate limit`},
		{in: "five/15m", err: `events "five" is not a whole number`},
		{in: "5.5/15m", err: `events "5.5" is not a whole number`},
		{in: "0/15m", err: "events must be at least 1 (write off for no limit)"},
		{in: "-1/15m", err: "events must be at least 1"},
		{in: "2000000/1h", err: "events must be at most 1000000"},
		{in: "5/15", err: `window "15" is not a duration`},
		{in: "5/d", err: `window "d" is not a duration`},
		{in: "5/15m/1h", err: `window "15m/1h" is not a duration`},
		{in: "5/0s", err: "the window must be longer than zero"},
		{in: "5/-1m", err: "the window must be longer than zero"},
		{in: "10/5ns", err: "more than one event per nanosecond"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseLimit(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseLimit(%q) = %v, %v; want an error containing %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseLimit(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
			back, err := ParseLimit(got.String())
			if err != nil || back != got {
				t.Fatalf("ParseLimit(%q.String() = %q) = %v, %v; want it to read back as %v", tc.in, got.String(), back, err, got)
			}
		})
	}
}

func TestIPKeyGroupsIPv6By64(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"192.0.2.7", "192.0.2.7"},
		{"::ffff:192.0.2.7", "192.0.2.7"},
		{"2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"},
		{"fe80::1%eth0", "fe80::/64"},
	} {
		if got := IPKey(netip.MustParseAddr(tc.in)); got != tc.want {
			t.Errorf("IPKey(%s) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestNewRateLimitersAppliesEachLimit(t *testing.T) {
	r := DefaultRateLimits()
	r.MailsPerManager = Limit{}
	ls := NewRateLimiters(r, newFakeClock().Now)
	for _, tc := range []struct {
		name string
		l    RateLimiter
		want int
	}{
		{"login per IP", ls.LoginIP, 20},
		{"login per identity", ls.LoginIdentity, 5},
		{"redeem per IP", ls.RedeemIP, 30},
		{"mails per manager (off)", ls.Manager, 1000},
		{"opens per IP", ls.OpenIP, 30},
		{"code failures per identity", ls.CodeFailures, 10},
	} {
		if got := allowN(tc.l, "k", 1000); got != tc.want {
			t.Errorf("%s: %d of 1000 events allowed at once, want %d", tc.name, got, tc.want)
		}
	}
}

// BenchmarkLimiterAllow times Allow on a tracked key by itself: its clock
// costs nothing, and every call is allowed, so each one writes the bucket.
func BenchmarkLimiterAllow(b *testing.B) {
	now := time.Date(2025, 3, 4, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { now = now.Add(time.Second); return now }
	l := NewLimiter(Limit{Events: 10, Per: time.Second}, clock)
	l.Allow("203.0.113.9")
	b.ReportAllocs()
	for b.Loop() {
		if !l.Allow("203.0.113.9") {
			b.Fatal("refused an event a whole window after the last")
		}
	}
}

// BenchmarkLimiterAllowWallClock is Allow with time.Now, whose cost
// depends on the machine's clock source and often exceeds the limiter's.
func BenchmarkLimiterAllowWallClock(b *testing.B) {
	l := NewLimiter(DefaultRateLimits().LoginPerIP, nil)
	l.Allow("203.0.113.9")
	b.ReportAllocs()
	for b.Loop() {
		l.Allow("203.0.113.9")
	}
}

func BenchmarkLimiterAllowParallel(b *testing.B) {
	l := NewLimiter(DefaultRateLimits().LoginPerIP, nil)
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "198.51.100." + strconv.Itoa(i)
		l.Allow(keys[i])
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.Allow(keys[i%len(keys)])
			i++
		}
	})
}

func TestLimiterRetryAfterIsTheWaitUntilAllowed(t *testing.T) {
	clk := newFakeClock()
	l := NewLimiter(Limit{Events: 5, Per: 15 * time.Minute}, clk.Now)
	if d := l.RetryAfter("alice"); d != 0 {
		t.Fatalf("RetryAfter of an unseen key = %v, want 0", d)
	}
	allowN(l, "alice", 5)
	if d := l.RetryAfter("alice"); d != 3*time.Minute {
		t.Fatalf("RetryAfter after a burst of 5 per 15m = %v, want 3m (one event refills every 3m)", d)
	}
	clk.Advance(3*time.Minute - time.Second)
	if d := l.RetryAfter("alice"); d != time.Second || l.Allow("alice") {
		t.Fatalf("1s before the refill: RetryAfter = %v and Allow let it through; want 1s and a refusal", d)
	}
	clk.Advance(time.Second)
	if d := l.RetryAfter("alice"); d != 0 || !l.Allow("alice") {
		t.Fatalf("at the refill: RetryAfter = %v; want 0 and Allow to accept", d)
	}
	if d := NewLimiter(Limit{}, clk.Now).RetryAfter("alice"); d != 0 {
		t.Errorf("RetryAfter of an unlimited limiter = %v, want 0", d)
	}
}
