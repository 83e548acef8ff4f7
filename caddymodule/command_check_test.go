package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// checkTestApp is a config with one local directory under a user and a
// manager profile, and a mail server on port, which the test chooses.
func checkTestApp(t *testing.T, port int) *App {
	t.Helper()
	var app App
	cfg := `{
		"mail_servers": {"relay": {"host": "127.0.0.1", "port": ` + strconv.Itoa(port) + `, "tls": "none", "timeout": 2000000000, "from": "gateway@example.test"}},
		"directories": {"staff": {"type": "local", "users": [
			{"username": "alice", "email": "alice@example.test", "sponsor": "boss@example.test"},
			{"username": "bob", "email": "bob@example.test"}
		]}},
		"profiles": {
			"daily": {"server": "https://apps.example.test", "fallback": ["staff"]},
			"guarded": {"type": "manager", "server": "https://apps.example.test", "fallback": ["staff"]}
		}
	}`
	if err := json.Unmarshal([]byte(cfg), &app); err != nil {
		t.Fatal(err)
	}
	return &app
}

// closedLoopbackPort is a loopback port nothing listens on.
func closedLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

func TestCheckCountsAnUnreachableMailServerAMissingSponsorAndAnUnknownUser(t *testing.T) {
	var out bytes.Buffer
	problems, err := check(context.Background(), &out, checkTestApp(t, closedLoopbackPort(t)), checkOptions{users: []string{"zed"}, limit: defaultCheckLimit})
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	// relay down; bob without sponsor under guarded; zed under both profiles.
	if problems != 4 {
		t.Errorf("check found %d problems, want 4:\n%s", problems, &out)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`relay\s+connect\s+PROBLEM`),
		regexp.MustCompile(`staff\s+local\s+ok\s+2 user\(s\) in the config`),
		regexp.MustCompile(`alice\s+guarded\s+staff\s+ok\s+mail alice@example.test, approved by boss@example.test`),
		regexp.MustCompile(`bob\s+daily\s+staff\s+ok\s+mail bob@example.test`),
		regexp.MustCompile(`bob\s+guarded\s+staff\s+PROBLEM\s+no sponsor`),
		regexp.MustCompile(`zed\s+daily\s+\(none\)\s+PROBLEM\s+no directory of the profile knows this user`),
		regexp.MustCompile(`summary: 4 problem\(s\): 1 of 1 mail servers, 0 of 1 directories, 3 of 6 user checks`),
	} {
		if !want.MatchString(out.String()) {
			t.Errorf("check output lacks %s:\n%s", want, &out)
		}
	}
}

func TestCheckOfAConfigThatDoesNotBuildIsAnErrorNotAReport(t *testing.T) {
	app := checkTestApp(t, 25)
	app.Profiles["daily"].Fallback = []string{"nowhere"}
	var out bytes.Buffer
	if _, err := check(context.Background(), &out, app, checkOptions{}); err == nil || !strings.Contains(err.Error(), "nowhere") {
		t.Errorf("check of a profile with an unknown fallback: error = %v, want one naming the directory", err)
	}
	if out.Len() != 0 {
		t.Errorf("check printed a report for a config that does not build:\n%s", &out)
	}
}

func TestCheckCommandRefusesANegativeLimitAndABadRecipient(t *testing.T) {
	for _, args := range [][]string{
		{"--config", "Caddyfile", "--limit", "-1"},
		{"--config", "Caddyfile", "--rcpt", "not an address"},
	} {
		c := checkCommand()
		c.SetArgs(args)
		c.SetOut(&bytes.Buffer{})
		c.SetErr(&bytes.Buffer{})
		if err := c.Execute(); err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(args[2], "--")) {
			t.Errorf("check %v: error = %v, want one naming %s", args, err, args[2])
		}
	}
}
