package test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestFloodWithRotatingForwardedForIsLimitedByTheRealAddress: without
// trusted_proxies, X-Forwarded-For is ignored, so rotating it does not get
// a flood past the per-IP limit; every answer looks the same.
func TestFloodWithRotatingForwardedForIsLimitedByTheRealAddress(t *testing.T) {
	cfg := strings.Replace(defaultCaddyfile, "\t\tsession_lifetime 1h\n", "\t\tsession_lifetime 1h\n\t\trate_limit {\n\t\t\tlogin_per_ip 3/10m\n\t\t}\n", 1)
	e := newEnv(t, cfg)
	var first *response
	for i := range 6 {
		b := newBrowser(t)
		req, _ := http.NewRequest(http.MethodPost, e.URL("/.mailauth/login"), strings.NewReader(url.Values{"identity": {"bob"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Forwarded-For", fmt.Sprintf("203.0.113.%d", i+1))
		r := b.do(req)
		if first == nil {
			first = r
		}
		if r.Status != first.Status || r.Location != first.Location || samePage(r.Body) != samePage(first.Body) {
			t.Fatalf("login %d was answered differently: %d %q vs %d %q", i, r.Status, r.Location, first.Status, first.Location)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		limited := 0
		for _, ev := range e.caddy.auditEvents(t) {
			if ev["event"] == "rate_limited" && ev["limit"] == "login_per_ip" {
				limited++
				if ev["client_ip"] != "127.0.0.1" {
					t.Fatalf("the limit must key on the connection's address, not X-Forwarded-For: %v", ev)
				}
			}
		}
		if limited == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("want 3 of 6 logins limited, got %d", limited)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	if n := len(e.mail.Messages(t)); n != 3 {
		t.Fatalf("only the first 3 logins may send mail, %d did", n)
	}
}
