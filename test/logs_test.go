package test

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// debugLoggingCaddyfile is defaultCaddyfile with every Caddy logger at
// DEBUG and an access log that deletes the token and pair query
// parameters, as Caddyfile.example shows operators.
var debugLoggingCaddyfile = strings.NewReplacer(
	"\tadmin 127.0.0.1:%[2]d\n", "\tdebug\n\tadmin 127.0.0.1:%[2]d\n",
	"\tbind 127.0.0.1\n", `	bind 127.0.0.1
	log {
		output stderr
		format filter {
			request>uri query {
				delete token
				delete pair
			}
		}
	}
`,
).Replace(defaultCaddyfile)

// accessLine is the part of a Caddy access log line the test reads.
type accessLine struct {
	Logger  string `json:"logger"`
	Request struct {
		Method string              `json:"method"`
		URI    string              `json:"uri"`
		Header map[string][]string `json:"headers"`
	} `json:"request"`
}

// accessLines returns Caddy's access log lines so far.
func accessLines(logs string) []accessLine {
	var out []accessLine
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l accessLine
		if json.Unmarshal(sc.Bytes(), &l) == nil && strings.HasPrefix(l.Logger, "http.log.access") {
			out = append(out, l)
		}
	}
	return out
}

// linesWith returns the log lines that contain s, to say where a secret leaked.
func linesWith(logs, s string) []string {
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

// jarValues returns the values of every cookie b would send to the paths,
// whatever their names: the secrets a login hands a browser.
func jarValues(e *env, b *browser, paths ...string) []string {
	var out []string
	for _, p := range paths {
		u, _ := url.Parse(e.URL(p))
		for _, c := range b.jar.Cookies(u) {
			out = append(out, c.Value)
		}
	}
	return out
}

var subresourcePattern = regexp.MustCompile(`(?:href|src)="(/[^"]*)"`)

// TestNoSecretReachesTheLogsAtDebugLevel runs a whole User Approval login
// through a Caddy that logs everything at DEBUG, with the access log filter
// of Caddyfile.example, and checks that neither the link token, the
// other token of a pair, the pending cookie nor the session cookie appears
// anywhere in Caddy's output, while the access log did record the GET of
// the link.
func TestNoSecretReachesTheLogsAtDebugLevel(t *testing.T) {
	e := newEnv(t, debugLoggingCaddyfile)
	laptop, phone := newBrowser(t), newBrowser(t)

	if r := laptop.get(e.URL("/app")); r.Status != http.StatusFound {
		t.Fatalf("a browser without a session should be sent to the login page, got %d", r.Status)
	}
	link := startLogin(t, e, laptop, "alice", "alice@example.test")
	token := link[strings.Index(link, "token=")+len("token="):]
	pending := jarValues(e, laptop, "/.mailauth/")
	if len(pending) == 0 {
		t.Fatal("the login POST set no pending cookie")
	}

	// The phone opens the link as a browser does: the page, then what the
	// page loads, sending the page's URL (and so the token) as Referer
	// unless the page's Referrer-Policy forbids it. The link carries a pair
	// parameter as a manager's Approve and Deny links do (the other token
	// of the pair); this login has none, so the value is only for the
	// filter to delete.
	var raw [32]byte
	rand.Read(raw[:])
	pair := base64.RawURLEncoding.EncodeToString(raw[:])
	landing := e.onSite(link) + "&pair=" + pair
	r := phone.get(landing)
	if r.Status != http.StatusOK {
		t.Fatalf("GET of the link: got %d:\n%s", r.Status, r.Body)
	}
	referer := landing
	if r.Header.Get("Referrer-Policy") == "no-referrer" {
		referer = ""
	}
	for _, m := range subresourcePattern.FindAllStringSubmatch(r.Body, -1) {
		req, err := http.NewRequest(http.MethodGet, e.URL(m[1]), nil)
		if err != nil {
			t.Fatal(err)
		}
		if referer != "" {
			req.Header.Set("Referer", referer)
		}
		phone.do(req)
	}

	if body := confirmAndComplete(t, e, laptop, link); !strings.Contains(body, `user="alice"`) {
		t.Fatalf("the login did not reach the app as alice: %s", body)
	}
	session := jarValues(e, laptop, "/")
	if len(session) == 0 {
		t.Fatal("completing the login set no session cookie")
	}
	// One more request through the proxy, so reverse_proxy's debug lines
	// for an authenticated request are in the output too.
	if r := laptop.get(e.URL("/app?after=login")); r.Status != http.StatusOK {
		t.Fatalf("the app with a session: got %d", r.Status)
	}

	// Caddy's output reaches the buffer through a pipe: wait for the access
	// line of that last request, after which everything before it is in.
	var logs string
	var lines []accessLine
	for deadline := time.Now().Add(10 * time.Second); ; {
		logs = e.caddy.logs.String()
		lines = accessLines(logs)
		if n := len(lines); n > 0 && lines[n-1].Request.URI == "/app?after=login" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the access log never recorded GET /app?after=login; Caddy's output:\n%s", logs)
		}
		time.Sleep(50 * time.Millisecond)
	}

	if !strings.Contains(logs, `"level":"debug"`) {
		t.Errorf("Caddy logged no DEBUG line, so this test proves nothing about debug logging")
	}
	var verifyGET *accessLine
	for i, l := range lines {
		if l.Request.Method == http.MethodGet && strings.HasPrefix(l.Request.URI, "/.mailauth/verify") {
			verifyGET = &lines[i]
		}
	}
	if verifyGET == nil {
		t.Fatalf("the access log has no line for GET /.mailauth/verify, so it cannot show that the token is filtered; access lines: %+v", lines)
	}
	if u, err := url.ParseRequestURI(verifyGET.Request.URI); err != nil || u.Path != "/.mailauth/verify" || u.Query().Has("token") || u.Query().Has("pair") {
		t.Errorf("the access log recorded the link as %q; want /.mailauth/verify without its token and pair parameters", verifyGET.Request.URI)
	}

	secrets := map[string][]string{"link token": {token}, "pair token": {pair}, "pending cookie": pending, "session cookie": session}
	for what, values := range secrets {
		for _, v := range values {
			if v == "" {
				continue
			}
			if leaks := linesWith(logs, v); len(leaks) > 0 {
				t.Errorf("the %s %q appears in %d line(s) of Caddy's output:\n%s", what, v, len(leaks), strings.Join(leaks, "\n"))
			}
		}
	}
}
