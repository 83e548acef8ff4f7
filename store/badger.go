package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

// Every key in the database starts with one of these bytes, so a caller's
// key can never land on an outbox message, whatever bytes it holds. The
// outbox has two: see badger_outbox.go.
const (
	dataPrefix   byte = 'd'
	outboxPrefix byte = 'o' // id → due time of the message
	queuePrefix  byte = 'q' // due time + id → the message
	// lowQueuePrefix is queuePrefix for PriorityLow messages.
	lowQueuePrefix byte = 'n'
)

// maxAttempts bounds the retries of a transaction that lost a commit race.
// A commit by another writer can defeat a given attempt only once, so this
// lets about that many writers hammer one key before ErrConflict.
const maxAttempts = 32

// gcInterval is how often the value log is compacted.
const gcInterval = 10 * time.Minute

// BadgerOptions configures OpenBadger.
type BadgerOptions struct {
	// Dir is the directory holding the database. Required unless InMemory.
	Dir string
	// InMemory keeps everything in memory and loses it on Close. For tests.
	InMemory bool
}

// Badger is a Store on an embedded Badger database. Only one Badger may
// have a directory open at a time: a second OpenBadger of the same Dir
// fails until the first is closed.
type Badger struct {
	db        *badger.DB
	logger    *zap.Logger
	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
	hub       Hub
	appendMu  sync.Mutex
}

// OpenBadger opens or creates the database described by opts. Every write
// is synced to disk before it returns.
func OpenBadger(opts BadgerOptions, logger *zap.Logger) (*Badger, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	switch {
	case opts.InMemory && opts.Dir != "":
		// Refuse rather than ignore Dir: the operator expects data to persist.
		return nil, errors.New("store: badger: dir and in-memory are mutually exclusive")
	case !opts.InMemory && opts.Dir == "":
		return nil, errors.New("store: badger: dir is required")
	}
	bopts := badger.DefaultOptions(opts.Dir).
		WithInMemory(opts.InMemory).
		WithSyncWrites(true).
		WithLogger(badgerLogger{logger.Named("badger").Sugar()})
	bopts = boundMemory(bopts)
	db, err := badger.Open(bopts)
	if err != nil {
		return nil, fmt.Errorf("store: badger: open %q: %w", opts.Dir, err)
	}
	b := &Badger{db: db, logger: logger, stop: make(chan struct{})}
	if !opts.InMemory {
		b.wg.Go(b.collectGarbage)
	}
	return b, nil
}

// boundMemory sizes Badger's caches and buffers for an auth gateway rather
// than for Badger's default workload (a large database on a big machine),
// whose defaults cost about 770 MiB of RSS with a million pending logins.
// The aim is a resident size under 512 MiB whatever the number of logins:
// everything below is a fixed cost, independent of the data size, except
// the table indexes, which are capped too.
func boundMemory(o badger.Options) badger.Options {
	return o.
		// A login start writes new keys and later reads them back once or
		// twice while they are young, which is mostly from the memtable. The
		// block cache holds decompressed SSTable blocks (tables are Snappy
		// compressed, so some cache is required); 32 MiB keeps the hot blocks
		// of recent logins without the default's 256 MiB.
		WithBlockCacheSize(32 << 20).
		// Indexes and Bloom filters are otherwise kept in memory for every
		// table, growing with the data (about 10 bits a key for the filters
		// alone). Capping them makes the cost fixed; a lookup that misses the
		// cache reads the index from the mmapped table, which is in the page
		// cache for a store of this size.
		WithIndexCacheSize(16 << 20).
		// The memtable is an arena allocated up front, and its write-ahead
		// log is an mmapped file twice its size whose touched pages count
		// towards RSS. The default, 5 tables of 64 MiB, can pin over 300 MiB
		// (83 MiB measured idle). Our writes are small (records of about
		// 1 KiB at a few hundred a second), so 16 MiB holds well over ten
		// seconds of them, and 2 lets one flush to disk while the other takes
		// writes. 16 MiB also keeps the largest batch (15% of it, 2.4 MiB)
		// above the 1 MiB ValueThreshold, as Badger requires.
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		// Each compactor builds tables in buffers of twice the table size, and
		// several at once (341 MiB of builder buffers at the peak measured
		// with the default 4). Two is Badger's minimum (one of them favours
		// level 0) and matches the two cores this has to share with the
		// request path.
		WithNumCompactors(2)
	// ValueThreshold stays at its default (1 MiB), keeping every value in
	// the LSM tree: ours are small and short-lived, and compaction drops
	// them once they expire, whereas values in the value log would hold
	// their disk space until value-log GC rewrote the file.
}

// Close stops value-log GC and closes the database. Calling it again
// returns the first result.
func (b *Badger) Close() error {
	b.closeOnce.Do(func() {
		close(b.stop)
		b.wg.Wait()
		if err := b.db.Close(); err != nil {
			b.closeErr = fmt.Errorf("store: badger: close: %w", err)
		}
	})
	return b.closeErr
}

// Put implements Store.
// PutMany implements Store: one transaction, so one sync for all keys.
func (b *Badger) PutMany(ctx context.Context, entries []Entry) error {
	if len(entries) == 0 {
		return ctx.Err()
	}
	now := time.Now()
	batch := make([]*badger.Entry, len(entries))
	for i, en := range entries {
		if err := checkTTL(ctx, en.TTL); err != nil {
			return err
		}
		e := badger.NewEntry(dataKey(en.Key), append([]byte(nil), en.Value...))
		e.ExpiresAt = expiresAt(now, en.TTL)
		batch[i] = e
	}
	return wrap("put many", b.db.Update(func(txn *badger.Txn) error {
		for _, e := range batch {
			if err := txn.SetEntry(e); err != nil {
				return err
			}
		}
		return nil
	}))
}

func (b *Badger) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := checkTTL(ctx, ttl); err != nil {
		return err
	}
	e := badger.NewEntry(dataKey(key), value)
	e.ExpiresAt = expiresAt(time.Now(), ttl)
	return wrap("put", b.db.Update(func(txn *badger.Txn) error { return txn.SetEntry(e) }))
}

// Get implements Store.
func (b *Badger) Get(ctx context.Context, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var value []byte
	err := b.db.View(func(txn *badger.Txn) error {
		item, err := getItem(txn, dataKey(key), "get")
		if err != nil {
			return err
		}
		value, err = item.ValueCopy(nil)
		return wrap("get", err)
	})
	return value, err
}

// Take implements Store. Both competing transactions read the key, so
// Badger's conflict detection lets exactly one of them commit the delete;
// the loser retries and finds the key gone.
func (b *Badger) Take(ctx context.Context, key string) ([]byte, error) {
	k := dataKey(key)
	var value []byte
	err := b.update(ctx, func(txn *badger.Txn) error {
		item, err := getItem(txn, k, "take")
		if err != nil {
			return err
		}
		if value, err = item.ValueCopy(nil); err != nil {
			return wrap("take", err)
		}
		return wrap("take", txn.Delete(k))
	})
	if err != nil {
		return nil, err
	}
	return value, nil
}

// Delete implements Store.
func (b *Badger) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return wrap("delete", b.db.Update(func(txn *badger.Txn) error { return txn.Delete(dataKey(key)) }))
}

// Update implements Store.
func (b *Badger) Update(ctx context.Context, key string, ttl time.Duration, fn func(current []byte, found bool) ([]byte, error)) error {
	if err := checkTTL(ctx, ttl); err != nil {
		return err
	}
	k := dataKey(key)
	return b.update(ctx, func(txn *badger.Txn) error {
		var current []byte
		exp := expiresAt(time.Now(), ttl)
		item, err := getItem(txn, k, "update")
		found := err == nil
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return err
		default:
			if current, err = item.ValueCopy(nil); err != nil {
				return wrap("update", err)
			}
			exp = item.ExpiresAt()
		}
		next, err := fn(current, found)
		if err != nil {
			return err
		}
		e := badger.NewEntry(k, next)
		e.ExpiresAt = exp
		return wrap("update", txn.SetEntry(e))
	})
}

// update runs fn in a read-write transaction, again on a fresh snapshot
// whenever the commit loses a race, up to maxAttempts times. Errors from fn
// are returned unchanged.
func (b *Badger) update(ctx context.Context, fn func(txn *badger.Txn) error) error {
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := b.tryUpdate(fn)
		if !errors.Is(err, badger.ErrConflict) {
			return err
		}
		if attempt == maxAttempts {
			return ErrConflict
		}
		// Jitter keeps the losers of one race from colliding again in lockstep.
		time.Sleep(rand.N(time.Duration(attempt) * 50 * time.Microsecond))
	}
}

func (b *Badger) tryUpdate(fn func(txn *badger.Txn) error) error {
	txn := b.db.NewTransaction(true)
	defer txn.Discard()
	if err := fn(txn); err != nil {
		return err
	}
	err := txn.Commit()
	if err != nil && !errors.Is(err, badger.ErrConflict) {
		return fmt.Errorf("store: badger: commit: %w", err)
	}
	return err
}

// collectGarbage compacts the value log until Close. Badger never does this
// on its own, so without it deleted tokens would keep their disk space.
func (b *Badger) collectGarbage() {
	t := time.NewTicker(gcInterval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		// Each successful run rewrites one file; keep going while it pays.
		for {
			err := b.db.RunValueLogGC(0.5)
			if err != nil {
				if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
					b.logger.Warn("value log gc failed", zap.Error(err))
				}
				break
			}
			select {
			case <-b.stop:
				return
			default:
			}
		}
	}
}

// getItem is txn.Get with Badger's not-found, which also covers expired
// keys, translated to ErrNotFound and other errors wrapped for op.
func getItem(txn *badger.Txn, key []byte, op string) (*badger.Item, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	return item, wrap(op, err)
}

// wrap prefixes an error from Badger for the operation op.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("store: badger: %s: %w", op, err)
}

func checkTTL(ctx context.Context, ttl time.Duration) error {
	if ttl < 0 {
		return fmt.Errorf("store: badger: negative ttl %v", ttl)
	}
	return ctx.Err()
}

// expiresAt converts ttl into Badger's expiry, in whole Unix seconds.
// Entry.WithTTL rounds down, which could expire a key put with a 1s ttl
// almost at once; rounding up keeps every key for at least its ttl.
func expiresAt(now time.Time, ttl time.Duration) uint64 {
	if ttl == 0 {
		return 0
	}
	t := now.Add(ttl)
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return uint64(s)
}

func dataKey(key string) []byte {
	return append([]byte{dataPrefix}, key...)
}

// badgerLogger forwards Badger's warnings and errors to zap. Its info
// output (compactions, replays) would drown out the server's own log.
type badgerLogger struct{ s *zap.SugaredLogger }

func (l badgerLogger) Errorf(format string, args ...any) {
	l.s.Errorf(strings.TrimSuffix(format, "\n"), args...)
}

func (l badgerLogger) Warningf(format string, args ...any) {
	l.s.Warnf(strings.TrimSuffix(format, "\n"), args...)
}

func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}

// Interface guards
var (
	_ Store         = (*Badger)(nil)
	_ badger.Logger = badgerLogger{}
)
