package approval

import (
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailauth/caddy-mailauth/directory"
	"github.com/mailauth/caddy-mailauth/store"
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
	// The link is spent, so the login ends with it: the waiting page says
	// the number did not match rather than showing a number nothing can
	// approve any more.
	if w, _ := h.svc.Watch(bg, h.site, st.Pending); w.State != StateDenied || w.Ended != EndedWrongNumber {
		t.Fatalf("a wrong pick must approve nothing and end the login as wrong_number; state %q, ended %q", w.State, w.Ended)
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
	if w, _ := h.svc.Watch(bg, h.site, st2.Pending); w.State != StateDenied {
		t.Fatalf("after five wrong codes the login must be dead, state %q", w.State)
	}
}

// codeOf is the code in the last mail queued.
func (h *harness) codeOf() string {
	h.t.Helper()
	msgs := h.mail.Messages()
	m := mailCode.FindStringSubmatch(msgs[len(msgs)-1].Text)
	if m == nil {
		h.t.Fatalf("the mail carries no six-digit code:\n%s", msgs[len(msgs)-1].Text)
	}
	return m[1]
}

// codeAnswers posts n wrong codes on the login that pending names and
// returns the answers.
func (h *harness) codeAnswers(pending string, n int) []error {
	h.t.Helper()
	var out []error
	for range n {
		out = append(out, h.svc.RedeemCode(bg, pending, "000000", testIP))
	}
	return out
}

func TestUnknownUserLocksLikeAKnownOne(t *testing.T) {
	h := newHarness(t)
	known, _ := h.startKnown()
	unknown := h.start("nobody")
	want := []error{ErrWrongCode, ErrWrongCode, ErrWrongCode, ErrWrongCode, ErrCodeLocked, ErrCodeLocked}
	for name, pending := range map[string]string{"alice": known.Pending, "nobody": unknown.Pending} {
		got := h.codeAnswers(pending, len(want))
		for i := range want {
			if !errors.Is(got[i], want[i]) {
				t.Errorf("%s: wrong code %d = %v, want %v (answers %v)", name, i+1, got[i], want[i], got)
			}
		}
		if w, err := h.svc.Watch(bg, h.site, pending); err != nil || w.State != StateDenied {
			t.Errorf("%s: after five wrong codes the login must be denied, state %v, %v", name, w, err)
		}
	}
}

func TestManagerLoginLocksLikeAUserLogin(t *testing.T) {
	// A manager profile mails no code; its logins must still lock, or the
	// code box would tell which profile a user has.
	h := newManagerHarness(t)
	st, _, _ := h.askManager()
	got := h.codeAnswers(st.Pending, 5)
	if !errors.Is(got[4], ErrCodeLocked) {
		t.Fatalf("the fifth wrong code on a manager login = %v, want ErrCodeLocked (answers %v)", got[4], got)
	}
	if w, _ := h.svc.Watch(bg, h.site, st.Pending); w.State != StateDenied {
		t.Fatalf("a locked manager login must be denied, state %q", w.State)
	}
}

func TestCodeTriesCostTheSameStoreWorkForKnownAndUnknownUsers(t *testing.T) {
	for _, shared := range []bool{false, true} {
		t.Run(map[bool]string{false: "limits in memory", true: "limits in the store"}[shared], func(t *testing.T) {
			var fs *faultyStore
			h := newHarnessOn(t, nil, func(st store.Store) store.Store { fs = newFaultyStore(st); return fs })
			if shared {
				h.svc.limits = NewSharedRateLimiters(DefaultRateLimits(), fs, h.clock.Now, nil)
			}
			known, _ := h.startKnown()
			unknown := h.start("nobody")
			for i := range maxCodeTries + 1 {
				fs.takeCalls()
				kerr := h.svc.RedeemCode(bg, known.Pending, "000000", testIP)
				kcalls := fs.takeCalls()
				uerr := h.svc.RedeemCode(bg, unknown.Pending, "000000", testIP)
				ucalls := fs.takeCalls()
				if !errors.Is(kerr, uerr) {
					t.Fatalf("wrong code %d: alice got %v, nobody %v", i+1, kerr, uerr)
				}
				if !slices.Equal(kcalls, ucalls) {
					t.Fatalf("wrong code %d: the store work differs, so its timing can tell the users apart:\nalice:  %v\nnobody: %v", i+1, kcalls, ucalls)
				}
			}
		})
	}
}

func TestCodeLockoutBeforeTheMailIsQueuedSurvivesTheDispatch(t *testing.T) {
	// A slow directory: the attacker locks the login before dispatch writes
	// it with the user filled in, which must not bring it back to life.
	dir := &blockingDirectory{release: make(chan struct{})}
	h := newHarnessWith(t, []directory.Directory{dir})
	st, err := h.svc.Start(bg, StartRequest{Site: h.site, Input: aliceInput, App: testApp, ClientIP: testIP})
	if err != nil {
		t.Fatal(err)
	}
	if got := h.codeAnswers(st.Pending, maxCodeTries); !errors.Is(got[maxCodeTries-1], ErrCodeLocked) {
		t.Fatalf("five wrong codes before dispatch: %v, want the last to lock", got)
	}
	close(dir.release)
	h.svc.Wait()
	if w, _ := h.svc.Watch(bg, h.site, st.Pending); w.State != StateDenied {
		t.Fatalf("a login locked before its dispatch must stay denied, state %q", w.State)
	}
}

// withCodeBudget gives h's service a budget of n wrong codes a day per
// identity, and no other limit.
func (h *harness) withCodeBudget(n int) {
	h.svc.limits = NewRateLimiters(RateLimits{CodeFailuresPerIdentity: Limit{Events: n, Per: 24 * time.Hour}}, h.clock.Now)
}

func TestWrongCodesAcrossLoginsPauseCodesForTheIdentityButNotItsLink(t *testing.T) {
	h := newHarness(t)
	h.withCodeBudget(10)
	for i := range 2 {
		st, _ := h.startKnown()
		if got := h.codeAnswers(st.Pending, maxCodeTries); !errors.Is(got[maxCodeTries-1], ErrCodeLocked) {
			t.Fatalf("login %d: five wrong codes = %v, want the last to lock", i+1, got)
		}
	}
	st, token := h.startKnown()
	if err := h.svc.RedeemCode(bg, st.Pending, h.codeOf(), testIP); !errors.Is(err, ErrCodesPaused) {
		t.Fatalf("after ten wrong codes across logins, the right code = %v, want ErrCodesPaused", err)
	}
	if _, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA); err != nil {
		t.Fatalf("the mailed link must still work while codes are paused: %v", err)
	}
	if w, _ := h.svc.Watch(bg, h.site, st.Pending); w.State != StateApproved {
		t.Fatalf("state %q after the link, want approved", w.State)
	}
	// The budget refills as its window passes.
	h.clock.Advance(24 * time.Hour)
	st, _ = h.startKnown()
	if err := h.svc.RedeemCode(bg, st.Pending, h.codeOf(), testIP); err != nil {
		t.Fatalf("a day later the right code = %v, want it to work", err)
	}
}

func TestCodeBudgetAnswersTheSameForAnUnknownName(t *testing.T) {
	h := newHarness(t)
	h.withCodeBudget(10)
	answers := func(input string) []error {
		var out []error
		for range 3 {
			out = append(out, h.codeAnswers(h.start(input).Pending, maxCodeTries)...)
		}
		return out
	}
	known, unknown := answers(aliceInput), answers("nobody")
	for i := range known {
		if !errors.Is(known[i], unknown[i]) || !errors.Is(unknown[i], known[i]) {
			t.Fatalf("wrong code %d: alice got %v, nobody %v", i+1, known[i], unknown[i])
		}
	}
	if !errors.Is(known[len(known)-1], ErrCodesPaused) {
		t.Fatalf("past the budget codes should be paused, got %v", known[len(known)-1])
	}
}

func TestRightCodesDoNotSpendTheBudget(t *testing.T) {
	h := newHarness(t)
	h.withCodeBudget(2)
	for i := range 4 {
		st, _ := h.startKnown()
		if err := h.svc.RedeemCode(bg, st.Pending, h.codeOf(), testIP); err != nil {
			t.Fatalf("sign-in %d by the right code = %v; only wrong codes count", i+1, err)
		}
	}
}

func TestCodeLockoutSendsTheFailedLoginNotice(t *testing.T) {
	h := newHarness(t)
	h.site.Default.NotifyFailedLogin = true
	st := h.start(aliceInput)
	h.codeAnswers(st.Pending, maxCodeTries)
	h.svc.Wait()
	var notices []string
	for _, m := range h.mail.Messages() {
		if m.To == "bob@example.com" && m.NotBefore.IsZero() {
			notices = append(notices, m.Subject)
		}
	}
	if len(notices) != 1 || !strings.HasPrefix(notices[0], "Sign-in stopped after too many wrong codes: Alice Example") {
		t.Fatalf("alice's manager should get one lockout notice now, got %q", notices)
	}
}

func TestCodeFallbackOffMailsNoCodeAndNoCodeWorks(t *testing.T) {
	h := newHarness(t)
	h.site.Default.NoCodeFallback = true
	if h.site.CodeFallback() {
		t.Error("a site whose only profile has code_fallback off should offer no code box")
	}
	st, _ := h.startKnown()
	msgs := h.mail.Messages()
	if m := mailCode.FindString(msgs[len(msgs)-1].Text); m != "" {
		t.Fatalf("with code_fallback off the mail carries a code %q:\n%s", m, msgs[len(msgs)-1].Text)
	}
	if err := h.svc.RedeemCode(bg, st.Pending, "123456", testIP); !errors.Is(err, ErrWrongCode) {
		t.Fatalf("a code on a login that mailed none = %v, want ErrWrongCode", err)
	}
}

func TestSiteOffersTheCodeBoxWhenAnyProfileMailsACode(t *testing.T) {
	h := newHarness(t)
	h.site.Default.NoCodeFallback = true
	coded := *h.site.Default
	coded.Name, coded.NoCodeFallback = "coded", false
	pol, err := NewPolicy("some", &coded, "", "username", []string{"carol"})
	if err != nil {
		t.Fatal(err)
	}
	if !NewSite(h.site.Default, []*Policy{pol}).CodeFallback() {
		t.Error("a site where one profile mails a code must offer the box to everybody")
	}
	manager := *h.site.Default
	manager.Type, manager.NoCodeFallback = TypeManager, false
	if NewSite(&manager, nil).CodeFallback() {
		t.Error("a manager profile mails no code, so its site offers no box")
	}
}

func TestALockoutWhoseWriteFailedIsAppliedOnTheNextTry(t *testing.T) {
	h, fs := newFaultyHarness(t)
	st, _ := h.startKnown()
	h.codeAnswers(st.Pending, maxCodeTries-1)
	fs.failNext("Update login/", 1)
	if err := h.svc.RedeemCode(bg, st.Pending, "000000", testIP); !errors.Is(err, ErrCodeLocked) {
		t.Fatalf("the fifth wrong code = %v, want ErrCodeLocked", err)
	}
	if w, _ := h.svc.Watch(bg, h.site, st.Pending); w.State != StatePending {
		t.Fatalf("the failed lockout write should have left the login pending, state %q", w.State)
	}
	if err := h.svc.RedeemCode(bg, st.Pending, "000000", testIP); !errors.Is(err, ErrCodeLocked) {
		t.Fatalf("the sixth code = %v, want ErrCodeLocked", err)
	}
	if w, _ := h.svc.Watch(bg, h.site, st.Pending); w.State != StateDenied {
		t.Fatalf("the next try on a locked login must deny it, state %q", w.State)
	}
}
