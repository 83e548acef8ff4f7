package approval

import (
	"errors"
	"testing"
	"time"
)

func TestLimitedLoginsGetTheSameAnswerButNoMail(t *testing.T) {
	h := newHarness(t)
	h.svc.limits = NewRateLimiters(RateLimits{LoginPerIdentity: Limit{Events: 2, Per: time.Hour}}, h.clock.Now)
	h.startKnown()
	h.startKnown()
	before := len(h.mail.Messages())
	st := h.start(aliceInput)
	if st == nil || st.Pending == "" {
		t.Fatal("a limited login must still get the usual answer")
	}
	if len(h.mail.Messages()) != before {
		t.Fatal("the third login of alice within the hour must send no mail")
	}
	if h.countEvent(EventRateLimited) != 1 {
		t.Fatal("the limit hit must be audited")
	}
	h.clock.Advance(time.Hour)
	h.startKnown()
}

func TestLoginsPerClientIPAreLimited(t *testing.T) {
	h := newHarness(t)
	h.svc.limits = NewRateLimiters(RateLimits{LoginPerIP: Limit{Events: 1, Per: time.Hour}}, h.clock.Now)
	h.startKnown()
	before := len(h.mail.Messages())
	if _, err := h.svc.Start(bg, StartRequest{Site: h.site, Input: "carol", App: testApp, ClientIP: testIP, UserAgent: testUA}); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("a second login from the same IP within the hour = %v, want ErrRateLimited", err)
	}
	h.svc.Wait()
	if len(h.mail.Messages()) != before {
		t.Fatal("a second login from the same IP within the hour must send no mail")
	}
}

func TestRedemptionsPerClientIPAreLimitedWithoutTouchingTheToken(t *testing.T) {
	h := newHarness(t)
	h.svc.limits = NewRateLimiters(RateLimits{RedeemPerIP: Limit{Events: 1, Per: time.Hour}}, h.clock.Now)
	_, token := h.startKnown()
	if _, err := h.svc.ConfirmLink(bg, "A"+token[1:], "", testIP, testUA); !errors.Is(err, ErrLinkInvalid) {
		t.Fatalf("a wrong token = %v", err)
	}
	if _, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA); !errors.Is(err, ErrLinkInvalid) {
		t.Fatalf("over the limit, even the right token is answered as invalid; got %v", err)
	}
	if _, err := h.svc.ConfirmLink(bg, token, "", "198.51.100.200", testUA); err != nil {
		t.Fatalf("the limited attempt must not have spent the token: %v", err)
	}
}
