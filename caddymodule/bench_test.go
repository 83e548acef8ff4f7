package caddymodule

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/approval"
	"github.com/mailauth/caddy-mailauth/approval/mailtemplate"
	"github.com/mailauth/caddy-mailauth/directory"
	"github.com/mailauth/caddy-mailauth/store"
)

// loginHandler is a handler that can start logins: one local user, a user
// profile with the default mail templates, an in-memory Badger store and a
// mail queue that discards. It returns the service too, so a benchmark can
// wait for the background dispatch.
func loginHandler(b testing.TB) (*Handler, *approval.Service) {
	b.Helper()
	st, err := store.OpenBadger(store.BadgerOptions{InMemory: true}, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	codec, err := approval.NewSessionCodec(make([]byte, approval.SessionKeySize))
	if err != nil {
		b.Fatal(err)
	}
	dir, err := directory.NewLocal("staff", []directory.LocalUser{{Username: "alice", Name: "Alice Example", Email: "alice@example.test"}})
	if err != nil {
		b.Fatal(err)
	}
	tpl, err := mailtemplate.Parse("", "", "")
	if err != nil {
		b.Fatal(err)
	}
	p := &approval.Profile{
		Name:           "daily",
		Type:           approval.TypeUser,
		Server:         "https://apps.example.test",
		LinkExpiration: 15 * time.Minute,
		MailServers:    []string{"primary"},
		Directories:    []directory.Directory{dir},
		Templates:      tpl,
	}
	svc, err := approval.NewService(approval.Config{
		Store:           st,
		Mail:            discardQueue{},
		Profiles:        map[string]*approval.Profile{p.Name: p},
		Codec:           codec,
		CodeKey:         make([]byte, 32),
		SessionLifetime: time.Hour,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(svc.Close)
	site := approval.NewSite(p, nil)
	users, managers := site.Approvers()
	h := &Handler{
		DefaultProfile: p.Name,
		app:            &App{service: svc},
		site:           site,
		users:          users,
		managers:       managers,
		logger:         zap.NewNop(),
		csrf:           http.NewCrossOriginProtection(),
		sessionCookie:  hostSessionCookie,
	}
	return h, svc
}

var benchLoginForm = url.Values{"identity": {"alice"}, "return": {"/app"}}.Encode()

func loginRequest() *http.Request {
	r, _ := request(http.MethodPost, "/.mailauth/login", http.Header{
		"Content-Type": {"application/x-www-form-urlencoded"},
		"User-Agent":   {"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"},
	})
	r.Body = readCloser{strings.NewReader(benchLoginForm)}
	r.ContentLength = int64(len(benchLoginForm))
	return r
}

type readCloser struct{ *strings.Reader }

func (readCloser) Close() error { return nil }

// BenchmarkLoginPOST is POST /.mailauth/login through Handler.ServeHTTP on
// an in-memory store (no fsync; the load test measures durable writes).
//
// "answer" times what the browser waits for: parse the form, store the
// pending login, set the cookie, 303. Start hands the directory lookup,
// the link token and the mail to a goroutine; the benchmark waits for it
// with the timer stopped, so that work neither counts nor competes.
//
// "answer+dispatch" times the whole login: the answer and the background
// work (lookup, token Put, mail rendering, enqueue), waited for inside the
// timed region.
func BenchmarkLoginPOST(b *testing.B) {
	b.Run("answer", func(b *testing.B) { benchLoginPOST(b, false) })
	b.Run("answer+dispatch", func(b *testing.B) { benchLoginPOST(b, true) })
}

// benchLoginPOST times login POSTs, with the background dispatch inside
// the timed region or not.
func benchLoginPOST(b *testing.B, timeDispatch bool) {
	h, svc := loginHandler(b)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		r := loginRequest()
		w := httptest.NewRecorder()
		b.StartTimer()
		if err := h.ServeHTTP(w, r, nil); err != nil || w.Code != http.StatusSeeOther {
			b.Fatalf("login POST: status %d, err %v", w.Code, err)
		}
		if !timeDispatch {
			b.StopTimer()
		}
		svc.Wait()
		if !timeDispatch {
			b.StartTimer()
		}
	}
}

// BenchmarkStatusPoll is one poll of a waiting page: GET
// /.mailauth/status with the pending cookie, a store Get and a JSON answer.
func BenchmarkStatusPoll(b *testing.B) {
	h, pending := waitingHandler(b)
	r, _ := request(http.MethodGet, "/.mailauth/status", http.Header{"Cookie": {pendingCookie + "=" + pending}})
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		if err := h.ServeHTTP(w, r, nil); err != nil || w.Code != http.StatusOK {
			b.Fatalf("status: %d, err %v", w.Code, err)
		}
	}
}

// waitingHandler is loginHandler with one login started through it, and
// that login's pending cookie.
func waitingHandler(tb testing.TB) (*Handler, string) {
	tb.Helper()
	h, svc := loginHandler(tb)
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, loginRequest(), nil); err != nil {
		tb.Fatal(err)
	}
	svc.Wait()
	for _, c := range w.Result().Cookies() {
		if c.Name == pendingCookie {
			return h, c.Value
		}
	}
	tb.Fatal("the login POST set no pending cookie")
	return nil, ""
}

// TestStatusAnswersWhatJSONEncoderWrites pins the status answer that
// wait.js reads: the state, the seconds left and whether mail is delayed,
// or "unknown" with a 404.
func TestStatusAnswersWhatJSONEncoderWrites(t *testing.T) {
	h, pending := waitingHandler(t)
	for _, c := range []struct {
		name, cookie string
		code         int
	}{
		{"pending login", pending, http.StatusOK},
		{"unknown login", "nope." + strings.Repeat("A", 43), http.StatusNotFound},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, _ := request(http.MethodGet, "/.mailauth/status", http.Header{"Cookie": {pendingCookie + "=" + c.cookie}})
			w := httptest.NewRecorder()
			if err := h.ServeHTTP(w, r, nil); err != nil || w.Code != c.code {
				t.Fatalf("status: %d, err %v; want %d", w.Code, err, c.code)
			}
			var want bytes.Buffer
			if c.code == http.StatusOK {
				var got struct {
					State       approval.State `json:"state"`
					ExpiresIn   int            `json:"expires_in"`
					MailDelayed bool           `json:"mail_delayed"`
				}
				if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || got.State != approval.StatePending || got.ExpiresIn <= 0 {
					t.Fatalf("status answered %q (%v), want a pending state and a positive expires_in", w.Body, err)
				}
				_ = json.NewEncoder(&want).Encode(got)
			} else {
				_ = json.NewEncoder(&want).Encode(map[string]string{"state": "unknown"})
			}
			if w.Body.String() != want.String() {
				t.Errorf("status answered %q, json.Encoder writes %q", w.Body, want.String())
			}
		})
	}
}

// BenchmarkInvalidCookieRedirect is a browser with a forged session
// cookie: the signature check fails and it gets a 302 to the login page.
func BenchmarkInvalidCookieRedirect(b *testing.B) {
	h, cookie := testHandler(b)
	forged := forge(cookie)
	r, _ := request(http.MethodGet, "/app?q=1", http.Header{"Accept": {"text/html"}, "Cookie": {"_ga=GA1.1.1; __Host-mailauth_session=" + forged}})
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		b.Fatal("a forged cookie reached the next handler")
		return nil
	})
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		if err := h.ServeHTTP(w, r, next); err != nil || w.Code != http.StatusFound {
			b.Fatalf("forged cookie: %d, err %v", w.Code, err)
		}
	}
}

// forge changes one character well inside a cookie's signature. Not the
// last one: in unpadded base64 it may carry only unused bits, so a change
// there can decode to the same bytes and leave the cookie valid.
func forge(cookie string) string {
	i := len(cookie) - 5
	swap := byte('A')
	if cookie[i] == swap {
		swap = 'B'
	}
	return cookie[:i] + string(swap) + cookie[i+1:]
}
