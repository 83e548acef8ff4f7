package approval

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mailauth/caddy-mailauth/approval/mailtemplate"
	"github.com/mailauth/caddy-mailauth/directory"
	"github.com/mailauth/caddy-mailauth/mailer"
	"github.com/mailauth/caddy-mailauth/store"
)

// routes is a deployment with two sites on one host, as in the README's
// "Sensitive routes": home runs on daily (User Approval), finance on
// sensitive (Manager Approval). alice's manager is bob; selfie is her own
// sponsor; loop's sponsor is mona, whose sponsor is loop.
type routes struct {
	t              *testing.T
	svc            *Service
	mail           *fakeMailQueue
	clock          *fakeClock
	logs           *observer.ObservedLogs
	home, finance  *Site
	daily, secured *Profile
}

func newRoutes(t *testing.T, configure func(daily, sensitive *Profile)) *routes {
	t.Helper()
	st, err := store.OpenBadger(store.BadgerOptions{InMemory: true}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	corp, err := directory.NewLocal("corp", []directory.LocalUser{
		{Username: "alice", Name: "Alice Example", Email: aliceEmail, Sponsor: "bob@example.com"},
		{Username: "bob", Email: "bob@example.com", Sponsor: "erin@example.com"},
		{Username: "selfie", Email: "selfie@example.com", Sponsor: "Selfie <SELFIE@example.com>"},
		{Username: "loop", Email: "loop@example.com", Sponsor: "mona@example.com"},
		{Username: "mona", Email: "mona@example.com", Sponsor: "loop@example.com"},
	})
	if err != nil {
		t.Fatal(err)
	}
	user, err := mailtemplate.Parse("", "", "")
	if err != nil {
		t.Fatal(err)
	}
	manager, err := mailtemplate.ParseManager("", "", "")
	if err != nil {
		t.Fatal(err)
	}
	r := &routes{t: t, mail: &fakeMailQueue{}, clock: newFakeClock()}
	r.daily = &Profile{Name: "daily", Type: TypeUser, Server: testServer, LinkExpiration: testLinkLife, MailServers: []string{"primary"}, Directories: []directory.Directory{corp}, Templates: user, NoNumberMatching: true}
	r.secured = &Profile{Name: "sensitive", Type: TypeManager, Server: testServer, LinkExpiration: 30 * time.Minute, MailServers: []string{"primary"}, Directories: []directory.Directory{corp}, Templates: manager}
	if configure != nil {
		configure(r.daily, r.secured)
	}
	r.home, r.finance = NewSite(r.daily, nil), NewSite(r.secured, nil)
	core, logs := observer.New(zapcore.DebugLevel)
	r.logs = logs
	r.svc, err = NewService(Config{
		Store: st, Mail: r.mail, Codec: mustCodec(t, testKey(1)), CodeKey: testKey(2),
		Profiles:        map[string]*Profile{"daily": r.daily, "sensitive": r.secured},
		SessionLifetime: 8 * time.Hour,
		Audit:           NewAuditor(zap.New(core).Named("mailauth.audit")),
		Logger:          zap.New(core),
		Now:             r.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.svc.Close)
	return r
}

var anyToken = regexp.MustCompile(`\?token=([A-Za-z0-9_-]{43})`)

// lastMailTo returns the token of the newest mail to addr.
func (r *routes) lastMailTo(addr string) (string, *mailer.Message) {
	r.t.Helper()
	msgs := r.mail.Messages()
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].To == addr && msgs[i].NotBefore.IsZero() {
			m := anyToken.FindStringSubmatch(msgs[i].Text)
			if m == nil {
				r.t.Fatalf("the mail to %s has no link:\n%s", addr, msgs[i].Text)
			}
			return m[1], msgs[i]
		}
	}
	r.t.Fatalf("no mail to %s among %d", addr, len(msgs))
	return "", nil
}

// signIn signs user in on site home, confirming their own link.
func (r *routes) signIn(user, email string) (*Session, string) {
	r.t.Helper()
	st, err := r.svc.Start(bg, StartRequest{Site: r.home, Input: user, ReturnURL: "/home", App: testApp, ClientIP: testIP, UserAgent: testUA})
	if err != nil {
		r.t.Fatal(err)
	}
	r.svc.Wait()
	token, _ := r.lastMailTo(email)
	if _, err := r.svc.ConfirmLink(bg, token, "", testIP, testUA); err != nil {
		r.t.Fatal(err)
	}
	c, err := r.svc.Complete(bg, st.Pending, testIP, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	return &c.Session, c.Cookie
}

func (r *routes) access(site *Site, cookie string) Access {
	r.t.Helper()
	var a Authenticated
	if err := r.svc.Authenticate(site, cookie, &a); err != nil {
		r.t.Fatalf("Authenticate: %v", err)
	}
	return a.Access
}

// stepUp asks for finance as the holder of sess, and returns the pending
// cookie and the approve token mailed to approver.
func (r *routes) stepUp(sess *Session, reason, approver string) (*Started, string) {
	r.t.Helper()
	st, err := r.svc.StepUp(bg, StepUpRequest{Site: r.finance, Session: sess, Reason: reason, ReturnURL: "/finance/ledger", App: testApp, ClientIP: testIP, UserAgent: testUA})
	if err != nil {
		r.t.Fatalf("StepUp: %v", err)
	}
	token, _ := r.lastMailTo(approver)
	return st, token
}

func (r *routes) approve(st *Started, token, duration string) {
	r.t.Helper()
	v, err := r.svc.Watch(bg, r.home, st.Pending)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.svc.Confirm(bg, Confirmation{Token: token, Match: v.MatchCode, Duration: duration, ClientIP: "198.51.100.9", UserAgent: testUA}); err != nil {
		r.t.Fatalf("Confirm: %v", err)
	}
}

func TestASelfApprovedSessionDoesNotOpenAManagerRoute(t *testing.T) {
	r := newRoutes(t, nil)
	_, cookie := r.signIn("alice", aliceEmail)
	if got := r.access(r.home, cookie); got != AccessGranted {
		t.Fatalf("alice's own approval should open home, got %v", got)
	}
	if got := r.access(r.finance, cookie); got != AccessStepUp {
		t.Fatalf("a session alice approved herself must not open the manager-approval site; got %v, want AccessStepUp", got)
	}
}

func TestStepUpAddsATimeBoxedGrantToTheSameSession(t *testing.T) {
	r := newRoutes(t, nil)
	sess, cookie := r.signIn("alice", aliceEmail)
	st, token := r.stepUp(sess, "month-end close\nurgent", "bob@example.com")
	_, m := r.lastMailTo("bob@example.com")
	for _, want := range []string{"Alice Example", "/finance/ledger", "month-end close urgent", testIP, "Firefox on Windows"} {
		if !strings.Contains(m.Text, want) {
			t.Errorf("the manager's step-up mail should say %q:\n%s", want, m.Text)
		}
	}
	if !strings.Contains(m.Subject, "access") {
		t.Errorf("the subject should say access is asked, got %q", m.Subject)
	}
	// While the request waits, the daily session keeps opening home.
	if got := r.access(r.home, cookie); got != AccessGranted {
		t.Fatalf("while the step-up waits, home must keep working, got %v", got)
	}
	if _, err := r.svc.Complete(bg, st.Pending, testIP, sess); !errors.Is(err, ErrNotApproved) {
		t.Fatalf("completing before the manager decided: %v, want ErrNotApproved", err)
	}
	v, err := r.svc.OpenLink(bg, token, "", "198.51.100.9", testUA)
	if err != nil {
		t.Fatal(err)
	}
	if !v.StepUp || v.Route != "/finance/ledger" || v.Reason != "month-end close urgent" {
		t.Errorf("the landing page should show a step-up to /finance/ledger with the reason, got %+v", v)
	}
	var keys []string
	for _, d := range v.Durations {
		keys = append(keys, d.Key)
	}
	if strings.Join(keys, ",") != "1h,8h,end_of_day" {
		t.Errorf("default grant durations offered: %v, want 1h,8h,end_of_day", keys)
	}
	r.clock.Advance(10 * time.Minute) // the clock starts at approval, not at request
	approvedAt := r.clock.Now()
	r.approve(st, token, "1h")
	wv, err := r.svc.Watch(bg, r.home, st.Pending)
	if err != nil || !wv.GrantUntil.Equal(approvedAt.Add(time.Hour)) || wv.GrantLabel != "1 hour" {
		t.Fatalf("the waiting page should say access is granted until %s, got %+v (%v)", approvedAt.Add(time.Hour), wv, err)
	}
	c, err := r.svc.Complete(bg, st.Pending, testIP, sess)
	if err != nil {
		t.Fatal(err)
	}
	if c.Session.ID != sess.ID || c.Session.IssuedAt != sess.IssuedAt || c.Session.ExpiresAt != sess.ExpiresAt {
		t.Errorf("a step-up must keep the session (id, issue and expiry), got %+v from %+v", c.Session, *sess)
	}
	if c.ReturnURL != "/finance/ledger" {
		t.Errorf("after the step-up the browser should go to /finance/ledger, got %q", c.ReturnURL)
	}
	as := c.Session.Approvals()
	if len(as) != 2 || as[1].Profile != "sensitive" || as[1].Type != TypeManager || as[1].Approver != "bob@example.com" ||
		as[1].At != approvedAt.Unix() || as[1].Until != approvedAt.Add(time.Hour).Unix() || as[1].Grant == (GrantID{}) {
		t.Fatalf("the session should hold alice's own approval and bob's 1h grant from the approval on, got %+v", as)
	}
	if got := r.access(r.finance, c.Cookie); got != AccessGranted {
		t.Fatalf("after the grant, finance should open, got %v", got)
	}
	r.clock.Advance(59 * time.Minute)
	if got := r.access(r.finance, c.Cookie); got != AccessGranted {
		t.Fatalf("59 minutes into a 1h grant finance should still open, got %v", got)
	}
	r.clock.Advance(time.Minute)
	if got := r.access(r.finance, c.Cookie); got != AccessStepUp {
		t.Fatalf("when the grant's hour is up finance must ask again, got %v", got)
	}
	if got := r.access(r.home, c.Cookie); got != AccessGranted {
		t.Fatalf("after the grant ended home must keep working, got %v", got)
	}
	for _, ev := range []Event{EventStepUpRequested, EventGrantIssued} {
		if n := r.countEvent(ev); n != 1 {
			t.Errorf("want one %s event, got %d", ev, n)
		}
	}
}

func TestADeniedStepUpLeavesTheSessionAsItWas(t *testing.T) {
	r := newRoutes(t, nil)
	sess, cookie := r.signIn("alice", aliceEmail)
	st, _ := r.stepUp(sess, "", "bob@example.com")
	deny := regexp.MustCompile(`&pair=([A-Za-z0-9_-]{43})`).FindStringSubmatch(r.mailText("bob@example.com"))
	if deny == nil {
		t.Fatal("the manager's mail has no deny link")
	}
	if _, err := r.svc.ConfirmLink(bg, deny[1], "", testIP, testUA); err != nil {
		t.Fatal(err)
	}
	if _, err := r.svc.Complete(bg, st.Pending, testIP, sess); !errors.Is(err, ErrDenied) {
		t.Fatalf("completing a denied step-up: %v, want ErrDenied", err)
	}
	if got := r.access(r.home, cookie); got != AccessGranted {
		t.Errorf("after a denial home must keep working, got %v", got)
	}
	if got := r.access(r.finance, cookie); got != AccessStepUp {
		t.Errorf("after a denial finance stays closed, got %v", got)
	}
}

func (r *routes) mailText(addr string) string {
	_, m := r.lastMailTo(addr)
	return m.Text
}

func (r *routes) countEvent(ev Event) int {
	return r.logs.FilterLoggerName("mailauth.audit").FilterMessage(string(ev)).Len()
}

func TestAStepUpIsCollectedOnlyByItsOwnSession(t *testing.T) {
	r := newRoutes(t, nil)
	sess, _ := r.signIn("alice", aliceEmail)
	other, _ := r.signIn("alice", aliceEmail)
	st, token := r.stepUp(sess, "", "bob@example.com")
	r.approve(st, token, "")
	for name, s := range map[string]*Session{"no session": nil, "another session of alice": other} {
		if _, err := r.svc.Complete(bg, st.Pending, testIP, s); !errors.Is(err, ErrStepUpSession) {
			t.Errorf("%s collecting the step-up: %v, want ErrStepUpSession", name, err)
		}
	}
	if _, err := r.svc.Complete(bg, st.Pending, testIP, sess); err != nil {
		t.Errorf("the session that asked should still collect it: %v", err)
	}
}

func TestGrantDurationsAreTheProfilesAndCapped(t *testing.T) {
	r := newRoutes(t, func(_, s *Profile) {
		s.GrantDurations = []GrantDuration{{For: 30 * time.Minute}, {For: 4 * time.Hour}, {EndOfDay: true}}
		s.GrantMax = 2 * time.Hour
	})
	sess, _ := r.signIn("alice", aliceEmail)
	st, token := r.stepUp(sess, "", "bob@example.com")
	if _, err := r.svc.Confirm(bg, Confirmation{Token: token, Match: "x", Duration: "2h"}); !errors.Is(err, ErrBadDuration) {
		t.Fatalf("a duration the profile does not offer: %v, want ErrBadDuration", err)
	}
	// The refusal spent nothing: the same link still approves.
	now := r.clock.Now()
	r.approve(st, token, "4h")
	c, err := r.svc.Complete(bg, st.Pending, testIP, sess)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Session.Approvals()[1].Until; got != now.Add(2*time.Hour).Unix() {
		t.Errorf("a 4h grant under grant_max 2h should end at %s, ends at %s", now.Add(2*time.Hour), time.Unix(got, 0))
	}
}

func TestEndOfDayEndsAtLocalMidnight(t *testing.T) {
	from := time.Date(2025, 3, 4, 22, 30, 0, 0, time.Local)
	if got, want := (GrantDuration{EndOfDay: true}).until(from, 0), time.Date(2025, 3, 5, 0, 0, 0, 0, time.Local); !got.Equal(want) {
		t.Errorf("end of day from %s = %s, want %s", from, got, want)
	}
	if got, want := (GrantDuration{EndOfDay: true}).until(from.Add(-12*time.Hour), time.Hour), from.Add(-11*time.Hour); !got.Equal(want) {
		t.Errorf("end of day capped at 1h = %s, want %s", got, want)
	}
	for _, tc := range []struct {
		in   string
		key  string
		fail bool
	}{{"1h", "1h", false}, {"90m", "1h30m", false}, {"end_of_day", "end_of_day", false}, {"0s", "", true}, {"-1h", "", true}, {"soon", "", true}} {
		g, err := ParseGrantDuration(tc.in)
		if (err != nil) != tc.fail || err == nil && g.Key() != tc.key {
			t.Errorf("ParseGrantDuration(%q) = %+v (key %q), %v; want key %q, failure %v", tc.in, g, g.Key(), err, tc.key, tc.fail)
		}
	}
}

func TestTheManagerListsAndEndsTheirGrants(t *testing.T) {
	r := newRoutes(t, nil)
	sess, _ := r.signIn("alice", aliceEmail)
	st, token := r.stepUp(sess, "audit", "bob@example.com")
	r.approve(st, token, "8h")
	c, err := r.svc.Complete(bg, st.Pending, testIP, sess)
	if err != nil {
		t.Fatal(err)
	}
	grants, err := r.svc.ListGrants(bg, "BOB@example.com", "")
	if err != nil || len(grants) != 1 {
		t.Fatalf("bob should see his one grant (address compared without case), got %+v, %v", grants, err)
	}
	g := grants[0]
	if g.User != "alice" || g.Route != "/finance/ledger" || g.Reason != "audit" || g.Duration != "8 hours" || !g.Until.Equal(r.clock.Now().Add(8*time.Hour)) {
		t.Errorf("the grant should say who, what, why, how long and until when: %+v", g)
	}
	if others, _ := r.svc.ListGrants(bg, "erin@example.com", ""); len(others) != 0 {
		t.Errorf("erin approved nothing but sees %+v", others)
	}
	if _, err := r.svc.EndGrant(bg, g.ID, "erin@example.com", "erin@example.com"); !errors.Is(err, ErrGrantNotFound) {
		t.Errorf("erin ending bob's grant: %v, want ErrGrantNotFound", err)
	}
	if got := r.access(r.finance, c.Cookie); got != AccessGranted {
		t.Fatalf("before it is ended the grant opens finance, got %v", got)
	}
	if _, err := r.svc.EndGrant(bg, g.ID, "bob@example.com", "bob@example.com"); err != nil {
		t.Fatal(err)
	}
	if got := r.access(r.finance, c.Cookie); got != AccessStepUp {
		t.Errorf("an ended grant must not open finance, got %v", got)
	}
	if got := r.access(r.home, c.Cookie); got != AccessGranted {
		t.Errorf("ending the grant must leave alice's own approval, got %v", got)
	}
	if left, _ := r.svc.ListGrants(bg, "bob@example.com", ""); len(left) != 0 {
		t.Errorf("an ended grant is still listed: %+v", left)
	}
	if _, err := r.svc.EndGrant(bg, g.ID, "bob@example.com", "bob@example.com"); !errors.Is(err, ErrGrantNotFound) {
		t.Errorf("ending it twice: %v, want ErrGrantNotFound", err)
	}
	if n := r.countEvent(EventGrantEnded); n != 1 {
		t.Errorf("want one grant_ended event, got %d", n)
	}
	// The end outlives a restart of the service: it is in the stored
	// revocations.
	again, err := NewService(r.svc.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	var a Authenticated
	if err := again.Authenticate(r.finance, c.Cookie, &a); err != nil || a.Access != AccessStepUp {
		t.Errorf("a new instance on the same store opens the ended grant: %v, %v", a.Access, err)
	}
}

func TestTheSweepAuditsGrantsThatRanOutOnce(t *testing.T) {
	r := newRoutes(t, nil)
	sess, _ := r.signIn("alice", aliceEmail)
	st, token := r.stepUp(sess, "", "bob@example.com")
	r.approve(st, token, "1h")
	if err := r.svc.SweepGrants(bg); err != nil {
		t.Fatal(err)
	}
	if n := r.countEvent(EventGrantExpired); n != 0 {
		t.Fatalf("a running grant was audited as expired")
	}
	r.clock.Advance(time.Hour)
	for range 2 {
		if err := r.svc.SweepGrants(bg); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.countEvent(EventGrantExpired); n != 1 {
		t.Errorf("want one grant_expired event after two sweeps, got %d", n)
	}
}

func TestStepUpRequiresAReasonWhenTheProfileSaysSo(t *testing.T) {
	r := newRoutes(t, func(_, s *Profile) { s.Justification = JustificationRequired })
	sess, _ := r.signIn("alice", aliceEmail)
	for _, reason := range []string{"", "  \n\t "} {
		if _, err := r.svc.StepUp(bg, StepUpRequest{Site: r.finance, Session: sess, Reason: reason, ReturnURL: "/finance"}); !errors.Is(err, ErrReasonRequired) {
			t.Errorf("StepUp with reason %q: %v, want ErrReasonRequired", reason, err)
		}
	}
	if _, err := r.svc.StepUp(bg, StepUpRequest{Site: r.finance, Session: sess, Reason: "quarter close", ReturnURL: "/finance"}); err != nil {
		t.Errorf("StepUp with a reason: %v", err)
	}
}

func TestCheckStepUpSaysWhatTheSiteNeeds(t *testing.T) {
	r := newRoutes(t, nil)
	sess, _ := r.signIn("alice", aliceEmail)
	v, err := r.svc.CheckStepUp(bg, r.finance, sess)
	if err != nil {
		t.Fatal(err)
	}
	if v.Type != TypeManager || v.Profile != "sensitive" || v.User != "alice" || v.Name != "Alice Example" || v.Directory != "corp" || v.Refreshed != "" {
		t.Errorf("the step-up page for finance should ask alice for manager approval: %+v", v)
	}
	// For home her session suffices once looked at again: a fresh cookie,
	// no request.
	if v, err := r.svc.CheckStepUp(bg, r.home, sess); err != nil || v.Refreshed == "" {
		t.Errorf("a session that satisfies the site should be refreshed, got %+v, %v", v, err)
	}
}

// TestManagerRequestsNeverGoToTheRequester: a sponsor who is the user
// (in another spelling), approvers that include the user and a manager
// whose manager is the user all leave the user out; with nobody left the
// request fails closed with no_approver.
func TestManagerRequestsNeverGoToTheRequester(t *testing.T) {
	t.Run("sponsor is the user, no one next", func(t *testing.T) {
		r := newRoutes(t, nil)
		r.startOnFinance("selfie")
		for _, m := range r.mail.Messages() {
			if sameAddress(m.To, "selfie@example.com") {
				t.Fatalf("selfie's request went to selfie: %+v", m)
			}
		}
		if n := r.countEvent(EventNoApprover); n != 1 {
			t.Errorf("want a no_approver event, got %d", n)
		}
	})
	t.Run("sponsor is the user, approvers next", func(t *testing.T) {
		r := newRoutes(t, func(_, s *Profile) { s.Approvers = []string{"Selfie@Example.com", "audit@example.com"} })
		r.startOnFinance("selfie")
		var to []string
		for _, m := range r.mail.Messages() {
			if m.NotBefore.IsZero() {
				to = append(to, m.To)
			}
		}
		if strings.Join(to, ",") != "audit@example.com" {
			t.Errorf("selfie's request should go straight to the approvers but selfie, went to %v", to)
		}
	})
	t.Run("manager's manager is the user", func(t *testing.T) {
		r := newRoutes(t, func(_, s *Profile) {
			s.EscalateAfter = 10 * time.Minute
			s.Approvers = []string{"loop@example.com", "audit@example.com"}
		})
		r.startOnFinance("loop")
		var now, later []string
		for _, m := range r.mail.Messages() {
			if schedulePurpose(m) == purposeExpiryNotice {
				continue
			}
			if m.NotBefore.IsZero() {
				now = append(now, m.To)
			} else {
				later = append(later, m.To)
			}
		}
		if strings.Join(now, ",") != "mona@example.com" || strings.Join(later, ",") != "audit@example.com" {
			t.Errorf("loop's request should go to mona and escalate past loop to the approvers; now %v, later %v", now, later)
		}
	})
}

func (r *routes) startOnFinance(user string) {
	r.t.Helper()
	if _, err := r.svc.Start(bg, StartRequest{Site: r.finance, Input: user, ReturnURL: "/finance", App: testApp, ClientIP: testIP, UserAgent: testUA}); err != nil {
		r.t.Fatal(err)
	}
	r.svc.Wait()
}

// TestADirectoryMustBeOneTheSiteUses: two directories both know an alice;
// a site whose profiles use only corp refuses the contractors' alice,
// whatever her approvals say.
func TestADirectoryMustBeOneTheSiteUses(t *testing.T) {
	r := newRoutes(t, nil)
	sess, _ := r.signIn("alice", aliceEmail)
	forged := *sess
	forged.Directory = "contractors"
	cookie, err := r.svc.cfg.Codec.Encode(&forged)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.access(r.home, cookie); got != AccessNone {
		t.Errorf("an alice from contractors on a corp-only site: %v, want AccessNone", got)
	}
	if _, err := r.svc.CheckStepUp(bg, r.home, &forged); !errors.Is(err, ErrNoProfile) {
		t.Errorf("her step-up: %v, want ErrNoProfile", err)
	}
}

func TestAManagersGrantOpensAUserApprovalRoute(t *testing.T) {
	r := newRoutes(t, nil)
	st, err := r.svc.Start(bg, StartRequest{Site: r.finance, Input: "alice", ReturnURL: "/finance", App: testApp, ClientIP: testIP, UserAgent: testUA})
	if err != nil {
		t.Fatal(err)
	}
	r.svc.Wait()
	token, _ := r.lastMailTo("bob@example.com")
	r.approve(st, token, "1h")
	c, err := r.svc.Complete(bg, st.Pending, testIP, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.access(r.home, c.Cookie); got != AccessGranted {
		t.Errorf("a manager's grant should also open a route that asks the user only, got %v", got)
	}
	r.clock.Advance(time.Hour)
	if got := r.access(r.home, c.Cookie); got != AccessStepUp {
		t.Errorf("once the grant ends, the user-approval route asks for the user's own confirmation, got %v", got)
	}
}

// TestAHybridSitePicksTheProfileByTheSessionsPolicies: on a site whose
// policy sends executives to Manager Approval, an executive's own daily
// approval is not enough, while a colleague's is; after a policy change
// (another epoch) the site asks for the user to be looked up again, and
// the step-up page's check refreshes the session without a request.
func TestAHybridSitePicksTheProfileByTheSessionsPolicies(t *testing.T) {
	r := newRoutes(t, nil)
	execs, err := NewPolicy("executives", r.secured, "", "username", []string{"alice"})
	if err != nil {
		t.Fatal(err)
	}
	r.svc.setPolicies([]*Policy{execs})
	hybrid := NewSite(r.daily, []*Policy{execs})

	alice, aliceCookie := r.signIn("alice", aliceEmail)
	if !alice.hasPolicy(execs) {
		t.Fatalf("alice's session should record that the executives policy matched her, holds %q", alice.Policies)
	}
	if got := r.access(hybrid, aliceCookie); got != AccessStepUp {
		t.Errorf("an executive's own approval on the hybrid site: %v, want AccessStepUp (her manager must approve)", got)
	}
	if got := r.access(r.home, aliceCookie); got != AccessGranted {
		t.Errorf("the same session on a site without policies: %v, want AccessGranted", got)
	}
	_, bobCookie := r.signIn("bob", "bob@example.com")
	if got := r.access(hybrid, bobCookie); got != AccessGranted {
		t.Errorf("a non-executive's own approval on the hybrid site: %v, want AccessGranted", got)
	}

	// The operator changes the policy: bob is an executive now.
	execs2, err := NewPolicy("executives", r.secured, "", "username", []string{"alice", "bob"})
	if err != nil {
		t.Fatal(err)
	}
	r.svc.setPolicies([]*Policy{execs2})
	hybrid2 := NewSite(r.daily, []*Policy{execs2})
	if got := r.access(hybrid2, bobCookie); got != AccessStale {
		t.Fatalf("bob's memberships predate the change: %v, want AccessStale", got)
	}
	var a Authenticated
	if err := r.svc.Authenticate(hybrid2, bobCookie, &a); err != nil {
		t.Fatal(err)
	}
	v, err := r.svc.CheckStepUp(bg, hybrid2, &a.Session)
	if err != nil {
		t.Fatal(err)
	}
	if v.Refreshed != "" || v.Type != TypeManager {
		t.Errorf("under the new policy bob needs his manager's approval: %+v", v)
	}
	// A change that leaves bob out again: his session satisfies the site,
	// and the check hands back a refreshed cookie instead of a request.
	r.svc.setPolicies([]*Policy{execs})
	r.svc.policyEpoch++ // another epoch, same meaning
	if v, err := r.svc.CheckStepUp(bg, hybrid, &a.Session); err != nil || v.Refreshed == "" {
		t.Fatalf("a session that satisfies the site once looked up again should be refreshed: %+v, %v", v, err)
	} else if got := r.access(hybrid, v.Refreshed); got != AccessGranted {
		t.Errorf("the refreshed cookie: %v, want AccessGranted", got)
	}
}
