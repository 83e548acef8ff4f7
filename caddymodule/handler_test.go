package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/approval"
	"github.com/mailauth/caddy-mailauth/directory"
	"github.com/mailauth/caddy-mailauth/mailer"
	"github.com/mailauth/caddy-mailauth/store"
)

type discardQueue struct{}

func (discardQueue) Enqueue(context.Context, *mailer.Message) error { return nil }

// testHandler is a provisioned-enough handler on an in-memory store and a
// session cookie it accepts.
func testHandler(tb testing.TB) (*Handler, string) {
	tb.Helper()
	st, err := store.OpenBadger(store.BadgerOptions{InMemory: true}, zap.NewNop())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	codec, err := approval.NewSessionCodec(make([]byte, approval.SessionKeySize))
	if err != nil {
		tb.Fatal(err)
	}
	svc, err := approval.NewService(approval.Config{Store: st, Mail: discardQueue{}, Codec: codec, CodeKey: make([]byte, 32), SessionLifetime: time.Hour})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(svc.Close)
	dir, err := directory.NewLocal("staff", []directory.LocalUser{{Username: "alice", Email: "alice@example.test"}})
	if err != nil {
		tb.Fatal(err)
	}
	daily := &approval.Profile{Name: "daily", Type: approval.TypeUser, LinkExpiration: 15 * time.Minute, Directories: []directory.Directory{dir}}
	now := time.Now()
	sess := &approval.Session{User: "alice", Email: "alice@example.test", Directory: "staff", IssuedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix()}
	sess.AddApproval(approval.Approval{Profile: "daily", Type: approval.TypeUser, At: now.Unix(), Until: now.Add(time.Hour).Unix()}, now.Unix())
	cookie, err := codec.Encode(sess)
	if err != nil {
		tb.Fatal(err)
	}
	return &Handler{DefaultProfile: "daily", app: &App{service: svc}, site: approval.NewSite(daily, nil), logger: zap.NewNop(), csrf: http.NewCrossOriginProtection(), sessionCookie: hostSessionCookie, strip: newHeaderSet(defaultIdentityHeaders)}, cookie
}

func request(method, target string, hdr http.Header) (*http.Request, *caddy.Replacer) {
	r := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		r.Header[k] = v
	}
	repl := caddy.NewReplacer()
	return r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl)), repl
}

func TestValidSessionPassesWithIdentityPlaceholders(t *testing.T) {
	h, cookie := testHandler(t)
	r, repl := request(http.MethodGet, "/app", http.Header{"Cookie": {"other=1; __Host-mailauth_session=" + cookie}})
	called := false
	err := h.ServeHTTP(httptest.NewRecorder(), r, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		called = true
		return nil
	}))
	if err != nil || !called {
		t.Fatalf("a valid session should reach the next handler (err=%v, called=%v)", err, called)
	}
	if v, _ := repl.GetString("http.auth.user.id"); v != "alice" {
		t.Errorf("{http.auth.user.id} = %q, want alice", v)
	}
	if v, _ := repl.GetString("http.auth.user.email"); v != "alice@example.test" {
		t.Errorf("{http.auth.user.email} = %q, want alice@example.test", v)
	}
}

func TestMissingOrForgedSessionIsRefused(t *testing.T) {
	h, cookie := testHandler(t)
	forged := forge(cookie)
	for _, tc := range []struct {
		name   string
		hdr    http.Header
		status int
		loc    string
	}{
		{"browser without cookie", http.Header{"Accept": {"text/html"}}, http.StatusFound, "/.mailauth/login?return=%2Fapp%3Fq%3D1"},
		{"browser with forged cookie", http.Header{"Accept": {"text/html"}, "Cookie": {"__Host-mailauth_session=" + forged}}, http.StatusFound, "/.mailauth/login?return=%2Fapp%3Fq%3D1"},
		{"API client", http.Header{"Accept": {"application/json"}}, http.StatusUnauthorized, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := request(http.MethodGet, "/app?q=1", tc.hdr)
			w := httptest.NewRecorder()
			err := h.ServeHTTP(w, r, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
				t.Fatal("the next handler ran without a valid session")
				return nil
			}))
			status := w.Code
			if he, ok := err.(caddyhttp.HandlerError); ok {
				status = he.StatusCode
			}
			if status != tc.status || w.Header().Get("Location") != tc.loc {
				t.Fatalf("got %d Location=%q, want %d %q", status, w.Header().Get("Location"), tc.status, tc.loc)
			}
			if tc.status == http.StatusUnauthorized {
				var body struct{ Error, Login string }
				if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Error != "unauthenticated" || body.Login != "/.mailauth/login?return=%2Fapp%3Fq%3D1" {
					t.Fatalf("a 401 should say in JSON where to sign in, got %q (%v)", w.Body.String(), err)
				}
				if w.Header().Get("WWW-Authenticate") == "" {
					t.Fatal("a 401 without WWW-Authenticate")
				}
			}
		})
	}
}

func TestCrossSitePostIsRefused(t *testing.T) {
	h, _ := testHandler(t)
	r, _ := request(http.MethodPost, "/.mailauth/login", http.Header{"Sec-Fetch-Site": {"cross-site"}, "Content-Type": {"application/x-www-form-urlencoded"}})
	err := h.ServeHTTP(httptest.NewRecorder(), r, nil)
	if he, ok := err.(caddyhttp.HandlerError); !ok || he.StatusCode != http.StatusForbidden {
		t.Fatalf("a cross-site POST should get 403, got %v", err)
	}
}

func TestCookieValue(t *testing.T) {
	for _, tc := range []struct {
		header []string
		want   string
		ok     bool
	}{
		{[]string{"__Host-mailauth_session=abc"}, "abc", true},
		{[]string{"a=1; __Host-mailauth_session=abc; b=2"}, "abc", true},
		{[]string{"a=1", "__Host-mailauth_session=\"abc\""}, "abc", true},
		{[]string{"xmailauth_session=abc"}, "", false},
		{[]string{"mailauth_session_old=abc"}, "", false},
		{[]string{"__Host-mailauth_session="}, "", false},
		{nil, "", false},
	} {
		got, ok := cookieValue(http.Header{"Cookie": tc.header}, "__Host-mailauth_session")
		if got != tc.want || ok != tc.ok {
			t.Errorf("cookieValue(%q) = %q, %v; want %q, %v", tc.header, got, ok, tc.want, tc.ok)
		}
	}
}

// TestCookieValueAndSeesTheOtherCookieInTheSamePass: the session lookup
// of the authenticated path also tells whether a pending cookie is there,
// wherever it sits, and still takes the first session pair.
func TestCookieValueAndSeesTheOtherCookieInTheSamePass(t *testing.T) {
	for _, tc := range []struct {
		header       []string
		want         string
		ok, hasOther bool
	}{
		{[]string{"a=1; __Host-mailauth_session=abc"}, "abc", true, false},
		{[]string{"__Host-mailauth_session=abc; __Host-mailauth_pending=p"}, "abc", true, true},
		{[]string{"__Host-mailauth_pending=p", "__Host-mailauth_session=abc; __Host-mailauth_session=def"}, "abc", true, true},
		{[]string{"__Host-mailauth_pending=p"}, "", false, true},
		{[]string{"__Host-mailauth_session=abc; x__Host-mailauth_pending=p"}, "abc", true, false},
	} {
		v, ok, other := cookieValueAnd(http.Header{"Cookie": tc.header}, "__Host-mailauth_session", "__Host-mailauth_pending")
		if v != tc.want || ok != tc.ok || other != tc.hasOther {
			t.Errorf("cookieValueAnd(%q) = %q, %v, %v; want %q, %v, %v", tc.header, v, ok, other, tc.want, tc.ok, tc.hasOther)
		}
	}
}

// BenchmarkAuthenticatedRequest is the cost mailauth adds to every request
// of a signed-in user: find the cookie, verify it, set the placeholders and
// call the next handler. BenchmarkNextHandlerOnly is the same request
// without mailauth, for the ratio.
func BenchmarkAuthenticatedRequest(b *testing.B) {
	h, cookie := testHandler(b)
	r, _ := request(http.MethodGet, "/app", http.Header{"Cookie": {"_ga=GA1.1.1; __Host-mailauth_session=" + cookie}})
	w := httptest.NewRecorder()
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	b.ReportAllocs()
	for b.Loop() {
		if err := h.ServeHTTP(w, r, next); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuthenticatedBrowserRequest is BenchmarkAuthenticatedRequest
// with the headers a browser sends on a page load, since removing
// client-sent identity headers looks at every header of the request.
func BenchmarkAuthenticatedBrowserRequest(b *testing.B) {
	h, cookie := testHandler(b)
	r, _ := request(http.MethodGet, "/app", http.Header{
		"User-Agent":                {"Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"},
		"Accept":                    {"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
		"Accept-Language":           {"en-GB,en;q=0.5"},
		"Accept-Encoding":           {"gzip, deflate, br, zstd"},
		"Referer":                   {"https://apps.example.test/"},
		"Connection":                {"keep-alive"},
		"Cookie":                    {"_ga=GA1.1.1; __Host-mailauth_session=" + cookie},
		"Upgrade-Insecure-Requests": {"1"},
		"Sec-Fetch-Dest":            {"document"},
		"Sec-Fetch-Mode":            {"navigate"},
		"Sec-Fetch-Site":            {"same-origin"},
		"Sec-Fetch-User":            {"?1"},
		"Priority":                  {"u=0, i"},
	})
	w := httptest.NewRecorder()
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	b.ReportAllocs()
	for b.Loop() {
		if err := h.ServeHTTP(w, r, next); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNextHandlerOnly(b *testing.B) {
	r, _ := request(http.MethodGet, "/app", nil)
	w := httptest.NewRecorder()
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	b.ReportAllocs()
	for b.Loop() {
		if err := next.ServeHTTP(w, r); err != nil {
			b.Fatal(err)
		}
	}
}

// TestIdentityHeadersAreStrippedInEverySpelling: a client-sent identity
// header is removed whatever its case and whether it uses '-', '_' or
// '.', since CGI and FastCGI read X_Remote_User and X-Remote-User as the
// same HTTP_X_REMOTE_USER (and PHP X.Remote.User too); names that are
// merely similar stay.
func TestIdentityHeadersAreStrippedInEverySpelling(t *testing.T) {
	h, cookie := testHandler(t)
	spoofed := []string{
		"X-Remote-User", "X_Remote_User", "X_remote_user", "X-Remote_user", "x-remote_user",
		"X-REMOTE-USER", "x_rEmOtE-uSeR", "Remote_User", "X_Forwarded_Groups", "x-auth-request_preferred-username",
		"X.Remote.User", "x.remote_user",
	}
	kept := []string{"X-Remote-Users", "X-Remote-Use", "XRemoteUser", "X--Remote-User", "Accept-Language"}
	hdr := http.Header{"Cookie": {"__Host-mailauth_session=" + cookie}}
	for _, k := range append(spoofed, kept...) {
		hdr[k] = []string{"admin"} // raw keys: exactly as a client may spell them
	}
	r, _ := request(http.MethodGet, "/app", hdr)
	var seen http.Header
	err := h.ServeHTTP(httptest.NewRecorder(), r, caddyhttp.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) error {
		seen = r.Header.Clone()
		return nil
	}))
	if err != nil || seen == nil {
		t.Fatalf("a valid session should reach the next handler (err=%v)", err)
	}
	for _, k := range spoofed {
		if _, ok := seen[k]; ok {
			t.Errorf("%q reached the next handler; it reads as X-Remote-User's family to CGI and must be removed", k)
		}
	}
	for _, k := range kept {
		if _, ok := seen[k]; !ok {
			t.Errorf("%q was removed, but no app reads it as an identity header", k)
		}
	}
}

// TestStripHeadersMatchTheirOtherSpellings: a configured name written
// with '_' also removes its '-', '.' and mixed-case spellings.
func TestStripHeadersMatchTheirOtherSpellings(t *testing.T) {
	s := newHeaderSet([]string{"X_Tenant_ID", "x-tenant-id", ""})
	if len(s.names) != 1 {
		t.Errorf("the set holds %q; want one normalised name for two spellings of it and none for the empty one", s.names)
	}
	for _, k := range []string{"X-Tenant-Id", "X_tenant_id", "x-tenant_ID", "X_TENANT_ID", "X.Tenant.Id"} {
		if !s.has(k) {
			t.Errorf("%q is not matched by strip_headers X_Tenant_ID", k)
		}
	}
	for _, k := range []string{"X-Tenant", "X-Tenant-Ids", "X-TenantId", ""} {
		if s.has(k) {
			t.Errorf("%q is matched by strip_headers X_Tenant_ID, which names another header", k)
		}
	}
}

// TestStrippingIdentityHeadersAllocatesNothing: the check runs on every
// request, so looking through a browser's headers must not allocate.
func TestStrippingIdentityHeadersAllocatesNothing(t *testing.T) {
	s := newHeaderSet(defaultIdentityHeaders)
	hdr := http.Header{}
	for _, k := range []string{"User-Agent", "Accept", "Accept-Language", "Accept-Encoding", "Referer", "Connection", "Cookie", "Upgrade-Insecure-Requests", "Sec-Fetch-Dest", "Sec-Fetch-Mode", "Sec-Fetch-Site", "Sec-Fetch-User", "Priority", "X-Remote-Username"} {
		hdr[k] = []string{"x"}
	}
	if n := testing.AllocsPerRun(100, func() { s.removeFrom(hdr) }); n != 0 {
		t.Errorf("removing identity headers from a browser request allocates %v times; want none", n)
	}
	if len(hdr) != 14 {
		t.Errorf("a browser's own headers were removed: %d of 14 left", len(hdr))
	}
}

// TestTwoPendingCookiesAreRefused: an endpoint that acts on the login
// the pending cookie names refuses a request that carries two, in one
// Cookie header or in two, instead of serving the first.
func TestTwoPendingCookiesAreRefused(t *testing.T) {
	h, pending := waitingHandler(t)
	planted := "planted." + strings.Repeat("A", 43)
	for _, cookies := range [][]string{
		{pendingCookie + "=" + planted + "; " + pendingCookie + "=" + pending},
		{pendingCookie + "=" + pending, "a=1; " + pendingCookie + "=" + planted},
	} {
		for _, ep := range []struct{ method, path string }{
			{http.MethodGet, "/.mailauth/wait"},
			{http.MethodGet, "/.mailauth/status"},
			{http.MethodPost, "/.mailauth/code"},
			{http.MethodPost, "/.mailauth/complete"},
		} {
			r, _ := request(ep.method, ep.path, http.Header{"Cookie": cookies, "Content-Type": {"application/x-www-form-urlencoded"}})
			w := httptest.NewRecorder()
			if err := h.ServeHTTP(w, r, nil); err != nil || w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "two sign-in cookies") {
				t.Errorf("%s %s with Cookie %q: got %d (err %v), want the 400 page about two sign-in cookies", ep.method, ep.path, cookies, w.Code, err)
			}
		}
	}
	r, _ := request(http.MethodGet, "/.mailauth/status", http.Header{"Cookie": {"a=1; " + pendingCookie + "=" + pending}})
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, r, nil); err != nil || w.Code != http.StatusOK {
		t.Errorf("status with one pending cookie: got %d (err %v), want 200", w.Code, err)
	}
}

// TestPendingCookieIsRemovedBeforeTheApp: the pending cookie is sent to
// every path, but only the sign-in endpoints may read it; the app gets
// the other cookies untouched.
func TestPendingCookieIsRemovedBeforeTheApp(t *testing.T) {
	h, session := testHandler(t)
	for _, tc := range []struct {
		in, want []string
	}{
		{[]string{"__Host-mailauth_session=" + session + "; " + pendingCookie + "=p.x; theme=dark"}, []string{"__Host-mailauth_session=" + session + "; theme=dark"}},
		{[]string{pendingCookie + "=p.x", "__Host-mailauth_session=" + session}, []string{"__Host-mailauth_session=" + session}},
		{[]string{"theme=dark;" + pendingCookie + "=p.x;" + pendingCookie + "=p.y", "__Host-mailauth_session=" + session}, []string{"theme=dark", "__Host-mailauth_session=" + session}},
		{[]string{"__Host-mailauth_session=" + session + "; x" + pendingCookie + "=keep"}, []string{"__Host-mailauth_session=" + session + "; x" + pendingCookie + "=keep"}},
	} {
		r, _ := request(http.MethodGet, "/app", http.Header{"Cookie": tc.in})
		var got []string
		err := h.ServeHTTP(httptest.NewRecorder(), r, caddyhttp.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) error {
			got = r.Header["Cookie"]
			return nil
		}))
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("Cookie %q reached the app as %q (err %v), want %q", tc.in, got, err, tc.want)
		}
	}
	hdr := http.Header{"Cookie": {"_ga=GA1.1.1; __Host-mailauth_session=" + session}}
	if n := testing.AllocsPerRun(100, func() { removeCookie(hdr, pendingCookie) }); n != 0 {
		t.Errorf("looking for a pending cookie that is not there allocates %v times; want none", n)
	}
}

func TestCookieCount(t *testing.T) {
	for _, tc := range []struct {
		header []string
		want   int
	}{
		{nil, 0},
		{[]string{"a=1; b=2"}, 0},
		{[]string{"__Host-mailauth_pending=a"}, 1},
		{[]string{"__Host-mailauth_pending=a; __Host-mailauth_pending=b"}, 2},
		{[]string{"__Host-mailauth_pending=a", "x=1;__Host-mailauth_pending="}, 2},
		{[]string{"x__Host-mailauth_pending=a; __Host-mailauth_pendingx=b; __Secure-mailauth_pending=c"}, 0},
	} {
		if got := cookieCount(http.Header{"Cookie": tc.header}, "__Host-mailauth_pending"); got != tc.want {
			t.Errorf("cookieCount(%q) = %d, want %d", tc.header, got, tc.want)
		}
	}
}
