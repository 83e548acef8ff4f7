package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailauth/caddy-mailauth/test/mailpit"
	"github.com/mailauth/caddy-mailauth/test/slapd"
)

// sensitiveGlobal is the global block of the sensitive-routes tests: users
// from LDAP (carol, whose manager is dave; dave, whose manager is erin),
// daily (User Approval) and sensitive (Manager Approval) profiles. @HOST@
// is the host links are built on.
const sensitiveGlobal = `{
	admin 127.0.0.1:%[2]d
	auto_https off
	mailauth {
		store badger %[4]s
		session_lifetime 8h
		# The tests let an hour pass at once: no idle timeout to end the
		# session meanwhile.
		session_idle_timeout 8h
		@COOKIE_DOMAIN@
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
		profile daily {
			type user
			server http://@HOME@:%[1]d
			subject "Sign in to {{.App}}"
			fallback corp
		}
		profile sensitive {
			type manager
			server http://@FINANCE@:%[1]d
			link_expiration 30m
			fallback corp
			grant_durations 1h 8h end_of_day
		}
	}
}
`

// sensitiveUpstream names the identity headers the sites pass on; a
// manager route also passes who approved until when, which only a
// manager's grant sets.
const (
	homeUpstream = `reverse_proxy %[5]s {
			header_up X-Remote-User {http.auth.user.id}
			header_up X-Remote-Directory {http.auth.user.directory}
		}`
	financeUpstream = `reverse_proxy %[5]s {
			header_up X-Remote-User {http.auth.user.id}
			header_up X-Remote-Directory {http.auth.user.directory}
			header_up X-Remote-Approver {http.auth.user.approver}
			header_up X-Grant-Until {http.auth.user.grant_until}
		}`
)

// oneHostCaddyfile is the README's "Sensitive routes" example: one host,
// /finance/* under Manager Approval, everything else under User Approval.
const oneHostCaddyfile = sensitiveGlobal + `
http://:%[1]d {
	bind 127.0.0.1
	route /finance/* {
		mailauth {
			default_profile sensitive
		}
		` + financeUpstream + `
	}
	route {
		mailauth {
			default_profile daily
		}
		` + homeUpstream + `
	}
}
`

// twoHostCaddyfile puts the two profiles on two hosts that share one
// session cookie through cookie_domain.
const twoHostCaddyfile = sensitiveGlobal + `
http://home.apps.localhost:%[1]d {
	bind 127.0.0.1
	mailauth {
		default_profile daily
	}
	` + homeUpstream + `
}

http://finance.apps.localhost:%[1]d {
	bind 127.0.0.1
	mailauth {
		default_profile sensitive
	}
	` + financeUpstream + `
}
`

// sensitiveSite is one deployment of the sensitive-routes tests, with
// the URLs of its home and finance parts.
type sensitiveSite struct {
	*env
	home, finance string // base URLs
}

func newSensitiveSite(t *testing.T, caddyfile string, twoHosts bool) *sensitiveSite {
	ldap := slapd.Start(t)
	r := strings.NewReplacer("@HOME@", "localhost", "@FINANCE@", "localhost", "@COOKIE_DOMAIN@", "")
	if twoHosts {
		r = strings.NewReplacer("@HOME@", "home.apps.localhost", "@FINANCE@", "finance.apps.localhost", "@COOKIE_DOMAIN@", "cookie_domain apps.localhost")
	}
	cfg := r.Replace(withLDAP(t, ldap, caddyfile))
	e := &env{t: t, mail: mailpit.Start(t)}
	e.upstream = identityUpstream(t)
	e.Port, e.AdminPort = freePort(t), freePort(t)
	e.StoreDir = t.TempDir() + "/store"
	e.Caddyfile = fmt.Sprintf(cfg, e.Port, e.AdminPort, e.mail.SMTPPort, e.StoreDir, strings.TrimPrefix(e.upstream.URL, "http://"))
	e.caddy = startCaddy(t, e.Caddyfile, e.Port)
	s := &sensitiveSite{env: e}
	s.home, s.finance = fmt.Sprintf("http://localhost:%d", e.Port), fmt.Sprintf("http://localhost:%d", e.Port)
	if twoHosts {
		s.home, s.finance = fmt.Sprintf("http://home.apps.localhost:%d", e.Port), fmt.Sprintf("http://finance.apps.localhost:%d", e.Port)
	}
	return s
}

// identityUpstream is the app: it echoes every identity header it gets.
func identityUpstream(t *testing.T) *httptest.Server {
	u := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "upstream saw user=%q directory=%q approver=%q grant_until=%q path=%s\n",
			r.Header.Get("X-Remote-User"), r.Header.Get("X-Remote-Directory"), r.Header.Get("X-Remote-Approver"), r.Header.Get("X-Grant-Until"), r.URL.Path)
	}))
	t.Cleanup(u.Close)
	return u
}

// signInCarol signs carol in on home by her own mail link.
func (s *sensitiveSite) signInCarol(t *testing.T, b *browser) {
	t.Helper()
	if r := b.post(s.home+"/.mailauth/login", url.Values{"identity": {"carol"}, "return": {"/home"}}); r.Status != http.StatusSeeOther {
		t.Fatalf("carol's login POST: %d", r.Status)
	}
	msg := s.mail.WaitForMessage(t, "carol@example.test", 15*time.Second)
	s.mail.DeleteAll(t)
	link := linkIn(t, msg.Text)
	token := tokenOf(link)
	page := b.get(s.home + "/.mailauth/wait")
	m := matchNumber.FindStringSubmatch(page.Body)
	if m == nil {
		t.Fatalf("carol's waiting page shows no number:\n%s", page.Body)
	}
	if r := b.post(s.home+"/.mailauth/verify", url.Values{"token": {token}, "match": {m[1]}}); r.Status != http.StatusOK {
		t.Fatalf("confirming carol's link: %d\n%s", r.Status, r.Body)
	}
	if r := s.completeOn(t, b, s.home); r.Status != http.StatusSeeOther || r.Location != "/home" {
		t.Fatalf("carol's complete: %d %q\n%s", r.Status, r.Location, r.Body)
	}
}

func (s *sensitiveSite) completeOn(t *testing.T, b *browser, base string) *response {
	t.Helper()
	f := formToken.FindStringSubmatch(b.get(base + "/.mailauth/wait").Body)
	if f == nil {
		t.Fatalf("the waiting page on %s carries no form token", base)
	}
	return b.post(base+"/.mailauth/complete", url.Values{"csrf": {f[1]}})
}

// stepUpPage follows a route's answer to its step-up page.
func (s *sensitiveSite) stepUpPage(t *testing.T, b *browser, page string) (*response, string) {
	t.Helper()
	r := b.get(s.finance + page)
	if r.Status != http.StatusFound || !strings.HasPrefix(r.Location, "/.mailauth/stepup?") {
		t.Fatalf("%s with a session that lacks its approval should send the browser to the step-up page, got %d %q:\n%s", page, r.Status, r.Location, r.Body)
	}
	if strings.Contains(r.Body, "upstream saw") {
		t.Fatalf("%s reached the upstream without the manager's approval:\n%s", page, r.Body)
	}
	step := b.get(s.finance + r.Location)
	if step.Status != http.StatusOK {
		t.Fatalf("the step-up page: %d\n%s", step.Status, step.Body)
	}
	return step, r.Location
}

var (
	stepUpFields = regexp.MustCompile(`name="site" value="([^"]*)"`)
	durationKeys = regexp.MustCompile(`name="duration" value="([^"]+)"`)
)

// requestAccess posts the step-up form of page with reason and returns
// dave's Approve and Deny links.
func (s *sensitiveSite) requestAccess(t *testing.T, b *browser, step *response, reason string) (approve, deny string) {
	t.Helper()
	csrf, site := formToken.FindStringSubmatch(step.Body), stepUpFields.FindStringSubmatch(step.Body)
	if csrf == nil || site == nil {
		t.Fatalf("the step-up page has no form:\n%s", step.Body)
	}
	r := b.post(s.finance+"/.mailauth/stepup", url.Values{"csrf": {csrf[1]}, "site": {site[1]}, "return": {"/finance/ledger"}, "reason": {reason}})
	if r.Status != http.StatusSeeOther || r.Location != "/.mailauth/wait" {
		t.Fatalf("requesting access: %d %q\n%s", r.Status, r.Location, r.Body)
	}
	msg := s.mail.WaitForMessage(t, "dave@example.test", 15*time.Second)
	s.mail.DeleteAll(t)
	for _, want := range []string{"Carol Example", "/finance/ledger", reason, "127.0.0.1", "Firefox on Linux", "When:"} {
		if !strings.Contains(msg.Text, want) {
			t.Errorf("dave's request mail should say %q:\n%s", want, msg.Text)
		}
	}
	links := decisionLink.FindAllString(msg.Text, -1)
	if len(links) != 2 {
		t.Fatalf("dave's mail should carry Approve and Deny:\n%s", msg.Text)
	}
	onFinance := func(l string) string { return strings.Replace(l, s.Server(), s.finance, 1) }
	return onFinance(links[0]), onFinance(links[1])
}

// Server is the profiles' link host in the one-host test.
func (s *sensitiveSite) Server() string {
	if strings.Contains(s.finance, "finance.apps.localhost") {
		return s.finance
	}
	return s.env.Server()
}

// approveFor posts dave's approval with the duration key.
func (s *sensitiveSite) approveFor(t *testing.T, carol, dave *browser, approve, duration string) {
	t.Helper()
	landing := dave.get(approve)
	if landing.Status != http.StatusOK {
		t.Fatalf("dave's landing page: %d\n%s", landing.Status, landing.Body)
	}
	var keys []string
	for _, m := range durationKeys.FindAllStringSubmatch(landing.Body, -1) {
		keys = append(keys, m[1])
	}
	if strings.Join(keys, ",") != "1h,8h,end_of_day" {
		t.Fatalf("dave's approval page should offer 1h, 8h and until end of day, offers %v:\n%s", keys, landing.Body)
	}
	for _, want := range []string{"/finance/ledger", "Carol Example"} {
		if !strings.Contains(landing.Body, want) {
			t.Errorf("dave's approval page should show %q", want)
		}
	}
	wait := carol.get(s.finance + "/.mailauth/wait")
	m := matchNumber.FindStringSubmatch(wait.Body)
	if m == nil {
		t.Fatalf("carol's step-up waiting page shows no number:\n%s", wait.Body)
	}
	if !strings.Contains(wait.Body, "Waiting for your manager") {
		t.Errorf("carol's waiting page should say she waits for her manager:\n%s", wait.Body)
	}
	r := dave.post(s.finance+"/.mailauth/verify", url.Values{"token": {tokenOf(approve)}, "match": {m[1]}, "duration": {duration}})
	if r.Status != http.StatusOK || !strings.Contains(r.Body, "You approved access") || !strings.Contains(r.Body, `id="grant-until"`) {
		t.Fatalf("dave's approval: %d\n%s", r.Status, r.Body)
	}
}

// TestSensitiveRouteStepsUpToAManagersTimeBoxedGrantOnOneHost is the
// README's example through a real Caddy, mailpit and slapd: carol's own
// sign-in opens /home but not /finance/*, which asks for her manager's
// approval; dave grants an hour; an hour later /finance/* asks again while
// /home still works; a denial leaves /home working and /finance/* closed.
func TestSensitiveRouteStepsUpToAManagersTimeBoxedGrantOnOneHost(t *testing.T) {
	testStepUp(t, newSensitiveSite(t, oneHostCaddyfile, false))
}

// TestSensitiveHostStepsUpAcrossHostsWithCookieDomain: the same with the
// two profiles on two hosts sharing the session through cookie_domain.
func TestSensitiveHostStepsUpAcrossHostsWithCookieDomain(t *testing.T) {
	testStepUp(t, newSensitiveSite(t, twoHostCaddyfile, true))
}

func testStepUp(t *testing.T, s *sensitiveSite) {
	carol, dave := newBrowser(t), newBrowser(t)
	s.signInCarol(t, carol)
	if body := carol.get(s.home + "/home").Body; !strings.Contains(body, `user="carol" directory="corp" approver="" grant_until=""`) {
		t.Fatalf("carol's own sign-in should open /home as carol from corp:\n%s", body)
	}

	step, _ := s.stepUpPage(t, carol, "/finance/ledger")
	for _, want := range []string{"This part needs your manager&#39;s approval", "carol", "Request access", `name="reason"`} {
		if !strings.Contains(step.Body, want) {
			t.Errorf("the step-up page should show %q:\n%s", want, step.Body)
		}
	}
	if strings.Contains(step.Body, `name="identity"`) {
		t.Errorf("the step-up page must not ask carol who she is:\n%s", step.Body)
	}
	approve, _ := s.requestAccess(t, carol, step, "month-end close")
	if body := carol.get(s.home + "/home").Body; !strings.Contains(body, `user="carol"`) {
		t.Fatalf("while the request waits, /home must keep working:\n%s", body)
	}
	if r := carol.get(s.finance + "/finance/ledger"); r.Status != http.StatusFound {
		t.Fatalf("while the request waits, /finance must stay closed, got %d", r.Status)
	}
	s.approveFor(t, carol, dave, approve, "1h")
	if st := statusAt(t, carol, s.finance); st != "approved" {
		t.Fatalf("after dave's approval carol's status is %q", st)
	}
	if r := s.completeOn(t, carol, s.finance); r.Status != http.StatusSeeOther || r.Location != "/finance/ledger" {
		t.Fatalf("collecting the grant: %d %q\n%s", r.Status, r.Location, r.Body)
	}
	body := carol.get(s.finance + "/finance/ledger").Body
	if !strings.Contains(body, `user="carol" directory="corp" approver="dave@example.test"`) || !strings.Contains(body, `grant_until="20`) {
		t.Fatalf("with dave's grant carol should reach /finance/ledger, and the app learn who approved until when:\n%s", body)
	}
	if body := carol.get(s.home + "/home").Body; !strings.Contains(body, `user="carol"`) {
		t.Fatalf("/home must still work:\n%s", body)
	}
	e := s.caddy.waitForAudit(t, "grant_issued", 5*time.Second)
	if e["duration"] != "1 hour" || e["approver"] != "dave@example.test" {
		t.Errorf("grant_issued should name the duration and the approver: %v", e)
	}
	if e := s.caddy.waitForAudit(t, "stepup_requested", time.Second); e["reason"] != "month-end close" || e["route"] != "/finance/ledger" {
		t.Errorf("stepup_requested should name the route and the reason: %v", e)
	}

	s.advanceClock(t, time.Hour+time.Second)
	step, _ = s.stepUpPage(t, carol, "/finance/ledger")
	if !strings.Contains(step.Body, "ended at") {
		t.Errorf("an hour later the step-up page should say carol's access ended:\n%s", step.Body)
	}
	if body := carol.get(s.home + "/home").Body; !strings.Contains(body, `user="carol"`) {
		t.Fatalf("an hour later /home must still work:\n%s", body)
	}

	_, deny := s.requestAccess(t, carol, step, "one more look")
	if r := dave.post(s.finance+"/.mailauth/verify", url.Values{"token": {tokenOf(deny)}}); r.Status != http.StatusOK {
		t.Fatalf("dave's denial: %d\n%s", r.Status, r.Body)
	}
	if st := statusAt(t, carol, s.finance); st != "denied" {
		t.Fatalf("after dave's denial carol's status is %q", st)
	}
	if r := carol.get(s.finance + "/.mailauth/wait"); !strings.Contains(r.Body, "Access denied") || !strings.Contains(r.Body, "still signed in") {
		t.Errorf("carol's waiting page should say access was denied and she is still signed in:\n%s", r.Body)
	}
	if body := carol.get(s.home + "/home").Body; !strings.Contains(body, `user="carol"`) {
		t.Fatalf("after a denial /home must keep working:\n%s", body)
	}
	s.stepUpPage(t, carol, "/finance/ledger")
}

func statusAt(t *testing.T, b *browser, base string) string {
	t.Helper()
	r := b.get(base + "/.mailauth/status")
	var v struct {
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(r.Body), &v); err != nil {
		t.Fatalf("status: %v\n%s", err, r.Body)
	}
	return v.State
}

// TestAnAPIClientWithoutTheApprovalGetsA403SayingWhere: a script holding
// a daily session is told where to step up, not redirected.
func TestAnAPIClientWithoutTheApprovalGetsA403SayingWhere(t *testing.T) {
	s := newSensitiveSite(t, oneHostCaddyfile, false)
	b := newBrowser(t)
	s.signInCarol(t, b)
	req, _ := http.NewRequest(http.MethodGet, s.finance+"/finance/api/ledger", nil)
	req.Header.Set("Accept", "application/json")
	r := b.do(req)
	if r.Status != http.StatusForbidden || !strings.Contains(r.Body, `"approval_required"`) || !strings.Contains(r.Body, `/.mailauth/stepup?`) {
		t.Fatalf("an API client should get a 403 naming the step-up page, got %d:\n%s", r.Status, r.Body)
	}
}

// TestTheManagersGrantsPageListsAndEndsAGrant and the admin API: dave,
// signed in through the gateway himself, sees the grant he gave and ends
// it; carol's next request to /finance is refused. An operator lists and
// ends grants through the admin API.
func TestTheManagersGrantsPageListsAndEndsAGrant(t *testing.T) {
	s := newSensitiveSite(t, oneHostCaddyfile, false)
	carol, dave := newBrowser(t), newBrowser(t)
	s.signInCarol(t, carol)
	step, _ := s.stepUpPage(t, carol, "/finance/ledger")
	approve, _ := s.requestAccess(t, carol, step, "audit prep")
	s.approveFor(t, carol, dave, approve, "8h")
	if r := s.completeOn(t, carol, s.finance); r.Status != http.StatusSeeOther {
		t.Fatalf("collecting the grant: %d", r.Status)
	}
	if body := carol.get(s.finance + "/finance/ledger").Body; !strings.Contains(body, `user="carol"`) {
		t.Fatalf("carol should reach /finance with the grant:\n%s", body)
	}

	// The operator sees it too.
	var listed struct {
		Grants []struct {
			ID, User, Approver, Route, Reason, Duration string
		} `json:"grants"`
	}
	s.adminJSON(t, http.MethodGet, "/mailauth/grants?approver=dave@example.test", &listed)
	if len(listed.Grants) != 1 || listed.Grants[0].User != "carol" || listed.Grants[0].Route != "/finance/ledger" || listed.Grants[0].Reason != "audit prep" || listed.Grants[0].Duration != "8 hours" {
		t.Fatalf("GET /mailauth/grants should list carol's grant: %+v", listed)
	}

	// dave signs in himself (User Approval on home) and opens his grants.
	if r := dave.post(s.home+"/.mailauth/login", url.Values{"identity": {"dave"}, "return": {"/.mailauth/grants"}}); r.Status != http.StatusSeeOther {
		t.Fatalf("dave's login: %d", r.Status)
	}
	msg := s.mail.WaitForMessage(t, "dave@example.test", 15*time.Second)
	s.mail.DeleteAll(t)
	m := matchNumber.FindStringSubmatch(dave.get(s.home + "/.mailauth/wait").Body)
	if r := dave.post(s.home+"/.mailauth/verify", url.Values{"token": {tokenOf(linkIn(t, msg.Text))}, "match": {m[1]}}); r.Status != http.StatusOK {
		t.Fatalf("dave confirming his own link: %d", r.Status)
	}
	if r := s.completeOn(t, dave, s.home); r.Status != http.StatusSeeOther || r.Location != "/.mailauth/grants" {
		t.Fatalf("dave's complete: %d %q", r.Status, r.Location)
	}
	page := dave.get(s.home + "/.mailauth/grants")
	if page.Status != http.StatusOK || !strings.Contains(page.Body, "carol") || !strings.Contains(page.Body, "/finance/ledger") || !strings.Contains(page.Body, "audit prep") {
		t.Fatalf("dave's grants page should list carol's grant:\n%s", page.Body)
	}
	id := regexp.MustCompile(`name="grant" value="([0-9a-f]+)"`).FindStringSubmatch(page.Body)
	csrf := formToken.FindStringSubmatch(page.Body)
	if id == nil || csrf == nil {
		t.Fatalf("the grants page has no End form:\n%s", page.Body)
	}
	if r := dave.post(s.home+"/.mailauth/grants", url.Values{"grant": {id[1]}}); r.Status != http.StatusForbidden {
		t.Fatalf("ending a grant without the form token must be refused, got %d", r.Status)
	}
	if r := carol.post(s.home+"/.mailauth/grants", url.Values{"grant": {id[1]}, "csrf": {csrf[1]}}); r.Status == http.StatusSeeOther && r.Location == "/.mailauth/grants?ended=1" {
		t.Fatal("carol ended a grant she did not give, with dave's form token")
	}
	if r := dave.post(s.home+"/.mailauth/grants", url.Values{"grant": {id[1]}, "csrf": {csrf[1]}}); r.Status != http.StatusSeeOther || r.Location != "/.mailauth/grants?ended=1" {
		t.Fatalf("dave ending the grant: %d %q\n%s", r.Status, r.Location, r.Body)
	}
	if r := carol.get(s.finance + "/finance/ledger"); r.Status != http.StatusFound || !strings.HasPrefix(r.Location, "/.mailauth/stepup?") {
		t.Fatalf("after dave ended the grant carol's next request to /finance must be refused, got %d %q", r.Status, r.Location)
	}
	if body := carol.get(s.home + "/home").Body; !strings.Contains(body, `user="carol"`) {
		t.Fatalf("ending the grant must leave /home working:\n%s", body)
	}
	if e := s.caddy.waitForAudit(t, "grant_ended", 5*time.Second); e["by"] != "dave@example.test" {
		t.Errorf("grant_ended should say who ended it: %v", e)
	}
	if code, body := s.admin(t, http.MethodDelete, "/mailauth/grants/"+id[1]); code != http.StatusNotFound {
		t.Errorf("ending an ended grant through the admin API: %d %s, want 404", code, body)
	}
}

// TestAnOperatorEndsAGrantThroughTheAdminAPI.
func TestAnOperatorEndsAGrantThroughTheAdminAPI(t *testing.T) {
	s := newSensitiveSite(t, oneHostCaddyfile, false)
	carol, dave := newBrowser(t), newBrowser(t)
	s.signInCarol(t, carol)
	step, _ := s.stepUpPage(t, carol, "/finance/ledger")
	approve, _ := s.requestAccess(t, carol, step, "")
	s.approveFor(t, carol, dave, approve, "end_of_day")
	s.completeOn(t, carol, s.finance)
	var listed struct {
		Grants []struct{ ID string } `json:"grants"`
	}
	s.adminJSON(t, http.MethodGet, "/mailauth/grants?user=carol", &listed)
	if len(listed.Grants) != 1 {
		t.Fatalf("want carol's grant listed, got %+v", listed)
	}
	var ended map[string]any
	s.adminJSON(t, http.MethodDelete, "/mailauth/grants/"+listed.Grants[0].ID+"?by=sam", &ended)
	if r := carol.get(s.finance + "/finance/ledger"); r.Status != http.StatusFound {
		t.Fatalf("after the operator ended the grant /finance must be refused, got %d", r.Status)
	}
	if e := s.caddy.waitForAudit(t, "grant_ended", 5*time.Second); e["by"] != "operator sam" {
		t.Errorf("grant_ended should name the operator: %v", e)
	}
}
