package store

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Enqueue implements Outbox. Without a due time the message is due at the
// current wall-clock time, which also orders it behind messages enqueued
// before it.
func (b *Badger) Enqueue(ctx context.Context, id string, payload []byte, due time.Time, ttl time.Duration) error {
	if err := checkTTL(ctx, ttl); err != nil {
		return err
	}
	now := time.Now()
	if due.IsZero() {
		due = now
	}
	rec := outboxRecord{due: due.UnixNano(), enqueued: now.UnixNano(), payload: payload}
	e := badger.NewEntry(outboxKey(id), rec.encode())
	e.ExpiresAt = expiresAt(now, ttl)
	return wrap("enqueue", b.db.Update(func(txn *badger.Txn) error { return txn.SetEntry(e) }))
}

// Claim implements Outbox. Each message is leased in its own transaction
// that reads it first, so of two workers racing for one message only one
// commits; the other skips it and moves on to the next due message.
func (b *Badger) Claim(ctx context.Context, now time.Time, max int, lease time.Duration) ([]OutboxItem, error) {
	if err := ctx.Err(); err != nil || max <= 0 {
		return nil, err
	}
	type candidate struct {
		key []byte
		due int64
	}
	var due []candidate
	// The outbox holds at most a few minutes of mail, so reading all of it
	// and sorting by due time is cheaper than maintaining an index.
	err := b.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte{outboxPrefix}
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var rec outboxRecord
			if err := it.Item().Value(rec.decode); err != nil {
				return err
			}
			if rec.due <= now.UnixNano() {
				due = append(due, candidate{it.Item().KeyCopy(nil), rec.due})
			}
		}
		return nil
	})
	if err != nil {
		return nil, wrap("claim", err)
	}
	slices.SortFunc(due, func(a, b candidate) int {
		return cmp.Or(cmp.Compare(a.due, b.due), bytes.Compare(a.key, b.key))
	})

	var items []OutboxItem
	for _, c := range due {
		if len(items) == max {
			break
		}
		if err := ctx.Err(); err != nil {
			// Messages leased so far reappear when their lease runs out.
			return nil, err
		}
		item, ok, err := b.claimOne(c.key, now, lease)
		if err != nil {
			return nil, err
		}
		if ok {
			items = append(items, item)
		}
	}
	return items, nil
}

// claimOne leases the message under key until now+lease, unless another
// worker got to it first, in which case ok is false.
func (b *Badger) claimOne(key []byte, now time.Time, lease time.Duration) (item OutboxItem, ok bool, err error) {
	err = b.tryUpdate(func(txn *badger.Txn) error {
		bi, err := getItem(txn, key, "claim")
		if err != nil {
			return err
		}
		var rec outboxRecord
		if err := bi.Value(rec.decode); err != nil {
			return wrap("claim", err)
		}
		if rec.due > now.UnixNano() {
			return errNotDue
		}
		rec.due = now.Add(lease).UnixNano()
		e := badger.NewEntry(key, rec.encode())
		e.ExpiresAt = bi.ExpiresAt()
		item = OutboxItem{
			ID:         string(key[1:]),
			Payload:    rec.payload,
			Attempts:   int(rec.attempts),
			EnqueuedAt: time.Unix(0, rec.enqueued),
		}
		return wrap("claim", txn.SetEntry(e))
	})
	switch {
	case err == nil:
		return item, true, nil
	case errors.Is(err, badger.ErrConflict), errors.Is(err, ErrNotFound), errors.Is(err, errNotDue):
		// Claimed, rescheduled, acknowledged or expired since the scan.
		return OutboxItem{}, false, nil
	}
	return OutboxItem{}, false, err
}

// errNotDue tells claimOne that the message was leased or rescheduled
// since the scan.
var errNotDue = errors.New("outbox message not due")

// Ack implements Outbox. Acknowledging a message that is gone (acked
// before, or expired) is not an error.
func (b *Badger) Ack(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return wrap("ack", b.db.Update(func(txn *badger.Txn) error { return txn.Delete(outboxKey(id)) }))
}

// Retry implements Outbox. It returns ErrNotFound if the message was
// acknowledged or has expired. The message keeps its expiry.
func (b *Badger) Retry(ctx context.Context, id string, at time.Time) error {
	k := outboxKey(id)
	return b.update(ctx, func(txn *badger.Txn) error {
		item, err := getItem(txn, k, "retry")
		if err != nil {
			return err
		}
		var rec outboxRecord
		if err := item.Value(rec.decode); err != nil {
			return wrap("retry", err)
		}
		rec.due = at.UnixNano()
		rec.attempts++
		e := badger.NewEntry(k, rec.encode())
		e.ExpiresAt = item.ExpiresAt()
		return wrap("retry", txn.SetEntry(e))
	})
}

// OutboxLen implements Outbox.
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

func outboxKey(id string) []byte {
	return append([]byte{outboxPrefix}, id...)
}

// outboxRecord is the value stored for an outbox message. The expiry is
// Badger's own, on the entry, so that expired messages vanish unread.
type outboxRecord struct {
	due      int64 // Unix nanoseconds
	enqueued int64 // Unix nanoseconds
	attempts uint32
	payload  []byte
}

// Encoding: version byte, due, enqueued, attempts (big endian), payload.
const (
	outboxRecordV1  byte = 1
	outboxHeaderLen      = 1 + 8 + 8 + 4
)

func (r *outboxRecord) encode() []byte {
	buf := make([]byte, 0, outboxHeaderLen+len(r.payload))
	buf = append(buf, outboxRecordV1)
	buf = binary.BigEndian.AppendUint64(buf, uint64(r.due))
	buf = binary.BigEndian.AppendUint64(buf, uint64(r.enqueued))
	buf = binary.BigEndian.AppendUint32(buf, r.attempts)
	return append(buf, r.payload...)
}

// decode fills r from v, copying the payload since Badger owns v.
func (r *outboxRecord) decode(v []byte) error {
	if len(v) < outboxHeaderLen || v[0] != outboxRecordV1 {
		return errors.New("corrupt outbox record")
	}
	r.due = int64(binary.BigEndian.Uint64(v[1:]))
	r.enqueued = int64(binary.BigEndian.Uint64(v[9:]))
	r.attempts = binary.BigEndian.Uint32(v[17:])
	r.payload = bytes.Clone(v[outboxHeaderLen:])
	return nil
}
