package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mailauth/caddy-mailauth/test/daemon"
	"github.com/mailauth/caddy-mailauth/test/mailpit"
)

// caddyBinary builds cmd/caddy once per test process (with the race
// detector, so the integration tests also check the module for races, and
// with the test clock, which advanceClock moves). CADDY_BIN overrides it
// with a binary built elsewhere the same way (make test does).
var caddyBinary = sync.OnceValues(func() (string, error) {
	if bin := os.Getenv("CADDY_BIN"); bin != "" {
		return bin, nil
	}
	out, err := filepath.Abs(filepath.Join(".cache", "caddy"))
	if err != nil {
		return "", err
	}
	cmd := exec.Command("go", "build", "-race", "-tags", "mailauth_testclock", "-o", out, "../cmd/caddy")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building caddy: %w", err)
	}
	return out, nil
})

func freePort(t testing.TB) int {
	t.Helper()
	port, err := daemon.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// caddyProc is a Caddy process started by a test.
type caddyProc struct {
	cmd     *exec.Cmd
	logs    *daemon.Output
	exited  <-chan struct{}
	Port    int
	BaseURL string
	DataDir string
}

// env describes one test deployment: a Caddy with mailauth in front of an
// upstream that echoes the identity headers, and a mailpit.
type env struct {
	t        *testing.T
	caddy    *caddyProc
	mail     *mailpit.Server
	upstream *httptest.Server
	Port     int
	// AdminPort is Caddy's admin endpoint; Caddyfile is the config it runs.
	AdminPort int
	Caddyfile string
	// StoreDir is the Badger directory of the default Caddyfiles.
	StoreDir string
}

// Server is the profile's server: the base URL that links in mail use.
func (e *env) Server() string { return fmt.Sprintf("http://localhost:%d", e.Port) }

// URL is where test clients reach the site.
func (e *env) URL(path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", e.Port, path) }

// defaultCaddyfile is the deployment the flow tests use. %[1]d is the site
// port, %[2]d the admin port, %[3]d mailpit's SMTP port, %[4]s the store
// directory and %[5]s the upstream's address.
const defaultCaddyfile = `{
	admin 127.0.0.1:%[2]d
	auto_https off
	mailauth {
		store badger %[4]s
		session_lifetime 1h
		mail_server local {
			host 127.0.0.1
			port %[3]d
			tls none
			from "Access Gateway <gateway@example.test>"
		}
		directory staff local {
			user alice {
				name "Alice Example"
				email alice@example.test
				attr department IT
			}
			user bob {
				email bob@example.test
			}
		}
		profile daily {
			type user
			server http://localhost:%[1]d
			subject "Sign in to {{.App}}"
			link_expiration 15m
			mail_servers local
			fallback staff
		}
	}
}

http://:%[1]d {
	bind 127.0.0.1
	mailauth {
		default_profile daily
	}
	reverse_proxy %[5]s {
		header_up X-Remote-User {http.auth.user.id}
		header_up X-Remote-Email {http.auth.user.email}
	}
}
`

// newEnv starts mailpit, an upstream and Caddy with caddyfile (a format
// string as defaultCaddyfile).
func newEnv(t *testing.T, caddyfile string) *env {
	t.Helper()
	return newEnvWithApp(t, caddyfile, http.HandlerFunc(echoIdentity))
}

// newEnvWithApp is newEnv with app as the upstream.
func newEnvWithApp(t *testing.T, caddyfile string, app http.Handler) *env {
	t.Helper()
	e := &env{t: t, mail: mailpit.Start(t)}
	e.upstream = newUpstream(t, app)
	e.Port, e.AdminPort = freePort(t), freePort(t)
	e.StoreDir = filepath.Join(t.TempDir(), "store")
	e.Caddyfile = fmt.Sprintf(caddyfile, e.Port, e.AdminPort, e.mail.SMTPPort, e.StoreDir, strings.TrimPrefix(e.upstream.URL, "http://"))
	e.caddy = startCaddy(t, e.Caddyfile, e.Port)
	return e
}

// newUpstream runs app as the upstream of a test Caddy.
func newUpstream(t *testing.T, app http.Handler) *httptest.Server {
	u := httptest.NewServer(app)
	t.Cleanup(u.Close)
	return u
}

// echoIdentity is the app behind Caddy: it echoes the identity headers it
// is given.
func echoIdentity(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "upstream saw user=%q email=%q path=%s\n", r.Header.Get("X-Remote-User"), r.Header.Get("X-Remote-Email"), r.URL.Path)
}

// echoHeaders is an app that answers with every request header it was
// given, one "Name: value" line each, so a test sees all that Caddy
// passed on, under whatever names.
func echoHeaders(w http.ResponseWriter, r *http.Request) {
	for _, k := range slices.Sorted(maps.Keys(r.Header)) {
		for _, v := range r.Header[k] {
			fmt.Fprintf(w, "%s: %s\n", k, v)
		}
	}
}

// startCaddy runs `caddy run` on the given Caddyfile and waits until the
// site port answers. The process is stopped by PID when the test ends.
func startCaddy(t testing.TB, caddyfile string, sitePort int) *caddyProc {
	t.Helper()
	bin, err := caddyBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &caddyProc{logs: &daemon.Output{}, Port: sitePort, BaseURL: fmt.Sprintf("http://127.0.0.1:%d", sitePort), DataDir: filepath.Join(dir, "data")}
	p.cmd = exec.Command(bin, "run", "--config", path, "--adapter", "caddyfile")
	p.cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+p.DataDir, "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
	if p.exited, err = daemon.Start(p.cmd, p.logs); err != nil {
		t.Fatalf("starting caddy: %v", err)
	}
	t.Cleanup(func() {
		p.Stop(t)
		if t.Failed() {
			t.Logf("caddy log:\n%s", p.logs.String())
		}
	})
	listening := func() error {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", sitePort), 200*time.Millisecond)
		if err != nil {
			return err
		}
		return c.Close()
	}
	if err := daemon.WaitReady(p.exited, time.Minute, 50*time.Millisecond, listening); err != nil {
		t.Fatalf("caddy did not listen on %d: %v\n%s", sitePort, err, p.logs.String())
	}
	return p
}

// Stop ends Caddy gracefully (SIGTERM) and kills it if it hangs.
func (p *caddyProc) Stop(t testing.TB) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		t.Errorf("caddy did not stop within 15s of SIGTERM")
	}
}

// auditEvents returns the audit lines Caddy has logged so far.
func (p *caddyProc) auditEvents(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(p.logs.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil || m["logger"] != "mailauth.audit" {
			continue
		}
		out = append(out, m)
	}
	return out
}

// waitForAudit waits until an audit line with event ev has been logged.
func (p *caddyProc) waitForAudit(t testing.TB, ev string, timeout time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, m := range p.auditEvents(t) {
			if m["event"] == ev {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no audit event %q within %s; log:\n%s", ev, timeout, p.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// loopbackJar keeps cookies as a browser does for a loopback origin:
// browsers treat http://localhost and 127.0.0.0/8 as secure contexts and so
// store and send Secure cookies there, while net/http/cookiejar sends them
// only over https. The tests speak plain HTTP to loopback, so the jar sees
// loopback URLs as https.
type loopbackJar struct{ jar *cookiejar.Jar }

func newLoopbackJar() *loopbackJar {
	j, _ := cookiejar.New(nil)
	return &loopbackJar{jar: j}
}

func (l *loopbackJar) secure(u *url.URL) *url.URL {
	host := u.Hostname()
	if ip := net.ParseIP(host); isLocalhost(host) || (ip != nil && ip.IsLoopback()) {
		c := *u
		c.Scheme = "https"
		return &c
	}
	return u
}

func (l *loopbackJar) SetCookies(u *url.URL, cookies []*http.Cookie) {
	l.jar.SetCookies(l.secure(u), cookies)
}

func (l *loopbackJar) Cookies(u *url.URL) []*http.Cookie { return l.jar.Cookies(l.secure(u)) }

// browser is an HTTP client with its own cookie jar: one device. It does
// not follow redirects, so tests see each step.
type browser struct {
	t      *testing.T
	client *http.Client
	jar    *loopbackJar
}

func newBrowser(t *testing.T) *browser {
	jar := newLoopbackJar()
	return &browser{t: t, jar: jar, client: &http.Client{
		Jar:           jar,
		Timeout:       20 * time.Second,
		Transport:     loopbackTransport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// isLocalhost says whether host is localhost or a name under it, which
// RFC 6761 reserves for loopback (browsers resolve them so).
func isLocalhost(host string) bool {
	return host == "localhost" || strings.HasSuffix(host, ".localhost")
}

// loopbackTransport dials names under localhost (home.localhost, …) on
// 127.0.0.1, as browsers do, so tests can run several hosts on one Caddy
// without a resolver.
var loopbackTransport = func() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if host, port, err := net.SplitHostPort(addr); err == nil && isLocalhost(host) {
			addr = net.JoinHostPort("127.0.0.1", port)
		}
		return dialer.DialContext(ctx, network, addr)
	}
	return tr
}()

// advanceClock moves the clock of e's Caddy (a test build) forward by d.
func (e *env) advanceClock(t *testing.T, d time.Duration) {
	t.Helper()
	if code, body := e.admin(t, http.MethodPost, "/mailauth-test/clock?advance="+d.String()); code != http.StatusOK {
		t.Fatalf("advancing the clock: %d %s (is the Caddy built with -tags mailauth_testclock?)", code, body)
	}
}

type response struct {
	Status   int
	Header   http.Header
	Body     string
	Location string
}

func (b *browser) do(req *http.Request) *response {
	b.t.Helper()
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "text/html,application/xhtml+xml")
	}
	req.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0")
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return &response{Status: resp.StatusCode, Header: resp.Header, Body: string(body), Location: resp.Header.Get("Location")}
}

func (b *browser) get(u string) *response {
	b.t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, u, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.do(req)
}

func (b *browser) post(u string, form url.Values) *response {
	b.t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

// cookie returns the value of the named cookie the jar would send to u.
func (b *browser) cookie(u, name string) string {
	pu, _ := url.Parse(u)
	for _, c := range b.jar.Cookies(pu) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

var linkPattern = regexp.MustCompile(`https?://[^\s"<>]+/\.mailauth/verify\?token=[A-Za-z0-9_-]+`)

// linkIn returns the sign-in link in a mail's text part.
func linkIn(t testing.TB, text string) string {
	t.Helper()
	link := linkPattern.FindString(text)
	if link == "" {
		t.Fatalf("no sign-in link in the mail text:\n%s", text)
	}
	return link
}

// onSite rewrites a link on the profile's server (http://localhost:port)
// to the address the test clients use; the path and token are kept.
func (e *env) onSite(link string) string {
	return strings.Replace(link, e.Server(), fmt.Sprintf("http://127.0.0.1:%d", e.Port), 1)
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o600) }

var matchNumber = regexp.MustCompile(`id="match-code">(\d{2})<`)

// matchOn reads the number that b's waiting page shows for number
// matching: what the person opening the link must pick.
func matchOn(t *testing.T, e *env, b *browser) string {
	t.Helper()
	r := b.get(e.URL("/.mailauth/wait"))
	m := matchNumber.FindStringSubmatch(r.Body)
	if m == nil {
		t.Fatalf("the waiting page shows no number to match:\n%s", r.Body)
	}
	return m[1]
}

var formToken = regexp.MustCompile(`name="csrf" value="([^"]*)"`)

// postWithToken posts a form from page the way a browser would: with the
// per-form token the page carries.
func postWithToken(t *testing.T, e *env, b *browser, page, action string, form url.Values) *response {
	t.Helper()
	m := formToken.FindStringSubmatch(b.get(e.URL(page)).Body)
	if m == nil {
		t.Fatalf("%s carries no form token", page)
	}
	if form == nil {
		form = url.Values{}
	}
	form.Set("csrf", m[1])
	return b.post(e.URL(action), form)
}

// complete collects the session of b's approved login, as the waiting
// page's form does.
func complete(t *testing.T, e *env, b *browser) *response {
	t.Helper()
	return postWithToken(t, e, b, "/.mailauth/wait", "/.mailauth/complete", nil)
}
