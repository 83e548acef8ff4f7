package test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// startLogin posts the login form for identity and returns the link mailed
// to address.
func startLogin(t *testing.T, e *env, b *browser, identity, address string) string {
	t.Helper()
	if r := b.post(e.URL("/.mailauth/login"), url.Values{"identity": {identity}, "return": {"/app"}}); r.Status != http.StatusSeeOther {
		t.Fatalf("login POST: got %d", r.Status)
	}
	return linkIn(t, e.mail.WaitForMessage(t, address, 15*time.Second).Text)
}

// confirmAndComplete confirms link from another device and completes the
// login in b; it returns the upstream's answer to b afterwards.
func confirmAndComplete(t *testing.T, e *env, b *browser, link string) string {
	t.Helper()
	token := link[strings.Index(link, "token=")+len("token="):]
	if r := newBrowser(t).post(e.URL("/.mailauth/verify"), url.Values{"token": {token}, "match": {matchOn(t, e, b)}}); r.Status != http.StatusOK {
		t.Fatalf("confirming the link: got %d:\n%s", r.Status, r.Body)
	}
	if r := complete(t, e, b); r.Status != http.StatusSeeOther || r.Location != "/app" {
		t.Fatalf("complete: got %d Location=%q", r.Status, r.Location)
	}
	return b.get(e.URL("/app")).Body
}

// TestReloadKeepsLoginsAndSessions: `caddy reload` provisions the new
// config while the old one still holds the Badger store; pending logins,
// links and sessions must all survive it.
func TestReloadKeepsLoginsAndSessions(t *testing.T) {
	e := newEnv(t, defaultCaddyfile)
	before := newBrowser(t)
	if body := confirmAndComplete(t, e, before, startLogin(t, e, before, "alice", "alice@example.test")); !strings.Contains(body, `user="alice"`) {
		t.Fatalf("sign-in before the reload failed: %s", body)
	}
	waiting := newBrowser(t)
	link := startLogin(t, e, waiting, "bob", "bob@example.test")

	// The new config differs, so Caddy really swaps it.
	changed := strings.Replace(e.Caddyfile, "session_lifetime 1h", "session_lifetime 2h", 1)
	req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/load", e.AdminPort), strings.NewReader(changed))
	req.Header.Set("Content-Type", "text/caddyfile")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("reload refused: %d %s", resp.StatusCode, msg)
	}

	if body := before.get(e.URL("/app")).Body; !strings.Contains(body, `user="alice"`) {
		t.Fatalf("a session issued before the reload no longer works: %s", body)
	}
	if body := confirmAndComplete(t, e, waiting, link); !strings.Contains(body, `user="bob"`) {
		t.Fatalf("a login started before the reload could not finish after it: %s", body)
	}
}

// TestRestartKeepsSessionsAndLinks: the session key and pending logins are
// in the store, so a restarted Caddy honours both.
func TestRestartKeepsSessionsAndLinks(t *testing.T) {
	e := newEnv(t, defaultCaddyfile)
	signedIn := newBrowser(t)
	confirmAndComplete(t, e, signedIn, startLogin(t, e, signedIn, "alice", "alice@example.test"))
	waiting := newBrowser(t)
	link := startLogin(t, e, waiting, "bob", "bob@example.test")

	e.caddy.Stop(t)
	e.caddy = startCaddy(t, e.Caddyfile, e.Port)

	if body := signedIn.get(e.URL("/app")).Body; !strings.Contains(body, `user="alice"`) {
		t.Fatalf("a session did not survive a restart: %s", body)
	}
	if body := confirmAndComplete(t, e, waiting, link); !strings.Contains(body, `user="bob"`) {
		t.Fatalf("a link did not survive a restart: %s", body)
	}
}

// TestValidateWarnsAboutShortLinks: `caddy validate` accepts a link
// lifetime outside 5m–24h but warns, naming the profile.
func TestValidateWarnsAboutShortLinks(t *testing.T) {
	bin, err := caddyBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(defaultCaddyfile, freePort(t), freePort(t), 2525, dir+"/store", "127.0.0.1:9")
	cfg = strings.Replace(cfg, "link_expiration 15m", "link_expiration 2m", 1)
	path := dir + "/Caddyfile"
	if err := writeFile(path, cfg); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "validate", "--config", path, "--adapter", "caddyfile")
	cmd.Env = append(cmd.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir+"/data", "XDG_CONFIG_HOME="+dir+"/config")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("caddy validate refused a 2m link_expiration: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "link_expiration outside the recommended range") || !strings.Contains(string(out), `"profile":"daily"`) {
		t.Fatalf("no warning naming the profile for a 2m link_expiration:\n%s", out)
	}

	bad := strings.Replace(cfg, "fallback staff", "fallback staff corp", 1)
	if err := writeFile(path, bad); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(bin, "validate", "--config", path, "--adapter", "caddyfile")
	cmd.Env = append(cmd.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir+"/data", "XDG_CONFIG_HOME="+dir+"/config")
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), `profile \"daily\": fallback: no directory named \"corp\"`) || !strings.Contains(string(out), "Caddyfile:29") {
		t.Fatalf("caddy validate should refuse an unknown fallback directory, naming the field and line:\n%s", out)
	}
}

// TestValidateRefusesClearTextToRemoteHosts: `caddy validate` exits
// non-zero on a setting that would send sign-in links, or an LDAP bind,
// in clear text to a host that is not loopback, and says which field and
// how to fix it.
func TestValidateRefusesClearTextToRemoteHosts(t *testing.T) {
	bin, err := caddyBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	base := fmt.Sprintf(defaultCaddyfile, freePort(t), freePort(t), 2525, dir+"/store", "127.0.0.1:9")
	for _, tc := range []struct {
		name, from, to string
		want           []string
	}{
		{"http profile server", "server http://localhost:", "server http://apps.example.com:", []string{
			`profile \"daily\": server: \"http://apps.example.com:`, `sends sign-in links in clear text; use https:// (http:// is allowed only for loopback hosts such as localhost)`,
		}},
		{"tls opportunistic", "host 127.0.0.1\n\t\t\tport 2525\n\t\t\ttls none", "host smtp.example.com\n\t\t\tport 2525\n\t\t\ttls opportunistic", []string{
			`mail_server \"local\": tls: opportunistic sends sign-in links in clear text to \"smtp.example.com\"`, "use starttls or implicit, or set insecure_tls_ok", "Caddyfile:10",
		}},
		{"tls none", "host 127.0.0.1", "host smtp.example.com", []string{
			`mail_server \"local\": tls: none sends sign-in links in clear text to \"smtp.example.com\"`, "use starttls or implicit, or set insecure_tls_ok", "Caddyfile:10",
		}},
		{"plain ldap", "\t\tprofile daily {", "\t\tdirectory corp ldap {\n\t\t\turl ldap://dc1.example.com\n\t\t\tbase_dn dc=example,dc=com\n\t\t}\n\t\tprofile daily {", []string{
			`directory \"corp\": url: \"ldap://dc1.example.com\" sends the bind password and every lookup in clear text; use ldaps://dc1.example.com or set start_tls`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(base, tc.from) {
				t.Fatalf("the Caddyfile has no %q to change", tc.from)
			}
			path := dir + "/Caddyfile"
			if err := writeFile(path, strings.Replace(base, tc.from, tc.to, 1)); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, "validate", "--config", path, "--adapter", "caddyfile")
			cmd.Env = append(cmd.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir+"/data", "XDG_CONFIG_HOME="+dir+"/config")
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("caddy validate accepted it:\n%s", out)
			}
			for _, want := range tc.want {
				if !strings.Contains(string(out), want) {
					t.Errorf("caddy validate does not say %s:\n%s", want, out)
				}
			}
		})
	}
}
