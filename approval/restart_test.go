package approval

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mailauth/caddy-mailauth/approval/mailtemplate"
	"github.com/mailauth/caddy-mailauth/directory"
)

func TestThisWasntMeDeniesTheLoginAndAuditsIt(t *testing.T) {
	h := newHarness(t)
	st, token := h.startKnown()
	v, err := h.svc.NotMe(bg, NotMeRequest{Token: token, ClientIP: testIP, UserAgent: testUA})
	if err != nil || v.State != StateDenied || v.Ended != EndedNotMe {
		t.Fatalf("NotMe = %+v, %v; want the login denied as not_me", v, err)
	}
	if w, _ := h.svc.Watch(bg, h.site, st.Pending); w.State != StateDenied || w.Ended != EndedNotMe {
		t.Fatalf("the waiting page should see the login stopped as not the user's; state %q ended %q", w.State, w.Ended)
	}
	var reason string
	for _, e := range h.logs.FilterLoggerName("mailauth.audit").FilterMessage(string(EventDenied)).All() {
		reason, _ = e.ContextMap()["reason"].(string)
	}
	if reason != "not me" {
		t.Errorf("the audit should record denied with reason \"not me\", got %q", reason)
	}
	if _, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA); !errors.Is(err, ErrLinkInvalid) {
		t.Errorf("after This wasn't me the link is spent; Confirm = %v, want ErrLinkInvalid", err)
	}
	if _, err := h.svc.NotMe(bg, NotMeRequest{Token: token, ClientIP: testIP}); !errors.Is(err, ErrLinkInvalid) {
		t.Errorf("a second This wasn't me = %v, want ErrLinkInvalid", err)
	}
}

func TestStartingAgainReplacesTheOlderLoginSoItsLinkSaysSo(t *testing.T) {
	h := newHarness(t)
	old, token := h.startKnown()
	h.start(aliceInput)
	h.svc.Replace(bg, old.Pending)
	v, err := h.svc.OpenLink(bg, token, "", testIP, testUA)
	if err != nil || v.State != StateDenied || v.Ended != EndedReplaced {
		t.Fatalf("the older mail's link should say it was replaced: %+v, %v", v, err)
	}
	if _, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA); !errors.Is(err, ErrAlreadyDecided) {
		t.Errorf("the replaced login's link must approve nothing; Confirm = %v", err)
	}
	if h.countEvent(EventReplaced) != 1 {
		t.Errorf("replacing should be audited once, got %d", h.countEvent(EventReplaced))
	}
}

func TestSendAgainWaitsForItsCooldownAndStartsAFreshLogin(t *testing.T) {
	h := newHarness(t)
	old, token := h.startKnown()
	req := StartRequest{Site: h.site, App: testApp, ClientIP: testIP, UserAgent: testUA}
	_, err := h.svc.Resend(bg, req, old.Pending)
	if soon, ok := errors.AsType[*ResendTooSoonError](err); !ok || soon.Wait <= 0 || soon.Wait > ResendCooldown {
		t.Fatalf("sending again at once = %v, want ResendTooSoonError within the cooldown", err)
	}
	h.clock.Advance(ResendCooldown)
	fresh, err := h.svc.Resend(bg, req, old.Pending)
	if err != nil {
		t.Fatalf("sending again after the cooldown: %v", err)
	}
	h.svc.Wait()
	if w, _ := h.svc.Watch(bg, h.site, fresh.Pending); w.State != StatePending || w.Input != aliceInput || w.ReturnURL != "/reports?q=1" {
		t.Fatalf("the new login should wait for the same input and return path: %+v", w)
	}
	if msgs := h.mail.Messages(); len(msgs) != 2 || msgs[1].To != aliceEmail {
		t.Fatalf("sending again should mail alice a second time, got %d mails", len(msgs))
	}
	if v, _ := h.svc.OpenLink(bg, token, "", testIP, testUA); v == nil || v.Ended != EndedReplaced {
		t.Errorf("the first mail's link should say it was replaced: %+v", v)
	}
}

func TestSendAgainOfAnUnknownNameAnswersAsForAKnownOne(t *testing.T) {
	h := newHarness(t)
	req := StartRequest{Site: h.site, App: testApp, ClientIP: testIP, UserAgent: testUA}
	known, _ := h.startKnown()
	unknown := h.start("nobody")
	h.clock.Advance(ResendCooldown)
	_, errKnown := h.svc.Resend(bg, req, known.Pending)
	_, errUnknown := h.svc.Resend(bg, req, unknown.Pending)
	if errKnown != nil || errUnknown != nil {
		t.Fatalf("send again must answer alike for a known and an unknown name: %v / %v", errKnown, errUnknown)
	}
}

func TestSendAgainCountsAgainstTheLoginLimit(t *testing.T) {
	h := newHarnessTuned(t, nil, nil, func(c *Config) {
		c.RateLimits.LoginPerIP = Limit{Events: 1, Per: time.Hour}
	})
	st := h.start(aliceInput)
	h.clock.Advance(ResendCooldown)
	_, err := h.svc.Resend(bg, StartRequest{Site: h.site, App: testApp, ClientIP: testIP}, st.Pending)
	if _, ok := errors.AsType[*RateLimitedError](err); !ok {
		t.Fatalf("send again past login_per_ip = %v, want RateLimitedError", err)
	}
}

func TestAPastedCodeWithSpacesSignsIn(t *testing.T) {
	h := newHarness(t)
	st, _ := h.startKnown()
	msgs := h.mail.Messages()
	m := mailCode.FindStringSubmatch(msgs[len(msgs)-1].Text)
	if m == nil {
		t.Fatal("the mail carries no code")
	}
	pasted := " " + m[1][:3] + " " + m[1][3:] + "\u00a0"
	if err := h.svc.RedeemCode(bg, st.Pending, pasted, testIP); err != nil {
		t.Fatalf("the code pasted as %q should sign in: %v", pasted, err)
	}
}

func TestTheUsersMailIsInTheirLanguageAndTheManagersInTheDefault(t *testing.T) {
	dir, err := directory.NewLocal("staff", []directory.LocalUser{
		{Username: "deniz", Email: "deniz@example.com", Sponsor: "bob@example.com", Attributes: map[string][]string{"preferredLanguage": {"tr-TR"}}},
		{Username: "frank", Email: "frank@example.com", Sponsor: "bob@example.com"},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarnessTuned(t, []directory.Directory{dir}, nil, func(c *Config) {
		c.DefaultLanguage, c.LanguageAttribute = "de", "preferredLanguage"
	})
	h.startKnownAs("deniz", "deniz@example.com")
	h.startKnownAs("frank", "frank@example.com")
	msgs := h.mail.Messages()
	if s := msgs[0].Subject; !strings.HasPrefix(s, "Giriş yapın") {
		t.Errorf("deniz (preferredLanguage tr-TR) should get her mail in Turkish; subject %q", s)
	}
	if s := msgs[1].Subject; !strings.HasPrefix(s, "Anmelden bei") {
		t.Errorf("frank, who names no language, should get the default (German); subject %q", s)
	}
	h.site.Default.Type = TypeManager
	if h.site.Default.Templates, err = mailtemplate.ParseManager("", "", ""); err != nil {
		t.Fatal(err)
	}
	h.start("deniz")
	msgs = h.mail.Messages()
	if last := msgs[len(msgs)-1]; last.To != "bob@example.com" || !strings.Contains(last.Subject, "Anmeldung freigeben") {
		t.Errorf("the manager's mail should be in the default language (German), whatever the user's: to %s, subject %q", last.To, last.Subject)
	}
}
