package approval

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mailauth/caddy-mailauth/store"
)

func TestRecordsAreWrittenWithTheirVersion(t *testing.T) {
	kv := openMemStore(t)
	l := &Login{ID: "abc", Username: "alice", State: StatePending}
	if err := logins.put(bg, kv, l.ID, l, time.Minute); err != nil {
		t.Fatal(err)
	}
	raw, err := kv.Get(bg, "login/abc")
	if err != nil {
		t.Fatal(err)
	}
	if raw[0] != recordVersion || raw[1] != '{' {
		t.Fatalf("stored login starts %q, want the version byte and then JSON", raw[:2])
	}
	got, err := logins.get(bg, kv, "abc")
	if err != nil || got.Username != "alice" || got.State != StatePending {
		t.Fatalf("get = %+v, %v; want alice pending", got, err)
	}
}

// A store written by an earlier release holds bare JSON records; they
// read, and the next write gives them a version.
func TestUnversionedRecordsStillRead(t *testing.T) {
	kv := openMemStore(t)
	if err := kv.Put(bg, "login/old", []byte(`{"id":"old","username":"bob","state":"pending"}`), time.Minute); err != nil {
		t.Fatal(err)
	}
	got, err := logins.get(bg, kv, "old")
	if err != nil || got.Username != "bob" {
		t.Fatalf("get of an unversioned login = %+v, %v; want bob", got, err)
	}
	err = logins.update(bg, kv, "old", 0, func(l *Login, found bool) error {
		if !found {
			t.Error("update did not find the unversioned login")
		}
		l.State = StateApproved
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := kv.Get(bg, "login/old")
	if raw[0] != recordVersion || !strings.Contains(string(raw), `"approved"`) {
		t.Fatalf("after update the record is %q, want it versioned and approved", raw)
	}
}

func TestCorruptRecordsSayWhichOneAndAreNotMissing(t *testing.T) {
	kv := openMemStore(t)
	for key, raw := range map[string]string{"login/v9": "\x09{}", "login/bad": "\x01{not json", "login/empty": ""} {
		if err := kv.Put(bg, key, []byte(raw), time.Minute); err != nil {
			t.Fatal(err)
		}
		id := strings.TrimPrefix(key, "login/")
		_, err := logins.get(bg, kv, id)
		if !errors.Is(err, errCorrupt) || errors.Is(err, ErrLoginNotFound) || !strings.Contains(err.Error(), "login "+id+" is corrupt") {
			t.Errorf("get of %q = %v; want a corrupt-record error naming login %s", raw, err, id)
		}
	}
	var skipped []string
	n := 0
	err := logins.scan(bg, kv, func(*Login) bool { n++; return true }, func(key string, err error) { skipped = append(skipped, key) })
	if err != nil || n != 0 || len(skipped) != 3 {
		t.Fatalf("scan read %d and skipped %v (%v); want the three corrupt logins skipped", n, skipped, err)
	}
}

func TestMissingRecordsAnswerAsTheirKindSays(t *testing.T) {
	kv := openMemStore(t)
	if _, err := logins.get(bg, kv, "nope"); !errors.Is(err, ErrLoginNotFound) {
		t.Errorf("missing login: %v, want ErrLoginNotFound", err)
	}
	if _, _, err := links.take(bg, kv, "nope"); !errors.Is(err, ErrLinkInvalid) {
		t.Errorf("missing link: %v, want ErrLinkInvalid", err)
	}
	if _, err := codes.get(bg, kv, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("missing code: %v, want store.ErrNotFound", err)
	}
}

// Notice grouping only saves managers from a storm of mail: a record
// that does not read starts the grouping over rather than lose a notice.
func TestLenientKindsReadACorruptRecordAsNone(t *testing.T) {
	kv := openMemStore(t)
	if err := kv.Put(bg, "notice/x", []byte("\x01{broken"), time.Minute); err != nil {
		t.Fatal(err)
	}
	err := noticeGroups.update(bg, kv, "x", time.Hour, func(r *noticeRecord, found bool) error {
		if !found || r.Suppressed != 0 || r.Message != "" {
			t.Errorf("the corrupt notice record reads as %+v (found %v), want the zero record, found", r, found)
		}
		r.Message = "m1"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := noticeGroups.get(bg, kv, "x"); err != nil || r.Message != "m1" {
		t.Fatalf("after the update the notice record is %+v, %v", r, err)
	}
}

// take hands back the stored form, so a token taken before a store
// failure is given back byte for byte.
func TestTakeReturnsTheStoredForm(t *testing.T) {
	kv := openMemStore(t)
	e, err := links.entry("h", &linkRecord{LoginID: "l1", Action: actionApprove}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.PutMany(bg, []store.Entry{e}); err != nil {
		t.Fatal(err)
	}
	rec, raw, err := links.take(bg, kv, "h")
	if err != nil || rec.LoginID != "l1" || string(raw) != string(e.Value) {
		t.Fatalf("take = %+v, %q, %v; want l1 and the stored bytes", rec, raw, err)
	}
	if _, err := kv.Get(bg, "token/h"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after take the link is still stored (%v)", err)
	}
}
