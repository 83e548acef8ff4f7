package approval

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mailauth/caddy-mailauth/store"
)

// The hash chain shows that no record was edited, replaced or removed in
// the middle, but someone who can write the store can cut records off its
// end and rewrite the head, or rewrite a stretch and rehash everything
// after it, and the chain is whole again. A checkpoint, kept off the
// machine, pins the head as it was: a later chain must still hold that
// record with that hash, and reach at least as far.

// Checkpoint is a signed statement of the audit trail's head at one
// moment. Its MAC is an HMAC-SHA256 under a key derived from the session
// signing key, so only someone holding that key can make one, and the
// record it names cannot be changed without it being noticed.
type Checkpoint struct {
	// Version is the format, 1.
	Version int `json:"version"`
	// Seq is the number of the newest record when the checkpoint was made.
	Seq uint64 `json:"seq"`
	// Hash is that record's SHA-256, in hex.
	Hash string `json:"hash"`
	// RecordTime is that record's time: once it is older than the
	// retention, the record may have expired.
	RecordTime time.Time `json:"record_time"`
	// Time is when the checkpoint was made.
	Time time.Time `json:"time"`
	// KeyID names the key that signed it (see CheckpointKeyID), so that
	// a checkpoint from before a key rotation can be told apart.
	KeyID string `json:"key_id"`
	// MAC is the HMAC-SHA256, in hex, of the fields above in their
	// canonical form.
	MAC string `json:"mac"`
}

// checkpointVersion is the only format there is.
const checkpointVersion = 1

// Errors of checkpoints.
var (
	// ErrAuditEmpty: the trail has no record to make a checkpoint of.
	ErrAuditEmpty = errors.New("approval: the audit trail has no records yet")
	// ErrCheckpointForged: the checkpoint's MAC does not match its
	// content under the key it names.
	ErrCheckpointForged = errors.New("approval: the checkpoint's signature does not match its content: it was altered or forged")
	// ErrCheckpointUnknownKey: no key of this configuration has the
	// checkpoint's key id.
	ErrCheckpointUnknownKey = errors.New("approval: the checkpoint was signed with a key this configuration does not have")
	// ErrNotACheckpoint: the document is not a checkpoint of this format.
	ErrNotACheckpoint = errors.New("approval: not an audit checkpoint")
)

// CheckpointKeyID names a checkpoint key without revealing it: the first
// 8 bytes of its SHA-256, in hex.
func CheckpointKeyID(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:8])
}

// canonical is what the MAC covers. Times are Unix nanoseconds, so no
// re-encoding of the JSON (time zones, precision) can change it.
func (c *Checkpoint) canonical() []byte {
	return fmt.Appendf(nil, "caddy-mailauth audit checkpoint\nversion %d\nkey_id %s\nseq %d\nhash %s\nrecord_time %d\ntime %d\n",
		c.Version, c.KeyID, c.Seq, c.Hash, c.RecordTime.UnixNano(), c.Time.UnixNano())
}

func (c *Checkpoint) mac(key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(c.canonical())
	return hex.EncodeToString(m.Sum(nil))
}

// MakeCheckpoint signs the head of the audit trail in log with key.
func MakeCheckpoint(ctx context.Context, log store.Log, key []byte, now time.Time) (*Checkpoint, error) {
	head, err := log.LastRecord(ctx, AuditLog)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrAuditEmpty
	}
	if err != nil {
		return nil, err
	}
	r, intact, err := decodeAuditRecord(head.Value)
	if err != nil {
		return nil, fmt.Errorf("approval: the newest audit record (%d) is unreadable: %w", head.Seq, err)
	}
	if !intact {
		return nil, fmt.Errorf("approval: the newest audit record (%d) does not match its hash; run audit verify", head.Seq)
	}
	c := &Checkpoint{Version: checkpointVersion, Seq: head.Seq, Hash: r.Hash, RecordTime: r.Time.UTC(), Time: now.UTC().Round(0), KeyID: CheckpointKeyID(key)}
	c.MAC = c.mac(key)
	return c, nil
}

// Check verifies c's MAC with whichever of keys has its key id.
func (c *Checkpoint) Check(keys [][]byte) error {
	if c.Version != checkpointVersion || c.Seq == 0 || len(c.Hash) != 2*sha256.Size || c.MAC == "" {
		return ErrNotACheckpoint
	}
	ids := make([]string, 0, len(keys))
	for _, k := range keys {
		id := CheckpointKeyID(k)
		if id != c.KeyID {
			ids = append(ids, id)
			continue
		}
		if !hmac.Equal([]byte(c.mac(k)), []byte(strings.ToLower(c.MAC))) {
			return ErrCheckpointForged
		}
		return nil
	}
	return fmt.Errorf("%w (it names key %s; this one has %s): it comes from another deployment, or its session key was rotated out of session_keys", ErrCheckpointUnknownKey, c.KeyID, strings.Join(ids, ", "))
}

// CheckpointCheck is what checking the trail against a checkpoint found,
// besides the problems it adds to the report.
type CheckpointCheck struct {
	Seq        uint64    `json:"seq"`
	Hash       string    `json:"hash"`
	RecordTime time.Time `json:"record_time"`
	Time       time.Time `json:"time"`
	KeyID      string    `json:"key_id"`
	// Expired says that the checkpoint's record is older than the
	// retention and has expired, as it should: then only truncation
	// could be checked against the checkpoint.
	Expired bool `json:"expired,omitempty"`
}

// VerifyAuditChainSince is VerifyAuditChain against a checkpoint cp,
// whose MAC is checked with keys first (an error if it does not hold).
// On top of every break in the chain, it reports truncation (the head is
// below the checkpoint's record) and rewriting (the record at the
// checkpoint's number has another hash, or is gone though it has not
// expired). Records after the checkpoint are covered by the chain from
// the checkpoint's record on; a record that expired by retention is not a
// problem, and the report says so.
func VerifyAuditChainSince(ctx context.Context, log store.Log, retention time.Duration, now time.Time, cp *Checkpoint, keys [][]byte) (*ChainReport, error) {
	if err := cp.Check(keys); err != nil {
		return nil, err
	}
	if retention <= 0 {
		retention = DefaultAuditRetention
	}
	rep, err := VerifyAuditChain(ctx, log, retention, now)
	if err != nil {
		return nil, err
	}
	cc := &CheckpointCheck{Seq: cp.Seq, Hash: cp.Hash, RecordTime: cp.RecordTime, Time: cp.Time, KeyID: cp.KeyID}
	rep.Checkpoint = cc
	made := cp.Time.Format(time.RFC3339)
	if rep.HeadSeq < cp.Seq {
		rep.problem(rep.HeadSeq, fmt.Sprintf("truncated: the trail ends at record %d, but the checkpoint of %s saw it reach %d: records were cut off its end (or the store was restored from an older copy)", rep.HeadSeq, made, cp.Seq))
		return rep, nil
	}
	page, err := log.ReadLog(ctx, AuditLog, cp.Seq, 1)
	if err != nil {
		return nil, err
	}
	if len(page) == 0 || page[0].Seq != cp.Seq {
		if now.Sub(cp.RecordTime) >= retention {
			cc.Expired = true
			return rep, nil
		}
		rep.problem(cp.Seq, fmt.Sprintf("deleted: record %d, which the checkpoint of %s anchors, is missing though it has not expired", cp.Seq, made))
		return rep, nil
	}
	if r, _, err := decodeAuditRecord(page[0].Value); err == nil && r.Hash != cp.Hash {
		rep.problem(cp.Seq, fmt.Sprintf("rewritten: record %d has another hash than at the checkpoint of %s: the chain was rewritten up to here and rehashed", cp.Seq, made))
	}
	return rep, nil
}
