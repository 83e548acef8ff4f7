package test

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailauth/caddy-mailauth/test/mailpit"
)

// TestTheDemoShowsBothApprovalTypes runs `make run`'s Caddyfile as it is
// shipped: bob confirms his own link, carol (a contractor) waits for her
// sponsor alice, whose mail lands in the same mailpit, and both reach the
// app.
func TestTheDemoShowsBothApprovalTypes(t *testing.T) {
	cfg, err := os.ReadFile("demo/Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	mp := mailpit.Start(t)
	port, appPort, adminPort := freePort(t), freePort(t), freePort(t)
	t.Setenv("DEMO_DIR", t.TempDir())
	t.Setenv("DEMO_PORT", strconv.Itoa(port))
	t.Setenv("DEMO_APP_PORT", strconv.Itoa(appPort))
	t.Setenv("DEMO_ADMIN_PORT", strconv.Itoa(adminPort))
	t.Setenv("DEMO_SMTP_PORT", strconv.Itoa(mp.SMTPPort))
	startCaddy(t, string(cfg), port)
	site := fmt.Sprintf("http://localhost:%d", port)
	complete := func(b *browser) *response {
		t.Helper()
		f := formToken.FindStringSubmatch(b.get(site + "/.mailauth/wait").Body)
		if f == nil {
			t.Fatal("the waiting page carries no form token")
		}
		return b.post(site+"/.mailauth/complete", url.Values{"csrf": {f[1]}})
	}

	bob := newBrowser(t)
	if r := bob.post(site+"/.mailauth/login", url.Values{"identity": {"bob@demo.test"}, "return": {"/"}}); r.Status != http.StatusSeeOther {
		t.Fatalf("bob's login: %d", r.Status)
	}
	link := linkIn(t, mp.WaitForMessage(t, "bob@demo.test", 15*time.Second).Text)
	m := matchNumber.FindStringSubmatch(bob.get(site + "/.mailauth/wait").Body)
	if m == nil {
		t.Fatal("bob's waiting page shows no number")
	}
	if r := newBrowser(t).post(site+"/.mailauth/verify", url.Values{"token": {tokenOf(link)}, "match": {m[1]}}); r.Status != http.StatusOK {
		t.Fatalf("bob confirming his link: %d", r.Status)
	}
	if r := complete(bob); r.Status != http.StatusSeeOther {
		t.Fatalf("bob's complete: %d", r.Status)
	}
	if body := bob.get(site + "/").Body; !strings.Contains(body, "Hello, bob") {
		t.Fatalf("bob should reach the demo app:\n%s", body)
	}
	mp.DeleteAll(t)

	carol, alice := newBrowser(t), newBrowser(t)
	if r := carol.post(site+"/.mailauth/login", url.Values{"identity": {"carol"}, "return": {"/"}}); r.Status != http.StatusSeeOther {
		t.Fatalf("carol's login: %d", r.Status)
	}
	msg := mp.WaitForMessage(t, "alice@demo.test", 15*time.Second)
	links := decisionLink.FindAllString(msg.Text, -1)
	if len(links) != 2 || !strings.Contains(msg.Text, "Carol Contractor") {
		t.Fatalf("alice, carol's sponsor, should get the approval mail in the same mailpit:\n%s", msg.Text)
	}
	m = matchNumber.FindStringSubmatch(carol.get(site + "/.mailauth/wait").Body)
	if m == nil {
		t.Fatal("carol's waiting page shows no number")
	}
	approve := strings.Replace(links[0], fmt.Sprintf("http://localhost:%d", port), site, 1)
	if r := alice.post(site+"/.mailauth/verify", url.Values{"token": {tokenOf(approve)}, "match": {m[1]}}); r.Status != http.StatusOK {
		t.Fatalf("alice approving: %d\n%s", r.Status, r.Body)
	}
	if r := complete(carol); r.Status != http.StatusSeeOther {
		t.Fatalf("carol's complete: %d", r.Status)
	}
	if body := carol.get(site + "/").Body; !strings.Contains(body, "Hello, carol") {
		t.Fatalf("carol should reach the demo app:\n%s", body)
	}
	if r := bob.get(site + "/finance/"); r.Status != http.StatusFound || !strings.HasPrefix(r.Location, "/.mailauth/stepup?") {
		t.Fatalf("bob's own sign-in must not open /finance/ of the demo, got %d %q", r.Status, r.Location)
	}
}
