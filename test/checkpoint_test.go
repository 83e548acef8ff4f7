package test

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// The audit trail as the Badger store keeps it: records under
// 'l' "audit" 0x00 seq, the head under 'h' "audit" as seq + a copy of the
// newest record. A record is its SHA-256 in hex, a newline and its JSON.
func auditKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte("laudit"), 0), seq)
}

var auditHeadKey = []byte("haudit")

func rehash(body []byte) []byte {
	sum := sha256.Sum256(body)
	return append([]byte(hex.EncodeToString(sum[:])+"\n"), body...)
}

// tamperStore opens a stopped Caddy's Badger store and runs fn on it.
func tamperStore(t *testing.T, dir string, fn func(txn *badger.Txn) error) {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(fn)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("tampering with the store: %v", err)
	}
}

func readValue(txn *badger.Txn, key []byte) ([]byte, error) {
	item, err := txn.Get(key)
	if err != nil {
		return nil, err
	}
	return item.ValueCopy(nil)
}

// truncateTrail cuts the trail off after record to and points the head at
// it, so that the chain left is whole.
func truncateTrail(to uint64) func(*badger.Txn) error {
	return func(txn *badger.Txn) error {
		head, err := readValue(txn, auditHeadKey)
		if err != nil {
			return err
		}
		for seq := to + 1; seq <= binary.BigEndian.Uint64(head); seq++ {
			if err := txn.Delete(auditKey(seq)); err != nil {
				return err
			}
		}
		last, err := readValue(txn, auditKey(to))
		if err != nil {
			return err
		}
		return txn.Set(auditHeadKey, append(binary.BigEndian.AppendUint64(nil, to), last...))
	}
}

// rewriteTrail changes who record seq names and rehashes every record
// after it, and the head, so that the chain holds again.
func rewriteTrail(seq uint64) func(*badger.Txn) error {
	return func(txn *badger.Txn) error {
		head, err := readValue(txn, auditHeadKey)
		if err != nil {
			return err
		}
		last := binary.BigEndian.Uint64(head)
		var oldPrev, newPrev string
		var rec []byte
		for s := seq; s <= last; s++ {
			if rec, err = readValue(txn, auditKey(s)); err != nil {
				return err
			}
			hash, body, _ := strings.Cut(string(rec), "\n")
			if s == seq {
				edited := strings.Replace(body, `"user":"alice"`, `"user":"mallory"`, 1)
				if edited == body {
					return fmt.Errorf("record %d does not name alice: %s", s, body)
				}
				body = edited
			} else {
				body = strings.Replace(body, `"prev":"`+oldPrev+`"`, `"prev":"`+newPrev+`"`, 1)
			}
			rec = rehash([]byte(body))
			oldPrev, newPrev = hash, string(rec[:64])
			if err := txn.Set(auditKey(s), rec); err != nil {
				return err
			}
		}
		return txn.Set(auditHeadKey, append(binary.BigEndian.AppendUint64(nil, last), rec...))
	}
}

// TestAuditCheckpointCatchesTruncationAndRewriting: a checkpoint exported
// from the admin API holds beside the running Caddy and on the stopped
// store as the trail grows; once records are cut off the end, or a
// stretch rewritten and rehashed (both invisible to the chain alone),
// verify --since-checkpoint names the problem and exits non-zero; a
// forged checkpoint is refused.
func TestAuditCheckpointCatchesTruncationAndRewriting(t *testing.T) {
	e := newEnv(t, defaultCaddyfile)
	b := newBrowser(t)
	confirmAndComplete(t, e, b, startLogin(t, e, b, "alice", "alice@example.test"))

	code, body := e.admin(t, http.MethodGet, "/mailauth/audit/checkpoint")
	var cp struct {
		Seq   uint64 `json:"seq"`
		Hash  string `json:"hash"`
		KeyID string `json:"key_id"`
		MAC   string `json:"mac"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &cp) != nil || cp.Seq < 4 || len(cp.Hash) != 64 || cp.KeyID == "" || len(cp.MAC) != 64 {
		t.Fatalf("GET /mailauth/audit/checkpoint: %d %s", code, body)
	}
	dir := t.TempDir()
	cpFile := filepath.Join(dir, "checkpoint.json")
	cfg := filepath.Join(dir, "Caddyfile")
	if err := writeFile(cpFile, body); err != nil {
		t.Fatal(err)
	}
	if err := writeFile(cfg, e.Caddyfile); err != nil {
		t.Fatal(err)
	}
	verify := func(cfg string, extra ...string) (string, bool) {
		return runCaddy(t, append([]string{"mailauth", "audit", "verify", "--config", cfg}, extra...)...)
	}
	if out, ok := verify(cfg, "--since-checkpoint", cpFile); !ok || !strings.Contains(out, "running Caddy") || !strings.Contains(out, "chain intact since the checkpoint") {
		t.Fatalf("verify against a fresh checkpoint beside the running Caddy (ok=%v):\n%s", ok, out)
	}

	// The trail grows past the checkpoint.
	e.mail.DeleteAll(t)
	bob := newBrowser(t)
	confirmAndComplete(t, e, bob, startLogin(t, e, bob, "bob", "bob@example.test"))
	e.caddy.Stop(t)
	out, ok := verify(cfg, "--since-checkpoint", cpFile)
	if !ok || !strings.Contains(out, "(store)") || !strings.Contains(out, "chain intact since the checkpoint") || !strings.Contains(out, fmt.Sprintf("checkpoint: record %d, sha256 %s", cp.Seq, cp.Hash)) {
		t.Fatalf("verify of the untouched stopped store against the checkpoint (ok=%v):\n%s", ok, out)
	}
	if !strings.Contains(out, "head: record ") {
		t.Errorf("verify does not print the head's number and hash:\n%s", out)
	}

	for _, tc := range []struct {
		name   string
		tamper func(*badger.Txn) error
		want   string
	}{
		{"truncated", truncateTrail(cp.Seq - 2), fmt.Sprintf("BROKEN record %d: truncated: the trail ends at record %d", cp.Seq-2, cp.Seq-2)},
		{"rewritten and rehashed", rewriteTrail(2), fmt.Sprintf("BROKEN record %d: rewritten", cp.Seq)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			copyDir := filepath.Join(t.TempDir(), "store")
			if err := os.CopyFS(copyDir, os.DirFS(e.StoreDir)); err != nil {
				t.Fatal(err)
			}
			copyCfg := filepath.Join(t.TempDir(), "Caddyfile")
			if err := writeFile(copyCfg, strings.ReplaceAll(e.Caddyfile, e.StoreDir, copyDir)); err != nil {
				t.Fatal(err)
			}
			tamperStore(t, copyDir, tc.tamper)
			if out, ok := verify(copyCfg); !ok || !strings.Contains(out, "chain intact") {
				t.Fatalf("the chain alone should not see this (ok=%v):\n%s", ok, out)
			}
			out, ok := verify(copyCfg, "--since-checkpoint", cpFile)
			if ok || !strings.Contains(out, tc.want) {
				t.Fatalf("verify --since-checkpoint after the store was %s (ok=%v); want a failure saying %q:\n%s", tc.name, ok, tc.want, out)
			}
		})
	}

	forged := strings.Replace(body, fmt.Sprintf(`"seq": %d`, cp.Seq), fmt.Sprintf(`"seq": %d`, cp.Seq-1), 1)
	if forged == body {
		t.Fatalf("the checkpoint JSON has no seq to change:\n%s", body)
	}
	if err := writeFile(cpFile, forged); err != nil {
		t.Fatal(err)
	}
	if out, ok := verify(cfg, "--since-checkpoint", cpFile); ok || !strings.Contains(out, "signature does not match") {
		t.Fatalf("verify against a forged checkpoint (ok=%v); want it refused:\n%s", ok, out)
	}
}
