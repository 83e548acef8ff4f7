package approval

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/mailauth/caddy-mailauth/store"
)

// AuditLog is the name of the store log that holds the audit trail.
const AuditLog = "audit"

// DefaultAuditRetention is how long stored audit records are kept unless
// configured otherwise.
const DefaultAuditRetention = 90 * 24 * time.Hour

// AuditRecord is one stored audit event. Each record names the hash of the
// one before it, so a record that is edited, removed or inserted breaks
// the chain where it happened (see VerifyAuditChain).
type AuditRecord struct {
	// Seq numbers records from 1 without gaps.
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// Event and the fields after it are what the audit log line says.
	Event     Event  `json:"event"`
	Reference string `json:"reference,omitempty"`
	User      string `json:"user,omitempty"`
	Profile   string `json:"profile,omitempty"`
	Site      string `json:"site,omitempty"`
	ClientIP  string `json:"client_ip,omitempty"`
	UserAgent string `json:"user_agent,omitempty"`
	// Fields are the event's other fields, such as decider or server.
	Fields map[string]any `json:"fields,omitempty"`
	// Prev is the hash of the previous record, empty for the first.
	Prev string `json:"prev"`
	// Hash is the SHA-256 of the record as stored, without this field.
	Hash string `json:"-"`
}

// A stored record is its hash in hex, a newline and the JSON body that the
// hash covers. Hashing the stored bytes rather than a re-encoding means
// verification never depends on how JSON happens to be re-marshalled.
func encodeAuditRecord(r *AuditRecord) ([]byte, error) {
	body, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	r.Hash = hex.EncodeToString(sum[:])
	out := make([]byte, 0, len(r.Hash)+1+len(body))
	out = append(out, r.Hash...)
	out = append(out, '\n')
	return append(out, body...), nil
}

// decodeAuditRecord parses a stored record. intact reports whether its
// hash matches its body.
func decodeAuditRecord(raw []byte) (r AuditRecord, intact bool, err error) {
	const hexLen = 2 * sha256.Size
	if len(raw) < hexLen+1 || raw[hexLen] != '\n' {
		return r, false, errors.New("not an audit record")
	}
	body := raw[hexLen+1:]
	if err := json.Unmarshal(body, &r); err != nil {
		return r, false, fmt.Errorf("unreadable audit record: %w", err)
	}
	r.Hash = string(raw[:hexLen])
	sum := sha256.Sum256(body)
	return r, hex.EncodeToString(sum[:]) == r.Hash, nil
}

// AuditTrail keeps audit records in the store. Record hands records over
// without waiting; one goroutine appends whatever has queued up in a
// single durable write, so a burst of events costs one sync, not one
// each, and the login path never waits on the disk for its audit.
type AuditTrail struct {
	log       store.Log
	retention time.Duration
	logger    *zap.Logger
	in        chan AuditRecord
	syncs     chan chan struct{}
	closing   chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	// dropped counts records lost to a full queue; onDrop is told of
	// each; warnedAt (Unix nanoseconds) rate-limits the warning.
	dropped  atomic.Uint64
	onDrop   func()
	warnedAt atomic.Int64
}

// auditQueue bounds the records waiting to be stored. When the store is
// slower than events arrive for long enough to fill it, further records
// are dropped from the store rather than make requests wait (see add).
const auditQueue = 4096

// dropWarning is how often at most a full queue is logged.
const dropWarning = time.Minute

// NewAuditTrail starts storing records in log, each kept for retention
// (zero: DefaultAuditRetention). Close it to store what is queued.
func NewAuditTrail(log store.Log, retention time.Duration, logger *zap.Logger) *AuditTrail {
	if retention <= 0 {
		retention = DefaultAuditRetention
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	t := &AuditTrail{
		log: log, retention: retention, logger: logger,
		in:      make(chan AuditRecord, auditQueue),
		syncs:   make(chan chan struct{}),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	go t.run()
	return t
}

// OnDrop makes the trail call f for every record it drops (a metric).
// Like Auditor.Observe, call it before the trail is used.
func (t *AuditTrail) OnDrop(f func()) { t.onDrop = f }

// Dropped returns how many records have been dropped because the queue
// was full.
func (t *AuditTrail) Dropped() uint64 { return t.dropped.Load() }

// add queues r without ever waiting. When the queue is full (the store has
// been failing or slow for thousands of events), r is dropped from the
// store: it is counted, reported to OnDrop, and a warning is logged at
// most once a minute. Only the stored copy is lost: the Auditor writes the
// event's mailauth.audit line as well, after add returns, so the event
// still reaches the log. Dropped records leave no gap in the chain; they
// never enter it. After Close, the record is logged as lost instead, for
// the same reason.
func (t *AuditTrail) add(r AuditRecord) {
	select {
	case t.in <- r:
		return
	case <-t.closing:
		t.logger.Error("audit record not stored: the trail is closed", zap.String("event", string(r.Event)))
		return
	default:
	}
	n := t.dropped.Add(1)
	if t.onDrop != nil {
		t.onDrop()
	}
	now := time.Now().UnixNano()
	if last := t.warnedAt.Load(); now-last >= int64(dropWarning) && t.warnedAt.CompareAndSwap(last, now) {
		t.logger.Warn("audit queue full: records dropped from the store; their mailauth.audit log lines are still written",
			zap.Int("queue", auditQueue), zap.Uint64("dropped_total", n), zap.String("event", string(r.Event)))
	}
}

// Sync waits until every record queued before it is stored, or ctx ends.
// Queries call it so that they see the events that led up to them.
func (t *AuditTrail) Sync(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case t.syncs <- ack:
	case <-t.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stores what is queued, trying for up to 10 seconds if the store
// fails, and stops.
func (t *AuditTrail) Close() {
	t.closeOnce.Do(func() { close(t.closing) })
	<-t.done
}

func (t *AuditTrail) run() {
	defer close(t.done)
	// ctx ends when Close is called, which interrupts the retries of a
	// failing store so that the final flush gets its own bounded try.
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-t.closing; cancel() }()
	batch := make([]AuditRecord, 0, 256)
	var waiting []chan struct{}
	for {
		select {
		case r := <-t.in:
			batch = append(batch, r)
		case ack := <-t.syncs:
			waiting = append(waiting, ack)
		case <-t.closing:
			final, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for {
				t.drain(&batch)
				if len(batch) == 0 || !t.store(final, batch) {
					return
				}
				batch = batch[:0]
			}
		}
		t.drain(&batch)
		if !t.store(ctx, batch) {
			continue
		}
		batch = batch[:0]
		for _, ack := range waiting {
			close(ack)
		}
		waiting = waiting[:0]
	}
}

// drain adds to batch whatever else is queued, up to its capacity.
func (t *AuditTrail) drain(batch *[]AuditRecord) {
	for len(*batch) < cap(*batch) {
		select {
		case r := <-t.in:
			*batch = append(*batch, r)
		default:
			return
		}
	}
}

// store appends batch, retrying with backoff while the store fails, and
// reports whether it did. The records stay in memory meanwhile; once the
// queue behind them fills up, add drops new records rather than make
// Record callers wait.
func (t *AuditTrail) store(ctx context.Context, batch []AuditRecord) bool {
	if len(batch) == 0 {
		return true
	}
	backoff := 50 * time.Millisecond
	for {
		err := t.log.Append(ctx, AuditLog, t.retention, func(last *store.LogRecord) ([][]byte, error) {
			return chainRecords(last, batch)
		})
		if err == nil {
			return true
		}
		t.logger.Warn("storing audit records; will retry", zap.Int("records", len(batch)), zap.Error(err))
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			t.logger.Error("audit records not stored", zap.Int("records", len(batch)), zap.Error(err))
			return false
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// chainRecords numbers batch after last and links each record to the one
// before it.
func chainRecords(last *store.LogRecord, batch []AuditRecord) ([][]byte, error) {
	var seq uint64
	var prev string
	if last != nil {
		r, _, err := decodeAuditRecord(last.Value)
		if err != nil {
			return nil, fmt.Errorf("approval: the last audit record (%d) is unreadable: %w", last.Seq, err)
		}
		seq, prev = last.Seq, r.Hash
	}
	out := make([][]byte, len(batch))
	for i := range batch {
		r := batch[i]
		seq++
		r.Seq, r.Prev = seq, prev
		raw, err := encodeAuditRecord(&r)
		if err != nil {
			return nil, err
		}
		out[i], prev = raw, r.Hash
	}
	return out, nil
}

// auditRecord builds the stored form of an event. Its fields are the ones
// d writes to a MapObjectEncoder, as they were when they came from zap
// fields, so records stored before and after Detail read alike.
func auditRecord(now time.Time, ev Event, l *Login, d *Detail) AuditRecord {
	r := AuditRecord{Time: now.UTC(), Event: ev}
	if l != nil {
		r.Reference, r.User, r.Profile, r.Site, r.ClientIP, r.UserAgent = l.Reference, l.Username, l.Profile, l.App, l.ClientIP, l.UserAgent
		if r.User == "" {
			r.User = l.Input
		}
	}
	rest := *d
	// Events with no Login carry the client address in their Detail;
	// lifting it lets queries treat every record alike.
	if r.ClientIP == "" {
		r.ClientIP, rest.ClientIP = rest.ClientIP, ""
	}
	enc := zapcore.NewMapObjectEncoder()
	_ = rest.MarshalLogObject(enc)
	if len(enc.Fields) > 0 {
		r.Fields = enc.Fields
	}
	return r
}

// ChainReport is what VerifyAuditChain found.
type ChainReport struct {
	// Records is how many stored records were checked; First and Last
	// are the sequence numbers of the oldest and newest.
	Records int    `json:"records"`
	First   uint64 `json:"first"`
	Last    uint64 `json:"last"`
	// FirstTime and LastTime are their times.
	FirstTime time.Time `json:"first_time,omitzero"`
	LastTime  time.Time `json:"last_time,omitzero"`
	// HeadSeq and HeadHash are the number and hash of the newest record
	// as the log's head keeps it (zero and empty for an empty log): what
	// a checkpoint anchors.
	HeadSeq  uint64 `json:"head_seq"`
	HeadHash string `json:"head_hash,omitempty"`
	// Checkpoint is what a check against a checkpoint found, when there
	// was one (see VerifyAuditChainSince).
	Checkpoint *CheckpointCheck `json:"checkpoint,omitempty"`
	// Problems lists every break in the chain; none means it is intact.
	Problems []ChainProblem `json:"problems"`
}

// ChainProblem is one break in the audit chain.
type ChainProblem struct {
	Seq     uint64 `json:"seq"`
	Problem string `json:"problem"`
}

func (p ChainProblem) String() string { return fmt.Sprintf("record %d: %s", p.Seq, p.Problem) }

// VerifyAuditChain walks the stored audit trail from its oldest record and
// reports every place where the chain breaks: a record whose content no
// longer matches its hash (edited), one that does not name its
// predecessor's hash (replaced or inserted), missing numbers (deleted),
// and newest records missing against the log's head. Records older than
// the retention expire from the start of the chain; that is not a break.
func VerifyAuditChain(ctx context.Context, log store.Log, retention time.Duration, now time.Time) (*ChainReport, error) {
	if retention <= 0 {
		retention = DefaultAuditRetention
	}
	rep := &ChainReport{Problems: []ChainProblem{}}
	var prevSeq uint64
	var prevHash string
	for from := uint64(0); ; {
		page, err := log.ReadLog(ctx, AuditLog, from, 1000)
		if err != nil {
			return nil, err
		}
		for _, rec := range page {
			r, intact, err := decodeAuditRecord(rec.Value)
			switch {
			case err != nil:
				rep.problem(rec.Seq, err.Error())
			case !intact:
				rep.problem(rec.Seq, "edited: its content does not match its hash")
			case r.Seq != rec.Seq:
				rep.problem(rec.Seq, fmt.Sprintf("moved: it says it is record %d", r.Seq))
			}
			if rep.Records == 0 {
				rep.First, rep.FirstTime = rec.Seq, r.Time
			} else if rec.Seq != prevSeq+1 {
				rep.problem(prevSeq+1, fmt.Sprintf("deleted: records %d to %d are missing", prevSeq+1, rec.Seq-1))
			} else if err == nil && r.Prev != prevHash {
				rep.problem(rec.Seq, fmt.Sprintf("does not follow record %d: one of them was replaced", prevSeq))
			}
			rep.Records++
			rep.Last, rep.LastTime = rec.Seq, r.Time
			prevSeq, prevHash = rec.Seq, r.Hash
		}
		if len(page) < 1000 {
			break
		}
		from = page[len(page)-1].Seq + 1
	}
	head, err := log.LastRecord(ctx, AuditLog)
	if err == nil {
		rep.HeadSeq = head.Seq
		if r, _, err := decodeAuditRecord(head.Value); err == nil {
			rep.HeadHash = r.Hash
		}
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		if rep.Records > 0 {
			rep.problem(rep.Last, "the log's head is missing")
		}
	case err != nil:
		return nil, err
	case rep.Records == 0:
		// Every record has expired, or every record was deleted: the
		// head's copy of the newest tells which.
		if r, _, err := decodeAuditRecord(head.Value); err != nil || now.Sub(r.Time) < retention {
			rep.problem(head.Seq, fmt.Sprintf("deleted: records up to %d are missing though they have not expired", head.Seq))
		}
	case head.Seq > prevSeq:
		rep.problem(prevSeq+1, fmt.Sprintf("deleted: the newest records, %d to %d, are missing", prevSeq+1, head.Seq))
	case head.Seq < prevSeq:
		rep.problem(head.Seq, fmt.Sprintf("the log's head names record %d, but records go on to %d", head.Seq, prevSeq))
	default:
		if r, _, err := decodeAuditRecord(head.Value); err != nil || r.Hash != prevHash {
			rep.problem(head.Seq, "differs from the copy the log's head keeps: it was replaced")
		}
	}
	return rep, nil
}

func (rep *ChainReport) problem(seq uint64, p string) {
	rep.Problems = append(rep.Problems, ChainProblem{Seq: seq, Problem: p})
}
