package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// A log is stored as
//
//	<prefix>l:<log>:<seq>   the record's value; seq is 20 decimal digits,
//	                        and the key expires with the record
//	<prefix>l:<log>:head    seq (8 bytes, big-endian) + the last value; never
//	                        expires, so the chain goes on after the record
//	<prefix>l:<log>:idx     sorted set of the seqs whose record may be live,
//	                        scored by seq, which ReadLog walks
//
// The three suffixes cannot collide across log names: a seq is all digits
// and of fixed length, and "head" and "idx" are neither.
//
// An append WATCHes the head, reads it, and writes the records, their index
// entries and the new head in one MULTI, which fails if another appender,
// in this process or another, moved the head meanwhile; build then runs
// again on the new head. Index entries of expired records are removed when
// ReadLog passes over them, and now and then by Append (pruneLogIndex).
const (
	logHeadSuffix  = "head"
	logIndexSuffix = "idx"
)

// maxAppendAttempts bounds the retries of an append that keeps losing the
// race for the head. Appends within one process are serialized, so only
// other processes can defeat an attempt.
const maxAppendAttempts = 200

// pruneEvery is how many appends with a ttl pass between two prunings of
// a log's index by this process, and pruneBatch how many entries one step
// of a pruning checks.
const (
	pruneEvery = 256
	pruneBatch = 100
)

// Append implements Log.
func (r *Redis) Append(ctx context.Context, log string, ttl time.Duration, build func(last *LogRecord) ([][]byte, error)) error {
	if err := checkLogName(log); err != nil {
		return err
	}
	if err := checkRedisTTL(ctx, ttl); err != nil {
		return err
	}
	head, idx := r.logKey(log, logHeadSuffix), r.logKey(log, logIndexSuffix)
	// Serializing this process's appends removes the conflicts among them,
	// which would otherwise each cost a round of retries.
	r.appendMu.Lock()
	defer r.appendMu.Unlock()
	err := r.retryTx(ctx, "append", maxAppendAttempts, func() error {
		return r.client.Watch(ctx, func(tx *redis.Tx) error {
			last, err := r.readHead(ctx, tx, log)
			if err != nil {
				return err
			}
			values, err := build(last)
			if err != nil {
				return fnError{err}
			}
			if len(values) == 0 {
				return nil
			}
			var seq uint64
			if last != nil {
				seq = last.Seq
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				for _, v := range values {
					seq++
					p.Set(ctx, r.logKey(log, seqString(seq)), v, ceilMillis(ttl))
					p.ZAdd(ctx, idx, redis.Z{Score: float64(seq), Member: seqString(seq)})
				}
				h := binary.BigEndian.AppendUint64(nil, seq)
				p.Set(ctx, head, append(h, values[len(values)-1]...), 0)
				return nil
			})
			return err
		}, head)
	})
	if err != nil || ttl == 0 {
		return err
	}
	if r.appends++; r.appends%pruneEvery == 0 {
		r.pruneLogIndex(ctx, log)
	}
	return nil
}

// readHead returns the last record of log, or nil for an empty log.
func (r *Redis) readHead(ctx context.Context, c redis.Cmdable, log string) (*LogRecord, error) {
	raw, err := c.Get(ctx, r.logKey(log, logHeadSuffix)).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, nil
	case err != nil:
		return nil, err
	case len(raw) < 8:
		return nil, fmt.Errorf("log head of %q is corrupt", log)
	}
	return &LogRecord{Seq: binary.BigEndian.Uint64(raw), Value: raw[8:]}, nil
}

// LastRecord implements Log.
func (r *Redis) LastRecord(ctx context.Context, log string) (LogRecord, error) {
	if err := checkLogName(log); err != nil {
		return LogRecord{}, err
	}
	last, err := r.readHead(ctx, r.client, log)
	switch {
	case err != nil:
		return LogRecord{}, redisErr("last record", err)
	case last == nil:
		return LogRecord{}, ErrNotFound
	}
	return *last, nil
}

// ReadLog implements Log. It reads the index from seq from on, in pages of
// twice what it still needs, since some entries may have expired.
func (r *Redis) ReadLog(ctx context.Context, log string, from uint64, max int) ([]LogRecord, error) {
	if err := checkLogName(log); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil || max <= 0 {
		return nil, err
	}
	idx := r.logKey(log, logIndexSuffix)
	var out []LogRecord
	for len(out) < max {
		page := int64(2 * (max - len(out)))
		seqs, err := r.client.ZRangeByScore(ctx, idx, &redis.ZRangeBy{
			Min: strconv.FormatUint(from, 10), Max: "+inf", Count: page,
		}).Result()
		if err != nil {
			return nil, redisErr("read log", err)
		}
		if len(seqs) == 0 {
			break
		}
		live, gone, err := r.logRecords(ctx, log, seqs)
		if err != nil {
			return nil, redisErr("read log", err)
		}
		out = append(out, live[:min(len(live), max-len(out))]...)
		if len(gone) > 0 {
			// Their records expired, and a seq is never reused.
			if err := r.client.ZRem(ctx, idx, gone...).Err(); err != nil {
				return nil, redisErr("read log", err)
			}
		}
		last, err := strconv.ParseUint(seqs[len(seqs)-1], 10, 64)
		if err != nil {
			return nil, redisErr("read log", fmt.Errorf("index of %q holds %q", log, seqs[len(seqs)-1]))
		}
		if int64(len(seqs)) < page {
			break
		}
		from = last + 1
	}
	return out, nil
}

// logRecords reads the records of log numbered seqs: those still live,
// and the index members of those that have expired.
func (r *Redis) logRecords(ctx context.Context, log string, seqs []string) (live []LogRecord, gone []any, err error) {
	keys := make([]string, len(seqs))
	for i, s := range seqs {
		keys[i] = r.logKey(log, s)
	}
	values, err := r.client.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, nil, err
	}
	for i, v := range values {
		s, ok := v.(string)
		if !ok {
			gone = append(gone, seqs[i])
			continue
		}
		seq, err := strconv.ParseUint(seqs[i], 10, 64)
		if err != nil {
			return nil, nil, fmt.Errorf("index of %q holds %q", log, seqs[i])
		}
		live = append(live, LogRecord{Seq: seq, Value: []byte(s)})
	}
	return live, gone, nil
}

// pruneLogIndex removes the index entries of expired records from the
// start of the index of log, where a log with one retention keeps them,
// so that a log nobody reads does not grow its index forever. It stops at
// the first batch holding a live record. Failures are only logged: the
// append that called it has succeeded.
func (r *Redis) pruneLogIndex(ctx context.Context, log string) {
	idx := r.logKey(log, logIndexSuffix)
	for {
		seqs, err := r.client.ZRange(ctx, idx, 0, pruneBatch-1).Result()
		if err != nil || len(seqs) == 0 {
			if err != nil {
				r.logger.Warn("pruning log index failed", zap.String("log", log), zap.Error(err))
			}
			return
		}
		cmds, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, s := range seqs {
				p.Exists(ctx, r.logKey(log, s))
			}
			return nil
		})
		if err != nil {
			r.logger.Warn("pruning log index failed", zap.String("log", log), zap.Error(err))
			return
		}
		var gone []any
		for i, c := range cmds {
			if c.(*redis.IntCmd).Val() == 0 {
				gone = append(gone, seqs[i])
			}
		}
		if len(gone) > 0 {
			if err := r.client.ZRem(ctx, idx, gone...).Err(); err != nil {
				r.logger.Warn("pruning log index failed", zap.String("log", log), zap.Error(err))
				return
			}
		}
		if len(gone) < len(seqs) {
			return
		}
	}
}

// logKey is the key of log with the given suffix: a seqString, or
// logHeadSuffix or logIndexSuffix.
func (r *Redis) logKey(log, suffix string) string {
	return r.prefix + redisLogSpace + log + ":" + suffix
}

// seqString formats seq in 20 digits, the most a uint64 needs, so that
// record keys sort as their numbers do.
func seqString(seq uint64) string {
	return fmt.Sprintf("%020d", seq)
}
