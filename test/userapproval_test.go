package test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestUserApprovalAcrossTwoDevices walks the whole User Approval flow
// through a real Caddy and a real mailpit: the browser that asks is one
// cookie jar, the phone that opens the mail is another.
func TestUserApprovalAcrossTwoDevices(t *testing.T) {
	e := newEnv(t, defaultCaddyfile)
	laptop, phone := newBrowser(t), newBrowser(t)

	r := laptop.get(e.URL("/reports/q3?x=1"))
	if r.Status != http.StatusFound || r.Location != "/.mailauth/login?return=%2Freports%2Fq3%3Fx%3D1" {
		t.Fatalf("a browser without a session should be sent to the login page with its path kept; got %d Location=%q", r.Status, r.Location)
	}

	api := newBrowser(t)
	req, _ := http.NewRequest(http.MethodGet, e.URL("/reports/q3"), nil)
	req.Header.Set("Accept", "application/json")
	if r := api.do(req); r.Status != http.StatusUnauthorized || !strings.Contains(r.Body, `"login":"/.mailauth/login?return=%2Freports%2Fq3"`) || r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("an API client without a session should get a 401 whose JSON says where to sign in, got %d %q:\n%s", r.Status, r.Header.Get("Content-Type"), r.Body)
	}

	r = laptop.get(e.URL(r.Location))
	if r.Status != http.StatusOK || !strings.Contains(r.Body, `name="identity"`) || !strings.Contains(r.Body, `value="/reports/q3?x=1"`) {
		t.Fatalf("login page should have the identity field and the return path; got %d:\n%s", r.Status, r.Body)
	}

	r = laptop.post(e.URL("/.mailauth/login"), url.Values{"identity": {"alice"}, "return": {"/reports/q3?x=1"}})
	if r.Status != http.StatusSeeOther || r.Location != "/.mailauth/wait" {
		t.Fatalf("login POST should 303 to the waiting page, got %d Location=%q", r.Status, r.Location)
	}
	pending := laptop.cookie(e.URL("/.mailauth/"), "__Host-mailauth_pending")
	if pending == "" {
		t.Fatal("login POST set no pending cookie")
	}

	r = laptop.get(e.URL("/.mailauth/wait"))
	for _, want := range []string{"Check your email", "Support reference", "spam", "/.mailauth/static/wait.js", `http-equiv="refresh"`} {
		if !strings.Contains(r.Body, want) {
			t.Errorf("waiting page lacks %q:\n%s", want, r.Body)
		}
	}
	if st := status(t, laptop, e); st != "pending" {
		t.Fatalf("status before the link is opened: got %q, want pending", st)
	}

	msg := e.mail.WaitForMessage(t, "alice@example.test", 15*time.Second)
	link := linkIn(t, msg.Text)
	if !strings.HasPrefix(link, e.Server()+"/.mailauth/verify?token=") {
		t.Fatalf("the link should be on the profile's server %s, got %s", e.Server(), link)
	}
	if !strings.Contains(msg.HTML, link) {
		t.Errorf("the HTML part should carry the same link")
	}
	if msg.Subject != "Sign in to 127.0.0.1" {
		t.Errorf("subject from the profile template: got %q", msg.Subject)
	}

	// Mail scanners open links: a GET shows the request and changes nothing.
	for i := range 2 {
		r = phone.get(e.onSite(link))
		if r.Status != http.StatusOK || !strings.Contains(r.Body, "Confirm sign-in") || !strings.Contains(r.Body, `method="post"`) {
			t.Fatalf("GET %d of the link should show the Confirm form, got %d:\n%s", i+1, r.Status, r.Body)
		}
	}
	if !strings.Contains(r.Body, "Firefox on Linux") || !strings.Contains(r.Body, "127.0.0.1") {
		t.Errorf("the landing page should say from where and which browser asked:\n%s", r.Body)
	}
	if st := status(t, laptop, e); st != "pending" {
		t.Fatalf("opening the link with GET changed the login to %q", st)
	}

	token := link[strings.Index(link, "token=")+len("token="):]
	match := matchOn(t, e, laptop)
	r = phone.post(e.URL("/.mailauth/verify"), url.Values{"token": {token}, "match": {match}})
	if r.Status != http.StatusOK || !strings.Contains(r.Body, "Sign-in confirmed") {
		t.Fatalf("confirming the link should succeed, got %d:\n%s", r.Status, r.Body)
	}
	if c := phone.cookie(e.URL("/"), "__Host-mailauth_session"); c != "" {
		t.Fatal("the device that confirmed must not get the session: only the browser that asked does")
	}
	r = phone.post(e.URL("/.mailauth/verify"), url.Values{"token": {token}, "match": {match}})
	if r.Status != http.StatusGone {
		t.Fatalf("a second confirm of the same link should fail with 410, got %d", r.Status)
	}

	if st := status(t, laptop, e); st != "approved" {
		t.Fatalf("status after confirm: got %q, want approved", st)
	}
	// Another browser cannot collect the session.
	if r := phone.post(e.URL("/.mailauth/complete"), nil); r.Header.Get("Set-Cookie") != "" && strings.Contains(r.Header.Get("Set-Cookie"), "__Host-mailauth_session=") {
		t.Fatal("a browser without the pending cookie was given a session")
	}
	if r := laptop.post(e.URL("/.mailauth/complete"), nil); r.Status != http.StatusForbidden {
		t.Fatalf("complete without the form token must be refused, got %d", r.Status)
	}
	r = complete(t, e, laptop)
	if r.Status != http.StatusSeeOther || r.Location != "/reports/q3?x=1" {
		t.Fatalf("complete should 303 to the return path, got %d Location=%q", r.Status, r.Location)
	}
	sc := r.Header.Values("Set-Cookie")
	var session string
	for _, c := range sc {
		if strings.HasPrefix(c, "__Host-mailauth_session=") {
			session = c
		}
	}
	for _, attr := range []string{"HttpOnly", "Secure", "SameSite=Lax", "Path=/"} {
		if !strings.Contains(session, attr) {
			t.Errorf("session cookie lacks %s: %q", attr, session)
		}
	}

	r = laptop.get(e.URL("/reports/q3?x=1"))
	if r.Status != http.StatusOK || !strings.Contains(r.Body, `user="alice" email="alice@example.test" path=/reports/q3`) {
		t.Fatalf("the upstream should see the user through header_up, got %d:\n%s", r.Status, r.Body)
	}
	if r := laptop.post(e.URL("/.mailauth/complete"), nil); strings.Contains(strings.Join(r.Header.Values("Set-Cookie"), ";"), "__Host-mailauth_session=ey") {
		t.Fatal("a completed login handed out a second session")
	}
	if r := phone.get(e.URL("/reports/q3")); r.Status != http.StatusFound {
		t.Fatalf("the confirming device has no session and should be redirected, got %d", r.Status)
	}

	r = postWithToken(t, e, laptop, "/.mailauth/logout", "/.mailauth/logout", nil)
	if r.Status != http.StatusOK || !strings.Contains(r.Body, "signed out") {
		t.Fatalf("logout: got %d:\n%s", r.Status, r.Body)
	}
	if r := laptop.get(e.URL("/reports/q3")); r.Status != http.StatusFound {
		t.Fatalf("after logout the app should redirect to login, got %d", r.Status)
	}

	e.caddy.waitForAudit(t, "logout", 5*time.Second)
	seen := map[string]bool{}
	for _, ev := range e.caddy.auditEvents(t) {
		seen[ev["event"].(string)] = true
		raw, _ := json.Marshal(ev)
		for _, secret := range []string{token, pending, strings.SplitN(pending, ".", 2)[1]} {
			if strings.Contains(string(raw), secret) {
				t.Errorf("audit line carries a secret: %s", raw)
			}
		}
	}
	for _, want := range []string{"login_started", "mail_queued", "mail_sent", "link_opened", "approved", "session_issued", "logout"} {
		if !seen[want] {
			t.Errorf("no %q event in the audit log (saw %v)", want, seen)
		}
	}
	if logs := e.caddy.logs.String(); strings.Contains(logs, token) {
		t.Error("the link token appears in Caddy's log")
	}
}

// TestLinkIsBuiltFromProfileServerNotHostHeader: a login posted with a
// forged Host still mails a link on the profile's server.
func TestLinkIsBuiltFromProfileServerNotHostHeader(t *testing.T) {
	e := newEnv(t, defaultCaddyfile)
	b := newBrowser(t)
	req, _ := http.NewRequest(http.MethodPost, e.URL("/.mailauth/login"), strings.NewReader(url.Values{"identity": {"bob@example.test"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Host = "evil.example"
	req.Header.Set("X-Forwarded-Host", "evil2.example")
	req.Header.Set("X-Forwarded-Proto", "http")
	if r := b.do(req); r.Status != http.StatusSeeOther {
		t.Fatalf("login POST with Host evil.example: got %d", r.Status)
	}
	msg := e.mail.WaitForMessage(t, "bob@example.test", 15*time.Second)
	link := linkIn(t, msg.Text)
	if !strings.HasPrefix(link, e.Server()+"/.mailauth/verify?token=") {
		t.Fatalf("link should start with the profile server %s, got %s", e.Server(), link)
	}
	if strings.Contains(msg.Text, "evil.example/") || strings.Contains(msg.HTML, "//evil.example") || strings.Contains(msg.Text, "evil2") || strings.Contains(msg.HTML, "evil2") {
		t.Fatalf("the forged host made it into a link:\n%s", msg.Text)
	}
}

// TestUnknownUserGetsTheSameAnswerAndNoMail: the response to an unknown
// user is the same redirect and cookie as for a known one, and no mail
// leaves.
func TestUnknownUserGetsTheSameAnswerAndNoMail(t *testing.T) {
	e := newEnv(t, defaultCaddyfile)
	known, unknown := newBrowser(t), newBrowser(t)
	rk := known.post(e.URL("/.mailauth/login"), url.Values{"identity": {"alice"}})
	ru := unknown.post(e.URL("/.mailauth/login"), url.Values{"identity": {"mallory"}})
	if rk.Status != ru.Status || rk.Location != ru.Location || len(rk.Body) != len(ru.Body) {
		t.Fatalf("known and unknown users got different answers: %d %q (%d bytes) vs %d %q (%d bytes)", rk.Status, rk.Location, len(rk.Body), ru.Status, ru.Location, len(ru.Body))
	}
	if len(known.cookie(e.URL("/.mailauth/"), "__Host-mailauth_pending")) != len(unknown.cookie(e.URL("/.mailauth/"), "__Host-mailauth_pending")) {
		t.Fatal("the pending cookies of known and unknown users differ in shape")
	}
	wk, wu := known.get(e.URL("/.mailauth/wait")), unknown.get(e.URL("/.mailauth/wait"))
	if wk.Status != wu.Status || samePage(wk.Body) != samePage(wu.Body) {
		t.Fatalf("waiting pages differ:\n%s\n---\n%s", wk.Body, wu.Body)
	}
	e.mail.WaitForMessage(t, "alice@example.test", 15*time.Second)
	e.caddy.waitForAudit(t, "user_unknown", 5*time.Second)
	for _, m := range e.mail.Messages(t) {
		if !strings.Contains(strings.Join(m.To, ","), "alice@example.test") {
			t.Fatalf("mail went to %v for an unknown user", m.To)
		}
	}
}

// TestReturnURLCannotLeaveTheSite: absolute and scheme-relative return
// URLs are replaced with "/".
func TestReturnURLCannotLeaveTheSite(t *testing.T) {
	e := newEnv(t, defaultCaddyfile)
	b := newBrowser(t)
	for _, ret := range []string{"https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)",
		"/%2F%2Fevil.example", "%2F%2Fevil.example", "https://user@evil.example", "/\t/evil.example", "https:evil.example", "///evil.example", "data:text/html,evil.example"} {
		r := b.get(e.URL("/.mailauth/login?return=" + url.QueryEscape(ret)))
		if strings.Contains(r.Body, "evil.example") || strings.Contains(r.Body, "javascript:") {
			t.Errorf("return=%q was kept in the login form", ret)
		}
	}
}

func status(t *testing.T, b *browser, e *env) string {
	t.Helper()
	r := b.get(e.URL("/.mailauth/status"))
	var s struct {
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(r.Body), &s); err != nil {
		t.Fatalf("status is not JSON (%d): %s", r.Status, r.Body)
	}
	return s.State
}

var (
	referenceCode = regexp.MustCompile(`[A-Z2-9]{3}-[A-Z2-9]{3}`)
	digits        = regexp.MustCompile(`[0-9]+`)
	perResponse   = regexp.MustCompile(`(nonce|name="csrf" value)="[^"]*"`)
)

// samePage blanks what differs between any two logins (the support
// reference, the number to match, clock times and countdowns, the script
// nonce and form token), so pages can be compared for what they say about
// the user.
var typedInput = regexp.MustCompile(`<strong id="typed">[^<]*</strong>`)

func samePage(body string) string {
	body = perResponse.ReplaceAllString(body, `$1="X"`)
	// What the browser typed is its own, whoever it names.
	body = typedInput.ReplaceAllString(body, `<strong id="typed">TYPED</strong>`)
	return digits.ReplaceAllString(referenceCode.ReplaceAllString(body, "REF"), "0")
}
