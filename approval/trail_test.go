package approval

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mailauth/caddy-mailauth/store"
)

// memLog is a store.Log whose records a test can edit and delete behind
// the trail's back, as an attacker with access to the store could.
type memLog struct {
	mu      sync.Mutex
	records map[uint64][]byte
	head    *store.LogRecord
	fail    error
}

func newMemLog() *memLog { return &memLog{records: map[uint64][]byte{}} }

func (m *memLog) Append(_ context.Context, _ string, _ time.Duration, build func(*store.LogRecord) ([][]byte, error)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	values, err := build(m.head)
	if err != nil {
		return err
	}
	var seq uint64
	if m.head != nil {
		seq = m.head.Seq
	}
	for _, v := range values {
		seq++
		m.records[seq] = bytes.Clone(v)
		m.head = &store.LogRecord{Seq: seq, Value: bytes.Clone(v)}
	}
	return nil
}

func (m *memLog) ReadLog(_ context.Context, _ string, from uint64, limit int) ([]store.LogRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []store.LogRecord
	for seq := max(from, 1); m.head != nil && seq <= m.head.Seq && len(out) < limit; seq++ {
		if v, ok := m.records[seq]; ok {
			out = append(out, store.LogRecord{Seq: seq, Value: bytes.Clone(v)})
		}
	}
	return out, nil
}

func (m *memLog) LastRecord(context.Context, string) (store.LogRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.head == nil {
		return store.LogRecord{}, store.ErrNotFound
	}
	return *m.head, nil
}

func (m *memLog) edit(seq uint64, fn func([]byte) []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.records[seq] = fn(m.records[seq])
}

func (m *memLog) setFail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail = err
}

// trailWith records n events through an Auditor into a fresh memLog.
func trailWith(t *testing.T, n int) (*memLog, *AuditTrail) {
	t.Helper()
	log := newMemLog()
	trail := NewAuditTrail(log, time.Hour, zap.NewNop())
	t.Cleanup(trail.Close)
	a := NewAuditor(nil)
	a.Persist(trail, nil)
	for i := range n {
		a.Record(EventLoginStarted, &Login{Reference: fmt.Sprintf("REF-%d", i), Username: "alice", Profile: "p", App: "app.example.com", ClientIP: "192.0.2.1", UserAgent: "ua"}, Detail{Decider: "bob@example.com", Attempt: Some(i)})
	}
	if err := trail.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	return log, trail
}

func verify(t *testing.T, log store.Log) *ChainReport {
	t.Helper()
	rep, err := VerifyAuditChain(t.Context(), log, time.Hour, time.Now())
	if err != nil {
		t.Fatalf("VerifyAuditChain: %v", err)
	}
	return rep
}

func TestAuditTrailStoresEveryEventInOneChain(t *testing.T) {
	log, _ := trailWith(t, 50)
	rep := verify(t, log)
	if rep.Records != 50 || rep.First != 1 || rep.Last != 50 || len(rep.Problems) != 0 {
		t.Fatalf("report = %+v; want 50 intact records 1..50", rep)
	}
	recs, _ := log.ReadLog(t.Context(), AuditLog, 7, 1)
	r, intact, err := decodeAuditRecord(recs[0].Value)
	if err != nil || !intact {
		t.Fatalf("record 7: intact=%v err=%v", intact, err)
	}
	if r.Event != EventLoginStarted || r.Reference != "REF-6" || r.User != "alice" || r.Site != "app.example.com" || r.ClientIP != "192.0.2.1" || r.Fields["decider"] != "bob@example.com" {
		t.Errorf("record 7 = %+v; want the event's login fields and its extra fields", r)
	}
}

func TestAuditChainDetectsTampering(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(*memLog)
		seq    uint64
		want   string
	}{
		{"edited record", func(m *memLog) {
			m.edit(5, func(v []byte) []byte {
				return bytes.Replace(v, []byte(`"user":"alice"`), []byte(`"user":"mallory"`), 1)
			})
		}, 5, "edited"},
		{"edited record with its hash recomputed", func(m *memLog) {
			m.edit(5, func(v []byte) []byte {
				r, _, _ := decodeAuditRecord(v)
				r.User = "mallory"
				out, _ := encodeAuditRecord(&r)
				return out
			})
		}, 6, "does not follow record 5"},
		{"deleted record", func(m *memLog) { delete(m.records, 4) }, 4, "deleted: records 4 to 4"},
		{"deleted newest records", func(m *memLog) { delete(m.records, 10); delete(m.records, 9) }, 9, "the newest records, 9 to 10"},
		{"garbage", func(m *memLog) { m.edit(2, func([]byte) []byte { return []byte("nonsense") }) }, 2, "not an audit record"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, _ := trailWith(t, 10)
			tt.tamper(log)
			rep := verify(t, log)
			if len(rep.Problems) == 0 {
				t.Fatalf("tampering went unnoticed: %+v", rep)
			}
			p := rep.Problems[0]
			if p.Seq != tt.seq || !strings.Contains(p.Problem, tt.want) {
				t.Errorf("first problem = %v; want record %d: …%s…", p, tt.seq, tt.want)
			}
		})
	}
}

func TestAuditChainOfExpiredRecordsIsIntact(t *testing.T) {
	log, _ := trailWith(t, 10)
	for seq := uint64(1); seq <= 4; seq++ {
		delete(log.records, seq)
	}
	if rep := verify(t, log); len(rep.Problems) != 0 || rep.First != 5 {
		t.Errorf("records expired from the start: report %+v; want intact from 5", rep)
	}
	for seq := uint64(5); seq <= 10; seq++ {
		delete(log.records, seq)
	}
	// All gone while younger than the retention: deleted, not expired.
	if rep := verify(t, log); len(rep.Problems) == 0 {
		t.Errorf("every record deleted went unnoticed")
	}
	rep, err := VerifyAuditChain(t.Context(), log, time.Hour, time.Now().Add(2*time.Hour))
	if err != nil || len(rep.Problems) != 0 {
		t.Errorf("every record expired: %+v, %v; want intact", rep, err)
	}
}

func TestAuditTrailRetriesWhileStoreFails(t *testing.T) {
	log := newMemLog()
	log.setFail(errors.New("store down"))
	trail := NewAuditTrail(log, time.Hour, zap.NewNop())
	defer trail.Close()
	a := NewAuditor(nil)
	a.Persist(trail, nil)
	for range 3 {
		a.Record(EventLoginStarted, &Login{Username: "alice"}, Detail{})
	}
	time.Sleep(120 * time.Millisecond)
	if _, err := log.LastRecord(t.Context(), AuditLog); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("records stored while the store fails?")
	}
	log.setFail(nil)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := trail.Sync(ctx); err != nil {
		t.Fatalf("Sync after the store came back: %v", err)
	}
	if rep := verify(t, log); rep.Records != 3 || len(rep.Problems) != 0 {
		t.Errorf("after recovery: %+v; want the 3 records, intact", rep)
	}
}

func TestAuditTrailCloseStoresWhatIsQueued(t *testing.T) {
	log := newMemLog()
	trail := NewAuditTrail(log, time.Hour, zap.NewNop())
	a := NewAuditor(nil)
	a.Persist(trail, nil)
	for range 500 {
		a.Record(EventRefreshed, &Login{Username: "alice"}, Detail{})
	}
	trail.Close()
	if rep := verify(t, log); rep.Records != 500 || len(rep.Problems) != 0 {
		t.Errorf("after Close: %d records, problems %v; want 500 intact", rep.Records, rep.Problems)
	}
}

func TestAuditTrailOnBadgerAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	for round := range 2 {
		st, err := store.OpenBadger(store.BadgerOptions{Dir: dir}, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		trail := NewAuditTrail(st, time.Hour, zap.NewNop())
		a := NewAuditor(nil)
		a.Persist(trail, nil)
		for range 20 {
			a.Record(EventApproved, &Login{Username: fmt.Sprint("user", round)}, Detail{})
		}
		trail.Close()
		rep, err := VerifyAuditChain(t.Context(), st, time.Hour, time.Now())
		if err != nil || rep.Records != 20*(round+1) || len(rep.Problems) != 0 {
			t.Errorf("round %d: %+v, %v; want %d intact records", round, rep, err, 20*(round+1))
		}
		st.Close()
	}
}

// BenchmarkAuditRecordPersisted is what an audited event costs the request
// that records it when the trail is on: building the record and queueing
// it. The store write happens on the trail's goroutine, in batches.
func BenchmarkAuditRecordPersisted(b *testing.B) {
	st, err := store.OpenBadger(store.BadgerOptions{InMemory: true}, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	trail := NewAuditTrail(st, time.Hour, zap.NewNop())
	defer trail.Close()
	a := NewAuditor(nil)
	a.Persist(trail, nil)
	l := &Login{Reference: "K7F-3QX", Username: "alice", Profile: "daily", App: "app.example.com", ClientIP: "192.0.2.1", UserAgent: "Mozilla/5.0"}
	b.ReportAllocs()
	for b.Loop() {
		a.Record(EventMailQueued, l, Detail{To: "alice@example.com", MessageID: "4-wIPCtR3N6GZXK8_ZkiLA"})
	}
}

// BenchmarkAuditTrailAppendOnDisk is the store side: events per second one
// trail sustains on a synced Badger, batching what queues up meanwhile.
func BenchmarkAuditTrailAppendOnDisk(b *testing.B) {
	st, err := store.OpenBadger(store.BadgerOptions{Dir: b.TempDir()}, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	trail := NewAuditTrail(st, time.Hour, zap.NewNop())
	a := NewAuditor(nil)
	a.Persist(trail, nil)
	l := &Login{Reference: "K7F-3QX", Username: "alice", Profile: "daily", App: "app.example.com"}
	for b.Loop() {
		a.Record(EventApproved, l, Detail{Decider: "bob@example.com"})
	}
	trail.Close()
}

// stuckLog is a memLog whose appends hang until release is closed, as a
// store that stopped answering would; entered is closed on the first.
type stuckLog struct {
	*memLog
	entered, release chan struct{}
	once             sync.Once
}

func (s *stuckLog) Append(ctx context.Context, log string, ttl time.Duration, build func(*store.LogRecord) ([][]byte, error)) error {
	s.once.Do(func() { close(s.entered) })
	select {
	case <-s.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.memLog.Append(ctx, log, ttl, build)
}

func TestFullAuditQueueDropsRecordsInsteadOfBlocking(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	stuck := &stuckLog{memLog: newMemLog(), entered: make(chan struct{}), release: make(chan struct{})}
	trail := NewAuditTrail(stuck, time.Hour, zap.New(core).Named("audit_trail"))
	var counted atomic.Int64
	trail.OnDrop(func() { counted.Add(1) })
	a := NewAuditor(zap.New(core).Named("mailauth.audit"))
	a.Persist(trail, nil)
	a.Record(EventLoginStarted, &Login{Username: "alice"}, Detail{})
	<-stuck.entered // the writer holds that one record and waits on the store

	const more = auditQueue + 1000
	done := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		for range more {
			a.Record(EventLoginStarted, &Login{Username: "alice"}, Detail{})
		}
		done <- time.Since(start)
	}()
	select {
	case took := <-done:
		if took > 5*time.Second {
			t.Errorf("%d Record calls took %v against a stuck store; want them to return at once", more, took)
		}
	case <-time.After(30 * time.Second):
		close(stuck.release)
		t.Fatal("Record blocked on a full audit queue: request handling would wait on the store")
	}
	if n := trail.Dropped(); n != 1000 || counted.Load() != 1000 {
		t.Errorf("dropped %d, OnDrop told of %d; want the 1000 beyond the queue of %d", n, counted.Load(), auditQueue)
	}
	if n := len(logs.FilterLoggerName("mailauth.audit").All()); n != more+1 {
		t.Errorf("%d mailauth.audit lines for %d events; a dropped record must still be logged", n, more+1)
	}
	if n := logs.FilterMessageSnippet("audit queue full").Len(); n != 1 {
		t.Errorf("%d warnings for 1000 drops within a second; want 1", n)
	}
	close(stuck.release)
	trail.Close()
	if rep := verify(t, stuck.memLog); rep.Records != auditQueue+1 || len(rep.Problems) != 0 {
		t.Errorf("stored after the store came back: %d records, problems %v; want the %d queued, intact", rep.Records, rep.Problems, auditQueue+1)
	}
}
