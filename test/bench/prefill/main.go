// Command prefill fills a Badger store with pending logins, as the scale
// benchmark needs: each login is stored as approval stores it (the JSON of
// approval.Login under "login/<id>", with the same TTL), with the link token
// that its mail carries ("token/<sha256 hex>" → the link record), and as
// many sessions, as approval records them for the admin API's listing
// ("session/<id hex>" → approval.SessionInfo). Checking a session never
// reads that record, but it takes its share of the store.
//
// Store.Put syncs every write, which fills about a thousand logins a second
// here: far too slow for a million. So the records are written with
// Badger's WriteBatch, in the store's own key layout (a 'd' byte before the
// caller's key, expiry in whole Unix seconds), and then read back through
// store.OpenBadger and Store.Get, which fails the run if that layout ever
// drifts from the store's.
//
// Finally the LSM tree is flattened, so that the store Caddy opens is the
// steady state of one holding N logins, not a pile of level-0 tables that
// Caddy would spend the measured run compacting (which the first scale run
// at 1M did: compaction took 40% of its CPU and most of its memory).
//
//	prefill -dir /tmp/store -n 1000000
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/mailauth/caddy-mailauth/approval"
	"github.com/mailauth/caddy-mailauth/store"
)

// linkRecord mirrors approval's unexported link record.
type linkRecord struct {
	LoginID   string `json:"login_id"`
	Action    string `json:"action"`
	Recipient string `json:"recipient,omitempty"`
}

func main() {
	dir := flag.String("dir", "", "Badger directory to fill (created when missing)")
	n := flag.Int("n", 1000, "pending logins to write")
	flag.Parse()
	if *dir == "" || *n <= 0 {
		flag.Usage()
		os.Exit(2)
	}
	start := time.Now()
	first, last, err := fill(*dir, *n)
	if err != nil {
		log.Fatal(err)
	}
	if err := compact(*dir); err != nil {
		log.Fatal(err)
	}
	if err := check(*dir, first, last); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("prefill: %d logins with their tokens, and %d sessions, in %s\n", *n, *n, time.Since(start).Round(time.Millisecond))
}

// fill writes n logins and their tokens and returns the first and last
// login keys.
func fill(dir string, n int) (first, last string, err error) {
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		return "", "", err
	}
	defer func() {
		if cerr := db.Close(); err == nil {
			err = cerr
		}
	}()
	wb := db.NewWriteBatch()
	defer wb.Cancel()
	for i := range n {
		login, token, session, err := records(int64(i))
		if err != nil {
			return "", "", err
		}
		for _, r := range []record{login, token, session} {
			e := badger.NewEntry(append([]byte{'d'}, r.key...), r.value)
			e.ExpiresAt = uint64(time.Now().Add(r.ttl).Unix()) + 1
			if err := wb.SetEntry(e); err != nil {
				return "", "", err
			}
		}
		if i == 0 {
			first = login.key
		}
		last = login.key
	}
	return first, last, wb.Flush()
}

// compact reopens the filled store and flattens its LSM tree into one
// level. It runs on a fresh open because fill's Close flushes its last
// memtable into a new level-0 table; this open has nothing in its
// memtable, so this Close adds no table after the flattening.
func compact(dir string) (err error) {
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		return err
	}
	defer func() {
		if cerr := db.Close(); err == nil {
			err = cerr
		}
	}()
	// Two workers: one per core.
	if err := db.Flatten(2); err != nil {
		return fmt.Errorf("prefill: flatten: %w", err)
	}
	return nil
}

// check reads the first and last login back through the store.
func check(dir, first, last string) error {
	st, err := store.OpenBadger(store.BadgerOptions{Dir: dir}, nil)
	if err != nil {
		return err
	}
	defer st.Close()
	for _, key := range []string{first, last} {
		raw, err := st.Get(context.Background(), key)
		if err != nil {
			return fmt.Errorf("prefill: reading %s back through the store: %w", key, err)
		}
		var l approval.Login
		if err := json.Unmarshal(raw, &l); err != nil || l.State != approval.StatePending {
			return fmt.Errorf("prefill: %s reads back as %q (%v)", key, raw, err)
		}
	}
	return nil
}

type record struct {
	key   string
	value []byte
	ttl   time.Duration
}

// records returns login i, the token of its link and a session of the
// same user, as approval writes them.
func records(i int64) (login, token, session record, err error) {
	now := time.Now()
	id := secret(16)
	pending := secret(32)
	l := approval.Login{
		ID:          id,
		PendingHash: hash(pending),
		Reference:   fmt.Sprintf("PF%d", i),
		Profile:     "daily",
		Input:       fmt.Sprintf("user%d", i),
		Username:    fmt.Sprintf("user%d", i),
		Name:        fmt.Sprintf("User %d", i),
		Email:       fmt.Sprintf("user%d@bench.test", i),
		Type:        approval.TypeUser,
		App:         "127.0.0.1",
		ReturnURL:   "/app",
		ClientIP:    "127.0.0.1",
		UserAgent:   "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
		CreatedAt:   now,
		ExpiresAt:   now.Add(15 * time.Minute),
		State:       approval.StatePending,
	}
	raw, err := json.Marshal(&l)
	if err != nil {
		return login, token, session, err
	}
	rec, err := json.Marshal(linkRecord{LoginID: id, Action: "approve", Recipient: l.Email})
	if err != nil {
		return login, token, session, err
	}
	sid := make([]byte, 16)
	_, _ = rand.Read(sid)
	info, err := json.Marshal(approval.SessionInfo{
		ID: hex.EncodeToString(sid), User: l.Username, Email: l.Email, Profile: l.Profile, Site: l.App,
		Reference: l.Reference, ClientIP: l.ClientIP, UserAgent: l.UserAgent,
		IssuedAt: now.UTC(), ExpiresAt: now.Add(8 * time.Hour).UTC(),
	})
	if err != nil {
		return login, token, session, err
	}
	// approval keeps a login for its longest link plus an hour of grace.
	login = record{"login/" + id, versioned(raw), 15*time.Minute + time.Hour}
	token = record{"token/" + hash(secret(32)), versioned(rec), 15 * time.Minute}
	session = record{"session/" + hex.EncodeToString(sid), versioned(info), 8 * time.Hour}
	return login, token, session, nil
}

func secret(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// versioned is raw as approval stores records: behind the version byte of
// approval/record.go (recordVersion), so that reads cost what they do in
// production rather than take the path for records of earlier releases.
func versioned(raw []byte) []byte {
	return append([]byte{1}, raw...)
}
