package mailer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mailauth/caddy-mailauth/store"
)

const secretLink = "https://apps.example.com/.mailauth/verify?token=s3cr3t-token"

var errTempFail = errors.New("451 4.3.0 try again later")

type harness struct {
	clock  *fakeClock
	q      *fakeQueue
	sender *fakeSender
	ev     events
	logs   *observer.ObservedLogs
	o      *Outbox
}

func newHarness(t *testing.T, sender *fakeSender) *harness {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	h := &harness{clock: newFakeClock(), sender: sender, ev: make(events, 100), logs: logs}
	h.q = newFakeQueue(h.clock)
	h.o = newTestOutbox(h, zap.New(core))
	return h
}

func newTestOutbox(h *harness, logger *zap.Logger) *Outbox {
	o := NewOutbox(h.q, h.sender, logger, h.ev.record)
	o.now = h.clock.Now
	o.poll = 5 * time.Millisecond
	return o
}

// run starts o.Run and stops it when the test ends, checking that it
// returns once cancelled.
func run(t *testing.T, o *Outbox) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		o.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5s of its context being cancelled")
		}
	})
}

func (h *harness) message(id string) *Message {
	return &Message{
		ID:        id,
		Servers:   []string{"primary", "backup"},
		To:        "alice@example.com",
		Subject:   "Sign in to apps.example.com",
		Text:      "Open " + secretLink,
		HTML:      `<a href="` + secretLink + `">Sign in</a>`,
		ExpiresAt: h.clock.Now().Add(15 * time.Minute),
		Reference: "REF-" + id,
	}
}

func (h *harness) enqueue(t *testing.T, m *Message) {
	t.Helper()
	if err := h.o.Enqueue(context.Background(), m); err != nil {
		t.Fatalf("Enqueue(%s) failed: %v", m.ID, err)
	}
}

func expectKind(t *testing.T, ev Event, kind EventKind, attempt int) {
	t.Helper()
	if ev.Kind != kind || ev.Attempt != attempt {
		t.Fatalf("got %s event for attempt %d (err %v), want %s for attempt %d", ev.Kind, ev.Attempt, ev.Err, kind, attempt)
	}
}

func TestOutboxSendsQueuedMessageAndAcksIt(t *testing.T) {
	h := newHarness(t, &fakeSender{})
	run(t, h.o)
	h.enqueue(t, h.message("m1"))

	ev := h.ev.next(t)
	expectKind(t, ev, EventSent, 1)
	if ev.Server != "primary" || ev.Message.ID != "m1" || ev.Err != nil {
		t.Errorf("sent event = server %q, message %q, err %v; want primary, m1, nil", ev.Server, ev.Message.ID, ev.Err)
	}
	if calls := h.sender.calls(); len(calls) != 1 || calls[0].Text != "Open "+secretLink {
		t.Errorf("sender got %d calls (%+v), want one with the full message body", len(calls), calls)
	}
	waitFor(t, "the sent message to be acked", func() bool { return h.q.len() == 0 })
}

func TestOutboxEventsAndLogsNeverCarryTheLink(t *testing.T) {
	h := newHarness(t, &fakeSender{fn: func(context.Context, *Message) (string, error) {
		return "", fmt.Errorf("550 rejected %s: %w", "x", ErrPermanent)
	}})
	run(t, h.o)
	h.enqueue(t, h.message("m1"))

	ev := h.ev.next(t)
	if ev.Message.Text != "" || ev.Message.HTML != "" {
		t.Errorf("event message carries the body (text %q, html %q); it holds the link", ev.Message.Text, ev.Message.HTML)
	}
	for _, entry := range h.logs.All() {
		if line := fmt.Sprint(entry.Message, entry.ContextMap()); strings.Contains(line, "s3cr3t") {
			t.Errorf("log entry leaks the link: %s", line)
		}
	}
	if h.logs.FilterMessage("mail failed").Len() != 1 {
		t.Errorf("want one %q log entry, got logs %v", "mail failed", h.logs.All())
	}
}

func TestOutboxRetriesTemporaryFailureWithExponentialBackoff(t *testing.T) {
	var n atomic.Int32
	h := newHarness(t, &fakeSender{fn: func(context.Context, *Message) (string, error) {
		if n.Add(1) <= 3 {
			return "", errTempFail
		}
		return "backup", nil
	}})
	run(t, h.o)
	h.enqueue(t, h.message("m1"))

	waits := []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second}
	for i, wait := range waits {
		ev := h.ev.next(t)
		expectKind(t, ev, EventRetry, i+1)
		if got := ev.RetryAt.Sub(h.clock.Now()); got != wait {
			t.Fatalf("attempt %d is retried after %s, want %s", i+1, got, wait)
		}
		if !errors.Is(ev.Err, errTempFail) {
			t.Errorf("retry event err = %v, want the sender's error", ev.Err)
		}
		// The worker keeps polling; it must not send before the retry is due.
		before := h.q.claimCount()
		waitFor(t, "the worker to poll again", func() bool { return h.q.claimCount() > before+2 })
		if got := len(h.sender.calls()); got != i+1 {
			t.Fatalf("sender called %d times before the retry was due, want %d", got, i+1)
		}
		h.clock.Advance(wait)
	}
	ev := h.ev.next(t)
	expectKind(t, ev, EventSent, 4)
	if ev.Server != "backup" {
		t.Errorf("sent through %q, want backup", ev.Server)
	}
	waitFor(t, "the message to be acked", func() bool { return h.q.len() == 0 })
}

func TestOutboxBackoffDoublesFromTwoSecondsAndStopsAtFiveMinutes(t *testing.T) {
	o := NewOutbox(nil, nil, nil, nil)
	want := []time.Duration{2, 4, 8, 16, 32, 64, 128, 256}
	for i, w := range want {
		if got := o.backoff(i + 1); got != w*time.Second {
			t.Errorf("backoff(%d) = %s, want %s", i+1, got, w*time.Second)
		}
	}
	for _, attempt := range []int{9, 12, 100} {
		if got := o.backoff(attempt); got != 5*time.Minute {
			t.Errorf("backoff(%d) = %s, want the 5m cap", attempt, got)
		}
	}
}

func TestOutboxGivesUpAfterMaxAttempts(t *testing.T) {
	h := newHarness(t, &fakeSender{fn: func(context.Context, *Message) (string, error) { return "", errTempFail }})
	h.o.maxAttempts = 3
	run(t, h.o)
	h.enqueue(t, h.message("m1"))

	expectKind(t, h.ev.next(t), EventRetry, 1)
	h.clock.Advance(2 * time.Second)
	expectKind(t, h.ev.next(t), EventRetry, 2)
	h.clock.Advance(4 * time.Second)
	ev := h.ev.next(t)
	expectKind(t, ev, EventFailed, 3)
	if !errors.Is(ev.Err, errTempFail) || !strings.Contains(ev.Err.Error(), "3 attempts") {
		t.Errorf("failed event err = %v, want it to say it gave up after 3 attempts and wrap the cause", ev.Err)
	}
	waitFor(t, "the message to be dropped", func() bool { return h.q.len() == 0 })
}

func TestOutboxDropsMessageOnPermanentErrorWithoutRetry(t *testing.T) {
	h := newHarness(t, &fakeSender{fn: func(context.Context, *Message) (string, error) {
		return "primary", fmt.Errorf("550 5.1.1 no such user: %w", ErrPermanent)
	}})
	run(t, h.o)
	h.enqueue(t, h.message("m1"))

	ev := h.ev.next(t)
	expectKind(t, ev, EventFailed, 1)
	if ev.Server != "primary" {
		t.Errorf("failed event server = %q, want the server that refused (primary)", ev.Server)
	}
	waitFor(t, "the message to be dropped", func() bool { return h.q.len() == 0 })
	h.clock.Advance(time.Hour)
	h.ev.none(t, 50*time.Millisecond)
	if got := len(h.sender.calls()); got != 1 {
		t.Errorf("sender called %d times, want 1: a permanent error must not be retried", got)
	}
}

func TestOutboxAbandonsExpiredMessageWithoutSending(t *testing.T) {
	h := newHarness(t, &fakeSender{})
	m := h.message("m1")
	m.ExpiresAt = h.clock.Now().Add(time.Minute)
	h.enqueue(t, m)
	h.clock.Advance(2 * time.Minute) // all workers were down until the link died

	run(t, h.o)
	ev := h.ev.next(t)
	expectKind(t, ev, EventAbandoned, 0)
	if got := len(h.sender.calls()); got != 0 {
		t.Errorf("sender called %d times for an expired link, want 0", got)
	}
	waitFor(t, "the message to be dropped", func() bool { return h.q.len() == 0 })
}

func TestOutboxAbandonsWhenTheNextRetryWouldComeAfterExpiry(t *testing.T) {
	h := newHarness(t, &fakeSender{fn: func(context.Context, *Message) (string, error) { return "", errTempFail }})
	m := h.message("m1")
	m.ExpiresAt = h.clock.Now().Add(time.Second) // shorter than the first 2s backoff
	run(t, h.o)
	h.enqueue(t, m)

	ev := h.ev.next(t)
	expectKind(t, ev, EventAbandoned, 1)
	if !errors.Is(ev.Err, errTempFail) {
		t.Errorf("abandoned event err = %v, want the last delivery error", ev.Err)
	}
	waitFor(t, "the message to be dropped", func() bool { return h.q.len() == 0 })
}

func TestOutboxAcksPayloadThatDoesNotDecode(t *testing.T) {
	h := newHarness(t, &fakeSender{})
	if err := h.q.Enqueue(context.Background(), "junk", []byte("{not json"), time.Time{}, 0, store.PriorityHigh); err != nil {
		t.Fatal(err)
	}
	run(t, h.o)

	waitFor(t, "the undecodable message to be dropped", func() bool { return h.q.len() == 0 })
	if got := len(h.sender.calls()); got != 0 {
		t.Errorf("sender called %d times for an undecodable payload, want 0", got)
	}
	if h.logs.FilterMessage("dropping undecodable outbox message").Len() != 1 {
		t.Errorf("want the dropped payload logged once, logs: %v", h.logs.All())
	}
}

func TestOutboxEnqueueWakesTheWorkerWithoutWaitingForThePoll(t *testing.T) {
	h := newHarness(t, &fakeSender{})
	h.o.poll = time.Hour // only a wake-up can trigger the delivery
	run(t, h.o)
	waitFor(t, "the worker's first round", func() bool { return h.q.claimCount() >= 1 })

	start := time.Now()
	h.enqueue(t, h.message("m1"))
	expectKind(t, h.ev.next(t), EventSent, 1)
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("delivery took %s after Enqueue, want well under a second", took)
	}
}

func TestOutboxDeliversMessageOfCrashedWorkerOnceItsLeaseRunsOut(t *testing.T) {
	h := newHarness(t, &fakeSender{})
	h.enqueue(t, h.message("m1"))
	// A worker claims the message and dies without acking it.
	if items, err := h.q.Claim(context.Background(), h.clock.Now(), 16, h.o.lease); err != nil || len(items) != 1 {
		t.Fatalf("crashed worker's claim = %d items, %v; want 1", len(items), err)
	}

	run(t, h.o)
	before := h.q.claimCount()
	waitFor(t, "the live worker to poll", func() bool { return h.q.claimCount() > before+3 })
	if got := len(h.sender.calls()); got != 0 {
		t.Fatalf("message sent %d times while another worker held its lease, want 0", got)
	}

	h.clock.Advance(h.o.lease)
	expectKind(t, h.ev.next(t), EventSent, 1)
	waitFor(t, "the message to be acked", func() bool { return h.q.len() == 0 })
}

func TestTwoOutboxesOnOneQueueSendEachMessageOnce(t *testing.T) {
	var mu sync.Mutex
	count := map[string]int{}
	sender := &fakeSender{fn: func(_ context.Context, m *Message) (string, error) {
		time.Sleep(time.Millisecond) // widen the window for overlapping claims
		mu.Lock()
		count[m.ID]++
		mu.Unlock()
		return "primary", nil
	}}
	h := newHarness(t, sender)
	second := newTestOutbox(h, zap.NewNop())
	run(t, h.o)
	run(t, second)

	const total = 40
	for i := range total {
		o := h.o
		if i%2 == 1 {
			o = second
		}
		if err := o.Enqueue(context.Background(), h.message(fmt.Sprintf("m%02d", i))); err != nil {
			t.Fatal(err)
		}
	}
	for range total {
		if ev := h.ev.next(t); ev.Kind != EventSent {
			t.Fatalf("got %s event (err %v), want only sent events", ev.Kind, ev.Err)
		}
	}
	waitFor(t, "the queue to drain", func() bool { return h.q.len() == 0 })
	mu.Lock()
	defer mu.Unlock()
	if len(count) != total {
		t.Errorf("%d distinct messages sent, want %d", len(count), total)
	}
	for id, n := range count {
		if n != 1 {
			t.Errorf("message %s sent %d times, want once", id, n)
		}
	}
}

func TestOutboxRunWaitsForInFlightSendAndHandsTheMessageBack(t *testing.T) {
	started := make(chan struct{})
	var returned atomic.Bool
	h := newHarness(t, &fakeSender{fn: func(ctx context.Context, _ *Message) (string, error) {
		close(started)
		<-ctx.Done()
		time.Sleep(20 * time.Millisecond) // a send that takes a moment to abort
		returned.Store(true)
		return "", ctx.Err()
	}})
	h.enqueue(t, h.message("m1"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		h.o.Run(ctx)
		close(done)
	}()
	<-started
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if !returned.Load() {
		t.Fatal("Run returned while a send was still in flight")
	}
	it, ok := h.q.item("m1")
	if !ok {
		t.Fatal("the interrupted message was removed from the queue, want it kept for the next worker")
	}
	if !it.leaseUntil.IsZero() || it.due.After(h.clock.Now()) {
		t.Errorf("interrupted message is due %s with lease until %s; want it due now without a lease", it.due, it.leaseUntil)
	}
}

func TestEnqueueKeepsTheMessageADayPastItsLinkSoAnAbandonIsRecorded(t *testing.T) {
	h := newHarness(t, &fakeSender{})
	h.enqueue(t, h.message("m1"))
	if got, want := h.q.ttls["m1"], 15*time.Minute+keepAfterExpiry; got != want {
		t.Errorf("queued with ttl %s, want %s (the link's life and a day in which a restarted worker can still record the abandon)", got, want)
	}
}

func TestEnqueueRefusesUnusableMessages(t *testing.T) {
	h := newHarness(t, &fakeSender{})
	for name, mutate := range map[string]func(*Message){
		"expired link":   func(m *Message) { m.ExpiresAt = h.clock.Now().Add(-time.Second) },
		"expiring now":   func(m *Message) { m.ExpiresAt = h.clock.Now() },
		"no id":          func(m *Message) { m.ID = "" },
		"no recipient":   func(m *Message) { m.To = "" },
		"no mail server": func(m *Message) { m.Servers = nil },
	} {
		m := h.message("m1")
		mutate(m)
		if err := h.o.Enqueue(context.Background(), m); err == nil {
			t.Errorf("%s: Enqueue accepted the message, want an error", name)
		}
	}
	if n := h.q.len(); n != 0 {
		t.Errorf("%d refused messages reached the queue, want 0", n)
	}
}

func TestOutboxEventCarriesAttemptDuration(t *testing.T) {
	// The sender takes a measurable time, whatever the fake clock says.
	const took = 20 * time.Millisecond
	h := newHarness(t, &fakeSender{fn: func(context.Context, *Message) (string, error) {
		time.Sleep(took)
		return "primary", nil
	}})
	run(t, h.o)
	h.enqueue(t, h.message("m1"))

	ev := h.ev.next(t)
	expectKind(t, ev, EventSent, 1)
	if ev.Duration < took {
		t.Errorf("sent event Duration = %v, want at least the %v the sender took", ev.Duration, took)
	}
}

func TestOutboxOldestFailingAgesUntilDelivered(t *testing.T) {
	var n atomic.Int32
	h := newHarness(t, &fakeSender{fn: func(context.Context, *Message) (string, error) {
		if n.Add(1) <= 2 {
			return "", errTempFail
		}
		return "primary", nil
	}})
	if got := h.o.OldestFailing(); got != 0 {
		t.Fatalf("OldestFailing of an idle outbox = %v", got)
	}
	run(t, h.o)
	h.enqueue(t, h.message("m1"))
	expectKind(t, h.ev.next(t), EventRetry, 1)
	h.clock.Advance(2 * time.Second)
	expectKind(t, h.ev.next(t), EventRetry, 2)
	if got := h.o.OldestFailing(); got < 2*time.Second {
		t.Errorf("OldestFailing after two failed attempts 2s apart = %v; want at least 2s", got)
	}
	h.clock.Advance(4 * time.Second)
	expectKind(t, h.ev.next(t), EventSent, 3)
	waitFor(t, "the message to be acked", func() bool { return h.o.OldestFailing() == 0 })
}

func TestOutboxHoldsDeferredMailWithoutCountingAnAttemptAndReportsTheDelay(t *testing.T) {
	var n atomic.Int32
	var h *harness
	h = newHarness(t, &fakeSender{fn: func(context.Context, *Message) (string, error) {
		if n.Add(1) <= 2 {
			return "", &DeferredError{Until: h.clock.Now().Add(time.Minute)}
		}
		return "primary", nil
	}})
	run(t, h.o)
	h.enqueue(t, h.message("m1"))

	ev := h.ev.next(t)
	expectKind(t, ev, EventDeferred, 0)
	if want := h.clock.Now().Add(time.Minute); !ev.RetryAt.Equal(want) {
		t.Errorf("deferred until %v; want %v, the time the sender gave", ev.RetryAt, want)
	}
	if it, ok := h.q.item("m1"); !ok || it.Attempts != 0 {
		t.Fatalf("queue holds %+v (found %v); want m1 with 0 attempts: a deferral is not an attempt", it, ok)
	}
	h.clock.Advance(30 * time.Second)
	if d := h.o.MailDelay(); d != 30*time.Second {
		t.Errorf("MailDelay with m1 held for 30s = %v; want 30s", d)
	}
	h.clock.Advance(30 * time.Second)
	expectKind(t, h.ev.next(t), EventDeferred, 0)
	h.clock.Advance(time.Minute)
	expectKind(t, h.ev.next(t), EventSent, 1)
	if d := h.o.MailDelay(); d != 0 {
		t.Errorf("MailDelay once m1 is sent = %v; want 0", d)
	}
}

func TestNoticesDoNotCountAsDelayedSignInMail(t *testing.T) {
	var h *harness
	h = newHarness(t, &fakeSender{fn: func(context.Context, *Message) (string, error) {
		return "", &DeferredError{Until: h.clock.Now().Add(time.Minute)}
	}})
	run(t, h.o)
	m := h.message("n1")
	m.Notice = true
	h.enqueue(t, m)
	expectKind(t, h.ev.next(t), EventDeferred, 0)
	h.clock.Advance(30 * time.Second)
	if d := h.o.MailDelay(); d != 0 {
		t.Errorf("MailDelay with only a notice held = %v; want 0, nobody waits on notices", d)
	}
}
