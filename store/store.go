// Package store holds the state that a login needs between requests: pending
// logins, single-use link tokens, the outbox of mail to send and the session
// signing keys. Every backend implements Store and passes the conformance
// suite in storetest, so the core never depends on which engine is behind it.
package store

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned when a key does not exist or has expired.
var ErrNotFound = errors.New("store: not found")

// ErrConflict is returned by Update when the key kept changing under it and
// the retry budget ran out. Callers treat it as a transient failure.
var ErrConflict = errors.New("store: too many concurrent updates")

// Store is the key/value contract shared by all backends. Keys are opaque
// strings chosen by the caller (the core uses prefixes such as "login/").
// Values are copied in and out: a caller may reuse its slices freely.
type Store interface {
	// Put writes value under key. A ttl of zero means the key never expires.
	// Put is durable when it returns.
	Put(ctx context.Context, key string, value []byte, ttl time.Duration) error

	// PutMany writes several keys in one atomic, durable step: all of them
	// or none. It costs one sync, where as many Puts cost one each, which
	// is what bounds logins per second on a disk.
	PutMany(ctx context.Context, entries []Entry) error

	// Get returns the value under key, or ErrNotFound.
	Get(ctx context.Context, key string) ([]byte, error)

	// Take reads and deletes key in one atomic step. Of any number of
	// concurrent callers, exactly one gets the value; the others get
	// ErrNotFound. This is how single-use tokens are redeemed.
	Take(ctx context.Context, key string) ([]byte, error)

	// Delete removes key. Deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error

	// Update changes the value under key atomically (compare-and-swap). fn
	// gets the current value, or found=false when the key is missing, and
	// returns the new value. If fn returns an error, nothing is written and
	// Update returns that error. An existing key keeps its expiry; a key
	// created by Update gets ttl (zero: no expiry). When another writer
	// changes the key between the read and the write, fn runs again on the
	// fresh value, a bounded number of times, after which Update returns
	// ErrConflict.
	Update(ctx context.Context, key string, ttl time.Duration, fn func(current []byte, found bool) ([]byte, error)) error

	// Scan calls fn with every live key that starts with prefix and its
	// value, until fn returns false. Keys come in no particular order and
	// keys written during the scan may or may not be seen. It is meant for
	// operator listings, never for the request path.
	Scan(ctx context.Context, prefix string, fn func(key string, value []byte) bool) error

	Outbox
	Log
	Notifier

	// Close releases the backend. No method may be called afterwards.
	Close() error
}

// Entry is one key of a PutMany.
type Entry struct {
	Key   string
	Value []byte
	// TTL of zero means the key never expires.
	TTL time.Duration
}

// Outbox is a persistent queue of messages with leases: a worker claims due
// messages, which hides them from other workers for the lease, and then
// either acknowledges (removes) or reschedules each one. A worker that dies
// holding a lease loses it when the lease runs out, so every message is
// delivered at least once.
type Outbox interface {
	// Enqueue adds a message that becomes claimable at due (the zero time:
	// at once). A later due is how mail is scheduled, such as an escalation
	// to a second approver. ttl bounds how long it may wait in the queue at
	// all (zero: forever); the core sets it to the life of the link the
	// message carries. prio orders it among the due messages (see Claim).
	// Enqueue is durable when it returns.
	Enqueue(ctx context.Context, id string, payload []byte, due time.Time, ttl time.Duration, prio Priority) error

	// Claim returns up to max messages whose due time is at or before now,
	// every due PriorityHigh message before any PriorityLow one, and
	// oldest due first within each, and leases each one until now+lease.
	Claim(ctx context.Context, now time.Time, max int, lease time.Duration) ([]OutboxItem, error)

	// Ack removes a claimed message for good: it was sent or abandoned.
	Ack(ctx context.Context, id string) error

	// Retry reschedules a claimed message to be due at the given time, with
	// its attempt counter incremented.
	Retry(ctx context.Context, id string, at time.Time) error

	// Postpone reschedules a claimed message to be due at the given time
	// without counting an attempt: nothing was tried (every server was at
	// its rate limit or backed off). Like Retry, it returns ErrNotFound for
	// a message that is gone.
	Postpone(ctx context.Context, id string, at time.Time) error

	// OutboxLen reports how many messages are queued, claimed or not.
	OutboxLen(ctx context.Context) (int, error)
}

// Priority orders the due messages of an Outbox: in a burst, the mail
// that someone is waiting for goes before the mail that only informs.
type Priority uint8

const (
	// PriorityHigh is for sign-in links and approval requests. It is the
	// zero value, which messages queued before priorities existed have.
	PriorityHigh Priority = 0
	// PriorityLow is for notices, which nobody waits on.
	PriorityLow Priority = 1
)

// OutboxItem is one claimed outbox message.
type OutboxItem struct {
	// ID is the id given to Enqueue.
	ID string
	// Payload is the bytes given to Enqueue.
	Payload []byte
	// Attempts counts earlier Retry calls for this message.
	Attempts int
	// EnqueuedAt is when the message was first queued.
	EnqueuedAt time.Time
}

// Log is an append-only sequence of records under a name, numbered from 1
// with no gaps, which is what the audit trail's hash chain needs: each
// appender sees the record before its own, even when several processes
// append at once.
type Log interface {
	// Append adds records to the log named log in one atomic, durable
	// step. build is given the current last record (nil for an empty log)
	// and returns the values to append, which get the sequence numbers
	// that follow it. If another appender wins a race, build runs again
	// on the new last record. Records expire ttl after they are appended
	// (zero: never); the last record stays readable through LastRecord
	// even after it expires, so the chain can continue.
	Append(ctx context.Context, log string, ttl time.Duration, build func(last *LogRecord) ([][]byte, error)) error

	// ReadLog returns up to max live records of log whose sequence number
	// is at least from, in ascending order.
	ReadLog(ctx context.Context, log string, from uint64, max int) ([]LogRecord, error)

	// LastRecord returns the most recently appended record of log, or
	// ErrNotFound for a log never appended to.
	LastRecord(ctx context.Context, log string) (LogRecord, error)
}

// LogRecord is one record of a Log.
type LogRecord struct {
	Seq   uint64
	Value []byte
}

// Notifier passes short messages between everything sharing the store,
// other processes included, so that a waiting page or a revocation can
// react at once rather than on its next poll. Delivery is best effort: a
// message published while a subscriber is disconnected is lost, so every
// subscriber also has a slower way to catch up (a poll, a refresh).
type Notifier interface {
	// Publish sends payload to the current subscribers of topic.
	Publish(ctx context.Context, topic string, payload []byte) error

	// Subscribe calls fn with the payload of every message published to
	// topic from now until cancel is called. fn runs on a goroutine of
	// the backend's and must not block. Subscribing must be cheap enough
	// for one per waiting browser.
	Subscribe(topic string, fn func(payload []byte)) (cancel func())
}
