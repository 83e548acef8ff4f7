package test

import (
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailauth/caddy-mailauth/test/slapd"
)

// ldapCaddyfile protects a site whose users come from LDAP (corp) and a
// local directory (staff). Executives get the "sensitive" profile by
// policy; everybody else "daily". The @…@ tokens are the slapd's.
const ldapCaddyfile = `{
	admin 127.0.0.1:%[2]d
	auto_https off
	mailauth {
		store badger %[4]s
		mail_server local {
			host 127.0.0.1
			port %[3]d
			tls none
			from "Access Gateway <gateway@example.test>"
		}
		directory corp ldap {
			url @LDAPS_URL@
			tls_ca @CA_FILE@
			bind_dn @BIND_DN@
			bind_password {env.TEST_LDAP_PASSWORD}
			base_dn ou=people,dc=example,dc=test
			timeout 2s
		}
		directory staff local {
			user alice {
				name "Alice Local"
				email alice@example.test
			}
		}
		profile daily {
			server http://localhost:%[1]d
			subject "Sign in to {{.App}}"
			fallback corp staff
		}
		profile sensitive {
			server http://localhost:%[1]d
			subject "Sensitive sign-in to {{.App}}"
			link_expiration 10m
			fallback corp
		}
		policy executives {
			profile sensitive
			directory corp
			attribute memberOf
			values "cn=executives,*" "/^cn=finance-.*$/"
		}
	}
}

http://:%[1]d {
	bind 127.0.0.1
	mailauth {
		default_profile daily
		policies executives
	}
	reverse_proxy %[5]s {
		header_up X-Remote-User {http.auth.user.id}
		header_up X-Remote-Email {http.auth.user.email}
	}
}
`

func withLDAP(t *testing.T, s *slapd.Server, caddyfile string) string {
	t.Setenv("TEST_LDAP_PASSWORD", s.BindPassword)
	return strings.NewReplacer("@LDAPS_URL@", s.LDAPSURL, "@CA_FILE@", s.CAFile, "@BIND_DN@", s.BindDN).Replace(caddyfile)
}

// TestPoliciesPickProfilesThroughCaddy: two LDAP users of one site take
// different profiles by policy, and a user known only to the local
// directory signs in through the fallback.
func TestPoliciesPickProfilesThroughCaddy(t *testing.T) {
	ldap := slapd.Start(t)
	e := newEnv(t, withLDAP(t, ldap, ldapCaddyfile))

	for _, tc := range []struct {
		input, address, subject, profile string
	}{
		{"dave", "dave@example.test", "Sensitive sign-in to 127.0.0.1", "sensitive"},
		{"Carol@Example.test", "carol@example.test", "Sign in to 127.0.0.1", "daily"},
		{"alice", "alice@example.test", "Sign in to 127.0.0.1", "daily"},
	} {
		b := newBrowser(t)
		link := startLogin(t, e, b, tc.input, tc.address)
		msg := e.mail.WaitForMessage(t, tc.address, 5*time.Second)
		if msg.Subject != tc.subject {
			t.Errorf("%s: subject %q, want %q (profile %s)", tc.input, msg.Subject, tc.subject, tc.profile)
		}
		user := strings.SplitN(tc.address, "@", 2)[0]
		if body := confirmAndComplete(t, e, b, link); !strings.Contains(body, fmt.Sprintf("user=%q", user)) {
			t.Errorf("%s: the upstream should see user %q, got %s", tc.input, user, body)
		}
	}

	var matched []map[string]any
	for _, ev := range e.caddy.auditEvents(t) {
		if ev["event"] == "policy_matched" {
			matched = append(matched, ev)
		}
	}
	if len(matched) != 1 || matched[0]["user"] != "dave" || matched[0]["policy"] != "executives" || matched[0]["profile"] != "sensitive" || matched[0]["directory"] != "corp" {
		t.Fatalf("want exactly one policy_matched event, for dave by executives; got %v", matched)
	}
}

// TestLDAPOutageFailsClosedAndIsAudited: with slapd stopped, neither an
// LDAP user nor the local alice (whose directory comes after corp in the
// fallback list) gets a link, since corp may know a namesake who is
// someone else; every user gets the usual answer and the audit log says
// why. Once LDAP is back, alice signs in again.
func TestLDAPOutageFailsClosedAndIsAudited(t *testing.T) {
	ldap := slapd.Start(t)
	e := newEnv(t, withLDAP(t, ldap, ldapCaddyfile))
	ldap.Stop()

	for _, who := range []string{"alice", "carol"} {
		r := newBrowser(t).post(e.URL("/.mailauth/login"), url.Values{"identity": {who}})
		if r.Status != http.StatusSeeOther || r.Location != "/.mailauth/wait" {
			t.Fatalf("%s during the outage should get the usual answer, got %d %q", who, r.Status, r.Location)
		}
	}
	ev := e.caddy.waitForAudit(t, "directory_error", 10*time.Second)
	if ev["directory"] != "corp" || !strings.Contains(fmt.Sprint(ev["error"]), "corp") {
		t.Errorf("directory_error should name the directory and the reason: %v", ev)
	}
	time.Sleep(500 * time.Millisecond)
	if msgs := e.mail.Messages(t); len(msgs) != 0 {
		t.Fatalf("no link may go out while an earlier directory is down, got mail to %v", msgs[0].To)
	}

	ldap.Restart(t)
	b := newBrowser(t)
	link := startLogin(t, e, b, "alice", "alice@example.test")
	if body := confirmAndComplete(t, e, b, link); !strings.Contains(body, `user="alice"`) {
		t.Fatalf("once LDAP is back the local alice signs in: %s", body)
	}
}

// namesakeCaddyfile has a carol in LDAP (corp) and another, a different
// person, in the local contractors directory. The site's default profile
// tries corp, then contractors; /corp/* takes corp users only and
// /vendor/* contractors only.
const namesakeCaddyfile = `{
	admin 127.0.0.1:%[2]d
	auto_https off
	mailauth {
		store badger %[4]s
		mail_server local {
			host 127.0.0.1
			port %[3]d
			tls none
			from "Access Gateway <gateway@example.test>"
		}
		directory corp ldap {
			url @LDAPS_URL@
			tls_ca @CA_FILE@
			bind_dn @BIND_DN@
			bind_password {env.TEST_LDAP_PASSWORD}
			base_dn ou=people,dc=example,dc=test
			timeout 2s
		}
		directory contractors local {
			user carol {
				name "Carol Contractor"
				email carol@contractor.test
			}
		}
		profile daily {
			server http://localhost:%[1]d
			fallback corp contractors
		}
		profile corponly {
			server http://localhost:%[1]d
			fallback corp
		}
		profile vendor {
			server http://localhost:%[1]d
			fallback contractors
		}
	}
}

http://:%[1]d {
	bind 127.0.0.1
	route /corp/* {
		mailauth {
			default_profile corponly
		}
		reverse_proxy %[5]s {
			header_up X-Remote-User {http.auth.user.id}
			header_up X-Remote-Email {http.auth.user.email}
		}
	}
	route /vendor/* {
		mailauth {
			default_profile vendor
		}
		reverse_proxy %[5]s {
			header_up X-Remote-User {http.auth.user.id}
			header_up X-Remote-Email {http.auth.user.email}
		}
	}
	route {
		mailauth {
			default_profile daily
		}
		reverse_proxy %[5]s {
			header_up X-Remote-User {http.auth.user.id}
			header_up X-Remote-Email {http.auth.user.email}
		}
	}
}
`

// TestANamesakeFromAnotherDirectoryIsAnotherPerson: the contractors'
// carol, signed in on /vendor/*, is refused on /corp/* (whose profiles
// use corp only) with a page that says so, never the upstream; the LDAP
// carol is refused on /vendor/*. And while LDAP is down, a login for
// "carol" on the site does not fall through to the contractor.
func TestANamesakeFromAnotherDirectoryIsAnotherPerson(t *testing.T) {
	ldap := slapd.Start(t)
	e := newEnv(t, withLDAP(t, ldap, namesakeCaddyfile))

	// On the site's default profile corp answers first: the LDAP carol
	// gets this link, not the contractor.
	corp := newBrowser(t)
	link := startLogin(t, e, corp, "carol", "carol@example.test")
	if body := confirmAndComplete(t, e, corp, link); !strings.Contains(body, `email="carol@example.test"`) {
		t.Fatalf("the LDAP carol should sign in on the site: %s", body)
	}
	notForHer := func(b *browser, page, who string) {
		t.Helper()
		r := b.get(e.URL(page))
		if r.Status != http.StatusFound || strings.Contains(r.Body, "upstream saw") {
			t.Fatalf("%s must not open %s: %d %s", who, page, r.Status, r.Body)
		}
		if p := b.get(e.URL(r.Location)); p.Status != http.StatusForbidden || !strings.Contains(p.Body, "Not available for your account") {
			t.Fatalf("the page should tell %s that %s is not for her account, got %d:\n%s", who, page, p.Status, p.Body)
		}
	}
	notForHer(corp, "/vendor/portal", "the LDAP carol")

	// The contractor carol signs in with her address, which corp does not
	// know, so the contractors directory answers.
	contractor := newBrowser(t)
	link = startLogin(t, e, contractor, "carol@contractor.test", "carol@contractor.test")
	if body := confirmAndComplete(t, e, contractor, link); !strings.Contains(body, `email="carol@contractor.test"`) {
		t.Fatalf("the contractor should sign in on the site: %s", body)
	}
	notForHer(contractor, "/corp/books", "the contractors' carol")
	e.mail.DeleteAll(t)

	// LDAP down: a login for "carol" fails closed rather than reaching the
	// contractor further down the fallback list.
	ldap.Stop()
	if r := newBrowser(t).post(e.URL("/.mailauth/login"), url.Values{"identity": {"carol"}}); r.Status != http.StatusSeeOther {
		t.Fatalf("carol during the outage should get the usual answer, got %d", r.Status)
	}
	e.caddy.waitForAudit(t, "directory_error", 10*time.Second)
	time.Sleep(500 * time.Millisecond)
	if msgs := e.mail.Messages(t); len(msgs) != 0 {
		t.Fatalf("during the outage a login for carol went to %v", msgs[0].To)
	}
}

// TestExplainReportsEachFixtureUser runs `caddy mailauth explain` as an
// operator would, beside no running Caddy.
func TestExplainReportsEachFixtureUser(t *testing.T) {
	ldap := slapd.Start(t)
	bin, err := caddyBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(withLDAP(t, ldap, ldapCaddyfile), 8080, 2019, 2525, filepath.Join(dir, "store"), "127.0.0.1:9")
	cfg = strings.Replace(cfg, "http://:8080 {", "http://apps.example.test:8080 {", 1)
	path := filepath.Join(dir, "Caddyfile")
	if err := writeFile(path, cfg); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user string
		want []string
	}{
		{"dave", []string{"directory:      corp", "email:          dave@example.test", "manager email:  erin@example.test", "memberOf:     cn=executives,ou=groups,dc=example,dc=test", "1. executives:  MATCH, applied", "profile:        sensitive (from policy executives"}},
		{"carol", []string{"directory:      corp", "department:   IT", "1. executives:  no match", "profile:        daily (default profile"}},
		{"alice", []string{"directory:      staff", "email:          alice@example.test", "user is from directory \"staff\"", "profile:        daily (default profile"}},
		{"grace", []string{"manager email:  (none)", "profile:        daily"}},
		{"frank", []string{"lookup failed", "no mail"}},
		{"*)(uid=*", []string{"no directory knows"}},
		{"a*b(c)", []string{"email:          odd@example.test"}},
	} {
		cmd := exec.Command(bin, "mailauth", "explain", "--config", path, "--adapter", "caddyfile", "--site", "apps.example.test", tc.user)
		cmd.Env = append(cmd.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir+"/data", "XDG_CONFIG_HOME="+dir+"/config")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("explain %s: %v\n%s", tc.user, err, out)
		}
		// Column widths follow the longest label, so compare with runs of
		// spaces folded.
		text := strings.Join(strings.Fields(string(out)), " ")
		for _, w := range tc.want {
			if !strings.Contains(text, strings.Join(strings.Fields(w), " ")) {
				t.Errorf("explain %s: output lacks %q:\n%s", tc.user, w, out)
			}
		}
	}
}

// TestHybridSiteSendsExecutivesToTheirLDAPManager is the hybrid scenario:
// on one site, executives are approved by their manager (resolved from the
// LDAP manager DN) while everybody else confirms their own link.
func TestHybridSiteSendsExecutivesToTheirLDAPManager(t *testing.T) {
	ldap := slapd.Start(t)
	cfg := strings.Replace(ldapCaddyfile, "\t\tprofile sensitive {\n", "\t\tprofile sensitive {\n\t\t\ttype manager\n", 1)
	e := newEnv(t, withLDAP(t, ldap, cfg))

	dave, erin := newBrowser(t), newBrowser(t)
	if r := dave.post(e.URL("/.mailauth/login"), url.Values{"identity": {"dave"}, "return": {"/app"}}); r.Status != http.StatusSeeOther {
		t.Fatalf("dave's login POST: %d", r.Status)
	}
	if r := dave.get(e.URL("/.mailauth/wait")); !strings.Contains(r.Body, "Request sent") {
		t.Errorf("a site mixing user and manager profiles should word its waiting page for both:\n%s", r.Body)
	}
	msg := e.mail.WaitForMessage(t, "erin@example.test", 15*time.Second)
	links := decisionLink.FindAllString(msg.Text, -1)
	if len(links) != 2 || !strings.Contains(msg.Text, "Dave Example asks to sign in") {
		t.Fatalf("erin, dave's manager in LDAP, should be asked to approve:\n%s\n%s", msg.Subject, msg.Text)
	}
	if r := erin.post(e.URL("/.mailauth/verify"), url.Values{"token": {tokenOf(e.onSite(links[0]))}, "match": {matchOn(t, e, dave)}}); r.Status != http.StatusOK {
		t.Fatalf("erin's approval: %d", r.Status)
	}
	if r := complete(t, e, dave); r.Status != http.StatusSeeOther {
		t.Fatalf("dave's complete: %d", r.Status)
	}
	if body := dave.get(e.URL("/app")).Body; !strings.Contains(body, `user="dave"`) {
		t.Fatalf("dave should reach the app after erin approved: %s", body)
	}

	carol := newBrowser(t)
	link := startLogin(t, e, carol, "carol", "carol@example.test")
	if body := confirmAndComplete(t, e, carol, link); !strings.Contains(body, `user="carol"`) {
		t.Fatalf("carol confirms her own link on the same site: %s", body)
	}
}
