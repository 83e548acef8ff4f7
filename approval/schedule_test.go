package approval

import (
	"context"
	"testing"
	"time"

	"github.com/mailauth/caddy-mailauth/approval/mailtemplate"
	"github.com/mailauth/caddy-mailauth/directory"
	"github.com/mailauth/caddy-mailauth/mailer"
)

// scheduled returns the queued mail with a NotBefore for purpose.
func (h *harness) scheduled(purpose string) []*mailer.Message {
	var out []*mailer.Message
	for _, m := range h.mail.Messages() {
		if schedulePurpose(m) == purpose {
			out = append(out, m)
		}
	}
	return out
}

func TestEscalationGoesToTheManagersManagerOnlyWhileUndecided(t *testing.T) {
	dir, err := directory.NewLocal("staff", []directory.LocalUser{
		{Username: "alice", Name: "Alice Example", Email: aliceEmail, Sponsor: "bob@example.com"},
		{Username: "bob", Email: "bob@example.com", Sponsor: "carol@example.com"},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarnessWith(t, []directory.Directory{dir})
	tpl, _ := mailtemplate.ParseManager("", "", "")
	p := h.site.Default
	p.Type, p.Templates, p.EscalateAfter, p.Approvers = TypeManager, tpl, 5*time.Minute, []string{"security@example.com"}

	st := h.start(aliceInput)
	esc := h.scheduled(purposeEscalation)
	if len(esc) != 1 || esc[0].To != "carol@example.com" || !esc[0].NotBefore.Equal(h.clock.Now().Add(5*time.Minute)) {
		t.Fatalf("want one escalation to carol (bob's sponsor) due in 5 minutes, got %+v", esc)
	}
	if send, err := h.svc.BeforeSend(bg, esc[0]); err != nil || !send {
		t.Fatalf("an escalation of a pending request must go out: %v %v", send, err)
	}
	if h.countEvent(EventEscalated) != 1 {
		t.Error("the escalation should be audited")
	}
	tokens := decisionLinks.FindStringSubmatch(esc[0].Text)
	if _, err := h.svc.ConfirmLink(bg, tokens[1], h.matchOf(st), testIP, testUA); err != nil {
		t.Fatalf("carol's approval: %v", err)
	}
	if c, err := h.svc.Complete(bg, st.Pending, testIP, nil); err != nil || c.Session.User != "alice" {
		t.Fatalf("after carol approved, alice gets her session: %v", err)
	}
	for _, e := range h.logs.FilterMessage(string(EventApproved)).All() {
		if e.ContextMap()["decider"] != "carol@example.com" {
			t.Errorf("the audit should say carol decided: %v", e.ContextMap())
		}
	}
	if send, _ := h.svc.BeforeSend(bg, esc[0]); send {
		t.Fatal("an escalation of a decided request must be dropped")
	}
}

func TestEscalationFallsBackToApproversWithoutASecondManager(t *testing.T) {
	h := newManagerHarness(t)
	p := h.site.Default
	p.EscalateAfter, p.Approvers = time.Minute, []string{"security@example.com", "BOB@example.com"}
	h.start(aliceInput)
	esc := h.scheduled(purposeEscalation)
	if len(esc) != 1 || esc[0].To != "security@example.com" {
		t.Fatalf("bob has no manager: the request should escalate to the approvers other than bob himself, got %+v", esc)
	}
}

func TestExpiryNoticeGoesOutOnlyForUndecidedRequestsAndIsGrouped(t *testing.T) {
	h := newManagerHarness(t)
	st, approve, _ := h.askManager()
	decided := h.scheduled(purposeExpiryNotice)[0]
	if _, err := h.svc.ConfirmLink(bg, approve, h.matchOf(st), testIP, testUA); err != nil {
		t.Fatal(err)
	}
	h.askManager()
	h.askManager()
	notices := h.scheduled(purposeExpiryNotice)
	h.clock.Advance(testLinkLife + time.Second)
	if send, _ := h.svc.BeforeSend(bg, decided); send {
		t.Fatal("an approved request must not produce an expiry notice")
	}
	if send, err := h.svc.BeforeSend(bg, notices[1]); err != nil || !send {
		t.Fatalf("an undecided request that expired should notify the manager: %v %v", send, err)
	}
	if send, _ := h.svc.BeforeSend(bg, notices[1]); !send {
		t.Fatal("a retry of the same notice must go through, not be grouped with itself")
	}
	if send, _ := h.svc.BeforeSend(context.Background(), notices[2]); send {
		t.Fatal("a second expiry within the window should be grouped, not mailed")
	}
}

func TestNoticesQueueBehindApprovalRequests(t *testing.T) {
	h := newManagerHarness(t)
	h.askManager()
	var requests, notices int
	for _, m := range h.mail.Messages() {
		switch {
		case schedulePurpose(m) == purposeExpiryNotice:
			notices++
			if !m.Notice {
				t.Errorf("expiry notice %s is not marked Notice; in a burst it would go before sign-in mail", m.ID)
			}
		case schedulePurpose(m) == "":
			requests++
			if m.Notice {
				t.Errorf("approval request %s is marked Notice; it would wait behind every sign-in link", m.ID)
			}
		}
	}
	if requests != 1 || notices != 1 {
		t.Fatalf("asking the manager queued %d requests and %d expiry notices; want 1 of each", requests, notices)
	}
}
