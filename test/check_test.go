package test

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mailauth/caddy-mailauth/test/mailpit"
	"github.com/mailauth/caddy-mailauth/test/slapd"
)

// checkCaddyfile has the fixture's LDAP directory (corp) under a user
// profile and a manager profile, and a local directory (staff) under the
// user profile only. %[1]d is the mail server's port, %[2]s the store
// directory; the @…@ tokens are the slapd's.
const checkCaddyfile = `{
	admin off
	auto_https off
	mailauth {
		store badger %[2]s
		mail_server relay {
			host 127.0.0.1
			port %[1]d
			tls none
			timeout 2s
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
				email alice@example.test
			}
		}
		profile daily {
			server http://localhost:8080
			fallback corp staff
		}
		profile approval {
			type manager
			server http://localhost:8080
			fallback corp
		}
	}
}

http://:8080 {
	mailauth {
		default_profile daily
	}
	respond "ok"
}
`

// writeCheckCaddyfile writes checkCaddyfile for slapd s and a mail server
// on smtpPort, and returns its path.
func writeCheckCaddyfile(t *testing.T, s *slapd.Server, smtpPort int) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "Caddyfile")
	cfg := fmt.Sprintf(withLDAP(t, s, checkCaddyfile), smtpPort, filepath.Join(dir, "store"))
	if err := writeFile(path, cfg); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkRows maps "user/profile" to the status of that row of check's
// Users table.
func checkRows(out string) map[string]string {
	rows := map[string]string{}
	_, users, _ := strings.Cut(out, "\nUsers\n")
	users, _, _ = strings.Cut(users, "\nsummary:")
	for _, line := range strings.Split(users, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[0] != "USER" {
			rows[f[0]+"/"+f[1]] = f[3]
		}
	}
	return rows
}

// TestCheckReportsEveryBadFixtureUserAndNoGoodOne runs `caddy mailauth
// check` against the slapd fixture and a working mailpit: every user who
// could not get a link under a profile is a PROBLEM row, everybody else
// is ok, and the exit code is non-zero.
func TestCheckReportsEveryBadFixtureUserAndNoGoodOne(t *testing.T) {
	ldap := slapd.Start(t)
	mp := mailpit.Start(t)
	cfg := writeCheckCaddyfile(t, ldap, mp.SMTPPort)

	out, ok := runCaddy(t, "mailauth", "check", "--config", cfg, "--adapter", "caddyfile", "--user", "ops@example.test", "--user", "nobody")
	if ok {
		t.Errorf("check with bad users in the directory exited zero:\n%s", out)
	}
	rows := checkRows(out)
	for key, want := range map[string]string{
		"carol/daily":            "ok",
		"carol/approval":         "ok",
		"dave/daily":             "ok",
		"dave/approval":          "ok",
		"alice/daily":            "ok",
		"a*b(c)/approval":        "ok",
		"grace/daily":            "ok", // her manager's missing mail matters under a manager profile only
		"erin/daily":             "ok",
		"frank/daily":            "PROBLEM", // no mail
		"frank/approval":         "PROBLEM",
		"henry/daily":            "PROBLEM", // no mail, and grace's manager
		"grace/approval":         "PROBLEM", // manager henry has no mail
		"ivan/approval":          "PROBLEM", // manager entry does not exist
		"erin/approval":          "PROBLEM", // no manager at all
		"ops1/daily":             "PROBLEM", // shares ops@example.test with ops2
		"ops2/daily":             "PROBLEM",
		"ops@example.test/daily": "PROBLEM", // ambiguous as typed
		"nobody/daily":           "PROBLEM", // unknown
	} {
		if got := rows[key]; got != want {
			t.Errorf("check row %s: status %q, want %q", key, got, want)
		}
	}
	if _, ok := rows["alice/approval"]; ok {
		t.Error("alice was checked under the approval profile, whose fallback does not include her directory")
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^config: ok`),
		regexp.MustCompile(`relay\s+rcpt\s+ok\s+RCPT TO:<gateway@example.test> accepted`),
		regexp.MustCompile(`relay\s+rset\s+ok\s+transaction abandoned before DATA: no mail sent`),
		regexp.MustCompile(`corp\s+ldap\s+ok\s+bound and read base_dn ou=people,dc=example,dc=test`),
		regexp.MustCompile(`staff\s+local\s+ok`),
		regexp.MustCompile(`frank\s+daily\s+corp\s+PROBLEM\s+no mail`),
		regexp.MustCompile(`grace\s+approval\s+corp\s+PROBLEM\s+no manager email`),
		regexp.MustCompile(`ops1\s+daily\s+corp\s+PROBLEM\s+mail ops@example.test is shared`),
		regexp.MustCompile(`ops@example.test\s+daily\s+\(none\)\s+PROBLEM\s+ambiguous`),
		regexp.MustCompile(`(?m)^summary: \d+ problem\(s\)`),
	} {
		if !want.MatchString(out) {
			t.Errorf("check output lacks %s:\n%s", want, out)
		}
	}
	if n := len(mp.Messages(t)); n != 0 {
		t.Errorf("check sent %d mails, want none", n)
	}
}

// TestCheckOfAHealthyConfigExitsZero: local users with mail and a working
// mail server give no problem and exit code zero.
func TestCheckOfAHealthyConfigExitsZero(t *testing.T) {
	mp := mailpit.Start(t)
	cfg := writeMailCaddyfile(t, plainMailServer("relay", mp.SMTPPort), "relay")

	out, ok := runCaddy(t, "mailauth", "check", "--config", cfg)
	if !ok {
		t.Fatalf("check of a healthy config exited non-zero:\n%s", out)
	}
	rows := checkRows(out)
	for _, key := range []string{"alice/daily", "bob/daily", "carol/daily"} {
		if rows[key] != "ok" {
			t.Errorf("check row %s: status %q, want ok:\n%s", key, rows[key], out)
		}
	}
	if !strings.Contains(out, "summary: no problems") || strings.Contains(out, "PROBLEM") {
		t.Errorf("check of a healthy config should report no problem:\n%s", out)
	}
}

// TestCheckReportsAStoppedMailServer: a mail server nobody listens on is
// a problem at the connect step, and the exit code is non-zero.
func TestCheckReportsAStoppedMailServer(t *testing.T) {
	mp := mailpit.Start(t)
	port := mp.SMTPPort
	mp.Stop()
	cfg := writeMailCaddyfile(t, plainMailServer("down", port), "down")

	out, ok := runCaddy(t, "mailauth", "check", "--config", cfg)
	if ok {
		t.Errorf("check with a stopped mail server exited zero:\n%s", out)
	}
	if !regexp.MustCompile(`down\s+connect\s+PROBLEM\s+`).MatchString(out) {
		t.Errorf("check should report the stopped server at the connect step:\n%s", out)
	}
	if !strings.Contains(out, "1 of 1 mail servers") {
		t.Errorf("the summary should count the failed mail server:\n%s", out)
	}
}

// TestCheckReportsAWrongLDAPPassword: a bind that fails is a problem of
// the directory, whose users are then not listed, and the exit code is
// non-zero. The local alice comes after corp in daily's fallback list,
// and a lookup fails closed when an earlier directory cannot answer, so
// she is a problem too, for corp's reason.
func TestCheckReportsAWrongLDAPPassword(t *testing.T) {
	ldap := slapd.Start(t)
	mp := mailpit.Start(t)
	cfg := writeCheckCaddyfile(t, ldap, mp.SMTPPort)
	t.Setenv("TEST_LDAP_PASSWORD", "wrong")

	out, ok := runCaddy(t, "mailauth", "check", "--config", cfg)
	if ok {
		t.Errorf("check with a wrong LDAP password exited zero:\n%s", out)
	}
	if !regexp.MustCompile(`corp\s+ldap\s+PROBLEM\s+.*binding as .*Invalid Credentials`).MatchString(out) {
		t.Errorf("check should report the failed bind of corp:\n%s", out)
	}
	if strings.Contains(out, "wrong") {
		t.Error("check printed the bind password")
	}
	if rows := checkRows(out); rows["carol/daily"] != "" || rows["alice/daily"] != "PROBLEM" {
		t.Errorf("with corp down, its users should not be listed and local alice (behind corp) should be a problem:\n%s", out)
	}
	if !regexp.MustCompile(`alice\s+daily\s+staff\s+PROBLEM\s+lookup failed: directory "corp"`).MatchString(out) {
		t.Errorf("alice's row should say corp's failure stopped her lookup:\n%s", out)
	}
}

// TestCheckReportsUsersWhoWouldApproveThemselves: under a manager
// profile, a user whose sponsor is themself is a PROBLEM when nobody else
// could approve, and ok with the approver who is asked instead named
// when the profile has one.
func TestCheckReportsUsersWhoWouldApproveThemselves(t *testing.T) {
	mp := mailpit.Start(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "Caddyfile")
	cfg := fmt.Sprintf(`{
	admin off
	mailauth {
		store badger %[2]s
		mail_server relay {
			host 127.0.0.1
			port %[1]d
			tls none
			from "Access Gateway <gateway@example.test>"
		}
		directory staff local {
			user solo {
				email solo@example.test
				sponsor SOLO@example.test
			}
			user ann {
				email ann@example.test
				sponsor ben@example.test
			}
		}
		directory crew local {
			user sam {
				email sam@example.test
				sponsor sam@example.test
			}
		}
		profile lonely {
			type manager
			server http://localhost:8080
			fallback staff
		}
		profile backed {
			type manager
			server http://localhost:8080
			fallback crew
			approvers sam@example.test audit@example.test
		}
	}
}

http://:8080 {
	mailauth {
		default_profile lonely
	}
	respond "ok"
}
`, mp.SMTPPort, filepath.Join(dir, "store"))
	if err := writeFile(path, cfg); err != nil {
		t.Fatal(err)
	}
	out, ok := runCaddy(t, "mailauth", "check", "--config", path, "--adapter", "caddyfile")
	if ok {
		t.Errorf("check with a user who can only approve themself exited zero:\n%s", out)
	}
	rows := checkRows(out)
	for key, want := range map[string]string{"solo/lonely": "PROBLEM", "ann/lonely": "ok", "sam/backed": "ok"} {
		if got := rows[key]; got != want {
			t.Errorf("check row %s: status %q, want %q\n%s", key, got, want, out)
		}
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`solo\s+lonely\s+staff\s+PROBLEM\s+self-approval`),
		regexp.MustCompile(`sam\s+backed\s+crew\s+ok\s+.*is the user themself, so approved by audit@example.test`),
	} {
		if !want.MatchString(out) {
			t.Errorf("check output lacks %s:\n%s", want, out)
		}
	}
}
