package test

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMetricsCountALoginOnCaddysEndpoint: after one User Approval login
// through a real Caddy, Caddy's own metrics endpoint (on the admin address)
// shows the login, the mail and the SMTP attempt.
func TestMetricsCountALoginOnCaddysEndpoint(t *testing.T) {
	// The global metrics option turns on Caddy's HTTP metrics too; ours are
	// there either way, as the admin endpoint serves the whole registry.
	e := newEnv(t, strings.Replace(defaultCaddyfile, "\tauto_https off\n", "\tauto_https off\n\tmetrics\n", 1))
	b := newBrowser(t)
	if body := confirmAndComplete(t, e, b, startLogin(t, e, b, "alice", "alice@example.test")); !strings.Contains(body, `user="alice"`) {
		t.Fatalf("the login did not reach the app: %s", body)
	}

	scrape := func() string {
		r, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", e.AdminPort))
		if err != nil {
			t.Fatalf("scraping the admin endpoint: %v", err)
		}
		defer r.Body.Close()
		body, _ := io.ReadAll(r.Body)
		if r.StatusCode != http.StatusOK {
			t.Fatalf("GET /metrics: got %d:\n%s", r.StatusCode, body)
		}
		return string(body)
	}
	want := []string{
		`caddy_mailauth_logins_started_total{profile="daily"}`,
		`caddy_mailauth_logins_finished_total{outcome="approved",profile="daily"}`,
		`caddy_mailauth_logins_finished_total{outcome="completed",profile="daily"}`,
		`caddy_mailauth_mails_total{outcome="sent",server="local"}`,
		`caddy_mailauth_smtp_attempt_seconds_count{server="local"}`,
		`caddy_mailauth_approval_seconds_count{type="user"}`,
		`caddy_mailauth_directory_lookups_total{directory="staff",outcome="found"}`,
	}
	// The outbox reports the sent mail just after mailpit has it, so give
	// the counters a moment.
	var text string
	var missing []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		text = scrape()
		missing = missing[:0]
		for _, series := range want {
			if v, ok := sample(text, series); !ok || v < 1 {
				missing = append(missing, fmt.Sprintf("%s = %v (found %v)", series, v, ok))
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, m := range missing {
		t.Errorf("after one login, want ≥ 1: %s", m)
	}
	for _, series := range []string{"caddy_mailauth_outbox_depth", "caddy_mailauth_outbox_oldest_failing_seconds"} {
		if v, ok := sample(text, series); !ok || v != 0 {
			t.Errorf("%s = %v (exported: %v); want 0 once the mail is out", series, v, ok)
		}
	}
	for _, leak := range []string{"alice", "127.0.0.1", "example.test"} {
		for _, line := range strings.Split(text, "\n") {
			if strings.HasPrefix(line, "caddy_mailauth_") && strings.Contains(line, leak) {
				t.Errorf("a mailauth series carries %q in a label: %s", leak, line)
			}
		}
	}
	if t.Failed() {
		t.Logf("scraped mailauth series:\n%s", grepLines(text, "caddy_mailauth_"))
	}
}

// sample finds the value of series (name and labels, as exposed) in a
// Prometheus text exposition.
func sample(text, series string) (float64, bool) {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

func grepLines(text, prefix string) string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, prefix) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
