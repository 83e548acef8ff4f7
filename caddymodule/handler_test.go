package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
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
	return &Handler{DefaultProfile: "daily", app: &App{service: svc}, site: approval.NewSite(daily, nil), logger: zap.NewNop(), csrf: http.NewCrossOriginProtection(), sessionCookie: hostSessionCookie}, cookie
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
