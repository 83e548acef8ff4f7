package test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mailauth/caddy-mailauth/test/mailpit"
	"github.com/mailauth/caddy-mailauth/test/redisserver"
)

// shared is several Caddy instances on one Redis store, as behind a load
// balancer: same config but for their ports, one mailpit, one upstream.
type shared struct {
	redis *redisserver.Server
	mail  *mailpit.Server
	nodes []*env
	// caddyfile and upstream make more nodes.
	caddyfile, upstream string
}

// newShared starts Redis, mailpit and n instances of caddyfile (a format
// string as defaultCaddyfile) with its store moved to Redis. No session
// key is configured: the instances must agree on the one kept in Redis.
func newShared(t *testing.T, caddyfile string, n int) *shared {
	t.Helper()
	if !strings.Contains(caddyfile, "store badger %[4]s") {
		t.Fatal("the Caddyfile has no store line to move to Redis")
	}
	s := &shared{redis: redisserver.Start(t), mail: mailpit.Start(t)}
	s.caddyfile = strings.Replace(caddyfile, "store badger %[4]s", "store redis %[4]s", 1)
	s.upstream = strings.TrimPrefix(newUpstream(t, http.HandlerFunc(echoIdentity)).URL, "http://")
	for range n {
		s.add(t)
	}
	return s
}

// add starts one more instance.
func (s *shared) add(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, mail: s.mail, Port: freePort(t), AdminPort: freePort(t)}
	e.Caddyfile = fmt.Sprintf(s.caddyfile, e.Port, e.AdminPort, s.mail.SMTPPort, s.redis.URL(), s.upstream)
	e.caddy = startCaddy(t, e.Caddyfile, e.Port)
	s.nodes = append(s.nodes, e)
	return e
}

// reachesApp checks that b's session works on every instance.
func (s *shared) reachesApp(t *testing.T, b *browser, user string) {
	t.Helper()
	for i, e := range s.nodes {
		if r := b.get(e.URL("/app")); r.Status != http.StatusOK || !strings.Contains(r.Body, fmt.Sprintf("user=%q", user)) {
			t.Errorf("instance %c: the session does not reach the app: %d %s", 'A'+i, r.Status, r.Body)
		}
	}
}

// longPoll starts the waiting page's long poll on e and returns the state
// it answers with.
func longPoll(b *browser, e *env) <-chan string {
	out := make(chan string, 1)
	go func() {
		r := b.get(e.URL("/.mailauth/status?wait=pending"))
		out <- r.Body
	}()
	return out
}

func expectPoll(t *testing.T, polled <-chan string, state string, within time.Duration) {
	t.Helper()
	select {
	case body := <-polled:
		if !strings.Contains(body, `"state":"`+state+`"`) {
			t.Fatalf("the long poll answered %s; want %s", body, state)
		}
	case <-time.After(within):
		t.Fatalf("the long poll did not answer %s within %v", state, within)
	}
}

// TestSharedStoreUserApprovalAcrossThreeInstances: the login starts on A,
// the link is confirmed on B, the waiting page on C moves on, and the
// session works on all three.
func TestSharedStoreUserApprovalAcrossThreeInstances(t *testing.T) {
	s := newShared(t, defaultCaddyfile, 3)
	a, b, c := s.nodes[0], s.nodes[1], s.nodes[2]
	laptop := newBrowser(t)
	link := startLogin(t, a, laptop, "alice", "alice@example.test")
	if !strings.HasPrefix(link, a.Server()) {
		t.Errorf("the link %s is not built from the profile's server %s", link, a.Server())
	}
	match := matchOn(t, c, laptop)
	polled := longPoll(laptop, c)
	time.Sleep(200 * time.Millisecond)
	if r := newBrowser(t).post(b.URL("/.mailauth/verify"), url.Values{"token": {tokenOf(link)}, "match": {match}}); r.Status != http.StatusOK {
		t.Fatalf("confirming on B: %d\n%s", r.Status, r.Body)
	}
	// C hears of the approval made on B through Redis pub/sub.
	expectPoll(t, polled, "approved", 3*time.Second)
	if r := complete(t, c, laptop); r.Status != http.StatusSeeOther || r.Location != "/app" {
		t.Fatalf("complete on C: %d %q", r.Status, r.Location)
	}
	s.reachesApp(t, laptop, "alice")

	// A, B and C each appended to the one audit chain in Redis.
	var rep struct {
		Records  int
		Problems []any
	}
	b.adminJSON(t, http.MethodGet, "/mailauth/audit/verify", &rep)
	if rep.Records < 5 || len(rep.Problems) != 0 {
		t.Errorf("the shared audit chain: %+v; want the flow's records, intact", rep)
	}
	var issued auditPage
	a.adminJSON(t, http.MethodGet, "/mailauth/audit?event=session_issued", &issued)
	if len(issued.Records) != 1 {
		t.Errorf("A's query does not see the session C issued: %+v", issued.Records)
	}
}

// TestSharedStoreManagerApprovalAcrossThreeInstances: the same with a
// manager deciding on B.
func TestSharedStoreManagerApprovalAcrossThreeInstances(t *testing.T) {
	s := newShared(t, strings.Replace(managerCaddyfile, "@EXPIRY@", "15m", 1), 3)
	a, b, c := s.nodes[0], s.nodes[1], s.nodes[2]
	alice, bob := newBrowser(t), newBrowser(t)
	approve, _ := askManager(t, a, alice)
	match := matchOn(t, c, alice)
	polled := longPoll(alice, c)
	time.Sleep(200 * time.Millisecond)
	if r := bob.post(b.URL("/.mailauth/verify"), url.Values{"token": {tokenOf(approve)}, "match": {match}}); r.Status != http.StatusOK || !strings.Contains(r.Body, "You approved") {
		t.Fatalf("bob approving on B: %d\n%s", r.Status, r.Body)
	}
	expectPoll(t, polled, "approved", 3*time.Second)
	if r := complete(t, c, alice); r.Status != http.StatusSeeOther {
		t.Fatalf("complete on C: %d", r.Status)
	}
	s.reachesApp(t, alice, "alice")
}

// TestSharedStoreAnotherInstanceDeliversTheMailOfOneThatDied: A queues a
// mail while the SMTP server is down and is killed; B, started afterwards,
// delivers it once the server is back.
func TestSharedStoreAnotherInstanceDeliversTheMailOfOneThatDied(t *testing.T) {
	s := newShared(t, defaultCaddyfile, 1)
	a := s.nodes[0]
	s.mail.Stop()
	laptop := newBrowser(t)
	if r := laptop.post(a.URL("/.mailauth/login"), url.Values{"identity": {"alice"}, "return": {"/app"}}); r.Status != http.StatusSeeOther {
		t.Fatalf("login POST on A: %d", r.Status)
	}
	a.caddy.waitForAudit(t, "mail_retry", 10*time.Second)
	if err := a.caddy.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-a.caddy.exited
	s.mail.Restart(t)
	b := s.add(t)
	msg := s.mail.WaitForMessage(t, "alice@example.test", 30*time.Second)
	if body := confirmAndComplete(t, b, laptop, linkIn(t, msg.Text)); !strings.Contains(body, `user="alice"`) {
		t.Fatalf("the mail B delivered does not sign alice in: %s", body)
	}
	b.caddy.waitForAudit(t, "mail_sent", 5*time.Second)
}

// TestSharedStoreRevocationReachesEveryInstance: revoked on B, refused on
// A and C at once (pub/sub), well inside the 10 s refresh bound.
func TestSharedStoreRevocationReachesEveryInstance(t *testing.T) {
	s := newShared(t, defaultCaddyfile, 3)
	a, b, c := s.nodes[0], s.nodes[1], s.nodes[2]
	laptop := newBrowser(t)
	confirmAndComplete(t, a, laptop, startLogin(t, a, laptop, "alice", "alice@example.test"))
	s.reachesApp(t, laptop, "alice")
	if code, body := b.admin(t, http.MethodDelete, "/mailauth/sessions?user=alice"); code != http.StatusOK {
		t.Fatalf("revoking on B: %d %s", code, body)
	}
	revoked := time.Now()
	for _, e := range []*env{a, b, c} {
		for laptop.get(e.URL("/app")).Status == http.StatusOK {
			if time.Since(revoked) > 2*time.Second {
				t.Fatalf("instance on %d still accepts the revoked session 2 s after the revocation", e.Port)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Logf("every instance refused the session %v after the revocation", time.Since(revoked).Round(time.Millisecond))
}

// TestSharedStoreFailsClosedWhileRedisIsDown: with Redis stopped, new
// sign-ins get a 503 page while sessions already issued keep working; once
// Redis is back, sign-in works again without a restart.
func TestSharedStoreFailsClosedWhileRedisIsDown(t *testing.T) {
	s := newShared(t, defaultCaddyfile, 2)
	a, b := s.nodes[0], s.nodes[1]
	laptop := newBrowser(t)
	confirmAndComplete(t, a, laptop, startLogin(t, a, laptop, "alice", "alice@example.test"))

	s.redis.Stop()
	phone := newBrowser(t)
	start := time.Now()
	r := phone.post(b.URL("/.mailauth/login"), url.Values{"identity": {"bob"}, "return": {"/app"}})
	if r.Status != http.StatusServiceUnavailable || !strings.Contains(r.Body, "unavailable") || r.Header.Get("Retry-After") == "" {
		t.Fatalf("a login while Redis is down: %d Retry-After=%q\n%s", r.Status, r.Header.Get("Retry-After"), r.Body)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the 503 took %v", took)
	}
	s.reachesApp(t, laptop, "alice")

	s.redis.Restart(t)
	// go-redis reconnects on its own; the first commands after the
	// restart may still see the broken connections.
	deadline := time.Now().Add(15 * time.Second)
	for {
		r = phone.post(b.URL("/.mailauth/login"), url.Values{"identity": {"bob"}, "return": {"/app"}})
		if r.Status == http.StatusSeeOther || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if r.Status != http.StatusSeeOther {
		t.Fatalf("a login after Redis came back: %d\n%s", r.Status, r.Body)
	}
	msg := s.mail.WaitForMessage(t, "bob@example.test", 15*time.Second)
	if body := confirmAndComplete(t, a, phone, linkIn(t, msg.Text)); !strings.Contains(body, `user="bob"`) {
		t.Fatalf("bob's sign-in after the outage: %s", body)
	}
	s.reachesApp(t, phone, "bob")
	s.reachesApp(t, laptop, "alice")
}

// TestSharedStoreRateLimitsCountAcrossInstances: behind a load balancer a
// client does not get each limit once per instance.
func TestSharedStoreRateLimitsCountAcrossInstances(t *testing.T) {
	cfg := strings.Replace(defaultCaddyfile, "\t\tsession_lifetime 1h\n", "\t\tsession_lifetime 1h\n\t\trate_limit {\n\t\t\tlogin_per_ip 2/10m\n\t\t}\n", 1)
	s := newShared(t, cfg, 2)
	a, b := s.nodes[0], s.nodes[1]
	for i, e := range []*env{a, a, b} {
		want := http.StatusSeeOther
		if i == 2 {
			want = http.StatusTooManyRequests
		}
		if r := newBrowser(t).post(e.URL("/.mailauth/login"), url.Values{"identity": {"bob"}}); r.Status != want {
			t.Fatalf("login %d: %d; want %d", i+1, r.Status, want)
		}
	}
	// The third login, on B, was refused and sent no mail.
	if ev := b.caddy.waitForAudit(t, "rate_limited", 5*time.Second); ev["limit"] != "login_per_ip" {
		t.Errorf("B's rate_limited line: %v", ev)
	}
	time.Sleep(time.Second)
	if n := len(s.mail.Messages(t)); n != 2 {
		t.Errorf("%d mails for 3 logins under a limit of 2 across both instances; want 2", n)
	}
}

// sharedRoutesCaddyfile is the sensitive-routes deployment with local
// users, for several instances on one Redis: carol's sponsor is dave.
const sharedRoutesCaddyfile = `{
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
			user carol {
				name "Carol Example"
				email carol@example.test
				sponsor dave@example.test
			}
		}
		profile daily {
			server http://localhost:%[1]d
			fallback staff
		}
		profile sensitive {
			type manager
			server http://localhost:%[1]d
			fallback staff
		}
	}
}

http://:%[1]d {
	bind 127.0.0.1
	route /finance/* {
		mailauth {
			default_profile sensitive
		}
		reverse_proxy %[5]s {
			header_up X-Remote-User {http.auth.user.id}
		}
	}
	route {
		mailauth {
			default_profile daily
		}
		reverse_proxy %[5]s {
			header_up X-Remote-User {http.auth.user.id}
		}
	}
}
`

// TestAGrantEndedOnOneInstanceIsRefusedOnTheOthers: carol steps up on A,
// dave approves on B, her grant opens /finance on both; an operator ends
// it through B's admin API and A refuses it within two seconds, through
// the revocation announcements, while her own approval keeps working.
func TestAGrantEndedOnOneInstanceIsRefusedOnTheOthers(t *testing.T) {
	s := newShared(t, sharedRoutesCaddyfile, 2)
	a, b := s.nodes[0], s.nodes[1]
	carol := newBrowser(t)
	link := startLogin(t, a, carol, "carol", "carol@example.test")
	s.mail.DeleteAll(t)
	confirmAndComplete(t, a, carol, link)

	r := carol.get(a.URL("/finance/ledger"))
	if r.Status != http.StatusFound || !strings.HasPrefix(r.Location, "/.mailauth/stepup?") {
		t.Fatalf("carol's own approval must not open /finance: %d %q", r.Status, r.Location)
	}
	step := carol.get(a.URL(r.Location))
	csrf, site := formToken.FindStringSubmatch(step.Body), stepUpFields.FindStringSubmatch(step.Body)
	if csrf == nil || site == nil {
		t.Fatalf("no step-up form on A:\n%s", step.Body)
	}
	if r := carol.post(a.URL("/.mailauth/stepup"), url.Values{"csrf": {csrf[1]}, "site": {site[1]}, "return": {"/finance/ledger"}}); r.Status != http.StatusSeeOther {
		t.Fatalf("requesting access on A: %d\n%s", r.Status, r.Body)
	}
	links := decisionLink.FindAllString(s.mail.WaitForMessage(t, "dave@example.test", 15*time.Second).Text, -1)
	if len(links) != 2 {
		t.Fatal("dave's mail has no Approve and Deny links")
	}
	if r := newBrowser(t).post(b.URL("/.mailauth/verify"), url.Values{"token": {tokenOf(links[0])}, "match": {matchOn(t, a, carol)}}); r.Status != http.StatusOK {
		t.Fatalf("dave approving on B: %d\n%s", r.Status, r.Body)
	}
	if r := complete(t, a, carol); r.Status != http.StatusSeeOther || r.Location != "/finance/ledger" {
		t.Fatalf("collecting the grant on A: %d %q", r.Status, r.Location)
	}
	for i, e := range s.nodes {
		if body := carol.get(e.URL("/finance/ledger")).Body; !strings.Contains(body, `user="carol"`) {
			t.Fatalf("instance %c: the grant should open /finance: %s", 'A'+i, body)
		}
	}
	var listed struct {
		Grants []struct{ ID string } `json:"grants"`
	}
	a.adminJSON(t, http.MethodGet, "/mailauth/grants?user=carol", &listed)
	if len(listed.Grants) != 1 {
		t.Fatalf("A should list the grant B recorded: %+v", listed)
	}
	var ended map[string]any
	b.adminJSON(t, http.MethodDelete, "/mailauth/grants/"+listed.Grants[0].ID, &ended)
	deadline := time.Now().Add(2 * time.Second)
	for carol.get(a.URL("/finance/ledger")).Status != http.StatusFound {
		if time.Now().After(deadline) {
			t.Fatal("A still opens /finance with the grant 2 s after B ended it")
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.reachesApp(t, carol, "carol")
}
