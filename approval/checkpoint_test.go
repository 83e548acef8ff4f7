package approval

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mailauth/caddy-mailauth/store"
)

// truncate cuts the log off after record to and points the head at it, as
// someone with write access to the store could: the chain that is left is
// whole.
func (m *memLog) truncate(to uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for seq := range m.records {
		if seq > to {
			delete(m.records, seq)
		}
	}
	m.head = &store.LogRecord{Seq: to, Value: bytes.Clone(m.records[to])}
}

// rewrite changes record seq with fn and rehashes every record after it,
// and the head, so that the chain holds again.
func (m *memLog) rewrite(seq uint64, fn func(*AuditRecord)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	prev := ""
	if seq > 1 {
		r, _, _ := decodeAuditRecord(m.records[seq-1])
		prev = r.Hash
	}
	for s := seq; s <= m.head.Seq; s++ {
		r, _, _ := decodeAuditRecord(m.records[s])
		if s == seq {
			fn(&r)
		}
		r.Prev = prev
		raw, _ := encodeAuditRecord(&r)
		m.records[s], prev = raw, r.Hash
	}
	m.head = &store.LogRecord{Seq: m.head.Seq, Value: bytes.Clone(m.records[m.head.Seq])}
}

// more records n further events into trail.
func more(t *testing.T, trail *AuditTrail, n int) {
	t.Helper()
	a := NewAuditor(nil)
	a.Persist(trail, nil)
	for range n {
		a.Record(EventApproved, &Login{Username: "alice"}, Detail{Decider: "bob@example.com"})
	}
	if err := trail.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
}

var checkpointKey = testKey(7)

// checkpointAt makes a checkpoint of a trail of n records, then adds 5.
func checkpointAt(t *testing.T, n int) (*memLog, *Checkpoint) {
	t.Helper()
	log, trail := trailWith(t, n)
	cp, err := MakeCheckpoint(t.Context(), log, checkpointKey, time.Now())
	if err != nil {
		t.Fatalf("MakeCheckpoint: %v", err)
	}
	if cp.Seq != uint64(n) || len(cp.Hash) != 64 || cp.KeyID != CheckpointKeyID(checkpointKey) {
		t.Fatalf("checkpoint %+v; want record %d, its hash and the key's id", cp, n)
	}
	more(t, trail, 5)
	return log, cp
}

func verifySince(t *testing.T, log store.Log, cp *Checkpoint) *ChainReport {
	t.Helper()
	rep, err := VerifyAuditChainSince(t.Context(), log, time.Hour, time.Now(), cp, [][]byte{checkpointKey})
	if err != nil {
		t.Fatalf("VerifyAuditChainSince: %v", err)
	}
	return rep
}

func problemsSay(rep *ChainReport, seq uint64, what string) bool {
	for _, p := range rep.Problems {
		if p.Seq == seq && strings.Contains(p.Problem, what) {
			return true
		}
	}
	return false
}

func TestCheckpointOfAGrowingTrailHolds(t *testing.T) {
	log, cp := checkpointAt(t, 10)
	rep := verifySince(t, log, cp)
	if len(rep.Problems) != 0 || rep.Checkpoint == nil || rep.Checkpoint.Seq != 10 || rep.Checkpoint.Expired {
		t.Fatalf("an untouched trail against its checkpoint: %+v; want no problem and the checkpoint at 10", rep)
	}
	if rep.HeadSeq != 15 || len(rep.HeadHash) != 64 {
		t.Errorf("head %d %q; want record 15 and its hash", rep.HeadSeq, rep.HeadHash)
	}
}

func TestCheckpointCatchesTruncationAfterIt(t *testing.T) {
	log, cp := checkpointAt(t, 10)
	log.truncate(7)
	if rep := verify(t, log); len(rep.Problems) != 0 {
		t.Fatalf("the chain alone finds %v; the test needs a truncation it cannot see", rep.Problems)
	}
	rep := verifySince(t, log, cp)
	if !problemsSay(rep, 7, "truncated: the trail ends at record 7") || !strings.Contains(rep.Problems[0].Problem, "reach 10") {
		t.Errorf("truncation to 7 below a checkpoint at 10: %v; want it reported", rep.Problems)
	}
}

func TestCheckpointCatchesARewrittenRecordAfterIt(t *testing.T) {
	log, cp := checkpointAt(t, 10)
	log.edit(12, func(v []byte) []byte {
		return bytes.Replace(v, []byte(`"user":"alice"`), []byte(`"user":"mallory"`), 1)
	})
	if rep := verifySince(t, log, cp); !problemsSay(rep, 12, "edited") {
		t.Errorf("record 12 edited after the checkpoint: %v; want it named", rep.Problems)
	}
}

func TestCheckpointCatchesARewrittenAndRehashedTail(t *testing.T) {
	log, cp := checkpointAt(t, 10)
	log.rewrite(4, func(r *AuditRecord) { r.User = "mallory" })
	if rep := verify(t, log); len(rep.Problems) != 0 {
		t.Fatalf("the chain alone finds %v; the test needs a rewrite it cannot see", rep.Problems)
	}
	rep := verifySince(t, log, cp)
	if !problemsSay(rep, 10, "rewritten: record 10") {
		t.Errorf("records 4 to 15 rewritten and rehashed: %v; want the checkpoint's record reported rewritten", rep.Problems)
	}
}

func TestCheckpointCatchesItsRecordDeletedBeforeItExpired(t *testing.T) {
	log, cp := checkpointAt(t, 10)
	for seq := uint64(1); seq <= 11; seq++ {
		delete(log.records, seq)
	}
	if rep := verifySince(t, log, cp); !problemsSay(rep, 10, "deleted: record 10") {
		t.Errorf("records 1 to 11 gone within the retention: %v; want record 10 reported deleted", rep.Problems)
	}
}

func TestCheckpointOlderThanTheRetentionIsNoAlarm(t *testing.T) {
	log, cp := checkpointAt(t, 10)
	for seq := uint64(1); seq <= 11; seq++ {
		delete(log.records, seq)
	}
	later := time.Now().Add(2 * time.Hour)
	rep, err := VerifyAuditChainSince(t.Context(), log, time.Hour, later, cp, [][]byte{checkpointKey})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 0 || !rep.Checkpoint.Expired {
		t.Errorf("the checkpoint's record expired by retention: %+v; want no problem and Expired", rep)
	}
	// Truncation is still caught: the head outlives the records.
	log.truncate(9)
	rep, err = VerifyAuditChainSince(t.Context(), log, time.Hour, later, cp, [][]byte{checkpointKey})
	if err != nil || !problemsSay(rep, 9, "truncated") {
		t.Errorf("truncated below an expired checkpoint: %v, %v; want truncation reported", rep, err)
	}
}

func TestForgedCheckpointIsRefused(t *testing.T) {
	log, cp := checkpointAt(t, 10)
	log.rewrite(4, func(r *AuditRecord) { r.User = "mallory" })
	// The forger points the checkpoint at the rewritten record.
	forged := *cp
	recs, _ := log.ReadLog(t.Context(), AuditLog, 10, 1)
	r, _, _ := decodeAuditRecord(recs[0].Value)
	forged.Hash = r.Hash
	if _, err := VerifyAuditChainSince(t.Context(), log, time.Hour, time.Now(), &forged, [][]byte{checkpointKey}); !errors.Is(err, ErrCheckpointForged) {
		t.Errorf("a checkpoint with another hash = %v; want ErrCheckpointForged", err)
	}
	mine, err := MakeCheckpoint(t.Context(), log, testKey(9), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyAuditChainSince(t.Context(), log, time.Hour, time.Now(), mine, [][]byte{checkpointKey}); !errors.Is(err, ErrCheckpointUnknownKey) {
		t.Errorf("a checkpoint signed with another key = %v; want ErrCheckpointUnknownKey", err)
	}
	mine.KeyID = cp.KeyID
	if err := mine.Check([][]byte{checkpointKey}); !errors.Is(err, ErrCheckpointForged) {
		t.Errorf("another key's checkpoint claiming this key's id = %v; want ErrCheckpointForged", err)
	}
	if err := (&Checkpoint{}).Check([][]byte{checkpointKey}); !errors.Is(err, ErrNotACheckpoint) {
		t.Errorf("an empty document = %v; want ErrNotACheckpoint", err)
	}
}

func TestCheckpointSurvivesJSONAndAKeyRotation(t *testing.T) {
	log, cp := checkpointAt(t, 10)
	raw, err := json.Marshal(cp)
	if err != nil {
		t.Fatal(err)
	}
	var back Checkpoint
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	rotated := [][]byte{testKey(8), checkpointKey}
	rep, err := VerifyAuditChainSince(t.Context(), log, time.Hour, time.Now(), &back, rotated)
	if err != nil || len(rep.Problems) != 0 {
		t.Errorf("a checkpoint read back from JSON, after a rotation that keeps its key: %v, %v; want it to hold", rep, err)
	}
}
