package mailer

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/mailauth/caddy-mailauth/store"
)

// fakeClock is a settable clock shared by a test, its outbox and its queue.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 3, 4, 9, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fakeQueue is an in-memory store.Outbox with the same lease semantics as
// the real backends: a claimed item is invisible until its lease ends.
type fakeQueue struct {
	clock *fakeClock

	mu     sync.Mutex
	items  map[string]*fakeItem
	claims int
	ttls   map[string]time.Duration
}

type fakeItem struct {
	store.OutboxItem
	due        time.Time
	leaseUntil time.Time
	prio       store.Priority
}

func newFakeQueue(clock *fakeClock) *fakeQueue {
	return &fakeQueue{clock: clock, items: map[string]*fakeItem{}, ttls: map[string]time.Duration{}}
}

func (q *fakeQueue) Enqueue(_ context.Context, id string, payload []byte, due time.Time, ttl time.Duration, prio store.Priority) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.clock.Now()
	if due.IsZero() {
		due = now
	}
	q.items[id] = &fakeItem{
		OutboxItem: store.OutboxItem{ID: id, Payload: append([]byte(nil), payload...), EnqueuedAt: now},
		due:        due,
		prio:       prio,
	}
	q.ttls[id] = ttl
	return nil
}

func (q *fakeQueue) Claim(_ context.Context, now time.Time, max int, lease time.Duration) ([]store.OutboxItem, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.claims++
	var due []*fakeItem
	for _, it := range q.items {
		if !it.due.After(now) && !it.leaseUntil.After(now) {
			due = append(due, it)
		}
	}
	sort.Slice(due, func(i, j int) bool {
		if due[i].prio != due[j].prio {
			return due[i].prio < due[j].prio
		}
		return due[i].due.Before(due[j].due)
	})
	if len(due) > max {
		due = due[:max]
	}
	out := make([]store.OutboxItem, 0, len(due))
	for _, it := range due {
		it.leaseUntil = now.Add(lease)
		out = append(out, it.OutboxItem)
	}
	return out, nil
}

func (q *fakeQueue) Ack(_ context.Context, id string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.items, id)
	return nil
}

func (q *fakeQueue) Retry(_ context.Context, id string, at time.Time) error {
	return q.reschedule(id, at, 1)
}

func (q *fakeQueue) Postpone(_ context.Context, id string, at time.Time) error {
	return q.reschedule(id, at, 0)
}

func (q *fakeQueue) reschedule(id string, at time.Time, attempts int) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	it, ok := q.items[id]
	if !ok {
		return store.ErrNotFound
	}
	it.due = at
	it.leaseUntil = time.Time{}
	it.Attempts += attempts
	return nil
}

func (q *fakeQueue) OutboxLen(context.Context) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items), nil
}

func (q *fakeQueue) len() int {
	n, _ := q.OutboxLen(context.Background())
	return n
}

func (q *fakeQueue) claimCount() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.claims
}

func (q *fakeQueue) item(id string) (fakeItem, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	it, ok := q.items[id]
	if !ok {
		return fakeItem{}, false
	}
	return *it, true
}

// fakeSender answers each Send with fn and records what it was given.
type fakeSender struct {
	fn func(ctx context.Context, m *Message) (string, error)

	mu   sync.Mutex
	sent []Message
}

func (s *fakeSender) Send(ctx context.Context, m *Message) (string, error) {
	s.mu.Lock()
	s.sent = append(s.sent, *m)
	s.mu.Unlock()
	if s.fn == nil {
		return "primary", nil
	}
	return s.fn(ctx, m)
}

func (s *fakeSender) calls() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.sent...)
}

// events collects outbox events for a test to wait on.
type events chan Event

func (e events) record(ev Event) { e <- ev }

// next returns the next event, failing the test if none comes in time.
func (e events) next(t *testing.T) Event {
	t.Helper()
	select {
	case ev := <-e:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no outbox event within 5s")
		return Event{}
	}
}

// none fails the test if an event arrives within d.
func (e events) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case ev := <-e:
		t.Fatalf("unexpected %s event (attempt %d, err %v)", ev.Kind, ev.Attempt, ev.Err)
	case <-time.After(d):
	}
}

// waitFor polls cond until it holds, failing with what after 5s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
