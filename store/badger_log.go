package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// A log is stored as
//
//	records: 'l' + name + 0x00 + seq (8 bytes, big-endian)  →  value
//	head:    'h' + name                                     →  seq + value
//
// The head holds a copy of the last record without expiry, so that the
// chain goes on after the record itself has expired. Appends read the head
// in their transaction, so two racing appends conflict and one retries.
const (
	logPrefix     byte = 'l'
	logHeadPrefix byte = 'h'
)

func checkLogName(log string) error {
	if log == "" || strings.IndexByte(log, 0) >= 0 {
		return fmt.Errorf("store: invalid log name %q", log)
	}
	return nil
}

func logKey(log string, seq uint64) []byte {
	k := make([]byte, 0, 1+len(log)+1+8)
	k = append(k, logPrefix)
	k = append(k, log...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, seq)
}

func logHeadKey(log string) []byte {
	return append([]byte{logHeadPrefix}, log...)
}

// Append implements Log.
func (b *Badger) Append(ctx context.Context, log string, ttl time.Duration, build func(last *LogRecord) ([][]byte, error)) error {
	if err := checkLogName(log); err != nil {
		return err
	}
	if err := checkTTL(ctx, ttl); err != nil {
		return err
	}
	head := logHeadKey(log)
	// One process owns a Badger directory, so serializing appends here
	// removes the conflicts that would otherwise make them retry.
	b.appendMu.Lock()
	defer b.appendMu.Unlock()
	return b.update(ctx, func(txn *badger.Txn) error {
		last, err := readHead(txn, head)
		if err != nil {
			return err
		}
		values, err := build(last)
		if err != nil || len(values) == 0 {
			return err
		}
		var seq uint64
		if last != nil {
			seq = last.Seq
		}
		exp := expiresAt(time.Now(), ttl)
		for _, v := range values {
			seq++
			e := badger.NewEntry(logKey(log, seq), append([]byte(nil), v...))
			e.ExpiresAt = exp
			if err := txn.SetEntry(e); err != nil {
				return wrap("append", err)
			}
		}
		h := binary.BigEndian.AppendUint64(nil, seq)
		return wrap("append", txn.Set(head, append(h, values[len(values)-1]...)))
	})
}

func readHead(txn *badger.Txn, head []byte) (*LogRecord, error) {
	item, err := getItem(txn, head, "log head")
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	raw, err := item.ValueCopy(nil)
	if err != nil {
		return nil, wrap("log head", err)
	}
	if len(raw) < 8 {
		return nil, fmt.Errorf("store: badger: log head %q is corrupt", head[1:])
	}
	return &LogRecord{Seq: binary.BigEndian.Uint64(raw), Value: raw[8:]}, nil
}

// LastRecord implements Log.
func (b *Badger) LastRecord(ctx context.Context, log string) (LogRecord, error) {
	if err := checkLogName(log); err != nil {
		return LogRecord{}, err
	}
	if err := ctx.Err(); err != nil {
		return LogRecord{}, err
	}
	var last *LogRecord
	err := b.db.View(func(txn *badger.Txn) (err error) {
		last, err = readHead(txn, logHeadKey(log))
		return err
	})
	if err != nil {
		return LogRecord{}, err
	}
	if last == nil {
		return LogRecord{}, ErrNotFound
	}
	return *last, nil
}

// ReadLog implements Log.
func (b *Badger) ReadLog(ctx context.Context, log string, from uint64, max int) ([]LogRecord, error) {
	if err := checkLogName(log); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	prefix := logKey(log, 0)[:1+len(log)+1]
	var out []LogRecord
	err := b.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: min(max, 100)})
		defer it.Close()
		for it.Seek(logKey(log, from)); it.Valid() && len(out) < max; it.Next() {
			item := it.Item()
			v, err := item.ValueCopy(nil)
			if err != nil {
				return wrap("read log", err)
			}
			out = append(out, LogRecord{Seq: binary.BigEndian.Uint64(item.Key()[len(prefix):]), Value: v})
		}
		return nil
	})
	return out, err
}

// Scan implements Store.
func (b *Badger) Scan(ctx context.Context, prefix string, fn func(key string, value []byte) bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p := dataKey(prefix)
	return b.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: p, PrefetchValues: true, PrefetchSize: 100})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			item := it.Item()
			v, err := item.ValueCopy(nil)
			if err != nil {
				return wrap("scan", err)
			}
			if !fn(string(item.Key()[1:]), v) {
				return nil
			}
		}
		return nil
	})
}

// Publish implements Notifier: one process shares a Badger directory, so
// subscribers are all in this process.
func (b *Badger) Publish(ctx context.Context, topic string, payload []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.hub.Dispatch(topic, payload)
	return nil
}

// Subscribe implements Notifier.
func (b *Badger) Subscribe(topic string, fn func(payload []byte)) (cancel func()) {
	return b.hub.Subscribe(topic, fn)
}
