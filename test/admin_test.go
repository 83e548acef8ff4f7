package test

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// admin calls Caddy's admin endpoint as an operator's script would and
// returns the status and body.
func (e *env) admin(t *testing.T, method, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", e.AdminPort, path), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", fmt.Sprintf("http://127.0.0.1:%d", e.AdminPort))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// adminJSON is admin for a call that must succeed, decoding its answer.
func (e *env) adminJSON(t *testing.T, method, path string, v any) {
	t.Helper()
	code, body := e.admin(t, method, path)
	if code != http.StatusOK {
		t.Fatalf("%s %s: %d %s", method, path, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("%s %s: not JSON: %v\n%s", method, path, err, body)
	}
}

type adminLogin struct {
	Reference string `json:"reference"`
	User      string `json:"user"`
	Profile   string `json:"profile"`
	Site      string `json:"site"`
	State     string `json:"state"`
	Age       int    `json:"age_seconds"`
}

// TestOperatorDeniesAPendingLoginByReference: the operator lists what is
// waiting, denies it by its reference, and the user's waiting page, which
// is long-polling, shows it denied at once.
func TestOperatorDeniesAPendingLoginByReference(t *testing.T) {
	e := newEnv(t, defaultCaddyfile)
	b := newBrowser(t)
	link := startLogin(t, e, b, "bob", "bob@example.test")

	var list struct{ Logins []adminLogin }
	e.adminJSON(t, http.MethodGet, "/mailauth/logins", &list)
	if len(list.Logins) != 1 {
		t.Fatalf("pending logins: %+v; want bob's", list.Logins)
	}
	l := list.Logins[0]
	if l.User != "bob" || l.Profile != "daily" || l.State != "pending" || l.Site == "" || !referenceCode.MatchString(l.Reference) || l.Age < 0 || l.Age > 60 {
		t.Errorf("listed login %+v; want bob's, pending, with site, profile, reference and age", l)
	}

	polled := make(chan string, 1)
	start := time.Now()
	go func() {
		r := b.get(e.URL("/.mailauth/status?wait=pending"))
		polled <- r.Body
	}()
	time.Sleep(300 * time.Millisecond)
	var denied adminLogin
	e.adminJSON(t, http.MethodPost, "/mailauth/logins/"+l.Reference+"/deny?by=ops", &denied)
	if denied.State != "denied" {
		t.Errorf("deny answered %+v", denied)
	}
	select {
	case body := <-polled:
		if !strings.Contains(body, `"state":"denied"`) {
			t.Errorf("the long poll answered %s; want denied", body)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("the long poll took %v to see the deny", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long poll did not answer within 10s of the deny")
	}
	if r := b.get(e.URL("/.mailauth/wait")); !strings.Contains(r.Body, "denied") {
		t.Errorf("the waiting page after the deny:\n%s", r.Body)
	}
	token := link[strings.Index(link, "token=")+len("token="):]
	if r := newBrowser(t).post(e.URL("/.mailauth/verify"), url.Values{"token": {token}}); r.Status == http.StatusOK && !strings.Contains(r.Body, "already") {
		t.Errorf("the link still works after the operator's deny: %d\n%s", r.Status, r.Body)
	}
	e.adminJSON(t, http.MethodGet, "/mailauth/logins", &list)
	if len(list.Logins) != 0 {
		t.Errorf("pending after the deny: %+v", list.Logins)
	}
	for _, c := range []struct {
		method, path string
		code         int
		says         string
	}{
		{http.MethodPost, "/mailauth/logins/" + l.Reference + "/deny", http.StatusConflict, "already decided"},
		{http.MethodPost, "/mailauth/logins/AAA-AAA/deny", http.StatusNotFound, "AAA-AAA"},
		{http.MethodGet, "/mailauth/logins/" + l.Reference + "/deny", http.StatusMethodNotAllowed, "POST"},
		{http.MethodGet, "/mailauth/logins?all=maybe", http.StatusBadRequest, "parameter all"},
	} {
		if code, body := e.admin(t, c.method, c.path); code != c.code || !strings.Contains(body, c.says) {
			t.Errorf("%s %s = %d %s; want %d saying %q", c.method, c.path, code, body, c.code, c.says)
		}
	}
	ev := e.caddy.waitForAudit(t, "denied", 5*time.Second)
	if ev["decider"] != "operator ops" || ev["reference"] != l.Reference {
		t.Errorf("denied audit line %v; want the operator and the reference", ev)
	}
}

// TestOperatorListsAndRevokesOneSession: one of alice's two sessions is
// cut off by id; the other goes on.
func TestOperatorListsAndRevokesOneSession(t *testing.T) {
	e := newEnv(t, defaultCaddyfile)
	laptop, phone := newBrowser(t), newBrowser(t)
	confirmAndComplete(t, e, laptop, startLogin(t, e, laptop, "alice", "alice@example.test"))
	e.mail.DeleteAll(t)
	confirmAndComplete(t, e, phone, startLogin(t, e, phone, "alice", "alice@example.test"))

	var list struct {
		Sessions []struct {
			ID, User, Site, Reference string
			IssuedAt                  time.Time `json:"issued_at"`
		}
	}
	e.adminJSON(t, http.MethodGet, "/mailauth/sessions?user=alice", &list)
	if len(list.Sessions) != 2 || list.Sessions[0].User != "alice" || len(list.Sessions[0].ID) != 32 {
		t.Fatalf("alice's sessions: %+v; want 2", list.Sessions)
	}
	var none struct{ Sessions []any }
	if e.adminJSON(t, http.MethodGet, "/mailauth/sessions?user=bob", &none); len(none.Sessions) != 0 {
		t.Errorf("bob's sessions: %+v", none.Sessions)
	}
	first := list.Sessions[0].ID
	if code, body := e.admin(t, http.MethodDelete, "/mailauth/sessions/"+first); code != http.StatusOK {
		t.Fatalf("revoking %s: %d %s", first, code, body)
	}
	// Both were issued within the same second, so which browser holds
	// the first listed is not known; exactly one must be cut off.
	if a, b := laptop.get(e.URL("/app")).Status, phone.get(e.URL("/app")).Status; a+b != http.StatusOK+http.StatusFound {
		t.Errorf("after revoking one of two sessions: the laptop gets %d and the phone %d; want one 200 and one 302", a, b)
	}
	e.adminJSON(t, http.MethodGet, "/mailauth/sessions", &list)
	if len(list.Sessions) != 1 || list.Sessions[0].ID == first {
		t.Errorf("sessions after the revoke: %+v", list.Sessions)
	}
	for _, c := range []struct {
		path string
		code int
		says string
	}{
		{"/mailauth/sessions/" + first, http.StatusNotFound, first},
		{"/mailauth/sessions/not-hex", http.StatusBadRequest, "32 hexadecimal digits"},
	} {
		if code, body := e.admin(t, http.MethodDelete, c.path); code != c.code || !strings.Contains(body, c.says) {
			t.Errorf("DELETE %s = %d %s; want %d saying %q", c.path, code, body, c.code, c.says)
		}
	}
}

type auditPage struct {
	Records []struct {
		Seq       uint64         `json:"seq"`
		Time      time.Time      `json:"time"`
		Event     string         `json:"event"`
		User      string         `json:"user"`
		Reference string         `json:"reference"`
		Fields    map[string]any `json:"fields"`
	} `json:"records"`
	Next uint64 `json:"next"`
}

// TestOperatorQueriesTheAuditTrail with each filter.
func TestOperatorQueriesTheAuditTrail(t *testing.T) {
	e := newEnv(t, defaultCaddyfile)
	b := newBrowser(t)
	confirmAndComplete(t, e, b, startLogin(t, e, b, "alice", "alice@example.test"))
	if r := b.post(e.URL("/.mailauth/login"), url.Values{"identity": {"mallory"}}); r.Status != http.StatusSeeOther {
		t.Fatalf("login POST for mallory: %d", r.Status)
	}
	e.caddy.waitForAudit(t, "user_unknown", 5*time.Second)

	var all auditPage
	e.adminJSON(t, http.MethodGet, "/mailauth/audit?limit=1000", &all)
	seen := map[string]bool{}
	for i, r := range all.Records {
		seen[r.Event] = true
		if r.Seq != uint64(i+1) {
			t.Errorf("record %d has seq %d", i, r.Seq)
		}
	}
	for _, ev := range []string{"login_started", "mail_queued", "mail_sent", "approved", "session_issued", "user_unknown"} {
		if !seen[ev] {
			t.Errorf("the stored trail lacks %s; it has %v", ev, seen)
		}
	}

	var alice auditPage
	e.adminJSON(t, http.MethodGet, "/mailauth/audit?user=alice", &alice)
	if len(alice.Records) == 0 {
		t.Error("user=alice: nothing")
	}
	for _, r := range alice.Records {
		if r.User != "alice" && r.Fields["decider"] != "alice" {
			t.Errorf("user=alice returned %s of %q", r.Event, r.User)
		}
	}
	var issued auditPage
	e.adminJSON(t, http.MethodGet, "/mailauth/audit?event=session_issued", &issued)
	if len(issued.Records) != 1 || issued.Records[0].User != "alice" {
		t.Errorf("event=session_issued: %+v", issued.Records)
	}
	var recent, future auditPage
	e.adminJSON(t, http.MethodGet, "/mailauth/audit?since=1h", &recent)
	if len(recent.Records) != len(all.Records) {
		t.Errorf("since=1h: %d records; want all %d", len(recent.Records), len(all.Records))
	}
	e.adminJSON(t, http.MethodGet, "/mailauth/audit?since="+url.QueryEscape(time.Now().Add(time.Hour).UTC().Format(time.RFC3339)), &future)
	if len(future.Records) != 0 {
		t.Errorf("since an hour from now: %d records", len(future.Records))
	}
	var page, next auditPage
	e.adminJSON(t, http.MethodGet, "/mailauth/audit?limit=2", &page)
	if len(page.Records) != 2 || page.Next != 2 {
		t.Fatalf("limit=2: %d records, next %d", len(page.Records), page.Next)
	}
	e.adminJSON(t, http.MethodGet, fmt.Sprintf("/mailauth/audit?limit=2&after=%d", page.Next), &next)
	if len(next.Records) != 2 || next.Records[0].Seq != 3 {
		t.Errorf("the page after 2: %+v", next.Records)
	}
	for param, bad := range map[string]string{"limit": "0", "since": "yesterday", "event": "bogus", "after": "x"} {
		code, body := e.admin(t, http.MethodGet, "/mailauth/audit?"+param+"="+bad)
		if code != http.StatusBadRequest || !strings.Contains(body, "parameter "+param) {
			t.Errorf("%s=%s: %d %s; want 400 naming the parameter", param, bad, code, body)
		}
	}
}

// TestAuditVerifyDetectsTampering: `caddy mailauth audit verify` finds the
// chain intact beside the running Caddy (through its admin endpoint), and,
// once Caddy is stopped and a stored record edited, names that record and
// fails.
func TestAuditVerifyDetectsTampering(t *testing.T) {
	e := newEnv(t, defaultCaddyfile)
	b := newBrowser(t)
	confirmAndComplete(t, e, b, startLogin(t, e, b, "alice", "alice@example.test"))
	cfg := filepath.Join(t.TempDir(), "Caddyfile")
	if err := writeFile(cfg, e.Caddyfile); err != nil {
		t.Fatal(err)
	}
	out, ok := runCaddy(t, "mailauth", "audit", "verify", "--config", cfg)
	if !ok || !strings.Contains(out, "chain intact") || !strings.Contains(out, "running Caddy") {
		t.Fatalf("verify beside the running Caddy (ok=%v):\n%s", ok, out)
	}
	e.caddy.Stop(t)
	if out, ok := runCaddy(t, "mailauth", "audit", "verify", "--config", cfg); !ok || !strings.Contains(out, "chain intact") || !strings.Contains(out, "(store)") {
		t.Fatalf("verify of the stopped store (ok=%v):\n%s", ok, out)
	}

	// Edit record 2 the way someone with the disk could: the user it
	// names becomes someone else.
	db, err := badger.Open(badger.DefaultOptions(e.StoreDir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	key := binary.BigEndian.AppendUint64(append([]byte("laudit"), 0), 2)
	err = db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		edited := strings.Replace(string(v), `"user":"alice"`, `"user":"bob"`, 1)
		if edited == string(v) {
			return fmt.Errorf("record 2 does not name alice: %s", v)
		}
		return txn.Set(key, []byte(edited))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("tampering with record 2: %v", err)
	}
	out, ok = runCaddy(t, "mailauth", "audit", "verify", "--config", cfg)
	if ok || !strings.Contains(out, "BROKEN record 2: edited") {
		t.Fatalf("verify after tampering (ok=%v); want a failure naming record 2:\n%s", ok, out)
	}
}
