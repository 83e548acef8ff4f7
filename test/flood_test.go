package test

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scrapeMetrics reads Caddy's metrics from its admin endpoint.
func (e *env) scrapeMetrics(t *testing.T) string {
	t.Helper()
	r, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", e.AdminPort))
	if err != nil {
		t.Fatalf("scraping the admin endpoint: %v", err)
	}
	defer r.Body.Close()
	body, _ := io.ReadAll(r.Body)
	return string(body)
}

// storedAudit returns the stored audit trail, by event.
func (e *env) storedAudit(t *testing.T) (map[string]int, auditPage) {
	t.Helper()
	var all auditPage
	e.adminJSON(t, http.MethodGet, "/mailauth/audit?limit=1000", &all)
	by := map[string]int{}
	for _, r := range all.Records {
		by[r.Event]++
	}
	return by, all
}

// TestLoginFloodFromOneAddressWritesNoMoreThanTheLimit: 10 login POSTs
// from one client under login_per_ip 3/10m store 3 logins, not 10; the
// other 7 are told to come back later and leave one audit record between
// them, while the metric counts each.
func TestLoginFloodFromOneAddressWritesNoMoreThanTheLimit(t *testing.T) {
	cfg := strings.Replace(defaultCaddyfile, "\t\tsession_lifetime 1h\n", "\t\tsession_lifetime 1h\n\t\trate_limit {\n\t\t\tlogin_per_ip 3/10m\n\t\t}\n", 1)
	e := newEnv(t, cfg)
	for i := range 10 {
		r := newBrowser(t).post(e.URL("/.mailauth/login"), url.Values{"identity": {fmt.Sprintf("user%d", i)}, "return": {"/app"}})
		if i < 3 {
			if r.Status != http.StatusSeeOther {
				t.Fatalf("login %d of 3 allowed: %d", i+1, r.Status)
			}
			continue
		}
		retry, err := strconv.Atoi(r.Header.Get("Retry-After"))
		if r.Status != http.StatusTooManyRequests || err != nil || retry < 1 || retry > 200 {
			t.Fatalf("login %d over the limit: %d, Retry-After %q; want 429 and at most 200 s (3 per 10 minutes refill one every 200 s)", i+1, r.Status, r.Header.Get("Retry-After"))
		}
		if !strings.Contains(r.Body, "Too many sign-in attempts from your network; try again in 4 minutes") {
			t.Fatalf("login %d over the limit says:\n%s", i+1, r.Body)
		}
		if r.Header.Get("Set-Cookie") != "" {
			t.Errorf("a refused login set a cookie: %s", r.Header.Get("Set-Cookie"))
		}
	}
	var logins struct{ Logins []adminLogin }
	e.adminJSON(t, http.MethodGet, "/mailauth/logins?all=true", &logins)
	if len(logins.Logins) != 3 {
		t.Errorf("10 login POSTs under a limit of 3 left %d logins in the store: %+v", len(logins.Logins), logins.Logins)
	}
	// Wait for the three lookups to finish, so the trail is complete.
	deadline := time.Now().Add(10 * time.Second)
	by, all := e.storedAudit(t)
	for by["user_unknown"] < 3 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		by, all = e.storedAudit(t)
	}
	if by["login_started"] != 3 || by["rate_limited"] != 1 {
		t.Errorf("stored trail: %d login_started and %d rate_limited; want 3 and 1", by["login_started"], by["rate_limited"])
	}
	if len(all.Records) > 3*2+1 {
		t.Errorf("the stored trail holds %d records for 3 logins of unknown users and 7 refusals; want at most 7 (%v)", len(all.Records), by)
	}
	if v, ok := sample(e.scrapeMetrics(t), `caddy_mailauth_rate_limited_total{limit="login_per_ip"}`); v != 7 {
		t.Errorf("rate_limited_total{login_per_ip} = %v (exported %v); want all 7 refusals counted", v, ok)
	}
}

// TestMadeUpLinksAreLimitedAndAuditedInBulk: 200 GETs of verify links
// with random well-formed tokens all look like "Link not valid", leave at
// most a couple of audit records, and the metric counts the refusals.
func TestMadeUpLinksAreLimitedAndAuditedInBulk(t *testing.T) {
	e := newEnv(t, defaultCaddyfile)
	b := newBrowser(t)
	var first string
	for i := range 200 {
		var tok [32]byte
		if _, err := rand.Read(tok[:]); err != nil {
			t.Fatal(err)
		}
		r := b.get(e.URL("/.mailauth/verify?token=" + base64.RawURLEncoding.EncodeToString(tok[:])))
		if r.Status != http.StatusGone || !strings.Contains(r.Body, "Link not valid") {
			t.Fatalf("made-up link %d: %d\n%s", i+1, r.Status, r.Body)
		}
		if first == "" {
			first = samePage(r.Body)
		} else if samePage(r.Body) != first {
			t.Fatalf("made-up link %d, past the limit, got another page than the first", i+1)
		}
	}
	by, all := e.storedAudit(t)
	if by["link_rejected"] < 1 || by["link_rejected"] > 2 || by["rate_limited"] > 2 {
		t.Errorf("200 made-up links stored %d link_rejected and %d rate_limited records; want 1 or 2 of each at most (one per address and minute)", by["link_rejected"], by["rate_limited"])
	}
	for _, r := range all.Records {
		if r.Event == "link_rejected" && r.Fields["count"] == nil {
			t.Errorf("a link_rejected record carries no count: %+v", r)
			break
		}
	}
	// Past the default budget of 30, the other 170 were refused unread.
	if v, ok := sample(e.scrapeMetrics(t), `caddy_mailauth_rate_limited_total{limit="open_per_ip"}`); v != 170 {
		t.Errorf("rate_limited_total{open_per_ip} = %v (exported %v); want 170", v, ok)
	}
}
