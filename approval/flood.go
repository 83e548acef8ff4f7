package approval

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Flood control: what keeps a client that sends requests as fast as it can
// from filling the store and the audit trail. Limits keyed on the client's
// address are checked before anything is written, and the audit records
// such a client causes are folded into one per address and minute.

// ErrRateLimited is what a per-IP limit refuses with, wrapped in a
// RateLimitedError that says when to come back.
var ErrRateLimited = errors.New("approval: too many attempts from this address")

// RateLimitedError says that a limit keyed on the client's address
// refused the request. Such a limit says nothing about whether a user
// exists, so the browser may be told the truth and when to try again.
type RateLimitedError struct {
	// Limit names the limit, such as "login_per_ip".
	Limit string
	// RetryAfter is how long until the limit accepts a request again.
	RetryAfter time.Duration
}

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("approval: %s reached; try again in %s", e.Limit, e.RetryAfter.Round(time.Second))
}

// Unwrap makes errors.Is(err, ErrRateLimited) hold.
func (e *RateLimitedError) Unwrap() error { return ErrRateLimited }

// limitedBy builds the error for a refusal by lim of key. The wait is at
// least a second, so that a Retry-After header is never 0.
func limitedBy(lim RateLimiter, name, key string) error {
	return &RateLimitedError{Limit: name, RetryAfter: max(lim.RetryAfter(key), time.Second)}
}

// floodWindow is how often at most one audit record is written for one
// client address and one flood-prone event (see floodGate).
const floodWindow = time.Minute

// maxFloodKeys bounds the addresses a floodGate tracks. Events of further
// addresses in a window are folded together (see floodGate).
const maxFloodKeys = 10_000

// floodKey names what the gate folds together: one event, one limit (empty
// for link_rejected) and one address group (IPKey).
type floodKey struct {
	ev    Event
	limit string
	ip    string
}

// manyClients is the ip of the key that events of addresses beyond
// maxFloodKeys are folded into.
const manyClients = "\x00many"

// maxSummaries bounds the summaries one sweep writes one by one; the
// rest are merged per event and limit into one "clients": "many" summary.
// The sweep runs inside some request's Record, which should not pay for
// writing thousands of records.
const maxSummaries = 100

type floodEntry struct {
	// since is when the entry's window began: when its last record was
	// written.
	since time.Time
	// folded counts the events not written since then.
	folded int
}

// floodSummary is a record the gate owes for events it folded whose
// window has ended without a later event to carry their count.
type floodSummary struct {
	key    floodKey
	since  time.Time
	folded int
}

// floodGate folds the audit records of flood-prone events: a rejected link
// and a refusal by a limit keyed on the client's address. Anyone can cause
// these as fast as they can send requests, and each one would otherwise
// cost a log line and a stored record. For each address (IPKey), event and
// limit, the first event of a floodWindow is written, with a count of the
// events it stands for (itself and those folded since the previous
// record); later ones in the window are only counted, and written as one
// summary record once the window has ended (see sweep). Events of
// addresses beyond maxFloodKeys share one key, which is only ever
// summarised, with "clients": "many".
type floodGate struct {
	mu      sync.Mutex
	entries map[floodKey]*floodEntry
	// sweepAt is when the next sweep is due, in Unix nanoseconds; read
	// without the lock so that Record pays one atomic load for it.
	sweepAt atomic.Int64
}

// floodProne reports which gate key, if any, an event is folded under.
func floodProne(ev Event, l *Login, d *Detail) (floodKey, bool) {
	limit, ip := d.Limit, d.ClientIP
	if l != nil && l.ClientIP != "" {
		ip = l.ClientIP
	}
	switch {
	case ev == EventLinkRejected:
		limit = ""
	case ev == EventRateLimited && (limit == "login_per_ip" || limit == "redeem_per_ip" || limit == "open_per_ip"):
	default:
		return floodKey{}, false
	}
	if ip != "" {
		ip = ipKey(ip)
	}
	return floodKey{ev: ev, limit: limit, ip: ip}, true
}

// admit counts one event for k at now and returns how many events its
// record stands for, or 0 when it is folded and not to be written.
func (g *floodGate) admit(k floodKey, now time.Time) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.entries == nil {
		g.entries = make(map[floodKey]*floodEntry)
		g.sweepAt.Store(now.Add(floodWindow).UnixNano())
	}
	e, ok := g.entries[k]
	if !ok && len(g.entries) >= maxFloodKeys {
		k.ip = manyClients
		e, ok = g.entries[k]
	}
	switch {
	case !ok:
		if k.ip == manyClients {
			// The sweep writes what the shared key holds: no one
			// address's record should carry other addresses' count.
			g.entries[k] = &floodEntry{since: now, folded: 1}
			return 0
		}
		g.entries[k] = &floodEntry{since: now}
		return 1
	case k.ip != manyClients && !now.Before(e.since.Add(floodWindow)):
		n := e.folded + 1
		e.since, e.folded = now, 0
		return n
	default:
		e.folded++
		return 0
	}
}

// sweep, once it is due, writes off the entries whose window has ended:
// one that folded nothing is dropped; one that folded events gets a
// summary, which counts as its record for a new window. So a flood that
// goes on gets one summary a minute per address, a flood that stops has
// its tail written within two minutes, and no key ever gets two records
// within one window.
func (g *floodGate) sweep(now time.Time) []floodSummary {
	at := g.sweepAt.Load()
	if at == 0 || now.UnixNano() < at || !g.sweepAt.CompareAndSwap(at, now.Add(floodWindow).UnixNano()) {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []floodSummary
	for k, e := range g.entries {
		if now.Before(e.since.Add(floodWindow)) {
			continue
		}
		if e.folded == 0 {
			delete(g.entries, k)
			continue
		}
		out = append(out, floodSummary{key: k, since: e.since, folded: e.folded})
		e.since, e.folded = now, 0
	}
	if len(out) <= maxSummaries {
		return out
	}
	rest := map[floodKey]*floodSummary{}
	for _, sum := range out[maxSummaries:] {
		sum.key.ip = manyClients
		m, ok := rest[sum.key]
		if !ok {
			rest[sum.key] = &sum
			continue
		}
		m.folded += sum.folded
		if sum.since.Before(m.since) {
			m.since = sum.since
		}
	}
	out = out[:maxSummaries]
	for _, m := range rest {
		out = append(out, *m)
	}
	return out
}

// detail is what a summary record says.
func (s floodSummary) detail() Detail {
	d := Detail{Limit: s.key.limit, Count: s.folded, Since: s.since, Summary: true}
	switch s.key.ip {
	case manyClients:
		d.Clients = "many"
	case "":
	default:
		d.ClientIP = s.key.ip
	}
	return d
}
