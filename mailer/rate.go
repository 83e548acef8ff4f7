package mailer

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Rate is how many messages a mail server takes in a window of time, such
// as Exchange Online's 30 a minute per mailbox. The zero Rate is no limit.
type Rate struct {
	// Messages is how many messages may start in any one window.
	Messages int
	// Per is the window's length.
	Per time.Duration
}

// IsZero reports whether r sets no limit.
func (r Rate) IsZero() bool { return r.Messages == 0 && r.Per == 0 }

func (r Rate) String() string {
	if r.IsZero() {
		return "unlimited"
	}
	return fmt.Sprintf("%d/%s", r.Messages, r.Per)
}

// ParseRate reads "<n>/<window>": 30/1m, 300/1m, 10000/24h. The window is a
// Go duration; a bare unit ("30/m", "5/s") means one of it.
func ParseRate(s string) (Rate, error) {
	n, per, ok := strings.Cut(s, "/")
	if !ok {
		return Rate{}, fmt.Errorf("%q is not <messages>/<window>, such as 30/1m", s)
	}
	count, err := strconv.Atoi(n)
	if err != nil || count < 1 {
		return Rate{}, fmt.Errorf("%q: %q is not a positive number of messages", s, n)
	}
	if per != "" && (per[0] < '0' || per[0] > '9') {
		per = "1" + per
	}
	window, err := time.ParseDuration(per)
	if err != nil || window <= 0 {
		return Rate{}, fmt.Errorf("%q: %q is not a positive duration such as 1m", s, per)
	}
	return Rate{Messages: count, Per: window}, nil
}

// rateWindow keeps a server within its Rate over every window, not only on
// average: it remembers when each of the last Messages sends finished and
// lets a new one start only while fewer than Messages finished within the
// window before now. A send in flight counts as finishing in the future.
//
// Counting finish times is what makes it safe against a server that counts
// sliding windows itself: the server registers a message at some moment
// between our start and our finish, so every message it still counts is
// one we still count, and we never start the one it would refuse.
type rateWindow struct {
	rate Rate

	mu sync.Mutex
	// done is a ring of the finish times of the last rate.Messages sends,
	// oldest at next; the zero time is a free slot, inFlight one reserved.
	done []time.Time
	next int
}

// inFlight marks a slot whose send has not finished: it counts until then.
var inFlight = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

func newRateWindow(r Rate) *rateWindow {
	if r.IsZero() {
		return nil
	}
	return &rateWindow{rate: r, done: make([]time.Time, r.Messages)}
}

// reserve takes a slot for a send starting at now. When none is free it
// returns false and when the next one frees, which is the zero time while
// every slot is held by a send in flight.
func (w *rateWindow) reserve(now time.Time) (slot int, ok bool, freeAt time.Time) {
	if w == nil {
		return -1, true, time.Time{}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	// The ring is in reservation order, but sends finish out of order, so
	// look for any slot that has left the window.
	for i := range w.done {
		j := (w.next + i) % len(w.done)
		t := w.done[j]
		if t.IsZero() || !t.After(now.Add(-w.rate.Per)) {
			w.done[j] = inFlight
			w.next = (j + 1) % len(w.done)
			return j, true, time.Time{}
		}
		if t != inFlight && (freeAt.IsZero() || t.Add(w.rate.Per).Before(freeAt)) {
			freeAt = t.Add(w.rate.Per)
		}
	}
	return -1, false, freeAt
}

// finish records when the send in slot ended. A send that never reached
// the server (sent is false: no session, or refused before MAIL) gives its
// slot back.
func (w *rateWindow) finish(slot int, at time.Time, sent bool) {
	if w == nil || slot < 0 {
		return
	}
	w.mu.Lock()
	if sent {
		w.done[slot] = at
	} else {
		w.done[slot] = time.Time{}
	}
	w.mu.Unlock()
}

// free counts the slots a send could take at now.
func (w *rateWindow) free(now time.Time) (n int, freeAt time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, t := range w.done {
		switch {
		case t.IsZero() || !t.After(now.Add(-w.rate.Per)):
			n++
		case t != inFlight && (freeAt.IsZero() || t.Add(w.rate.Per).Before(freeAt)):
			freeAt = t.Add(w.rate.Per)
		}
	}
	return n, freeAt
}
