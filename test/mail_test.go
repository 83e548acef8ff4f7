package test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailauth/caddy-mailauth/test/mailpit"
)

// mailCaddyfile is a deployment for the mail tests. %[1]d is the site
// port, %[2]d the admin port, %[3]s the store directory, %[4]s the
// upstream's address, %[5]s the mail_server blocks, %[6]s the profile's
// mail_servers and %[7]s its link_expiration.
const mailCaddyfile = `{
	admin 127.0.0.1:%[2]d
	auto_https off
	mailauth {
		store badger %[3]s
%[5]s
		directory staff local {
			user alice {
				name "Alice Example"
				email alice@example.test
			}
			user bob {
				email bob@example.test
			}
			user carol {
				email carol@example.test
			}
		}
		profile daily {
			type user
			server http://localhost:%[1]d
			link_expiration %[7]s
			mail_servers %[6]s
			fallback staff
		}
	}
}

http://:%[1]d {
	bind 127.0.0.1
	mailauth {
		default_profile daily
	}
	reverse_proxy %[4]s {
		header_up X-Remote-User {http.auth.user.id}
	}
}
`

// plainMailServer is a mail_server block for a mailpit on loopback,
// without TLS.
func plainMailServer(name string, port int) string {
	return fmt.Sprintf(`		mail_server %s {
			host 127.0.0.1
			port %d
			tls none
			timeout 2s
			from "Access Gateway <gateway@example.test>"
		}
`, name, port)
}

// newMailEnv starts Caddy with mailCaddyfile; mail is the mailpit that
// startLogin reads from (it may be nil when the test reads mail itself).
func newMailEnv(t *testing.T, mail *mailpit.Server, servers, use, linkExpiration string) *env {
	t.Helper()
	e := &env{t: t, mail: mail}
	e.upstream = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "upstream saw user=%q path=%s\n", r.Header.Get("X-Remote-User"), r.URL.Path)
	}))
	t.Cleanup(e.upstream.Close)
	e.Port, e.AdminPort = freePort(t), freePort(t)
	e.Caddyfile = fmt.Sprintf(mailCaddyfile, e.Port, e.AdminPort, filepath.Join(t.TempDir(), "store"),
		strings.TrimPrefix(e.upstream.URL, "http://"), servers, use, linkExpiration)
	e.caddy = startCaddy(t, e.Caddyfile, e.Port)
	return e
}

// postLogin submits the login form for identity and fails unless the
// gateway answers at once with the waiting page.
func postLogin(t *testing.T, e *env, b *browser, identity string) {
	t.Helper()
	if r := b.post(e.URL("/.mailauth/login"), url.Values{"identity": {identity}, "return": {"/app"}}); r.Status != http.StatusSeeOther {
		t.Fatalf("login POST for %s: got %d, want 303 to the waiting page", identity, r.Status)
	}
}

// auditFor returns the audit lines with event ev about mail to address.
func auditFor(p *caddyProc, t testing.TB, ev, address string) []map[string]any {
	var out []map[string]any
	for _, m := range p.auditEvents(t) {
		if m["event"] == ev && m["to"] == address {
			out = append(out, m)
		}
	}
	return out
}

// waitForAuditTo waits for an audit line with event ev about mail to
// address.
func waitForAuditTo(t *testing.T, p *caddyProc, ev, address string, timeout time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if lines := auditFor(p, t, ev, address); len(lines) > 0 {
			return lines[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no audit event %q for mail to %s within %s; log:\n%s", ev, address, timeout, p.logs.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// mailerLines returns the lines of the mailer's own log with the given
// message ("mail sent", "mail delayed", "mail failed", "mail abandoned").
func mailerLines(p *caddyProc, msg string) []string {
	var out []string
	for _, line := range strings.Split(p.logs.String(), "\n") {
		if strings.Contains(line, `"logger":"mailauth.mailer"`) && strings.Contains(line, `"msg":"`+msg+`"`) {
			out = append(out, line)
		}
	}
	return out
}

// hangingServer listens on port and accepts connections without ever
// greeting, as a mail server that is stopped but still routed (a dead
// process behind a load balancer, a dropped SYN) does; it counts the
// connections it gets.
func hangingServer(t *testing.T, port int) *atomic.Int32 {
	t.Helper()
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("listening on the stopped server's port %d: %v", port, err)
	}
	var n atomic.Int32
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return &n
}

// TestMailFailsOverFromAStoppedServerAndTheNextMailSkipsItAtOnce: the
// first server of the list is down; the mail goes through the second, and
// the next mail does not wait on the first again. The first server hangs
// rather than refusing, so that a skipped server shows in the time the
// mail takes: trying it again would cost its whole 2s timeout.
func TestMailFailsOverFromAStoppedServerAndTheNextMailSkipsItAtOnce(t *testing.T) {
	first, second := mailpit.Start(t), mailpit.Start(t)
	first.Stop()
	tries := hangingServer(t, first.SMTPPort)
	e := newMailEnv(t, second, plainMailServer("first", first.SMTPPort)+plainMailServer("second", second.SMTPPort), "first second", "15m")

	b := newBrowser(t)
	postLogin(t, e, b, "alice")
	second.WaitForMessage(t, "alice@example.test", 15*time.Second)
	if sent := waitForAuditTo(t, e.caddy, "mail_sent", "alice@example.test", 5*time.Second); sent["server"] != "second" {
		t.Errorf("alice's mail was audited as sent via %v, want second", sent["server"])
	}
	if tries.Load() == 0 {
		t.Fatal("the first server was never tried; the test proves nothing about failover")
	}
	before := tries.Load()

	start := time.Now()
	postLogin(t, e, newBrowser(t), "bob")
	second.WaitForMessage(t, "bob@example.test", 15*time.Second)
	took := time.Since(start)
	if took > time.Second {
		t.Errorf("the next mail took %s to arrive; the first server's 2s timeout should not be waited out again", took)
	}
	if after := tries.Load(); after != before {
		t.Errorf("the next mail tried the failed first server again (%d new connections), want it skipped during its cool-down", after-before)
	}
	if n := len(auditFor(e.caddy, t, "mail_retry", "bob@example.test")); n != 0 {
		t.Errorf("bob's mail needed %d retries, want it sent at the first attempt through the second server", n)
	}
}

// TestTemporaryRefusalsAreRetriedUntilAcceptedAndAPermanentOneIsNot: 4xx
// replies put the mail back in the outbox with backoff, and it is sent
// once the server accepts; a 5xx is final, recorded with its code, and
// never tried again.
func TestTemporaryRefusalsAreRetriedUntilAcceptedAndAPermanentOneIsNot(t *testing.T) {
	mp := mailpit.Start(t)
	e := newMailEnv(t, mp, plainMailServer("relay", mp.SMTPPort), "relay", "15m")

	mp.SetChaos(t, mailpit.Chaos{Recipient: mailpit.ChaosTrigger{ErrorCode: 451, Probability: 100}})
	postLogin(t, e, newBrowser(t), "alice")
	retry := waitForAuditTo(t, e.caddy, "mail_retry", "alice@example.test", 10*time.Second)
	if !strings.Contains(fmt.Sprint(retry["error"]), "451") {
		t.Errorf("the retry audit line does not give the server's 451 reply: %v", retry)
	}
	if !slices.ContainsFunc(mailerLines(e.caddy, "mail delayed"), func(l string) bool { return strings.Contains(l, `"code":451`) }) {
		t.Errorf("no mailer log line records the delay with code 451:\n%s", e.caddy.logs.String())
	}
	mp.SetChaos(t, mailpit.Chaos{})
	got := mp.WaitForMessage(t, "alice@example.test", 15*time.Second)
	sent := waitForAuditTo(t, e.caddy, "mail_sent", "alice@example.test", 5*time.Second)
	if attempt, _ := sent["attempt"].(float64); attempt < 2 {
		t.Errorf("the mail was audited as sent at attempt %v, want a later attempt than the refused first", sent["attempt"])
	}
	if n := len(mp.Messages(t)); n != 1 {
		t.Errorf("mailpit holds %d messages after the retries, want exactly 1", n)
	}

	mp.SetChaos(t, mailpit.Chaos{Recipient: mailpit.ChaosTrigger{ErrorCode: 550, Probability: 100}})
	postLogin(t, e, newBrowser(t), "bob")
	failed := waitForAuditTo(t, e.caddy, "mail_failed", "bob@example.test", 10*time.Second)
	if !strings.Contains(fmt.Sprint(failed["error"]), "550") || failed["server"] != "relay" {
		t.Errorf("the failed audit line does not name server relay and the 550 reply: %v", failed)
	}
	if !slices.ContainsFunc(mailerLines(e.caddy, "mail failed"), func(l string) bool {
		return strings.Contains(l, `"code":550`) && strings.Contains(l, `"server":"relay"`)
	}) {
		t.Errorf("no mailer log line records the failure with server relay and code 550:\n%s", e.caddy.logs.String())
	}
	// Past the first backoff (2s): a retry would have happened by now.
	time.Sleep(2500 * time.Millisecond)
	if n := len(auditFor(e.caddy, t, "mail_retry", "bob@example.test")); n != 0 {
		t.Errorf("a permanently refused mail was retried %d times, want never", n)
	}
	if n := len(auditFor(e.caddy, t, "mail_failed", "bob@example.test")); n != 1 {
		t.Errorf("bob's mail was audited as failed %d times, want once", n)
	}
	assertNoLinkInLogs(t, e.caddy, got.Text)
}

// assertNoLinkInLogs fails if the token of the link in text appears in
// Caddy's output: audit and logs record attempts, never the link.
func assertNoLinkInLogs(t *testing.T, p *caddyProc, text string) {
	t.Helper()
	link := linkIn(t, text)
	token := link[strings.Index(link, "token=")+len("token="):]
	if strings.Contains(p.logs.String(), token) {
		t.Errorf("the sign-in token of a mail appears in Caddy's logs")
	}
}

// tlsMailServer is a mail_server block for a TLS mailpit that trusts ca
// (when not empty) and authenticates with a password from the environment.
func tlsMailServer(name, mode string, port int, ca string) string {
	caLine := ""
	if ca != "" {
		caLine = "tls_ca " + ca
	}
	return fmt.Sprintf(`		mail_server %s {
			host localhost
			port %d
			tls %s
			%s
			username gateway
			password {env.MAILAUTH_TEST_SMTP_PASSWORD}
			auth plain
			helo gateway.example.test
			timeout 5s
			from "Access Gateway <gateway@example.test>"
		}
`, name, port, mode, caLine)
}

// TestMailGoesOverSTARTTLSAndImplicitTLSToAServerWithAPrivateCA: with
// tls_ca naming the CA, mail reaches a server that requires STARTTLS and
// one that speaks TLS from the first byte, authenticated with a password
// from an {env.*} placeholder. Without tls_ca the certificate is refused.
func TestMailGoesOverSTARTTLSAndImplicitTLSToAServerWithAPrivateCA(t *testing.T) {
	certs := mailpit.NewCertificates(t)
	starttls := mailpit.Start(t, append(certs.TLSArgs(), "--smtp-require-starttls")...)
	implicit := mailpit.Start(t, append(certs.TLSArgs(), "--smtp-require-tls")...)
	t.Setenv("MAILAUTH_TEST_SMTP_PASSWORD", "s3cret")

	for _, c := range []struct {
		mode string
		mp   *mailpit.Server
	}{{"starttls", starttls}, {"implicit", implicit}} {
		e := newMailEnv(t, c.mp, tlsMailServer("relay", c.mode, c.mp.SMTPPort, certs.CA), "relay", "15m")
		postLogin(t, e, newBrowser(t), "alice")
		got := c.mp.WaitForMessage(t, "alice@example.test", 15*time.Second)
		if got.Username != "gateway" {
			t.Errorf("tls %s: the mail arrived authenticated as %q, want gateway", c.mode, got.Username)
		}
		linkIn(t, got.Text)
		e.caddy.Stop(t)
	}

	// The same server without tls_ca: the system roots do not know the CA.
	noCA := newMailEnv(t, starttls, tlsMailServer("relay", "starttls", starttls.SMTPPort, ""), "relay", "15m")
	postLogin(t, noCA, newBrowser(t), "bob")
	retry := waitForAuditTo(t, noCA.caddy, "mail_retry", "bob@example.test", 10*time.Second)
	if !strings.Contains(fmt.Sprint(retry["error"]), "certificate") {
		t.Errorf("without tls_ca the attempt should fail on the certificate, got: %v", retry["error"])
	}
	for _, s := range starttls.Messages(t) {
		if slices.Contains(s.To, "bob@example.test") {
			t.Fatal("mail went to a server whose certificate could not be verified")
		}
	}
}

// TestMailQueuedWhileTheServerIsDownIsDeliveredAfterARestart: Caddy stops
// with the mail still queued and the SMTP server down; once both are back,
// the mail arrives and its link still signs the user in.
func TestMailQueuedWhileTheServerIsDownIsDeliveredAfterARestart(t *testing.T) {
	mp := mailpit.Start(t)
	mp.Stop()
	e := newMailEnv(t, mp, plainMailServer("relay", mp.SMTPPort), "relay", "15m")
	b := newBrowser(t)
	postLogin(t, e, b, "alice")
	waitForAuditTo(t, e.caddy, "mail_retry", "alice@example.test", 10*time.Second)

	e.caddy.Stop(t)
	mp.Restart(t)
	e.caddy = startCaddy(t, e.Caddyfile, e.Port)

	link := linkIn(t, mp.WaitForMessage(t, "alice@example.test", 15*time.Second).Text)
	if body := confirmAndComplete(t, e, b, e.onSite(link)); !strings.Contains(body, `user="alice"`) {
		t.Fatalf("the link of the mail delivered after the restart did not sign alice in: %s", body)
	}
	if n := len(mp.Messages(t)); n != 1 {
		t.Errorf("mailpit got %d messages, want the one queued mail exactly once", n)
	}
}

// TestMailWhoseLinkExpiredDuringARestartIsAbandonedNotSent: a mail still
// queued when its link expires is dropped and audited as abandoned, even
// when the expiry passed while Caddy was down: a late link is worse than
// none.
func TestMailWhoseLinkExpiredDuringARestartIsAbandonedNotSent(t *testing.T) {
	mp := mailpit.Start(t)
	mp.Stop()
	// 3s: the first attempt fails at once and the next is due 2s later,
	// so stopping Caddy right after the first leaves the mail queued.
	e := newMailEnv(t, mp, plainMailServer("relay", mp.SMTPPort), "relay", "3s")
	postLogin(t, e, newBrowser(t), "alice")
	waitForAuditTo(t, e.caddy, "mail_retry", "alice@example.test", 10*time.Second)
	e.caddy.Stop(t)
	if n := len(auditFor(e.caddy, t, "mail_abandoned", "alice@example.test")); n != 0 {
		t.Fatal("the mail was abandoned before the restart; the test needs it still queued")
	}

	time.Sleep(3 * time.Second) // the link expires while Caddy is down
	mp.Restart(t)
	e.caddy = startCaddy(t, e.Caddyfile, e.Port)
	abandoned := waitForAuditTo(t, e.caddy, "mail_abandoned", "alice@example.test", 10*time.Second)
	if !strings.Contains(fmt.Sprint(abandoned["error"]), "expired") {
		t.Errorf("the abandon audit line does not say the link expired: %v", abandoned)
	}
	if n := len(mp.Messages(t)); n != 0 {
		t.Errorf("mailpit got %d messages, want none: the link had expired", n)
	}
}

// TestDefaultMailHasATextAndASelfContainedHTMLPartAsMailpitSeesThem: the
// built-in mail, as received, has both parts carrying the link on the
// profile's server, the automation headers, and an HTML part that loads
// nothing from anywhere: no images, no remote style sheets, and no link
// but the sign-in link.
func TestDefaultMailHasATextAndASelfContainedHTMLPartAsMailpitSeesThem(t *testing.T) {
	mp := mailpit.Start(t)
	e := newMailEnv(t, mp, plainMailServer("relay", mp.SMTPPort), "relay", "15m")
	postLogin(t, e, newBrowser(t), "alice")
	got := mp.WaitForMessage(t, "alice@example.test", 15*time.Second)

	link := linkIn(t, got.Text)
	if !strings.HasPrefix(link, e.Server()+"/.mailauth/verify?token=") {
		t.Errorf("the link %q is not on the profile's server %s", link, e.Server())
	}
	for _, want := range []string{"Alice Example", "127.0.0.1", "expires in 15 minutes"} {
		if !strings.Contains(got.Text, want) {
			t.Errorf("the text part lacks %q:\n%s", want, got.Text)
		}
	}
	if got.HTML == "" {
		t.Fatal("the mail has no HTML part")
	}
	if !strings.Contains(got.HTML, `href="`+link+`"`) {
		t.Errorf("the HTML part does not link to %s", link)
	}
	for _, h := range []string{"Message-Id", "Date", "Auto-Submitted"} {
		if got.Header(h) == "" {
			t.Errorf("the mail lacks a %s header", h)
		}
	}
	if v := got.Header("Auto-Submitted"); v != "auto-generated" {
		t.Errorf("Auto-Submitted is %q, want auto-generated", v)
	}
	if !strings.HasSuffix(strings.Trim(got.Header("Message-Id"), "<>"), "@example.test") {
		t.Errorf("Message-ID %q is not in the sender's domain", got.Header("Message-Id"))
	}
	assertSelfContainedHTML(t, got.HTML, link)
}

var (
	urlAttr   = regexp.MustCompile(`(?i)\b(src|href|background|action|poster)\s*=\s*["']?([^"'\s>]*)`)
	remoteCSS = regexp.MustCompile(`(?i)url\s*\(|@import|<link\b|<img\b|<script\b|<iframe\b|<object\b|<embed\b`)
)

// assertSelfContainedHTML fails if html would fetch anything when opened,
// or links anywhere but to link.
func assertSelfContainedHTML(t *testing.T, html, link string) {
	t.Helper()
	if m := remoteCSS.FindString(html); m != "" {
		t.Errorf("the HTML part has %q, which loads an external resource or runs code", m)
	}
	for _, m := range urlAttr.FindAllStringSubmatch(html, -1) {
		if !strings.EqualFold(m[1], "href") || strings.ReplaceAll(m[2], "&amp;", "&") != link {
			t.Errorf("the HTML part has %s=%q; only links to the sign-in link are allowed", m[1], m[2])
		}
	}
}

// runCaddy runs the caddy binary with args as an operator would and
// returns its combined output and whether it succeeded.
func runCaddy(t *testing.T, args ...string) (string, bool) {
	t.Helper()
	bin, err := caddyBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir+"/data", "XDG_CONFIG_HOME="+dir+"/config")
	out, err := cmd.CombinedOutput()
	return string(out), err == nil
}

// writeMailCaddyfile writes a Caddyfile with the given mail_server blocks
// for the commands, which do not start a server.
func writeMailCaddyfile(t *testing.T, servers, use string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "Caddyfile")
	cfg := fmt.Sprintf(mailCaddyfile, freePort(t), freePort(t), filepath.Join(dir, "store"), "127.0.0.1:9", servers, use, "15m")
	if err := writeFile(path, cfg); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestSendTestReportsEachStepAndTheServersAnswer: `caddy mailauth
// send-test` connects, shakes hands, authenticates and sends as sign-in
// mail would, printing each step; a refusal makes it fail with the reply.
func TestSendTestReportsEachStepAndTheServersAnswer(t *testing.T) {
	certs := mailpit.NewCertificates(t)
	mp := mailpit.Start(t, append(certs.TLSArgs(), "--smtp-require-starttls")...)
	t.Setenv("MAILAUTH_TEST_SMTP_PASSWORD", "s3cret")
	cfg := writeMailCaddyfile(t,
		tlsMailServer("trusted", "starttls", mp.SMTPPort, certs.CA)+tlsMailServer("untrusted", "starttls", mp.SMTPPort, ""), "trusted")

	out, ok := runCaddy(t, "mailauth", "send-test", "--config", cfg, "--server", "trusted", "--to", "ops@example.test")
	if !ok {
		t.Fatalf("send-test through a working server failed:\n%s", out)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`connect\s+ok\s+connected to localhost:\d+`),
		regexp.MustCompile(`hello\s+ok\s+EHLO as gateway.example.test`),
		regexp.MustCompile(`tls\s+ok\s+STARTTLS, TLS 1\.[23]`),
		regexp.MustCompile(`auth\s+ok\s+authenticated as gateway with plain`),
		regexp.MustCompile(`send\s+ok\s+accepted: 250 `),
	} {
		if !want.MatchString(out) {
			t.Errorf("send-test output lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "s3cret") {
		t.Error("send-test printed the password")
	}
	if got := mp.WaitForMessage(t, "ops@example.test", 10*time.Second); got.Username != "gateway" {
		t.Errorf("the test mail arrived authenticated as %q, want gateway", got.Username)
	}

	out, ok = runCaddy(t, "mailauth", "send-test", "--config", cfg, "--server", "untrusted", "--to", "ops2@example.test")
	if ok || !regexp.MustCompile(`tls\s+FAILED\s+.*certificate`).MatchString(out) {
		t.Errorf("send-test without tls_ca should fail at the tls step on the certificate:\n%s", out)
	}

	mp.SetChaos(t, mailpit.Chaos{Recipient: mailpit.ChaosTrigger{ErrorCode: 550, Probability: 100}})
	out, ok = runCaddy(t, "mailauth", "send-test", "--config", cfg, "--server", "trusted", "--to", "ops3@example.test")
	if ok || !regexp.MustCompile(`send\s+FAILED\s+rejected: .*550.*\(reply 550\)`).MatchString(out) {
		t.Errorf("send-test to a server that refuses the recipient should fail at send with the 550 reply:\n%s", out)
	}
}

// TestPreviewWritesTheProfilesMailToFiles: `caddy mailauth preview`
// renders the profile's mail with sample data into a text and an HTML
// file and prints their paths.
func TestPreviewWritesTheProfilesMailToFiles(t *testing.T) {
	cfg := writeMailCaddyfile(t, plainMailServer("relay", 2525), "relay")
	outDir := filepath.Join(t.TempDir(), "preview")
	out, ok := runCaddy(t, "mailauth", "preview", "--config", cfg, "--profile", "daily", "--out", outDir)
	if !ok {
		t.Fatalf("preview failed:\n%s", out)
	}
	txtPath, htmlPath := filepath.Join(outDir, "daily.txt"), filepath.Join(outDir, "daily.html")
	for _, p := range []string{txtPath, htmlPath} {
		if !strings.Contains(out, p) {
			t.Errorf("preview did not print the path %s:\n%s", p, out)
		}
	}
	text, err := os.ReadFile(txtPath)
	if err != nil {
		t.Fatalf("the text preview was not written: %v", err)
	}
	html, err := os.ReadFile(htmlPath)
	if err != nil {
		t.Fatalf("the HTML preview was not written: %v", err)
	}
	link := linkIn(t, string(text))
	if !strings.HasPrefix(link, "http://localhost:") {
		t.Errorf("the preview's link %q is not on the profile's server", link)
	}
	if !strings.Contains(string(html), "<!DOCTYPE html>") {
		t.Errorf("the HTML preview is not an HTML document:\n%s", html)
	}
	assertSelfContainedHTML(t, string(html), link)

	out, ok = runCaddy(t, "mailauth", "preview", "--config", cfg, "--profile", "nightly", "--out", outDir)
	if ok || !strings.Contains(out, `no profile named "nightly"`) {
		t.Errorf("preview of an unknown profile should fail naming it:\n%s", out)
	}
}

// BenchmarkLoginPOST measures the login POST through Caddy with the SMTP
// server down and with it up. The handler only queues, so the two should
// be within noise of each other. It reports the median and 99th
// percentile latency in milliseconds. Run it with a fixed count, such as
// -benchtime=500x, so both cases measure as many logins.
func BenchmarkLoginPOST(b *testing.B) {
	for _, c := range []struct {
		name string
		down bool
	}{{"smtp-up", false}, {"smtp-down", true}} {
		b.Run(c.name, func(b *testing.B) {
			mp := mailpit.Start(b)
			if c.down {
				mp.Stop()
			}
			port := startCaddyForBench(b, plainMailServer("relay", mp.SMTPPort))
			client := &http.Client{
				Timeout:       10 * time.Second,
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			}
			form := url.Values{"identity": {"alice"}, "return": {"/app"}}.Encode()
			post := func() time.Duration {
				start := time.Now()
				resp, err := client.Post(fmt.Sprintf("http://127.0.0.1:%d/.mailauth/login", port), "application/x-www-form-urlencoded", strings.NewReader(form))
				took := time.Since(start)
				if err != nil {
					b.Fatalf("login POST: %v", err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusSeeOther {
					b.Fatalf("login POST: got %d, want 303", resp.StatusCode)
				}
				return took
			}
			for range 20 { // warm up connections and the store
				post()
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for b.Loop() {
				lat = append(lat, post())
				// A pause lets the background work of this login (lookup,
				// render, enqueue, and with a working server the delivery,
				// whose mailpit shares the CPU) finish before the next POST,
				// so that the figures compare the handler itself rather
				// than how busy a small machine is delivering mail.
				b.StopTimer()
				time.Sleep(benchPause)
				b.StartTimer()
			}
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
			b.ReportMetric(ms(lat[len(lat)/2]), "median-ms")
			b.ReportMetric(ms(lat[(len(lat)*99)/100]), "p99-ms")
		})
	}
}

// benchPause separates the logins of BenchmarkLoginPOST.
const benchPause = 15 * time.Millisecond

// startCaddyForBench runs Caddy with servers as its mail servers and
// returns the site port.
func startCaddyForBench(b *testing.B, servers string) int {
	b.Helper()
	dir := b.TempDir()
	port := freePort(b)
	cfg := fmt.Sprintf(mailCaddyfile, port, freePort(b), filepath.Join(dir, "store"), "127.0.0.1:9", servers, "relay", "15m")
	return startCaddy(b, cfg, port).Port
}
