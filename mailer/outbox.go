package mailer

import (
	"context"
	"crypto/cipher"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/store"
)

// Sender delivers one message and names the server that took it.
// An error wrapping ErrPermanent ends the message's delivery; any other
// error is retried later.
type Sender interface {
	Send(ctx context.Context, m *Message) (server string, err error)
}

// EventKind says what happened to a message in the outbox.
type EventKind string

const (
	// EventSent: a server accepted the message.
	EventSent EventKind = "sent"
	// EventFailed: the message was dropped after a permanent error or
	// after too many attempts.
	EventFailed EventKind = "failed"
	// EventRetry: an attempt failed temporarily; the message is due again
	// at Event.RetryAt.
	EventRetry EventKind = "retry"
	// EventAbandoned: the link in the message expired before it could be
	// delivered, so it was dropped unsent.
	EventAbandoned EventKind = "abandoned"
	// EventSkipped: the BeforeSend hook found that a scheduled message no
	// longer matters (the request was decided), so it was dropped unsent.
	EventSkipped EventKind = "skipped"
	// EventDeferred: every server of the message was at its rate limit or
	// backed off after throttling, so the message waits until
	// Event.RetryAt without an attempt being counted.
	EventDeferred EventKind = "deferred"
)

// A Pacer is a Sender that knows how many messages it can start now:
// SMTP, whose servers have rates and back off. The outbox claims no more
// than that, so that a backlog above the servers' rates waits in the
// queue instead of being claimed and put back again and again.
type Pacer interface {
	// Capacity is how many messages could start at now, and, when none
	// can, when one could.
	Capacity(now time.Time) (n int, next time.Time)
}

// BeforeSendFunc decides, right before an attempt, whether a message with
// a Tag is still worth sending. It may rewrite the message (a notice
// that now counts grouped failures). An error postpones the message as a
// temporary failure would.
type BeforeSendFunc func(ctx context.Context, m *Message) (send bool, err error)

// Event reports one outcome of a delivery attempt, for the audit log and
// metrics.
type Event struct {
	// Kind is what happened.
	Kind EventKind
	// Message is the message concerned, with Text and HTML cleared: they
	// hold the sign-in link, which must not reach logs.
	Message *Message
	// Server is the server that accepted or refused the message; for a
	// retry, the last server tried. Empty when no server was tried.
	Server string
	// Code is the SMTP reply code of Server's last answer: 250 when sent,
	// the 4xx or 5xx reply that failed the attempt, or 0 when the server
	// gave no reply (it could not be reached, or TLS failed).
	Code int
	// Attempt counts delivery attempts, this one included (1 for the first).
	// For a message found expired when claimed, it counts the earlier
	// attempts only.
	Attempt int
	// RetryAt is when a retried message is due again.
	RetryAt time.Time
	// Err is why the attempt failed; nil for EventSent.
	Err error
	// Duration is the wall time of this attempt's call to the Sender, for
	// events that followed one; zero when no attempt was made (a message
	// found expired when claimed, or a BeforeSend error).
	Duration time.Duration
}

// Outbox queues messages in a store.Outbox and delivers them in the
// background with retry, backoff and failover. Any number of Outbox values,
// in one process or several, may run on the same store at once: a claimed
// message is leased to one worker, and a worker that dies loses its lease.
type Outbox struct {
	q      store.Outbox
	sender Sender
	logger *zap.Logger
	events func(Event)
	before BeforeSendFunc
	// aeads, when set, seal payloads at rest (see SealWith).
	aeads []cipher.AEAD
	// wake is buffered (1) so that Enqueue never blocks and a burst of
	// enqueues collapses into one extra round.
	wake chan struct{}
	// failing holds the messages whose last attempt here failed, by id,
	// with when each was queued: the age of the oldest is how long mail
	// has been stuck, which is what an operator alerts on.
	failingMu sync.Mutex
	failing   map[string]time.Time
	// waiting holds the sign-in mail (not notices) that this outbox
	// claimed and has not sent yet, by id: how long the oldest has waited
	// is MailDelay. Guarded by failingMu.
	waiting map[string]waitEntry
	// resume is when the Pacer said it can take a message again; zero
	// when it can now. lastPeek is when peek last ran. Both are Run's.
	resume   time.Time
	lastPeek time.Time

	// Tuning, unexported so that tests can shrink it.
	now            func() time.Time
	batch          int
	lease          time.Duration
	poll           time.Duration
	attemptTimeout time.Duration
	maxAttempts    int
	backoffBase    time.Duration
	backoffMax     time.Duration
}

// Defaults for the delivery loop.
const (
	defaultBatch       = 16
	defaultLease       = 2 * time.Minute
	defaultPoll        = time.Second
	defaultMaxAttempts = 12
	defaultBackoffBase = 2 * time.Second
	defaultBackoffMax  = 5 * time.Minute
	// keepAfterExpiry keeps a message in the store this long after its link
	// expires, so that a worker starting after a long outage still finds it
	// and records it as abandoned instead of the store dropping it unseen.
	keepAfterExpiry = 24 * time.Hour
	// An attempt may try several servers, each bounded by its own timeout.
	// It must end well inside the lease, or a second worker could claim
	// the message while the first is still sending it.
	defaultAttemptTimeout = 90 * time.Second
	// bookkeepingTimeout bounds the Ack or Retry after an attempt. It runs
	// detached from Run's context so that an attempt cut short by shutdown
	// is still handed back to the queue.
	bookkeepingTimeout = 10 * time.Second
)

// NewOutbox returns an outbox on q that delivers through sender. events,
// which may be nil, is called synchronously from the worker for every
// outcome; it must not block for long.
func NewOutbox(q store.Outbox, sender Sender, logger *zap.Logger, events func(Event)) *Outbox {
	if logger == nil {
		logger = zap.NewNop()
	}
	if events == nil {
		events = func(Event) {}
	}
	return &Outbox{
		q:              q,
		sender:         sender,
		logger:         logger,
		events:         events,
		wake:           make(chan struct{}, 1),
		failing:        map[string]time.Time{},
		waiting:        map[string]waitEntry{},
		now:            time.Now,
		batch:          defaultBatch,
		lease:          defaultLease,
		poll:           defaultPoll,
		attemptTimeout: defaultAttemptTimeout,
		maxAttempts:    defaultMaxAttempts,
		backoffBase:    defaultBackoffBase,
		backoffMax:     defaultBackoffMax,
	}
}

// BeforeSend installs the hook that vets scheduled messages; call it
// before Run.
func (o *Outbox) BeforeSend(f BeforeSendFunc) { o.before = f }

// Enqueue stores m durably and wakes the worker, so that the mail leaves
// within milliseconds when a server is up. The message stays queued at most
// until m.ExpiresAt (forever when zero); a message that has already expired
// is refused.
func (o *Outbox) Enqueue(ctx context.Context, m *Message) error {
	switch {
	case m.ID == "":
		return errors.New("mailer: outbox: message has no id")
	case m.To == "":
		return fmt.Errorf("mailer: outbox: message %s has no recipient", m.ID)
	case len(m.Servers) == 0:
		return fmt.Errorf("mailer: outbox: message %s names no mail server", m.ID)
	}
	var ttl time.Duration
	if !m.ExpiresAt.IsZero() {
		ttl = m.ExpiresAt.Sub(o.now())
		if ttl <= 0 {
			return fmt.Errorf("mailer: outbox: message %s expired at %s, before it was queued", m.ID, m.ExpiresAt.Format(time.RFC3339))
		}
		ttl += keepAfterExpiry
	}
	payload, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("mailer: outbox: encoding message %s: %w", m.ID, err)
	}
	if payload, err = o.seal(m.ID, payload); err != nil {
		return fmt.Errorf("mailer: outbox: sealing message %s: %w", m.ID, err)
	}
	prio := store.PriorityHigh
	if m.Notice {
		prio = store.PriorityLow
	}
	if err := o.q.Enqueue(ctx, m.ID, payload, m.NotBefore, ttl, prio); err != nil {
		return fmt.Errorf("mailer: outbox: queueing message %s: %w", m.ID, err)
	}
	select {
	case o.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
	return nil
}

// Run delivers due messages until ctx is done, then returns once no attempt
// is in flight. An attempt cut short by ctx is put back in the queue, due at
// once, for whichever worker runs next.
func (o *Outbox) Run(ctx context.Context) {
	ticker := time.NewTicker(o.poll)
	defer ticker.Stop()
	for {
		// A full batch suggests more are due: keep claiming before sleeping.
		for ctx.Err() == nil {
			if o.round(ctx) < o.batch {
				break
			}
		}
		var resume <-chan time.Time
		timer := (*time.Timer)(nil)
		if !o.resume.IsZero() {
			// Real time: the servers' rates run on it.
			timer = time.NewTimer(time.Until(o.resume))
			resume = timer.C
		}
		select {
		case <-ctx.Done():
		case <-o.wake:
		case <-ticker.C:
		case <-resume:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// round claims one batch and delivers it concurrently, so that one slow
// server does not hold the rest of the batch past its lease. It returns how
// many messages it claimed.
func (o *Outbox) round(ctx context.Context) int {
	n := o.batch
	o.resume = time.Time{}
	if p, ok := o.sender.(Pacer); ok {
		c, next := p.Capacity(time.Now())
		if c <= 0 {
			o.resume = next
			if time.Since(o.lastPeek) >= o.poll {
				o.lastPeek = time.Now()
				o.peek(ctx)
			}
			return 0
		}
		n = min(n, c)
	}
	items, err := o.q.Claim(ctx, o.now(), n, o.lease)
	if err != nil {
		if ctx.Err() == nil {
			o.logger.Error("claiming outbox messages", zap.Error(err))
		}
		return 0
	}
	var wg sync.WaitGroup
	for _, item := range items {
		wg.Go(func() { o.deliver(ctx, item) })
	}
	wg.Wait()
	return len(items)
}

// peek looks at the head of the queue while the Pacer can take nothing:
// the oldest due message is claimed and put straight back where it was,
// unsent, so that MailDelay knows how long the backlog has been waiting
// though none of it is claimed for sending. Run calls it at most once a
// poll interval.
func (o *Outbox) peek(ctx context.Context) {
	items, err := o.q.Claim(ctx, o.now(), 1, o.lease)
	if err != nil {
		return
	}
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeepingTimeout)
	defer cancel()
	for _, item := range items {
		var m Message
		payload, err := o.open(item.ID, item.Payload)
		if err == nil {
			err = json.Unmarshal(payload, &m)
		}
		due := item.EnqueuedAt
		if err == nil {
			due = maxTime(due, m.NotBefore)
			if !m.Notice {
				o.track(m.ID, due)
				// Counted until a later peek or claim takes it again.
				o.failingMu.Lock()
				o.waiting[m.ID] = waitEntry{since: o.waiting[m.ID].since, until: o.now().Add(3 * o.poll)}
				o.failingMu.Unlock()
			}
		}
		// Back to its own due time, so that it keeps its place at the head.
		if err := o.q.Postpone(bctx, item.ID, due); err != nil {
			o.logger.Error("returning a peeked outbox message", zap.String("id", item.ID), zap.Error(err))
		}
	}
}

// deliver makes one attempt at one claimed message and settles it in the
// queue: acknowledged when done with, rescheduled otherwise.
func (o *Outbox) deliver(ctx context.Context, item store.OutboxItem) {
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeepingTimeout)
	defer cancel()

	m, ok := o.decode(bctx, item)
	if !ok || !o.stillWanted(bctx, item, m) {
		return
	}
	sctx, scancel := context.WithTimeout(ctx, o.attemptTimeout)
	// Real time, not o.now: tests fake the clock for scheduling, and this
	// measures the server.
	began := time.Now()
	server, err := o.sender.Send(sctx, m)
	took := time.Since(began)
	scancel()
	o.settle(ctx, bctx, item, Event{Message: m, Server: server, Attempt: item.Attempts + 1, Err: err, Duration: took})
}

// decode opens and reads a claimed message. One that does not read would
// fail the same way on every claim, so it is dropped, not kept to repeat
// the error forever.
func (o *Outbox) decode(bctx context.Context, item store.OutboxItem) (*Message, bool) {
	var m Message
	payload, err := o.open(item.ID, item.Payload)
	if err == nil {
		err = json.Unmarshal(payload, &m)
	}
	if err != nil {
		o.logger.Error("dropping undecodable outbox message", zap.String("id", item.ID), zap.Error(err))
		o.ack(bctx, item.ID)
		return nil, false
	}
	if !m.Notice {
		o.track(m.ID, maxTime(item.EnqueuedAt, m.NotBefore))
	}
	return &m, true
}

// stillWanted settles a message that should not be sent any more: its link
// has expired, or the BeforeSend hook says its moment has passed (or, on
// an error, retries it later). It reports whether to send it now.
func (o *Outbox) stillWanted(bctx context.Context, item store.OutboxItem, m *Message) bool {
	if o.expired(m, o.now()) {
		o.ack(bctx, item.ID)
		o.emit(Event{Kind: EventAbandoned, Message: m, Attempt: item.Attempts,
			Err: fmt.Errorf("mailer: link expired at %s before delivery", m.ExpiresAt.Format(time.RFC3339))})
		return false
	}
	if o.before == nil || m.Tag == "" {
		return true
	}
	send, err := o.before(bctx, m)
	switch {
	case err != nil:
		attempt := item.Attempts + 1
		o.retry(bctx, Event{Message: m, Attempt: attempt, RetryAt: o.now().Add(o.backoff(attempt)), Err: err}, item.EnqueuedAt)
		return false
	case !send:
		o.ack(bctx, item.ID)
		o.emit(Event{Kind: EventSkipped, Message: m, Attempt: item.Attempts})
		return false
	}
	return true
}

// settle records the outcome of an attempt (ev: its message, the server
// that answered, the attempt's number, error and duration) in the queue
// and reports it: sent and permanent failures are acknowledged, a
// deferral postpones without counting an attempt, and other failures are
// retried with backoff until the attempts or the link's life run out.
func (o *Outbox) settle(ctx, bctx context.Context, item store.OutboxItem, ev Event) {
	m, err := ev.Message, ev.Err
	if se := lastServerError(err); se != nil {
		ev.Server, ev.Code = se.server, se.code
	}
	var deferred *DeferredError
	switch {
	case err == nil:
		o.ack(bctx, item.ID)
		// Success means the server took the data: SMTP's 250.
		ev.Kind, ev.Code = EventSent, 250
	case errors.Is(err, ErrPermanent):
		o.ack(bctx, item.ID)
		ev.Kind = EventFailed
	case errors.As(err, &deferred) && ctx.Err() == nil:
		// Nothing was refused for this message's sake: its attempts stay.
		ev.Attempt = item.Attempts
		if o.expired(m, deferred.Until) {
			o.ack(bctx, item.ID)
			ev.Kind = EventAbandoned
			break
		}
		if err := o.q.Postpone(bctx, item.ID, deferred.Until); err != nil {
			o.logger.Error("postponing outbox message", zap.String("id", item.ID), zap.Error(err))
		}
		o.held(item.ID, deferred.Until)
		ev.Kind, ev.RetryAt = EventDeferred, deferred.Until
	case ctx.Err() != nil:
		// Shutting down (often a config reload, whose new worker is already
		// running): hand the message back now rather than after the lease.
		ev.RetryAt = o.now()
		o.retry(bctx, ev, item.EnqueuedAt)
		return
	case ev.Attempt >= o.maxAttempts:
		o.ack(bctx, item.ID)
		ev.Kind, ev.Err = EventFailed, fmt.Errorf("mailer: giving up after %d attempts: %w", ev.Attempt, err)
	default:
		at := o.now().Add(o.backoff(ev.Attempt))
		if !o.expired(m, at) {
			ev.RetryAt = at
			o.retry(bctx, ev, item.EnqueuedAt)
			return
		}
		// The link would be dead before the next attempt; say so now, as
		// the store may drop the message silently at its expiry.
		o.ack(bctx, item.ID)
		ev.Kind = EventAbandoned
	}
	o.emit(ev)
}

// expired reports whether m's link no longer works at t.
func (o *Outbox) expired(m *Message, t time.Time) bool {
	return !m.ExpiresAt.IsZero() && !t.Before(m.ExpiresAt)
}

// backoff is the wait after the given failed attempt: base, 2×base, 4×base…
// up to backoffMax.
func (o *Outbox) backoff(attempt int) time.Duration {
	d := o.backoffBase
	for i := 1; i < attempt && d < o.backoffMax; i++ {
		d *= 2
	}
	return min(d, o.backoffMax)
}

// retry reschedules e.Message for e.RetryAt and reports e as a retry.
func (o *Outbox) retry(ctx context.Context, e Event, queued time.Time) {
	o.failingMu.Lock()
	o.failing[e.Message.ID] = queued
	o.failingMu.Unlock()
	o.held(e.Message.ID, e.RetryAt)
	if err := o.q.Retry(ctx, e.Message.ID, e.RetryAt); err != nil {
		// The lease will run out and the message be claimed again, so the
		// only cost is a later retry than planned.
		o.logger.Error("rescheduling outbox message", zap.String("id", e.Message.ID), zap.Error(err))
	}
	e.Kind = EventRetry
	o.emit(e)
}

func (o *Outbox) ack(ctx context.Context, id string) {
	o.failingMu.Lock()
	delete(o.failing, id)
	delete(o.waiting, id)
	o.failingMu.Unlock()
	if err := o.q.Ack(ctx, id); err != nil {
		// The message will be claimed again when its lease runs out and may
		// then be sent twice; nothing better can be done here.
		o.logger.Error("acknowledging outbox message", zap.String("id", id), zap.Error(err))
	}
}

// OldestFailing is the age of the oldest message that this outbox tried,
// failed to deliver and still holds for another attempt; zero when none.
// A message retried by another instance sharing the store counts there.
func (o *Outbox) OldestFailing() time.Duration {
	o.failingMu.Lock()
	defer o.failingMu.Unlock()
	var oldest time.Time
	for _, t := range o.failing {
		if oldest.IsZero() || t.Before(oldest) {
			oldest = t
		}
	}
	if oldest.IsZero() {
		return 0
	}
	return o.now().Sub(oldest)
}

// waitEntry is one message of Outbox.waiting.
type waitEntry struct {
	// since is when the message became due.
	since time.Time
	// until is when this outbox stops counting it: zero while an attempt
	// is in flight here; once the message is put back, the end of the
	// lease that its next claim takes, after which it is either sent or
	// claimed (by this instance or another sharing the store).
	until time.Time
}

// track counts message id as waiting since it became due, from its claim
// until it is done with.
func (o *Outbox) track(id string, since time.Time) {
	o.failingMu.Lock()
	defer o.failingMu.Unlock()
	if e, ok := o.waiting[id]; ok && e.since.Before(since) {
		since = e.since
	}
	o.waiting[id] = waitEntry{since: since}
}

// held notes that message id was put back in the queue until at.
func (o *Outbox) held(id string, at time.Time) {
	o.failingMu.Lock()
	defer o.failingMu.Unlock()
	if e, ok := o.waiting[id]; ok {
		e.until = at.Add(o.lease)
		o.waiting[id] = e
	}
}

// MailDelay is how long the sign-in mail that this outbox is working on
// has been waiting to leave: the oldest sign-in link or approval request
// that it claimed and has not sent, whether the attempt is in flight,
// failed and waits for a retry, or is held back by the servers' rates.
// Notices do not count. Zero when no such mail waits. In a burst the queue
// is claimed oldest first, so this is also how far behind the queue is.
func (o *Outbox) MailDelay() time.Duration {
	now := o.now()
	o.failingMu.Lock()
	defer o.failingMu.Unlock()
	var oldest time.Time
	for id, e := range o.waiting {
		if !e.until.IsZero() && now.After(e.until) {
			delete(o.waiting, id)
			continue
		}
		if oldest.IsZero() || e.since.Before(oldest) {
			oldest = e.since
		}
	}
	if oldest.IsZero() || now.Before(oldest) {
		return 0
	}
	return now.Sub(oldest)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// emit logs the event and passes it on, without the message body.
func (o *Outbox) emit(e Event) {
	if e.Message != nil {
		safe := *e.Message
		safe.Text, safe.HTML = "", ""
		e.Message = &safe
	}
	fields := []zap.Field{zap.Object("message", e.Message), zap.Int("attempt", e.Attempt)}
	if e.Server != "" {
		fields = append(fields, zap.String("server", e.Server), zap.Int("code", e.Code))
	}
	switch e.Kind {
	case EventSent:
		o.logger.Info("mail sent", fields...)
	case EventRetry:
		o.logger.Warn("mail delayed", append(fields, zap.Time("retry_at", e.RetryAt), zap.Error(e.Err))...)
	case EventDeferred:
		// One per message held back in a burst; the server's backoff is
		// logged once, by SMTP's OnThrottle.
		if ce := o.logger.Check(zap.DebugLevel, "mail deferred"); ce != nil {
			ce.Write(append(fields, zap.Time("retry_at", e.RetryAt), zap.Error(e.Err))...)
		}
	case EventAbandoned:
		o.logger.Warn("mail abandoned", append(fields, zap.Error(e.Err))...)
	case EventFailed:
		o.logger.Error("mail failed", append(fields, zap.Error(e.Err))...)
	}
	o.events(e)
}
