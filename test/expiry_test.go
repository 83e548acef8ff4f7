package test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mailauth/caddy-mailauth/test/slapd"
)

// waitStatus is what /.mailauth/status tells the waiting page.
func waitStatus(t *testing.T, b *browser, e *env) (state string, expiresIn int) {
	t.Helper()
	r := b.get(e.URL("/.mailauth/status"))
	var s struct {
		State     string `json:"state"`
		ExpiresIn int    `json:"expires_in"`
	}
	if err := json.Unmarshal([]byte(r.Body), &s); err != nil {
		t.Fatalf("status is not JSON (%d): %s", r.Status, r.Body)
	}
	return s.State, s.ExpiresIn
}

// TestWaitingPageExpiryDoesNotTellTheProfile is the hybrid example with
// short links: executives (dave) need their manager and get 4 s, everybody
// else (carol) confirms a 2 s link, and nobody does not exist. Their
// waiting pages and status must say the same about expiry throughout:
// the same figure at first, pending after carol's link has died, expired
// once the site's longest link has.
func TestWaitingPageExpiryDoesNotTellTheProfile(t *testing.T) {
	ldap := slapd.Start(t)
	cfg := strings.NewReplacer(
		"\t\tprofile sensitive {\n", "\t\tprofile sensitive {\n\t\t\ttype manager\n",
		"\t\t\tlink_expiration 10m\n", "\t\t\tlink_expiration 4s\n",
		"\t\t\tfallback corp staff\n", "\t\t\tlink_expiration 2s\n\t\t\tfallback corp staff\n",
	).Replace(ldapCaddyfile)
	e := newEnv(t, withLDAP(t, ldap, cfg))
	names := []string{"dave", "carol", "nobody"}
	browsers := map[string]*browser{}
	start := time.Now()
	for _, name := range names {
		b := newBrowser(t)
		if r := b.post(e.URL("/.mailauth/login"), url.Values{"identity": {name}, "return": {"/app"}}); r.Status != http.StatusSeeOther {
			t.Fatalf("login POST for %s: %d", name, r.Status)
		}
		browsers[name] = b
	}
	// Wait until the directory has answered for all three, so that each
	// login runs on its profile.
	e.mail.WaitForMessage(t, "erin@example.test", 5*time.Second)
	e.mail.WaitForMessage(t, "carol@example.test", 5*time.Second)

	var pages []string
	for _, name := range names {
		state, left := waitStatus(t, browsers[name], e)
		if state != "pending" || left < 2 || left > 4 {
			t.Errorf("%s: status says %s, expires in %d s; want pending and the site's 4 s (rounded down)", name, state, left)
		}
		pages = append(pages, samePage(browsers[name].get(e.URL("/.mailauth/wait")).Body))
	}
	if pages[0] != pages[1] || pages[1] != pages[2] {
		t.Errorf("the waiting pages of dave, carol and nobody differ:\n%s\n---\n%s\n---\n%s", pages[0], pages[1], pages[2])
	}
	if !strings.Contains(pages[0], "may be sooner") {
		t.Errorf("a site whose profiles differ in link lifetime should say the mail's expiry may be sooner:\n%s", pages[0])
	}

	time.Sleep(time.Until(start.Add(3 * time.Second)))
	for _, name := range names {
		if state, _ := waitStatus(t, browsers[name], e); state != "pending" {
			t.Errorf("3 s in, past carol's link and before the site's expiry, %s's status is %q; want pending for all", name, state)
		}
	}
	time.Sleep(time.Until(start.Add(5 * time.Second)))
	for _, name := range names {
		if state, _ := waitStatus(t, browsers[name], e); state != "expired" {
			t.Errorf("5 s in, %s's status is %q; want expired for all", name, state)
		}
	}
}
