package approval

import (
	"errors"
	"regexp"
	"slices"
	"testing"
)

func TestMatchChoicesHoldTheCodeAndTwoDecoysStably(t *testing.T) {
	for i := range 200 {
		code, _ := newMatchCode(Rand)
		token, _ := newSecret(Rand, tokenBytes)
		c := matchChoices(code, token)
		if len(c) != 3 || !slices.Contains(c, code) || c[0] == c[1] || c[1] == c[2] || c[0] == c[2] {
			t.Fatalf("round %d: choices %v for code %s: want three distinct numbers including the code", i, c, code)
		}
		if again := matchChoices(code, token); !slices.Equal(c, again) {
			t.Fatalf("choices must not change between GETs of one link: %v then %v", c, again)
		}
	}
}

func TestUserLinkAsksForTheWaitingBrowsersNumber(t *testing.T) {
	h := newHarness(t)
	h.site.Default.NoNumberMatching = false
	st, token := h.startKnown()
	code := h.matchOf(st)
	v, err := h.svc.OpenLink(bg, token, "", testIP, testUA)
	if err != nil || !slices.Contains(v.Choices, code) || len(v.Choices) != 3 {
		t.Fatalf("the landing page should offer three numbers including %s: %+v, %v", code, v, err)
	}
	wrong := v.Choices[0]
	if wrong == code {
		wrong = v.Choices[1]
	}
	if _, err := h.svc.ConfirmLink(bg, token, wrong, testIP, testUA); !errors.Is(err, ErrWrongMatch) {
		t.Fatalf("a wrong pick = %v, want ErrWrongMatch", err)
	}
	if h.countEvent(EventMatchFailed) != 1 {
		t.Error("a wrong pick should be audited")
	}
	if _, err := h.svc.ConfirmLink(bg, token, code, testIP, testUA); !errors.Is(err, ErrLinkInvalid) {
		t.Fatalf("after a wrong pick the token is spent; the right pick = %v, want ErrLinkInvalid", err)
	}
	if w, _ := h.svc.Watch(bg, st.Pending); w.State != StatePending {
		t.Fatalf("a wrong pick must approve nothing; state %q", w.State)
	}
}

var mailCode = regexp.MustCompile(`\b(\d{6})\b`)

func TestOneTimeCodeApprovesOnceAndFiveWrongTriesKillTheLogin(t *testing.T) {
	h := newHarness(t)
	st, _ := h.startKnown()
	msgs := h.mail.Messages()
	m := mailCode.FindStringSubmatch(msgs[len(msgs)-1].Text)
	if m == nil {
		t.Fatalf("the user's mail should carry a six-digit code:\n%s", msgs[len(msgs)-1].Text)
	}
	if err := h.svc.RedeemCode(bg, st.Pending, "000000x", testIP); !errors.Is(err, ErrWrongCode) {
		t.Fatalf("a malformed code = %v, want ErrWrongCode", err)
	}
	if err := h.svc.RedeemCode(bg, st.Pending, m[1], testIP); err != nil {
		t.Fatalf("the mailed code should approve: %v", err)
	}
	if c, err := h.svc.Complete(bg, st.Pending, testIP, nil); err != nil || c.Session.User != "alice" {
		t.Fatalf("after the code, the browser collects alice's session: %v", err)
	}
	st2, _ := h.startKnown()
	for i := range maxCodeTries - 1 {
		if err := h.svc.RedeemCode(bg, st2.Pending, "999999", testIP); !errors.Is(err, ErrWrongCode) {
			t.Fatalf("wrong try %d = %v, want ErrWrongCode", i+1, err)
		}
	}
	if err := h.svc.RedeemCode(bg, st2.Pending, "999999", testIP); !errors.Is(err, ErrCodeLocked) {
		t.Fatalf("the fifth wrong try = %v, want ErrCodeLocked", err)
	}
	if w, _ := h.svc.Watch(bg, st2.Pending); w.State != StateDenied {
		t.Fatalf("after five wrong codes the login must be dead, state %q", w.State)
	}
}
