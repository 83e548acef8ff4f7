package approval

import (
	"context"
	"crypto/rand"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mailauth/caddy-mailauth/store"
)

// countingStore counts the reads of link tokens that pass through it.
type countingStore struct {
	store.Store
	tokenReads atomic.Int64
}

func (c *countingStore) Get(ctx context.Context, key string) ([]byte, error) {
	if strings.HasPrefix(key, links.prefix) {
		c.tokenReads.Add(1)
	}
	return c.Store.Get(ctx, key)
}

// storedLogins counts the logins in the store.
func (h *harness) storedLogins() int {
	h.t.Helper()
	n := 0
	if err := h.store.Scan(bg, logins.prefix, func(string, []byte) bool { n++; return true }); err != nil {
		h.t.Fatal(err)
	}
	return n
}

// storedEvents counts the stored audit records of each event.
func (h *harness) storedEvents() map[Event]int {
	h.t.Helper()
	if err := h.svc.audit.trail.Sync(bg); err != nil {
		h.t.Fatal(err)
	}
	recs, err := h.store.ReadLog(bg, AuditLog, 0, 100_000)
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[Event]int{}
	for _, rec := range recs {
		r, _, err := decodeAuditRecord(rec.Value)
		if err != nil {
			h.t.Fatal(err)
		}
		out[r.Event]++
	}
	return out
}

// countOf sums the "count" fields of the lines of ev, which say how many
// events each folded line stands for.
func (h *harness) countOf(ev Event) int {
	n := 0
	for _, e := range h.logs.FilterMessage(string(ev)).All() {
		c, ok := e.ContextMap()["count"].(int64)
		if !ok {
			h.t.Fatalf("a %s line has no count: %v", ev, e.ContextMap())
		}
		n += int(c)
	}
	return n
}

func randomToken(t *testing.T) string {
	t.Helper()
	tok, err := newSecret(rand.Reader, tokenBytes)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestLoginRefusedPerIPStoresNothingAndSaysWhenToComeBack(t *testing.T) {
	h := newHarness(t)
	h.svc.limits = NewRateLimiters(RateLimits{LoginPerIP: Limit{Events: 3, Per: 10 * time.Minute}}, h.clock.Now)
	req := StartRequest{Site: h.site, Input: "mallory", App: testApp, ClientIP: testIP, UserAgent: testUA}
	for i := range 10 {
		st, err := h.svc.Start(bg, req)
		if i < 3 {
			if err != nil || st == nil {
				t.Fatalf("login %d of 3 allowed = %v, %v", i+1, st, err)
			}
			continue
		}
		limited, ok := errors.AsType[*RateLimitedError](err)
		if !ok || !errors.Is(err, ErrRateLimited) || st != nil {
			t.Fatalf("login %d over the limit = %v, %v; want a *RateLimitedError wrapping ErrRateLimited and no login", i+1, st, err)
		}
		// 3 per 10 minutes refill one every 200 s, and the clock stands.
		if limited.Limit != "login_per_ip" || limited.RetryAfter != 200*time.Second {
			t.Errorf("login %d: %+v; want login_per_ip, retry after 200s", i+1, limited)
		}
	}
	h.svc.Wait()
	if n := h.storedLogins(); n != 3 {
		t.Errorf("10 login starts under a limit of 3 stored %d logins; want 3", n)
	}
	stored := h.storedEvents()
	if stored[EventLoginStarted] != 3 || stored[EventRateLimited] != 1 {
		t.Errorf("stored trail: %d login_started and %d rate_limited; want 3 and 1 (the 7 refusals of one address in one minute fold into one record)", stored[EventLoginStarted], stored[EventRateLimited])
	}
	if n := h.countEvent(EventRateLimited); n != 1 {
		t.Errorf("%d rate_limited lines for one address within a minute; want 1", n)
	}
	h.clock.Advance(200 * time.Second)
	if _, err := h.svc.Start(bg, req); err != nil {
		t.Errorf("a login after the advertised wait = %v; want it allowed", err)
	}
	h.svc.Wait()
}

func TestIdentityLimitStaysSilentWhilePerIPLimitSpeaks(t *testing.T) {
	h := newHarness(t)
	h.svc.limits = NewRateLimiters(RateLimits{LoginPerIdentity: Limit{Events: 1, Per: time.Hour}}, h.clock.Now)
	h.startKnown()
	for range 3 {
		st := h.start(aliceInput)
		if st == nil || st.Pending == "" {
			t.Fatal("a login refused by the per-identity limit must get the usual answer: anything else tells who exists")
		}
	}
	if n := h.countEvent(EventRateLimited); n != 3 {
		t.Errorf("%d rate_limited lines for 3 per-identity refusals; want 3: that limit is not folded per address", n)
	}
}

func TestUnknownLinksArePerIPLimitedWithoutStoreReads(t *testing.T) {
	h := newHarness(t)
	counted := &countingStore{Store: h.store}
	cfg := h.svc.cfg
	cfg.Store = counted
	cfg.RateLimits = RateLimits{OpenPerIP: Limit{Events: 5, Per: 10 * time.Minute}}
	svc, err := NewService(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	for i := range 200 {
		if _, err := svc.OpenLink(bg, randomToken(t), "", "198.51.100.7", "curl/8"); !errors.Is(err, ErrLinkInvalid) {
			t.Fatalf("opening made-up link %d = %v; want ErrLinkInvalid", i+1, err)
		}
	}
	if n := counted.tokenReads.Load(); n != 5 {
		t.Errorf("200 made-up links from one address read the store %d times; want 5, the budget, and none after it", n)
	}
	if lines, events := h.countEvent(EventLinkRejected), h.countOf(EventLinkRejected); lines != 1 || events != 1 {
		t.Errorf("link_rejected: %d lines standing for %d events; want 1 line so far (the other 4 are folded into the next)", lines, events)
	}
	if n := h.countEvent(EventRateLimited); n != 1 {
		t.Errorf("%d rate_limited lines for 195 refused opens in a minute; want 1", n)
	}
	if _, err := svc.OpenLink(bg, randomToken(t), "", "192.0.2.9", "curl/8"); !errors.Is(err, ErrLinkInvalid) || counted.tokenReads.Load() != 6 {
		t.Errorf("another address: %v after %d reads; want its own budget (a store read, then invalid)", err, counted.tokenReads.Load())
	}
	// A minute on, the next audited event carries what was folded.
	h.clock.Advance(time.Minute)
	h.svc.audit.Record(EventRefreshed, &Login{Username: "carol"}, Detail{})
	if n := h.countOf(EventLinkRejected); n != 6 {
		t.Errorf("link_rejected lines stand for %d rejections after the window; want all 6", n)
	}
	if n := h.countOf(EventRateLimited); n != 195 {
		t.Errorf("rate_limited lines stand for %d refusals after the window; want 195", n)
	}
}

func TestOpeningALiveLinkNeverSpendsTheOpenBudget(t *testing.T) {
	h := newHarness(t)
	h.svc.limits = NewRateLimiters(RateLimits{OpenPerIP: Limit{Events: 1, Per: 10 * time.Minute}}, h.clock.Now)
	_, token := h.startKnown()
	for i := range 5 {
		if _, err := h.svc.OpenLink(bg, token, "", testIP, testUA); err != nil {
			t.Fatalf("opening a live link a %d. time = %v; want its page: live links count nothing", i+1, err)
		}
	}
	if _, err := h.svc.OpenLink(bg, randomToken(t), "", testIP, testUA); !errors.Is(err, ErrLinkInvalid) {
		t.Fatalf("a made-up link = %v", err)
	}
	if _, err := h.svc.OpenLink(bg, token, "", testIP, testUA); !errors.Is(err, ErrLinkInvalid) {
		t.Errorf("once the address spent its budget, a live link = %v; want it answered as invalid", err)
	}
	if _, err := h.svc.OpenLink(bg, token, "", "198.51.100.200", testUA); err != nil {
		t.Errorf("from another address the live link = %v; want its page", err)
	}
	h.clock.Advance(10 * time.Minute)
	if _, err := h.svc.OpenLink(bg, token, "", testIP, testUA); err != nil {
		t.Errorf("after the budget refilled, the live link = %v; want its page", err)
	}
}

func TestFloodProneEventsFoldIntoOneRecordPerAddressAndMinute(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	clock := newFakeClock()
	log := newMemLog()
	trail := NewAuditTrail(log, time.Hour, zap.NewNop())
	t.Cleanup(trail.Close)
	a := NewAuditor(zap.New(core))
	a.Persist(trail, clock.Now)
	observed := 0
	a.Observe(func(o Observation) {
		if o.Event == EventLinkRejected {
			observed++
		}
	})
	reject := func(ip string) {
		a.Record(EventLinkRejected, nil, Detail{ClientIP: ip, Reason: "unknown or used token"})
	}
	sent := map[string]int{}
	for minute := range 5 {
		for range 100 {
			reject("198.51.100.7")
			sent["198.51.100.7"]++
		}
		// Two hosts of one IPv6 /64 are one address, as for the limits.
		reject("2001:db8::1")
		reject("2001:db8::2")
		sent["2001:db8::/64"] += 2
		if minute == 0 {
			if n := logs.Len(); n != 2 {
				t.Fatalf("%d lines in the first minute for 102 rejections from two addresses; want 2", n)
			}
		}
		clock.Advance(time.Minute)
	}
	a.Record(EventRefreshed, &Login{Username: "alice"}, Detail{}) // carries the last window's summaries
	if observed != 510 {
		t.Errorf("the observer saw %d rejections; want all 510: metrics count what the log folds", observed)
	}
	got := map[string]int{}
	lines := logs.FilterMessage(string(EventLinkRejected)).All()
	for _, e := range lines {
		m := e.ContextMap()
		ip, _ := m["client_ip"].(string)
		if strings.HasPrefix(ip, "2001:db8::") {
			ip = "2001:db8::/64"
		}
		got[ip] += int(m["count"].(int64))
	}
	if got["198.51.100.7"] != sent["198.51.100.7"] || got["2001:db8::/64"] != sent["2001:db8::/64"] {
		t.Errorf("the lines' counts add up to %v; want %v: folding must lose no event", got, sent)
	}
	if len(lines) > 2*6 {
		t.Errorf("%d link_rejected lines for 5 minutes of flood from 2 addresses; want at most one per address and minute, and the tail", len(lines))
	}
	if err := trail.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if head, _ := log.LastRecord(t.Context(), AuditLog); int(head.Seq) != logs.Len() {
		t.Errorf("%d records stored for %d lines; each line is one record", head.Seq, logs.Len())
	}
}

func TestFloodGateFoldsAddressesBeyondItsTableTogether(t *testing.T) {
	var g floodGate
	now := newFakeClock().Now()
	written := 0
	for i := range maxFloodKeys + 500 {
		written += min(1, g.admit(floodKey{ev: EventLinkRejected, ip: "k" + strconv.Itoa(i)}, now))
	}
	if written != maxFloodKeys {
		t.Fatalf("%d of %d distinct addresses got a line of their own; want the table's %d, the rest folded", written, maxFloodKeys+500, maxFloodKeys)
	}
	if n := len(g.entries); n != maxFloodKeys+1 {
		t.Errorf("the gate tracks %d keys; want %d and one for the rest", n, maxFloodKeys+1)
	}
	sums := g.sweep(now.Add(floodWindow))
	many := 0
	for _, s := range sums {
		if s.key.ip == manyClients {
			many += s.folded
		}
	}
	if many != 500 {
		t.Errorf("the summary for the addresses beyond the table counts %d; want 500", many)
	}
	if len(g.entries) != 1 {
		t.Errorf("%d keys left after a sweep past every window; want only the shared one, whose summary opened a new window", len(g.entries))
	}
	if sums := g.sweep(now.Add(2 * floodWindow)); len(sums) != 0 || len(g.entries) != 0 {
		t.Errorf("a sweep a window later: summaries %v and %d keys left; want none", sums, len(g.entries))
	}
}

func TestFloodSweepWritesABoundedNumberOfSummaries(t *testing.T) {
	var g floodGate
	now := newFakeClock().Now()
	for i := range 1000 {
		k := floodKey{ev: EventRateLimited, limit: "open_per_ip", ip: "k" + strconv.Itoa(i)}
		g.admit(k, now)
		g.admit(k, now) // folded: a summary is owed
	}
	sums := g.sweep(now.Add(floodWindow))
	total, many := 0, 0
	for _, s := range sums {
		total += s.folded
		if s.key.ip == manyClients {
			many++
		}
	}
	if len(sums) != maxSummaries+1 || many != 1 || total != 1000 {
		t.Errorf("a sweep owing 1000 summaries wrote %d (%d for many clients) standing for %d events; want %d and one merged, standing for all 1000", len(sums), many, total, maxSummaries+1)
	}
}
