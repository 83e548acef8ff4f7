package approval

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Rate limits stop inbox flooding, guessing and storage flooding: how many
// login starts a client IP and an identity may make, how many links and
// codes a client IP may redeem, how many unknown links it may open, and
// how many approval mails a manager may receive. A limit that could tell
// whether a user exists (the per-identity and per-manager ones) gets the
// same response as an accepted request; the caller audits the hit and
// quietly does not act. Limits keyed on the client's address alone say
// nothing about users, so their callers may answer honestly (see
// RateLimitedError).

// Limit is a rate: at most Events in any window of Per, with a burst of
// Events. A zero Events means no limit.
type Limit struct {
	// Events is how many events the window holds; 0 means unlimited.
	Events int
	// Per is the window in which Events refill completely.
	Per time.Duration
}

// Unlimited reports whether l never refuses.
func (l Limit) Unlimited() bool { return l.Events <= 0 }

// String returns l in the form ParseLimit reads, such as "5/15m0s" or
// "off".
func (l Limit) String() string {
	if l.Unlimited() {
		return "off"
	}
	return strconv.Itoa(l.Events) + "/" + l.Per.String()
}

// maxLimitEvents bounds Events so that a typo such as 50000/1m does not
// pass for a limit.
const maxLimitEvents = 1_000_000

// ParseLimit reads a limit written as <events>/<window>, such as "5/15m",
// "10/1m" or "100/h", or "off" for no limit. The window is a Go duration
// ("15m", "1h30m") or a bare unit ("s", "m", "h") meaning one of it.
func ParseLimit(s string) (Limit, error) {
	if s == "off" {
		return Limit{}, nil
	}
	ev, per, ok := strings.Cut(s, "/")
	if !ok || ev == "" || per == "" {
		return Limit{}, fmt.Errorf("%q is not a rate limit: want <events>/<window> such as 5/15m, or off", s)
	}
	n, err := strconv.Atoi(ev)
	if err != nil {
		return Limit{}, fmt.Errorf("%q: events %q is not a whole number", s, ev)
	}
	if n < 1 {
		return Limit{}, fmt.Errorf("%q: events must be at least 1 (write off for no limit)", s)
	}
	if n > maxLimitEvents {
		return Limit{}, fmt.Errorf("%q: events must be at most %d", s, maxLimitEvents)
	}
	switch per {
	case "s", "m", "h":
		per = "1" + per
	}
	d, err := time.ParseDuration(per)
	if err != nil {
		return Limit{}, fmt.Errorf("%q: window %q is not a duration such as 15m or h", s, per)
	}
	if d <= 0 {
		return Limit{}, fmt.Errorf("%q: the window must be longer than zero", s)
	}
	if d < time.Duration(n) {
		return Limit{}, fmt.Errorf("%q: more than one event per nanosecond", s)
	}
	return Limit{Events: n, Per: d}, nil
}

// MaxLimiterKeys is how many keys one Limiter tracks at most.
// At about 100 bytes a key, that is around 10 MB per limiter at worst.
const MaxLimiterKeys = 100_000

// limiterSampleSize is how many keys an eviction looks at when the table is
// full.
const limiterSampleSize = 8

// Limiter applies one Limit to many keys (client IPs, identities, manager
// addresses), each with its own token bucket. It is safe for concurrent use,
// and Allow costs O(1): a map lookup under a mutex, with no allocation for
// a key already tracked. It starts no goroutine.
//
// Each bucket is kept as a GCRA "theoretical arrival time" (TAT): one
// int64 per key. A bucket whose TAT has passed is full again, so it says
// nothing a missing key would not; dropping it loses no state. Memory stays
// bounded in two ways:
//
//   - Once per window (but at most once a minute), Allow sweeps the table
//     and drops every full bucket. Any key idle for a whole window is full,
//     so the table holds only keys active in the last window or so.
//   - The table never holds more than MaxLimiterKeys keys. When it is full,
//     a new key evicts first any full buckets among a random sample of
//     limiterSampleSize keys and, when there are none, the sampled bucket
//     with the smallest debt: the one closest to full, whose loss gives the
//     least back to whoever owns it.
//
// Refusing new keys when the table is full would let a flood from many
// addresses lock everyone else out, so the table stays open. Evicting the
// least-indebted bucket means that a flood of keys each spending one event
// evicts its own entries before it evicts a victim's bucket that has been
// drained (the one that matters for an identity under attack): to push that
// one out, an attacker must hold MaxLimiterKeys buckets each at least as
// drained, which costs about Events×MaxLimiterKeys requests within one
// window, and those requests are themselves limited per client IP.
type Limiter struct {
	limit    Limit
	now      func() time.Time
	epoch    time.Time     // times are kept as nanoseconds since epoch
	interval int64         // ns between refills: Per/Events
	burst    int64         // how far a TAT may run ahead of now: interval×(Events-1)
	sweep    time.Duration // how often full buckets are swept out
	maxKeys  int

	mu        sync.Mutex
	tat       map[string]int64
	lastSweep int64
}

// NewLimiter returns a Limiter for l. now is the clock; nil means
// time.Now. An unlimited l yields a Limiter that allows everything and
// keeps no state. It panics when l has events but no positive window,
// which ParseLimit never returns.
func NewLimiter(l Limit, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	lim := &Limiter{limit: l, now: now, maxKeys: MaxLimiterKeys}
	if l.Unlimited() {
		lim.limit = Limit{}
		return lim
	}
	if l.Per <= 0 {
		panic(fmt.Sprintf("approval: rate limit %d per %v has no window", l.Events, l.Per))
	}
	lim.epoch = now()
	lim.interval = max(int64(l.Per)/int64(l.Events), 1)
	lim.burst = lim.interval * int64(l.Events-1)
	lim.sweep = max(l.Per, time.Minute)
	lim.tat = make(map[string]int64)
	return lim
}

// Limit returns the limit that l applies.
func (l *Limiter) Limit() Limit { return l.limit }

// Allow reports whether one more event for key fits the limit, and counts
// it when it does. A refused event is not counted, so a client that keeps
// trying regains access as its bucket refills.
func (l *Limiter) Allow(key string) bool {
	if l.tat == nil {
		return true
	}
	// Sub uses the monotonic clock when both times carry one, so a wall
	// clock step changes nothing.
	t := int64(l.now().Sub(l.epoch))
	l.mu.Lock()
	defer l.mu.Unlock()
	if t-l.lastSweep >= int64(l.sweep) {
		l.sweepFull(t)
	}
	tat, ok := l.tat[key]
	tat = max(tat, t)
	if tat-t > l.burst {
		return false
	}
	if !ok && len(l.tat) >= l.maxKeys {
		l.evict(t)
	}
	l.tat[key] = tat + l.interval
	return true
}

// RetryAfter implements RateLimiter. A refused event is not counted, so
// the wait is exact: the time until the bucket's debt is back within the
// burst.
func (l *Limiter) RetryAfter(key string) time.Duration {
	if l.tat == nil {
		return 0
	}
	t := int64(l.now().Sub(l.epoch))
	l.mu.Lock()
	defer l.mu.Unlock()
	tat, ok := l.tat[key]
	if !ok || tat-t <= l.burst {
		return 0
	}
	return time.Duration(tat - l.burst - t)
}

// Refund gives back one event that Allow counted for key, for a limit
// that counts failures: the caller takes an event before it tries, so that
// concurrent tries cannot all pass, and refunds it when the try succeeds.
func (l *Limiter) Refund(key string) {
	if l.tat == nil {
		return
	}
	t := int64(l.now().Sub(l.epoch))
	l.mu.Lock()
	defer l.mu.Unlock()
	tat, ok := l.tat[key]
	if !ok {
		return
	}
	if tat -= l.interval; tat <= t {
		delete(l.tat, key) // full again
		return
	}
	l.tat[key] = tat
}

// Len returns how many keys l tracks now.
func (l *Limiter) Len() int {
	if l.tat == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.tat)
}

// sweepFull drops every full bucket. l.mu is held.
func (l *Limiter) sweepFull(t int64) {
	l.lastSweep = t
	for k, tat := range l.tat {
		if tat <= t {
			delete(l.tat, k)
		}
	}
}

// evict makes room for one key: it drops the full buckets among a sample
// of keys or, when none is full, the sampled one with the smallest debt.
// Map iteration starts at a random place, which makes the sample random
// enough that no one key can be aimed at. l.mu is held.
func (l *Limiter) evict(t int64) {
	var (
		victim  string
		least   int64
		dropped bool
		seen    int
	)
	for k, tat := range l.tat {
		if tat <= t {
			delete(l.tat, k)
			dropped = true
		} else if seen == 0 || tat < least {
			victim, least = k, tat
		}
		if seen++; seen == limiterSampleSize {
			break
		}
	}
	if !dropped && seen > 0 {
		delete(l.tat, victim)
	}
}

// IPKey returns the rate-limit key for a client address: the address
// itself for IPv4, and its /64 network for IPv6, since one host commonly
// holds a whole /64 and could otherwise take a fresh key per request.
func IPKey(addr netip.Addr) string {
	addr = addr.Unmap()
	if addr.Is4() || !addr.IsValid() {
		return addr.String()
	}
	p, _ := addr.Prefix(64) // cannot fail: a valid IPv6 address and 64 ≤ 128
	return p.String()
}

// RateLimits are the limits on abuse of one approval service.
type RateLimits struct {
	// LoginPerIP limits login starts per client IP. Default 20/10m: room
	// for an office behind one NAT address where several people sign in
	// around the same time, while one address cannot send more than about
	// 2 mails a minute for long.
	LoginPerIP Limit
	// LoginPerIdentity limits login starts per identity (the normalised,
	// lower-cased username or address). Default 5/15m: a person who
	// mistypes or misses the mail can retry a few times, while an attacker
	// cannot flood one inbox with more than one mail every 3 minutes after
	// the first 5.
	LoginPerIdentity Limit
	// RedeemPerIP limits link and code redemptions (POSTs) per client IP.
	// Default 30/10m: an honest browser redeems once or twice per login,
	// so this leaves room for a shared address while it bounds code
	// guessing across many logins, on top of the 5 wrong codes that kill
	// one login.
	RedeemPerIP Limit
	// MailsPerManager limits approval mails per manager address. Default
	// 20/h: more requests than a manager reviews in an hour, so none is
	// lost in normal use, while a flood of requests naming one manager
	// cannot bury that manager's inbox.
	MailsPerManager Limit
	// OpenPerIP limits the link openings (GETs) per client IP that find
	// no live token: unknown, used or expired links. Opening a live link
	// counts nothing, so mail scanners and people behind one address are
	// never refused a link they were sent; once an address has spent its
	// budget, every link it opens is answered as invalid without a store
	// read until the budget refills. Default 30/10m: a person opens an
	// old link now and then, while a flood of made-up tokens costs the
	// store 30 reads per address per 10 minutes at most.
	OpenPerIP Limit
	// CodeFailuresPerIdentity limits wrong one-time codes per identity
	// across all its logins; past it, codes are refused for that identity
	// (links still work). Default 10/24h: five wrong codes end one login,
	// so an attacker who starts login after login for a victim gets about
	// ten guesses at a six-digit code a day rather than five per login,
	// while a person who mistypes twice a day never meets it. It is keyed
	// by the normalised, lower-cased identity as typed, for names that
	// exist and names that do not alike, so it tells nobody which exist;
	// a person who can sign in with a username and with an address has a
	// budget for each.
	CodeFailuresPerIdentity Limit
}

// DefaultRateLimits returns the default limits; RateLimits explains each.
func DefaultRateLimits() RateLimits {
	return RateLimits{
		LoginPerIP:       Limit{Events: 20, Per: 10 * time.Minute},
		LoginPerIdentity: Limit{Events: 5, Per: 15 * time.Minute},
		RedeemPerIP:      Limit{Events: 30, Per: 10 * time.Minute},
		MailsPerManager:  Limit{Events: 20, Per: time.Hour},
		OpenPerIP:        Limit{Events: 30, Per: 10 * time.Minute},

		CodeFailuresPerIdentity: Limit{Events: 10, Per: 24 * time.Hour},
	}
}

// RateLimiter decides whether one more event for a key fits a limit, and
// counts it when it does. *Limiter keeps its counts in memory, for one
// instance; *SharedLimiter keeps them in the store, for every instance
// that shares it.
type RateLimiter interface {
	Allow(key string) bool
	// RetryAfter returns how long until Allow(key) would accept one more
	// event, assuming none is counted meanwhile; zero means it would now.
	// It counts nothing.
	RetryAfter(key string) time.Duration
	Limit() Limit
}

// RefundableLimiter is a RateLimiter that can give an event back (see
// Limiter.Refund).
type RefundableLimiter interface {
	RateLimiter
	Refund(key string)
}

// RateLimiters holds one limiter for each of RateLimits.
type RateLimiters struct {
	// LoginIP is keyed by IPKey of the client address.
	LoginIP RateLimiter
	// LoginIdentity is keyed by the normalised, lower-cased identity.
	LoginIdentity RateLimiter
	// RedeemIP is keyed by IPKey of the client address.
	RedeemIP RateLimiter
	// Manager is keyed by the manager's lower-cased mail address.
	Manager RateLimiter
	// OpenIP is keyed by IPKey of the client address; it counts only
	// openings of links with no live token.
	OpenIP RateLimiter
	// CodeFailures is keyed by the login's lower-cased input.
	CodeFailures RefundableLimiter
}

// NewRateLimiters returns limiters for r on the clock now (nil means
// time.Now).
func NewRateLimiters(r RateLimits, now func() time.Time) *RateLimiters {
	return &RateLimiters{
		LoginIP:       NewLimiter(r.LoginPerIP, now),
		LoginIdentity: NewLimiter(r.LoginPerIdentity, now),
		RedeemIP:      NewLimiter(r.RedeemPerIP, now),
		Manager:       NewLimiter(r.MailsPerManager, now),
		OpenIP:        NewLimiter(r.OpenPerIP, now),
		CodeFailures:  NewLimiter(r.CodeFailuresPerIdentity, now),
	}
}
