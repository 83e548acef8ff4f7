package test

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// managerCaddyfile protects a site with Manager Approval: alice's sponsor
// bob approves; carl has no sponsor. @EXPIRY@ is the link lifetime.
const managerCaddyfile = `{
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
		directory staff local {
			user alice {
				name "Alice Example"
				email alice@example.test
				sponsor bob@example.test
			}
			user carl {
				email carl@example.test
			}
		}
		profile sensitive {
			type manager
			server http://localhost:%[1]d
			link_expiration @EXPIRY@
			fallback staff
			notify_failed_login
		}
	}
}

http://:%[1]d {
	bind 127.0.0.1
	mailauth {
		default_profile sensitive
	}
	reverse_proxy %[5]s {
		header_up X-Remote-User {http.auth.user.id}
		header_up X-Remote-Email {http.auth.user.email}
	}
}
`

func managerEnv(t *testing.T, expiry string) *env {
	return newEnv(t, strings.Replace(managerCaddyfile, "@EXPIRY@", expiry, 1))
}

var decisionLink = regexp.MustCompile(`https?://[^\s"<>]+/\.mailauth/verify\?token=[A-Za-z0-9_-]+&pair=[A-Za-z0-9_-]+`)

// askManager starts alice's login in b and returns the Approve and Deny
// links from the mail to bob.
func askManager(t *testing.T, e *env, b *browser) (approve, deny string) {
	t.Helper()
	if r := b.post(e.URL("/.mailauth/login"), url.Values{"identity": {"alice"}, "return": {"/app"}}); r.Status != http.StatusSeeOther {
		t.Fatalf("login POST: got %d", r.Status)
	}
	msg := e.mail.WaitForMessage(t, "bob@example.test", 15*time.Second)
	e.mail.DeleteAll(t)
	links := decisionLink.FindAllString(msg.Text, -1)
	if len(links) != 2 {
		t.Fatalf("the manager's mail should have an Approve and a Deny link:\n%s", msg.Text)
	}
	for _, want := range []string{"Alice Example", "alice@example.test", "127.0.0.1", "Firefox on Linux", "Open until"} {
		if !strings.Contains(msg.Text, want) {
			t.Errorf("the manager's mail should say %q:\n%s", want, msg.Text)
		}
	}
	return e.onSite(links[0]), e.onSite(links[1])
}

func tokenOf(link string) string {
	u, _ := url.Parse(link)
	return u.Query().Get("token")
}

func TestManagerApprovesFromTheMail(t *testing.T) {
	e := managerEnv(t, "15m")
	alice, bob := newBrowser(t), newBrowser(t)
	approve, deny := askManager(t, e, alice)

	if r := alice.get(e.URL("/.mailauth/wait")); !strings.Contains(r.Body, "Waiting for approval") || !strings.Contains(r.Body, "asked your manager") {
		t.Errorf("alice's waiting page should say she waits for her manager:\n%s", r.Body)
	}
	for _, l := range []string{approve, deny, approve} {
		r := bob.get(l)
		if r.Status != http.StatusOK || !strings.Contains(r.Body, ">Approve</button>") || !strings.Contains(r.Body, ">Deny</button>") {
			t.Fatalf("a GET of a decision link should show both buttons, got %d:\n%s", r.Status, r.Body)
		}
	}
	if st := status(t, alice, e); st != "pending" {
		t.Fatalf("GETs of the links changed the login to %q", st)
	}
	if r := bob.post(e.URL("/.mailauth/verify"), url.Values{"token": {tokenOf(approve)}, "match": {matchOn(t, e, alice)}}); r.Status != http.StatusOK || !strings.Contains(r.Body, "You approved") {
		t.Fatalf("approve: got %d:\n%s", r.Status, r.Body)
	}
	if r := bob.post(e.URL("/.mailauth/verify"), url.Values{"token": {tokenOf(deny)}}); r.Status != http.StatusConflict || !strings.Contains(r.Body, "already approved by bob@example.test") {
		t.Fatalf("a second decision must be refused and say who decided, got %d:\n%s", r.Status, r.Body)
	}
	if st := status(t, alice, e); st != "approved" {
		t.Fatalf("after approval alice's status is %q", st)
	}
	if r := complete(t, e, alice); r.Status != http.StatusSeeOther || r.Location != "/app" {
		t.Fatalf("complete: %d %q", r.Status, r.Location)
	}
	if body := alice.get(e.URL("/app")).Body; !strings.Contains(body, `user="alice"`) {
		t.Fatalf("alice should reach the app: %s", body)
	}
	if ev := e.caddy.waitForAudit(t, "approved", 5*time.Second); ev["decider"] != "bob@example.test" {
		t.Errorf("the audit should say bob decided: %v", ev)
	}
	e.caddy.waitForAudit(t, "decision_refused", 5*time.Second)
}

func TestManagerDeniesAndIsNotifiedOnce(t *testing.T) {
	e := managerEnv(t, "15m")
	alice, bob := newBrowser(t), newBrowser(t)
	approve, deny := askManager(t, e, alice)
	if r := bob.post(e.URL("/.mailauth/verify"), url.Values{"token": {tokenOf(deny)}}); r.Status != http.StatusOK || !strings.Contains(r.Body, "You denied") {
		t.Fatalf("deny: got %d:\n%s", r.Status, r.Body)
	}
	if st := status(t, alice, e); st != "denied" {
		t.Fatalf("alice's status after deny: %q", st)
	}
	if r := alice.get(e.URL("/.mailauth/wait")); !strings.Contains(r.Body, "Sign-in denied") || !strings.Contains(r.Body, "Support reference") {
		t.Fatalf("alice's waiting page should show the denied page:\n%s", r.Body)
	}
	if r := alice.post(e.URL("/.mailauth/complete"), nil); strings.Contains(strings.Join(r.Header.Values("Set-Cookie"), ";"), "__Host-mailauth_session=A") {
		t.Fatal("a denied login handed out a session")
	}
	if r := bob.get(approve); r.Status != http.StatusGone || !strings.Contains(r.Body, "already denied") {
		t.Fatalf("after a deny the approve link must be dead, got %d:\n%s", r.Status, r.Body)
	}
	notice := e.mail.WaitForMessage(t, "bob@example.test", 15*time.Second)
	if !strings.HasPrefix(notice.Subject, "Sign-in denied: Alice Example") || strings.Contains(notice.Text, "token=") {
		t.Fatalf("bob should get a short notice without links, got %q:\n%s", notice.Subject, notice.Text)
	}
}

func TestManagerRequestExpires(t *testing.T) {
	e := managerEnv(t, "3s")
	alice, bob := newBrowser(t), newBrowser(t)
	approve, _ := askManager(t, e, alice)
	time.Sleep(3500 * time.Millisecond)
	if st := status(t, alice, e); st != "expired" {
		t.Fatalf("after the link lifetime alice's status is %q, want expired", st)
	}
	if r := alice.get(e.URL("/.mailauth/wait")); !strings.Contains(r.Body, "Request expired") || !strings.Contains(r.Body, "Ask again") {
		t.Fatalf("alice should see the expired page with a way to ask again:\n%s", r.Body)
	}
	if r := bob.post(e.URL("/.mailauth/verify"), url.Values{"token": {tokenOf(approve)}}); r.Status != http.StatusGone {
		t.Fatalf("approving an expired request must fail with 410, got %d", r.Status)
	}
}

func TestUserWithoutSponsorSeesTheSamePage(t *testing.T) {
	e := managerEnv(t, "15m")
	alice, carl := newBrowser(t), newBrowser(t)
	askManager(t, e, alice)
	if r := carl.post(e.URL("/.mailauth/login"), url.Values{"identity": {"carl"}, "return": {"/app"}}); r.Status != http.StatusSeeOther {
		t.Fatalf("carl's login POST: %d", r.Status)
	}
	wa, wc := alice.get(e.URL("/.mailauth/wait")), carl.get(e.URL("/.mailauth/wait"))
	if wa.Status != wc.Status || samePage(wa.Body) != samePage(wc.Body) {
		t.Fatalf("carl (no sponsor) and alice should see the same waiting page:\n%s\n---\n%s", wa.Body, wc.Body)
	}
	ref := regexp.MustCompile(`<code>([A-Z0-9-]+)</code>`).FindStringSubmatch(wc.Body)
	if ref == nil {
		t.Fatal("carl's waiting page shows no reference")
	}
	ev := e.caddy.waitForAudit(t, "directory_error", 5*time.Second)
	if ev["reference"] != ref[1] || !strings.Contains(ev["reason"].(string), "no manager email") {
		t.Fatalf("the audit should explain carl's case under his reference %s: %v", ref[1], ev)
	}
}

// TestApproveAndDenyRaceThroughCaddy posts Approve and Deny at the same
// moment, 20 times: exactly one decides each time and alice sees it.
func TestApproveAndDenyRaceThroughCaddy(t *testing.T) {
	// Without notices, the only mail bob gets is each round's request.
	// Twenty logins of one user in a minute are over the default limits,
	// which this test is not about.
	e := newEnv(t, strings.NewReplacer("@EXPIRY@", "15m", "\t\t\tnotify_failed_login\n", "",
		"\t\tstore badger", "\t\trate_limit {\n\t\t\tlogin_per_identity off\n\t\t\tredeem_per_ip off\n\t\t\tmails_per_manager off\n\t\t}\n\t\tstore badger").Replace(managerCaddyfile))
	for i := range 20 {
		alice := newBrowser(t)
		approve, deny := askManager(t, e, alice)
		match := matchOn(t, e, alice)
		var wg sync.WaitGroup
		codes := make([]int, 2)
		for j, l := range []string{approve, deny} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				codes[j] = newBrowser(t).post(e.URL("/.mailauth/verify"), url.Values{"token": {tokenOf(l)}, "match": {match}}).Status
			}()
		}
		wg.Wait()
		won := ""
		switch {
		case codes[0] == http.StatusOK && codes[1] == http.StatusConflict:
			won = "approved"
		case codes[1] == http.StatusOK && codes[0] == http.StatusConflict:
			won = "denied"
		default:
			t.Fatalf("round %d: approve got %d and deny %d; want one 200 and one 409", i, codes[0], codes[1])
		}
		if st := status(t, alice, e); st != won {
			t.Fatalf("round %d: %s won but alice sees %q", i, won, st)
		}
	}
}

// TestUndecidedRequestEscalatesToTheApprovers: bob does not decide within
// escalate_after, so the request also goes to the approvers; the first
// decision (security's) wins and the audit says who decided.
func TestUndecidedRequestEscalatesToTheApprovers(t *testing.T) {
	cfg := strings.NewReplacer("@EXPIRY@", "1m", "\t\t\tnotify_failed_login\n", "\t\t\tescalate_after 2s\n\t\t\tapprovers security@example.test\n").Replace(managerCaddyfile)
	e := newEnv(t, cfg)
	alice := newBrowser(t)
	askManager(t, e, alice)
	start := time.Now()
	msg := e.mail.WaitForMessage(t, "security@example.test", 10*time.Second)
	if waited := time.Since(start); waited < time.Second {
		t.Errorf("the escalation came after %s; it should wait for escalate_after (2s)", waited)
	}
	if !strings.Contains(msg.Text, "went to bob@example.test first") {
		t.Errorf("the escalated mail should say who was asked first:\n%s", msg.Text)
	}
	links := decisionLink.FindAllString(msg.Text, -1)
	if len(links) != 2 {
		t.Fatalf("the escalated mail should carry both links:\n%s", msg.Text)
	}
	if r := newBrowser(t).post(e.URL("/.mailauth/verify"), url.Values{"token": {tokenOf(e.onSite(links[0]))}, "match": {matchOn(t, e, alice)}}); r.Status != http.StatusOK {
		t.Fatalf("security's approval: %d", r.Status)
	}
	if st := status(t, alice, e); st != "approved" {
		t.Fatalf("alice's status after the escalated approval: %q", st)
	}
	if ev := e.caddy.waitForAudit(t, "approved", 5*time.Second); ev["decider"] != "security@example.test" {
		t.Errorf("the audit should record security as the decider: %v", ev)
	}
	e.caddy.waitForAudit(t, "escalated", 5*time.Second)
}

// TestExpiredRequestNotifiesTheManager: nobody decides; when the request
// expires bob gets one notice, and no escalation or notice follows a
// decided request.
func TestExpiredRequestNotifiesTheManager(t *testing.T) {
	e := managerEnv(t, "2s")
	askManager(t, e, newBrowser(t))
	notice := e.mail.WaitForMessage(t, "bob@example.test", 10*time.Second)
	if !strings.HasPrefix(notice.Subject, "Sign-in expired: Alice Example") || strings.Contains(notice.Text, "token=") {
		t.Fatalf("bob should get an expiry notice without links, got %q:\n%s", notice.Subject, notice.Text)
	}
	e.mail.DeleteAll(t)

	alice := newBrowser(t)
	approve, _ := askManager(t, e, alice)
	if r := newBrowser(t).post(e.URL("/.mailauth/verify"), url.Values{"token": {tokenOf(approve)}, "match": {matchOn(t, e, alice)}}); r.Status != http.StatusOK {
		t.Fatalf("approve: %d", r.Status)
	}
	time.Sleep(3500 * time.Millisecond)
	for _, m := range e.mail.Messages(t) {
		t.Fatalf("an approved request must not produce a notice, got %q to %v", m.Subject, m.To)
	}
}

// selfApprovalCaddyfile: sam is his own sponsor, on a profile whose
// approvers include him and audit; solo is her own sponsor on a profile
// with no one else to ask (picked by a policy).
const selfApprovalCaddyfile = `{
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
		directory staff local {
			user sam {
				email sam@example.test
				sponsor "Sam <SAM@example.test>"
			}
			user solo {
				email solo@example.test
				sponsor solo@example.test
				attr team solo
			}
		}
		profile sensitive {
			type manager
			server http://localhost:%[1]d
			fallback staff
			approvers sam@example.test audit@example.test
			escalate_after 5m
		}
		profile lonely {
			type manager
			server http://localhost:%[1]d
			fallback staff
		}
		policy solo {
			profile lonely
			attribute team
			values solo
		}
	}
}

http://:%[1]d {
	bind 127.0.0.1
	mailauth {
		default_profile sensitive
		policies solo
	}
	reverse_proxy %[5]s
}
`

// TestARequestNeverGoesToTheRequestersOwnAddress: sam, his own sponsor,
// is not asked to approve himself: his request goes straight to the next
// in line (the approvers but him). solo, with nobody else, gets the same
// waiting page as everyone while the request fails closed, audited as
// no_approver.
func TestARequestNeverGoesToTheRequestersOwnAddress(t *testing.T) {
	e := newEnv(t, selfApprovalCaddyfile)
	sam, solo := newBrowser(t), newBrowser(t)
	if r := sam.post(e.URL("/.mailauth/login"), url.Values{"identity": {"sam"}}); r.Status != http.StatusSeeOther {
		t.Fatalf("sam's login: %d", r.Status)
	}
	e.mail.WaitForMessage(t, "audit@example.test", 15*time.Second)
	r := solo.post(e.URL("/.mailauth/login"), url.Values{"identity": {"solo"}})
	if r.Status != http.StatusSeeOther || r.Location != "/.mailauth/wait" {
		t.Fatalf("solo should get the usual answer, got %d %q", r.Status, r.Location)
	}
	ev := e.caddy.waitForAudit(t, "no_approver", 10*time.Second)
	if ev["user"] != "solo" {
		t.Errorf("no_approver should be solo's: %v", ev)
	}
	if w := solo.get(e.URL("/.mailauth/wait")); !strings.Contains(w.Body, "Waiting for approval") {
		t.Errorf("solo should see the same waiting page as anyone:\n%s", w.Body)
	}
	time.Sleep(500 * time.Millisecond)
	for _, m := range e.mail.Messages(t) {
		for _, to := range m.To {
			if strings.EqualFold(to, "sam@example.test") || strings.EqualFold(to, "solo@example.test") {
				t.Errorf("a request went to the requester's own address %s: %q", to, m.Subject)
			}
		}
	}
}
