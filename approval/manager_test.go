package approval

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/mailauth/caddy-mailauth/approval/mailtemplate"
	"github.com/mailauth/caddy-mailauth/mailer"
)

// newManagerHarness is the harness with its profile switched to Manager
// Approval with failed-login notices; alice's sponsor is bob.
func newManagerHarness(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t)
	tpl, err := mailtemplate.ParseManager("", "", "")
	if err != nil {
		t.Fatal(err)
	}
	p := h.site.Default
	p.Type, p.Templates, p.NotifyFailedLogin = TypeManager, tpl, true
	return h
}

var decisionLinks = regexp.MustCompile(`\?token=([A-Za-z0-9_-]{43})&pair=([A-Za-z0-9_-]{43})`)

// matchOf is the number alice's waiting browser shows.
func (h *harness) matchOf(st *Started) string {
	h.t.Helper()
	v, err := h.svc.Watch(bg, h.site, st.Pending)
	if err != nil {
		h.t.Fatal(err)
	}
	return v.MatchCode
}

// askManager starts a login for alice and returns the approve and deny
// tokens from the mail to her sponsor.
func (h *harness) askManager() (started *Started, approve, deny string) {
	h.t.Helper()
	before := len(h.mail.Messages())
	started = h.start(aliceInput)
	// Scheduled mail (the expiry notice) waits in the outbox; only the
	// request itself goes out now.
	var now []*mailer.Message
	for _, m := range h.mail.Messages()[before:] {
		if m.NotBefore.IsZero() {
			now = append(now, m)
		} else if schedulePurpose(m) != purposeExpiryNotice || !m.NotBefore.Equal(h.clock.Now().Add(testLinkLife)) {
			h.t.Fatalf("unexpected scheduled mail: %+v", m)
		}
	}
	if len(now) != 1 {
		h.t.Fatalf("want one approval mail, got %d", len(now))
	}
	m := now[0]
	if m.To != "bob@example.com" {
		h.t.Fatalf("the approval mail went to %q, want the sponsor bob@example.com", m.To)
	}
	links := decisionLinks.FindAllStringSubmatch(m.Text, -1)
	if len(links) < 2 {
		h.t.Fatalf("want an approve and a deny link in the mail text:\n%s", m.Text)
	}
	approve, deny = links[0][1], links[0][2]
	if links[1][1] != deny || links[1][2] != approve {
		h.t.Fatalf("the deny link should carry the pair the other way round: %v", links)
	}
	return started, approve, deny
}

func TestManagerApprovalGoesToTheSponsorWithBothLinks(t *testing.T) {
	h := newManagerHarness(t)
	st, approve, deny := h.askManager()
	for _, tok := range []string{approve, deny} {
		v, err := h.svc.OpenLink(bg, tok, "", "198.51.100.1", "scanner")
		if err != nil || v.State != StatePending || v.Type != TypeManager {
			t.Fatalf("a GET of a decision link should show the pending request, got %+v, %v", v, err)
		}
	}
	v, err := h.svc.OpenLink(bg, approve, deny, "198.51.100.1", "Firefox")
	if err != nil || v.Pair != deny || v.Action != actionApprove {
		t.Fatalf("the approve landing page should offer the verified deny token too: %+v, %v", v, err)
	}
	if v, _ := h.svc.OpenLink(bg, approve, approve, "", ""); v.Pair != "" {
		t.Fatal("a token is not its own pair")
	}
	if w, _ := h.svc.Watch(bg, h.site, st.Pending); w.State != StatePending {
		t.Fatalf("opening links changed the login to %q", w.State)
	}
	if _, err := h.svc.ConfirmLink(bg, approve, "", testIP, testUA); !errors.Is(err, ErrWrongMatch) {
		t.Fatalf("approving without the waiting browser's number = %v, want ErrWrongMatch", err)
	}
	if _, err := h.svc.ConfirmLink(bg, approve, h.matchOf(st), testIP, testUA); !errors.Is(err, ErrLinkInvalid) {
		t.Fatalf("a wrong pick spends the token; a retry = %v, want ErrLinkInvalid", err)
	}
	st, approve, _ = h.askManager()
	if _, err := h.svc.ConfirmLink(bg, approve, h.matchOf(st), testIP, testUA); err != nil {
		t.Fatalf("approve: %v", err)
	}
	c, err := h.svc.Complete(bg, st.Pending, testIP, nil)
	if err != nil || c.Session.User != "alice" {
		t.Fatalf("after approval alice's browser should get her session: %+v, %v", c, err)
	}
	if h.countEvent(EventApproved) != 1 {
		t.Fatal("want one approved event")
	}
	for _, e := range h.logs.FilterMessage(string(EventApproved)).All() {
		if e.ContextMap()["decider"] != "bob@example.com" {
			t.Errorf("the audit should record bob as the decider: %v", e.ContextMap())
		}
	}
}

func TestDenyEndsTheLoginAndTellsTheManagerOnce(t *testing.T) {
	h := newManagerHarness(t)
	st, approve, deny := h.askManager()
	if v, err := h.svc.ConfirmLink(bg, deny, "", testIP, testUA); err != nil || v.State != StateDenied {
		t.Fatalf("deny: %+v, %v", v, err)
	}
	if w, _ := h.svc.Watch(bg, h.site, st.Pending); w.State != StateDenied {
		t.Fatalf("the waiting browser should see denied, got %q", w.State)
	}
	if _, err := h.svc.Complete(bg, st.Pending, testIP, nil); !errors.Is(err, ErrDenied) {
		t.Fatalf("Complete after deny = %v, want ErrDenied", err)
	}
	v, err := h.svc.ConfirmLink(bg, approve, h.matchOf(st), testIP, testUA)
	if !errors.Is(err, ErrAlreadyDecided) || v == nil || v.State != StateDenied || v.Decider != "bob@example.com" {
		t.Fatalf("the other link of the pair must be dead and say who decided: %+v, %v", v, err)
	}
	if h.countEvent(EventDecisionRefused) != 1 {
		t.Error("a second decision should be audited as refused")
	}
	notices := 0
	for _, m := range h.mail.Messages() {
		if strings.HasPrefix(m.Subject, "Sign-in denied") {
			notices++
			if m.To != "bob@example.com" || strings.Contains(m.Text, "token=") {
				t.Errorf("the notice goes to the manager and carries no link: %+v", m)
			}
		}
	}
	if notices != 1 {
		t.Fatalf("want one failed-login notice, got %d", notices)
	}

	// A second denial within the window is grouped into the next notice.
	_, _, deny2 := h.askManager()
	if _, err := h.svc.ConfirmLink(bg, deny2, "", testIP, testUA); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(noticeWindow)
	_, _, deny3 := h.askManager()
	if _, err := h.svc.ConfirmLink(bg, deny3, "", testIP, testUA); err != nil {
		t.Fatal(err)
	}
	var subjects []string
	var last *mailer.Message
	for _, m := range h.mail.Messages() {
		if strings.HasPrefix(m.Subject, "Sign-in denied") {
			subjects = append(subjects, m.Subject)
			last = m
		}
	}
	if len(subjects) != 2 || !strings.Contains(last.Text, "1 more failed sign-in of this user") {
		t.Fatalf("three denials, two of them within the window, should make two notices, the second counting the grouped one; got %d:\n%s", len(subjects), last.Text)
	}
}

func TestUserWithoutManagerWaitsLikeEveryoneAndIsAudited(t *testing.T) {
	h := newManagerHarness(t)
	before := len(h.mail.Messages())
	st := h.start("carol")
	if len(h.mail.Messages()) != before {
		t.Fatal("carol has no sponsor: no mail may go out")
	}
	if w, err := h.svc.Watch(bg, h.site, st.Pending); err != nil || w.State != StatePending {
		t.Fatalf("carol's browser waits like everyone else: %+v, %v", w, err)
	}
	found := false
	for _, e := range h.logs.FilterMessage(string(EventDirectoryError)).All() {
		m := e.ContextMap()
		if m["reference"] == st.Reference && strings.Contains(m["reason"].(string), "no manager email") {
			found = true
		}
	}
	if !found {
		t.Fatal("the audit log should say, under the login's reference, that carol has no manager email")
	}
}

// TestApproveAndDenyAtOnceDecideExactlyOnce races the two links of a pair,
// 20 times over.
func TestApproveAndDenyAtOnceDecideExactlyOnce(t *testing.T) {
	h := newManagerHarness(t)
	for range 20 {
		st, approve, deny := h.askManager()
		var wg sync.WaitGroup
		results := make([]*LinkView, 2)
		errs := make([]error, 2)
		code := h.matchOf(st)
		for i, tok := range []string{approve, deny} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i], errs[i] = h.svc.ConfirmLink(context.Background(), tok, code, testIP, testUA)
			}()
		}
		wg.Wait()
		wins := 0
		var won State
		for i := range 2 {
			if errs[i] == nil {
				wins++
				won = results[i].State
			} else if !errors.Is(errs[i], ErrAlreadyDecided) {
				t.Fatalf("the losing decision should be ErrAlreadyDecided, got %v", errs[i])
			}
		}
		if wins != 1 {
			t.Fatalf("%d decisions won; want exactly one", wins)
		}
		if w, _ := h.svc.Watch(bg, h.site, st.Pending); w.State != won {
			t.Fatalf("the user sees %q but the winning decision was %q", w.State, won)
		}
	}
}
