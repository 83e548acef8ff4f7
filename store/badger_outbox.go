package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// The outbox is two sets of keys, written together in one transaction and
// with the same expiry, so that they appear and vanish together:
//
//	queue:   'q' + due + id  →  outboxRecord (enqueued, attempts, payload)
//	         'n' + due + id     the same, for PriorityLow messages
//	pointer: 'o' + id        →  due, or PriorityLow + due
//
// The low-priority queue has its own prefix so that Claim drains the
// high one first, by reading one queue and then the other; the pointer of
// a high-priority message is 8 bytes, as it was before priorities, so that
// messages queued by an older version keep working.
//
// due is 8 bytes (dueBytes) that sort as the due time does, so the queue
// iterates oldest due first and Claim reads only the messages it returns
// plus the first one not yet due, however many are scheduled for later.
// The pointer finds a message's queue key from its id in one lookup, which
// is what Ack, Retry and a replacing Enqueue need.

// Enqueue implements Outbox. Without a due time the message is due at the
// current wall-clock time, which also orders it behind messages enqueued
// before it. Enqueueing an id that is queued already replaces the message.
func (b *Badger) Enqueue(ctx context.Context, id string, payload []byte, due time.Time, ttl time.Duration, prio Priority) error {
	if err := checkTTL(ctx, ttl); err != nil {
		return err
	}
	now := time.Now()
	if due.IsZero() {
		due = now
	}
	rec := outboxRecord{enqueued: now.UnixNano(), payload: payload}
	exp := expiresAt(now, ttl)
	return b.update(ctx, func(txn *badger.Txn) error {
		if err := deleteQueued(txn, id, "enqueue"); err != nil {
			return err
		}
		return putQueued(txn, id, prio, due.UnixNano(), rec.encode(), exp, "enqueue")
	})
}

// Claim implements Outbox. It reads the queue from its head and stops at
// the first message not yet due. Each message is leased in a transaction of
// its own that reads it first, so of two workers racing for one message only
// one commits; the other skips it and takes the next due message instead.
func (b *Badger) Claim(ctx context.Context, now time.Time, max int, lease time.Duration) ([]OutboxItem, error) {
	if err := ctx.Err(); err != nil || max <= 0 {
		return nil, err
	}
	// A leased message moves to now+lease, past every message the scan can
	// still return, so a positive lease also keeps one Claim from returning
	// a message twice.
	if lease <= 0 {
		lease = time.Nanosecond
	}
	nowNanos := now.UnixNano()
	var items []OutboxItem
	for _, queue := range []byte{queuePrefix, lowQueuePrefix} {
		var after []byte // the scan resumes past the candidates already tried
		for len(items) < max {
			keys, err := b.dueKeys(queue, nowNanos, after, max-len(items))
			if err != nil {
				return nil, err
			}
			if len(keys) == 0 {
				break
			}
			claimed, err := b.claimAll(ctx, keys, now, lease)
			if err != nil {
				// Messages leased so far reappear when their lease runs out.
				return nil, err
			}
			items = append(items, claimed...)
			after = keys[len(keys)-1]
		}
	}
	return items, nil
}

// dueKeys returns the keys of up to n messages of one queue due at or
// before now, oldest due first, starting past the key after (nil: the
// queue's head).
func (b *Badger) dueKeys(queue byte, now int64, after []byte, n int) ([][]byte, error) {
	var keys [][]byte
	err := b.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte{queue}
		// The due time and id are in the key; leasing reads the value.
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		seek := opts.Prefix
		if after != nil {
			// The smallest key greater than after.
			seek = append(bytes.Clone(after), 0)
		}
		for it.Seek(seek); it.Valid() && len(keys) < n; it.Next() {
			k := it.Item().Key()
			due, _, ok := parseQueueKey(k)
			if !ok {
				return errCorruptOutbox
			}
			if due > now {
				break
			}
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		return nil
	})
	return keys, wrap("claim", err)
}

// claimAll leases the messages under keys, in parallel so that Badger
// commits their transactions together, with one fsync rather than one per
// message. The result keeps the order of keys and omits the messages that
// another worker took first.
func (b *Badger) claimAll(ctx context.Context, keys [][]byte, now time.Time, lease time.Duration) ([]OutboxItem, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var (
		wg    sync.WaitGroup
		slots = make([]OutboxItem, len(keys))
		oks   = make([]bool, len(keys))
		errs  = make([]error, len(keys))
	)
	for i, k := range keys {
		wg.Go(func() { slots[i], oks[i], errs[i] = b.claimOne(k, now, lease) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	items := make([]OutboxItem, 0, len(keys))
	for i, ok := range oks {
		if ok {
			items = append(items, slots[i])
		}
	}
	return items, nil
}

// claimOne leases the message under the queue key until now+lease by moving
// it to that due time, unless another worker got to it first, in which case
// ok is false.
func (b *Badger) claimOne(key []byte, now time.Time, lease time.Duration) (item OutboxItem, ok bool, err error) {
	_, id, _ := parseQueueKey(key)
	prio := keyPriority(key)
	err = b.tryUpdate(func(txn *badger.Txn) error {
		bi, err := getItem(txn, key, "claim")
		if err != nil {
			return err
		}
		var rec outboxRecord
		if err := bi.Value(rec.decode); err != nil {
			return wrap("claim", err)
		}
		item = OutboxItem{
			ID:         string(id),
			Payload:    rec.payload,
			Attempts:   int(rec.attempts),
			EnqueuedAt: time.Unix(0, rec.enqueued),
		}
		if err := txn.Delete(key); err != nil {
			return wrap("claim", err)
		}
		// The value is unchanged: only its place in the queue moves.
		return putQueued(txn, string(id), prio, now.Add(lease).UnixNano(), rec.encode(), bi.ExpiresAt(), "claim")
	})
	switch {
	case err == nil:
		return item, true, nil
	case errors.Is(err, badger.ErrConflict), errors.Is(err, ErrNotFound):
		// Claimed, rescheduled, acknowledged or expired since the scan.
		return OutboxItem{}, false, nil
	}
	return OutboxItem{}, false, err
}

// Ack implements Outbox. Acknowledging a message that is gone (acked
// before, or expired) is not an error.
func (b *Badger) Ack(ctx context.Context, id string) error {
	return b.update(ctx, func(txn *badger.Txn) error { return deleteQueued(txn, id, "ack") })
}

// Retry implements Outbox. It returns ErrNotFound if the message was
// acknowledged or has expired. The message keeps its expiry.
func (b *Badger) Retry(ctx context.Context, id string, at time.Time) error {
	return b.reschedule(ctx, id, at, 1, "retry")
}

// Postpone implements Outbox. It returns ErrNotFound if the message was
// acknowledged or has expired. The message keeps its expiry.
func (b *Badger) Postpone(ctx context.Context, id string, at time.Time) error {
	return b.reschedule(ctx, id, at, 0, "postpone")
}

// reschedule moves message id to at, keeping its priority and expiry, and
// adds attempts to its attempt counter.
func (b *Badger) reschedule(ctx context.Context, id string, at time.Time, attempts uint32, op string) error {
	return b.update(ctx, func(txn *badger.Txn) error {
		key, err := queueKeyOf(txn, id, op)
		if err != nil {
			return err
		}
		item, err := getItem(txn, key, op)
		if err != nil {
			return err
		}
		var rec outboxRecord
		if err := item.Value(rec.decode); err != nil {
			return wrap(op, err)
		}
		rec.attempts += attempts
		if err := txn.Delete(key); err != nil {
			return wrap(op, err)
		}
		return putQueued(txn, id, keyPriority(key), at.UnixNano(), rec.encode(), item.ExpiresAt(), op)
	})
}

// OutboxLen implements Outbox. It counts pointers, one per message, and
// reads no values.
func (b *Badger) OutboxLen(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	n := 0
	err := b.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte{outboxPrefix}
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	return n, wrap("outbox len", err)
}

// putQueued writes the queue entry and the pointer of message id, due at
// due in the queue of prio, both expiring at exp.
func putQueued(txn *badger.Txn, id string, prio Priority, due int64, value []byte, exp uint64, op string) error {
	d := dueBytes(due)
	q := badger.NewEntry(queueKey(prio, d, id), value)
	q.ExpiresAt = exp
	pointer := d[:]
	if prio != PriorityHigh {
		pointer = append([]byte{byte(prio)}, d[:]...)
	}
	p := badger.NewEntry(pointerKey(id), pointer)
	p.ExpiresAt = exp
	if err := txn.SetEntry(q); err != nil {
		return wrap(op, err)
	}
	return wrap(op, txn.SetEntry(p))
}

// deleteQueued removes message id, if it is there.
func deleteQueued(txn *badger.Txn, id string, op string) error {
	key, err := queueKeyOf(txn, id, op)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil
	case err != nil:
		return err
	}
	if err := txn.Delete(key); err != nil {
		return wrap(op, err)
	}
	return wrap(op, txn.Delete(pointerKey(id)))
}

// queueKeyOf follows the pointer of message id to its queue key. Reading
// the pointer also makes the transaction conflict with any other that
// moves or removes the message meanwhile.
func queueKeyOf(txn *badger.Txn, id string, op string) ([]byte, error) {
	item, err := getItem(txn, pointerKey(id), op)
	if err != nil {
		return nil, err
	}
	var key []byte
	err = item.Value(func(v []byte) error {
		switch {
		case len(v) == 8:
			key = queueKey(PriorityHigh, [8]byte(v), id)
		case len(v) == 9 && Priority(v[0]) == PriorityLow:
			key = queueKey(PriorityLow, [8]byte(v[1:]), id)
		default:
			return errCorruptOutbox
		}
		return nil
	})
	return key, wrap(op, err)
}

var errCorruptOutbox = errors.New("corrupt outbox entry")

// dueBytes encodes a due time in Unix nanoseconds so that the encodings
// sort bytewise as the times do, negative ones (before 1970) included:
// big endian with the sign bit flipped.
func dueBytes(due int64) [8]byte {
	var d [8]byte
	binary.BigEndian.PutUint64(d[:], uint64(due)^1<<63)
	return d
}

func queueKey(prio Priority, due [8]byte, id string) []byte {
	k := make([]byte, 0, 1+len(due)+len(id))
	if prio == PriorityLow {
		k = append(k, lowQueuePrefix)
	} else {
		k = append(k, queuePrefix)
	}
	k = append(k, due[:]...)
	return append(k, id...)
}

// parseQueueKey splits a queue key into its due time and id; id aliases key.
func parseQueueKey(key []byte) (due int64, id []byte, ok bool) {
	if len(key) < 9 || (key[0] != queuePrefix && key[0] != lowQueuePrefix) {
		return 0, nil, false
	}
	return int64(binary.BigEndian.Uint64(key[1:9]) ^ 1<<63), key[9:], true
}

// keyPriority is the priority of the queue that a queue key is in.
func keyPriority(key []byte) Priority {
	if len(key) > 0 && key[0] == lowQueuePrefix {
		return PriorityLow
	}
	return PriorityHigh
}

func pointerKey(id string) []byte {
	return append([]byte{outboxPrefix}, id...)
}

// outboxRecord is the value of a queue entry. The due time is in the key,
// and the expiry is Badger's own, on the entry, so that expired messages
// vanish unread.
type outboxRecord struct {
	enqueued int64 // Unix nanoseconds
	attempts uint32
	payload  []byte
}

// Encoding: version byte, enqueued, attempts (big endian), payload.
const (
	outboxRecordV2  byte = 2
	outboxHeaderLen      = 1 + 8 + 4
)

func (r *outboxRecord) encode() []byte {
	buf := make([]byte, 0, outboxHeaderLen+len(r.payload))
	buf = append(buf, outboxRecordV2)
	buf = binary.BigEndian.AppendUint64(buf, uint64(r.enqueued))
	buf = binary.BigEndian.AppendUint32(buf, r.attempts)
	return append(buf, r.payload...)
}

// decode fills r from v, copying the payload since Badger owns v.
func (r *outboxRecord) decode(v []byte) error {
	if len(v) < outboxHeaderLen || v[0] != outboxRecordV2 {
		return errCorruptOutbox
	}
	r.enqueued = int64(binary.BigEndian.Uint64(v[1:]))
	r.attempts = binary.BigEndian.Uint32(v[9:])
	r.payload = bytes.Clone(v[outboxHeaderLen:])
	return nil
}
