package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestFloodWithRotatingForwardedForIsLimitedByTheRealAddress: without
// trusted_proxies, X-Forwarded-For is ignored, so rotating it does not get
// a flood past the per-IP limit: the first 3 logins are taken, the other 3
// are refused with 429, and the one folded audit line names the
// connection's address.
func TestFloodWithRotatingForwardedForIsLimitedByTheRealAddress(t *testing.T) {
	cfg := strings.Replace(defaultCaddyfile, "\t\tsession_lifetime 1h\n", "\t\tsession_lifetime 1h\n\t\trate_limit {\n\t\t\tlogin_per_ip 3/10m\n\t\t}\n", 1)
	e := newEnv(t, cfg)
	for i := range 6 {
		b := newBrowser(t)
		req, _ := http.NewRequest(http.MethodPost, e.URL("/.mailauth/login"), strings.NewReader(url.Values{"identity": {"bob"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Forwarded-For", fmt.Sprintf("203.0.113.%d", i+1))
		r := b.do(req)
		want := http.StatusSeeOther
		if i >= 3 {
			want = http.StatusTooManyRequests
		}
		if r.Status != want {
			t.Fatalf("login %d from a new X-Forwarded-For: %d; want %d, the limit counting the real address", i+1, r.Status, want)
		}
	}
	ev := e.caddy.waitForAudit(t, "rate_limited", 10*time.Second)
	if ev["limit"] != "login_per_ip" || ev["client_ip"] != "127.0.0.1" {
		t.Fatalf("the limit must key on the connection's address, not X-Forwarded-For: %v", ev)
	}
	time.Sleep(time.Second)
	if n := len(e.mail.Messages(t)); n != 3 {
		t.Fatalf("only the first 3 logins may send mail, %d did", n)
	}
}

// TestClientSentIdentityHeadersNeverReachTheApp: a signed-in client that
// sends X-Remote-User: admin itself is still only alice upstream, and
// Remote-User (which the site does not set) is dropped.
func TestClientSentIdentityHeadersNeverReachTheApp(t *testing.T) {
	cfg := strings.Replace(defaultCaddyfile, "\t\theader_up X-Remote-Email {http.auth.user.email}\n", "\t\theader_up X-Remote-Email {http.auth.user.email}\n\t\theader_up X-Seen-Remote-User {http.request.header.Remote-User}\n", 1)
	e := newEnv(t, cfg)
	b := newBrowser(t)
	confirmAndComplete(t, e, b, startLogin(t, e, b, "alice", "alice@example.test"))
	req, _ := http.NewRequest(http.MethodGet, e.URL("/app"), nil)
	req.Header.Set("X-Remote-User", "admin")
	req.Header.Set("Remote-User", "admin")
	r := b.do(req)
	if !strings.Contains(r.Body, `user="alice"`) || strings.Contains(r.Body, "admin") {
		t.Fatalf("the upstream must see alice and no client-sent identity:\n%s", r.Body)
	}
}

// TestIdentityHeaderSpellingsNeverReachTheApp: CGI and FastCGI read
// X_Remote_User, x-remote_user and X-REMOTE-USER all as
// HTTP_X_REMOTE_USER (PHP reads X.Remote.User so too), and Caddy passes
// each on under its own name once a server lets such names through
// (expected_underscore_headers, expected_dot_headers), so a signed-in
// client that sends them must not get any of them past mailauth: the app
// sees the one X-Remote-User the site sets. The same holds for a name
// configured in strip_headers, written with '_', whose '-' spelling Caddy
// always passes on.
func TestIdentityHeaderSpellingsNeverReachTheApp(t *testing.T) {
	spoofed := []string{
		"X_Remote_User", "x-remote_user", "X-REMOTE-USER", "x_remote_user", "X-Remote-User",
		"X_Remote_Email", "Remote_User", "remote-user", "X-Forwarded_User", "X_AUTH_REQUEST_USER",
		"x-webauth_user", "X_Forwarded_Preferred_Username", "X.Remote.User",
	}
	var underscored, dotted []string
	for _, n := range spoofed {
		if strings.Contains(n, "_") {
			underscored = append(underscored, n)
		} else if strings.Contains(n, ".") {
			dotted = append(dotted, n)
		}
	}
	caddyfile := strings.Replace(defaultCaddyfile, "\tauto_https off\n", "\tauto_https off\n\tservers {\n\t\texpected_underscore_headers "+strings.Join(underscored, " ")+"\n\t\texpected_dot_headers "+strings.Join(dotted, " ")+"\n\t}\n", 1)
	e := newEnvWithApp(t, caddyfile, http.HandlerFunc(echoHeaders))
	b := newBrowser(t)
	confirmAndComplete(t, e, b, startLogin(t, e, b, "alice", "alice@example.test"))

	lines := appHeaders(t, e, b, spoofed, "admin")
	for _, l := range lines {
		if l.value == "admin" {
			t.Errorf("the app received the client's %s: admin", l.name)
		}
	}
	var users []headerLine
	for _, l := range lines {
		if cgiName(l.name) == "HTTP_X_REMOTE_USER" {
			users = append(users, l)
		}
	}
	if len(users) != 1 || users[0].value != "alice" {
		t.Errorf("the app must see one HTTP_X_REMOTE_USER, alice, set by header_up; it saw %v", users)
	}

	// strip_headers is a JSON option: reload the running config with it.
	var cfg map[string]any
	e.adminJSON(t, http.MethodGet, "/config/", &cfg)
	if n := setOnHandlers(cfg, "mailauth", "strip_headers", []string{"X_Tenant_ID", "X-Remote-User"}); n != 1 {
		t.Fatalf("found %d mailauth handlers in the running config, want 1", n)
	}
	body, _ := json.Marshal(cfg)
	req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/load", e.AdminPort), strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("loading the config with strip_headers: %d", resp.StatusCode)
	}
	for _, l := range appHeaders(t, e, b, []string{"X-Tenant-Id", "x_tenant_id", "X_TENANT-ID", "X-Tenant_Id"}, "evil") {
		if cgiName(l.name) == "HTTP_X_TENANT_ID" || l.value == "evil" {
			t.Errorf("strip_headers X_Tenant_ID let the client's %s: %s reach the app", l.name, l.value)
		}
	}
}

// headerLine is one header the app received.
type headerLine struct{ name, value string }

// appHeaders requests the app as b, sending each of names (spelled
// exactly so on the wire) with value, and returns the headers the app
// received.
func appHeaders(t *testing.T, e *env, b *browser, names []string, value string) []headerLine {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.URL("/app"), nil)
	for _, n := range names {
		req.Header[n] = []string{value}
	}
	r := b.do(req)
	if r.Status != http.StatusOK {
		t.Fatalf("the app with a session: got %d:\n%s", r.Status, r.Body)
	}
	var out []headerLine
	for _, l := range strings.Split(strings.TrimSpace(r.Body), "\n") {
		name, v, ok := strings.Cut(l, ": ")
		if !ok {
			t.Fatalf("the app answered %q, not a header line", l)
		}
		out = append(out, headerLine{name, v})
	}
	return out
}

// cgiName is the variable CGI and FastCGI make of a header name.
func cgiName(header string) string {
	return "HTTP_" + strings.ToUpper(strings.ReplaceAll(header, "-", "_"))
}

// setOnHandlers sets key to v in every HTTP handler of a JSON config
// whose "handler" is name, and returns how many it changed.
func setOnHandlers(cfg any, name, key string, v any) int {
	n := 0
	switch c := cfg.(type) {
	case map[string]any:
		if c["handler"] == name {
			c[key] = v
			n++
		}
		for _, child := range c {
			n += setOnHandlers(child, name, key, v)
		}
	case []any:
		for _, child := range c {
			n += setOnHandlers(child, name, key, v)
		}
	}
	return n
}

// TestPendingCookieIsHostOnlyAndAPlantedSecondIsRefused: the pending
// cookie is "__Host-" (Secure, Path=/, no Domain), so no sibling host can
// set it; a request to the sign-in endpoints that carries two anyway, in
// one Cookie header or in two, is refused with a page saying so rather
// than served for either; the browser with its one cookie still signs in;
// and the app never receives the pending cookie, although Path=/ sends it
// there.
func TestPendingCookieIsHostOnlyAndAPlantedSecondIsRefused(t *testing.T) {
	e := newEnvWithApp(t, defaultCaddyfile, http.HandlerFunc(echoHeaders))
	b, attacker := newBrowser(t), newBrowser(t)
	r := b.post(e.URL("/.mailauth/login"), url.Values{"identity": {"alice"}, "return": {"/app"}})
	var set *http.Cookie
	var raw string
	for _, line := range r.Header.Values("Set-Cookie") {
		if c, err := http.ParseSetCookie(line); err == nil && c.Name == "__Host-mailauth_pending" {
			set, raw = c, line
		}
	}
	if set == nil {
		t.Fatalf("the login POST set no __Host-mailauth_pending cookie: %q", r.Header.Values("Set-Cookie"))
	}
	if set.Path != "/" || !set.Secure || !set.HttpOnly || set.Domain != "" || strings.Contains(strings.ToLower(raw), "domain=") {
		t.Errorf("the pending cookie must be Secure, HttpOnly, Path=/ and without Domain, as __Host- requires; got %q", raw)
	}
	link := linkIn(t, e.mail.WaitForMessage(t, "alice@example.test", 15*time.Second).Text)
	attacker.post(e.URL("/.mailauth/login"), url.Values{"identity": {"bob"}})
	planted := attacker.cookie(e.URL("/"), "__Host-mailauth_pending")
	if planted == "" {
		t.Fatal("the second login set no pending cookie")
	}

	mine := "__Host-mailauth_pending=" + set.Value
	theirs := "__Host-mailauth_pending=" + planted
	for _, cookies := range [][]string{{theirs + "; " + mine}, {mine, "theme=dark; " + theirs}} {
		for _, ep := range []struct{ method, path string }{
			{http.MethodGet, "/.mailauth/wait"},
			{http.MethodGet, "/.mailauth/status"},
			{http.MethodPost, "/.mailauth/code"},
			{http.MethodPost, "/.mailauth/complete"},
		} {
			code, body := withCookies(t, ep.method, e.URL(ep.path), cookies)
			if code != http.StatusBadRequest || !strings.Contains(body, "two sign-in cookies") {
				t.Errorf("%s %s with Cookie %q: got %d, want 400 with the page about two sign-in cookies:\n%s", ep.method, ep.path, cookies, code, body)
			}
		}
	}

	confirmAndComplete(t, e, b, link)
	// A second login in the signed-in browser: it now holds a session and
	// a pending cookie, and Path=/ sends both to the app.
	if r := b.post(e.URL("/.mailauth/login"), url.Values{"identity": {"alice"}}); r.Status != http.StatusSeeOther {
		t.Fatalf("a second login POST: got %d", r.Status)
	}
	if b.cookie(e.URL("/app"), "__Host-mailauth_pending") == "" {
		t.Fatal("the browser holds no pending cookie for the app's paths, so this test shows nothing")
	}
	var cookie []string
	for _, l := range appHeaders(t, e, b, nil, "") {
		if l.name == "Cookie" {
			cookie = append(cookie, l.value)
		}
	}
	if got := strings.Join(cookie, "; "); strings.Contains(got, "mailauth_pending") || !strings.Contains(got, "__Host-mailauth_session=") {
		t.Errorf("the app must get the session cookie and never the pending one; it got Cookie %q", got)
	}
}

// withCookies sends a request with exactly these Cookie headers and no
// cookie jar, and returns the status and body.
func withCookies(t *testing.T, method, u string, cookies []string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(""))
	req.Header["Cookie"] = cookies
	req.Header.Set("Accept", "text/html")
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestSessionCookieTamperingIsRefused: flipped bits, a cut prefix, a
// cookie signed by another key and an expired one all get the login page.
func TestSessionCookieTamperingIsRefused(t *testing.T) {
	e := newEnv(t, defaultCaddyfile)
	b := newBrowser(t)
	confirmAndComplete(t, e, b, startLogin(t, e, b, "alice", "alice@example.test"))
	good := b.cookie(e.URL("/"), "__Host-mailauth_session")
	if good == "" {
		t.Fatal("no session cookie")
	}
	flip := []byte(good)
	flip[10] ^= 1
	for name, v := range map[string]string{
		"flipped bit":    string(flip),
		"missing prefix": good[4:],
		"no signature":   good[:strings.IndexByte(good, '.')],
		"other key":      good[:strings.IndexByte(good, '.')+1] + strings.Repeat("A", 43),
	} {
		if code := appWithSession(t, e, v); code != http.StatusFound {
			t.Errorf("%s: got %d, want the 302 to login", name, code)
		}
	}
}

// TestLogoutKillsACopiedCookieOnTheServer: after logout, a copy of the
// session cookie taken before is refused, not only cleared in the browser.
func TestLogoutKillsACopiedCookieOnTheServer(t *testing.T) {
	e := newEnv(t, defaultCaddyfile)
	b := newBrowser(t)
	confirmAndComplete(t, e, b, startLogin(t, e, b, "alice", "alice@example.test"))
	stolen := b.cookie(e.URL("/"), "__Host-mailauth_session")
	if r := postWithToken(t, e, b, "/.mailauth/logout", "/.mailauth/logout", nil); r.Status != http.StatusOK {
		t.Fatalf("logout: %d", r.Status)
	}
	if code := appWithSession(t, e, stolen); code != http.StatusFound {
		t.Fatalf("a cookie copied before logout must be refused, got %d", code)
	}
}

// TestLinkOfOneLoginCannotCompleteAnother: confirming login A's link does
// nothing for the browser waiting on login B, and three cookieless GETs of
// A's link (mail scanners) leave it working.
func TestLinkOfOneLoginCannotCompleteAnother(t *testing.T) {
	e := newEnv(t, defaultCaddyfile)
	a, bb := newBrowser(t), newBrowser(t)
	linkA := startLogin(t, e, a, "alice", "alice@example.test")
	startLogin(t, e, bb, "bob", "bob@example.test")
	for range 3 {
		if r := newBrowser(t).get(e.onSite(linkA)); r.Status != http.StatusOK {
			t.Fatalf("a scanner's GET of the link: %d", r.Status)
		}
	}
	token := linkA[strings.Index(linkA, "token=")+len("token="):]
	// B's browser posts A's token with B's pending cookie and B's number.
	if r := bb.post(e.URL("/.mailauth/verify"), url.Values{"token": {token}, "match": {matchOn(t, e, bb)}}); r.Status == http.StatusOK {
		if st := status(t, bb, e); st != "pending" {
			t.Fatalf("A's token approved B's login (%s)", st)
		}
	}
	if st := status(t, bb, e); st != "pending" {
		t.Fatalf("B's login must stay pending, got %q", st)
	}
	if r := complete(t, e, bb); strings.Contains(strings.Join(r.Header.Values("Set-Cookie"), ";"), "__Host-mailauth_session=") {
		t.Fatal("B's browser got a session from A's link")
	}
}

// TestFiftyConcurrentRedemptionsOfOneLinkApproveOnce: of 50 POSTs of the
// same link at once, exactly one is accepted.
func TestFiftyConcurrentRedemptionsOfOneLinkApproveOnce(t *testing.T) {
	cfg := strings.Replace(defaultCaddyfile, "\t\tsession_lifetime 1h\n", "\t\tsession_lifetime 1h\n\t\trate_limit {\n\t\t\tredeem_per_ip off\n\t\t}\n", 1)
	e := newEnv(t, cfg)
	b := newBrowser(t)
	link := startLogin(t, e, b, "alice", "alice@example.test")
	form := url.Values{"token": {link[strings.Index(link, "token=")+len("token="):]}, "match": {matchOn(t, e, b)}}
	codes := make(chan int, 50)
	start := make(chan struct{})
	for range 50 {
		go func() {
			<-start
			codes <- newBrowser(t).post(e.URL("/.mailauth/verify"), form).Status
		}()
	}
	close(start)
	ok := 0
	for range 50 {
		switch c := <-codes; c {
		case http.StatusOK:
			ok++
		case http.StatusGone:
		default:
			t.Errorf("a redemption got %d; want 200 once and 410 otherwise", c)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of 50 concurrent redemptions were accepted; want exactly 1", ok)
	}
}

// TestIdentityInputRefusesListsAndRepeatedFields: one username or address
// only, with a clear message, and no mail to anybody.
func TestIdentityInputRefusesListsAndRepeatedFields(t *testing.T) {
	e := newEnv(t, defaultCaddyfile)
	b := newBrowser(t)
	for _, form := range []url.Values{
		{"identity": {"alice@example.test,bob@example.test"}},
		{"identity": {"alice@example.test\r\nBcc: bob@example.test"}},
		{"identity": {"alice", "bob"}},
	} {
		r := b.post(e.URL("/.mailauth/login"), form)
		if r.Status != http.StatusBadRequest || !strings.Contains(r.Body, "Enter one username or email address") {
			t.Errorf("%v: got %d, want 400 with a clear message", form, r.Status)
		}
	}
	time.Sleep(500 * time.Millisecond)
	if n := len(e.mail.Messages(t)); n != 0 {
		t.Fatalf("refused input sent %d mails", n)
	}
}

// TestWrongNumberSpendsTheLinkAndApprovesNothing: the opener who picks a
// number other than the waiting page's cannot approve, not even on a
// second try with the right one.
func TestWrongNumberSpendsTheLinkAndApprovesNothing(t *testing.T) {
	e := newEnv(t, defaultCaddyfile)
	b := newBrowser(t)
	link := startLogin(t, e, b, "alice", "alice@example.test")
	right := matchOn(t, e, b)
	wrong := "10"
	if right == wrong {
		wrong = "11"
	}
	token := link[strings.Index(link, "token=")+len("token="):]
	if r := newBrowser(t).post(e.URL("/.mailauth/verify"), url.Values{"token": {token}, "match": {wrong}}); r.Status != http.StatusForbidden || !strings.Contains(r.Body, "Number did not match") {
		t.Fatalf("a wrong number: got %d:\n%s", r.Status, r.Body)
	}
	if r := newBrowser(t).post(e.URL("/.mailauth/verify"), url.Values{"token": {token}, "match": {right}}); r.Status != http.StatusGone {
		t.Fatalf("after a wrong pick the link is spent; the right number got %d", r.Status)
	}
	// The spent link ends the login, so its waiting page says so and
	// offers to start again instead of showing a number that nothing can
	// approve any more.
	if st := status(t, b, e); st != "denied" {
		t.Fatalf("nothing may be approved and the login ends, state %q", st)
	}
	if r := b.get(e.URL("/.mailauth/wait")); !strings.Contains(r.Body, "The number did not match") || !strings.Contains(r.Body, "Start again") {
		t.Fatalf("the waiting page should say the number did not match and offer to start again:\n%s", r.Body)
	}
	e.caddy.waitForAudit(t, "match_failed", 5*time.Second)
}

// appWithSession requests the app as a browser holding only the given
// session cookie value, and returns the status.
func appWithSession(t *testing.T, e *env, session string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.URL("/app"), nil)
	req.Header.Set("Cookie", "__Host-mailauth_session="+session)
	req.Header.Set("Accept", "text/html")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestOperatorRevokesAllSessionsOfAUser through Caddy's admin endpoint.
func TestOperatorRevokesAllSessionsOfAUser(t *testing.T) {
	e := newEnv(t, defaultCaddyfile)
	b := newBrowser(t)
	confirmAndComplete(t, e, b, startLogin(t, e, b, "alice", "alice@example.test"))
	if code, _ := e.admin(t, http.MethodDelete, "/mailauth/sessions"); code != http.StatusBadRequest {
		t.Fatalf("a revoke without user: %d, want 400 naming the parameter", code)
	}
	if code, body := e.admin(t, http.MethodDelete, "/mailauth/sessions?user=alice"); code != http.StatusOK {
		t.Fatalf("revoke: %d %s", code, body)
	}
	if r := b.get(e.URL("/app")); r.Status != http.StatusFound {
		t.Fatalf("alice's session must be dead after the revoke, got %d", r.Status)
	}
	e.caddy.waitForAudit(t, "revoked", 5*time.Second)
}
