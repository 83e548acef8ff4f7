package test

import (
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// codeForm is the waiting page's code form of one browser: its form token
// stays the same for the login, so it can still post once the page no
// longer shows the form (a script can).
type codeForm struct {
	e     *env
	b     *browser
	token string
}

func newCodeForm(t *testing.T, e *env, b *browser) *codeForm {
	t.Helper()
	m := formToken.FindStringSubmatch(b.get(e.URL("/.mailauth/wait")).Body)
	if m == nil {
		t.Fatal("the waiting page carries no form token")
	}
	return &codeForm{e: e, b: b, token: m[1]}
}

// post types code and returns where the answer sends the browser.
func (f *codeForm) post(t *testing.T, code string) string {
	t.Helper()
	r := f.b.post(f.e.URL("/.mailauth/code"), url.Values{"code": {code}, "csrf": {f.token}})
	if r.Status != http.StatusSeeOther {
		t.Fatalf("posting a code: got %d, want a 303:\n%s", r.Status, r.Body)
	}
	return r.Location
}

// TestUnknownUserLocksLikeAKnownOneThroughCaddy is the attacker's probe:
// six wrong codes on the waiting page of a user who exists and of one who
// does not get the same answers, and both logins end up denied.
func TestUnknownUserLocksLikeAKnownOneThroughCaddy(t *testing.T) {
	e := newEnv(t, defaultCaddyfile)
	kim, nobody := newBrowser(t), newBrowser(t)
	startLogin(t, e, kim, "alice", "alice@example.test")
	if r := nobody.post(e.URL("/.mailauth/login"), url.Values{"identity": {"nobody"}, "return": {"/app"}}); r.Status != http.StatusSeeOther {
		t.Fatalf("login POST for nobody: %d", r.Status)
	}
	want := []string{"/.mailauth/wait?code=wrong", "/.mailauth/wait?code=wrong", "/.mailauth/wait?code=wrong", "/.mailauth/wait?code=wrong", "/.mailauth/wait?code=locked", "/.mailauth/wait?code=locked"}
	for name, b := range map[string]*browser{"alice": kim, "nobody": nobody} {
		form := newCodeForm(t, e, b)
		var got []string
		for range want {
			got = append(got, form.post(t, "000000"))
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: six wrong codes were answered %v, want %v", name, got, want)
		}
		if st := status(t, b, e); st != "denied" {
			t.Errorf("%s: after five wrong codes the status is %q, want denied", name, st)
		}
	}
}

var mailedCode = regexp.MustCompile(`type this code on the sign-in page that is waiting for you: (\d{6})`)

// TestWrongCodesAcrossLoginsPauseCodesButTheLinkStillWorks: an attacker
// who starts login after login for a victim runs out of guesses (ten a
// day by default); the victim's mailed code is then refused too, but the
// link signs in. A name that does not exist gets the same answers.
func TestWrongCodesAcrossLoginsPauseCodesButTheLinkStillWorks(t *testing.T) {
	e := newEnv(t, defaultCaddyfile)
	answers := map[string][]string{}
	for _, name := range []string{"alice", "nobody"} {
		for range 2 {
			b := newBrowser(t)
			if r := b.post(e.URL("/.mailauth/login"), url.Values{"identity": {name}, "return": {"/app"}}); r.Status != http.StatusSeeOther {
				t.Fatalf("login POST for %s: %d", name, r.Status)
			}
			form := newCodeForm(t, e, b)
			for range 5 {
				answers[name] = append(answers[name], form.post(t, "000000"))
			}
		}
	}
	for _, name := range []string{"alice", "nobody"} {
		if got := answers[name]; got[4] != "/.mailauth/wait?code=locked" || got[9] != "/.mailauth/wait?code=locked" {
			t.Fatalf("%s: two logins of five wrong codes each should both lock: %v", name, got)
		}
	}

	e.mail.DeleteAll(t)
	victim := newBrowser(t)
	link := startLogin(t, e, victim, "alice", "alice@example.test")
	m := mailedCode.FindStringSubmatch(e.mail.WaitForMessage(t, "alice@example.test", 15*time.Second).Text)
	if m == nil {
		t.Fatal("the mail carries no code")
	}
	if got := newCodeForm(t, e, victim).post(t, m[1]); got != "/.mailauth/wait?code=paused" {
		t.Fatalf("after ten wrong codes for alice across logins, her right code was answered %q; want codes paused", got)
	}
	if r := victim.get(e.URL("/.mailauth/wait?code=paused")); !strings.Contains(r.Body, "Open the link in the mail instead") {
		t.Errorf("the waiting page should say to use the link:\n%s", r.Body)
	}
	if body := confirmAndComplete(t, e, victim, link); !strings.Contains(body, `user="alice"`) {
		t.Fatalf("the link must still sign alice in: %s", body)
	}

	nobody := newBrowser(t)
	if r := nobody.post(e.URL("/.mailauth/login"), url.Values{"identity": {"nobody"}, "return": {"/app"}}); r.Status != http.StatusSeeOther {
		t.Fatalf("login POST for nobody: %d", r.Status)
	}
	if got := newCodeForm(t, e, nobody).post(t, "123456"); got != "/.mailauth/wait?code=paused" {
		t.Fatalf("a name that does not exist must be answered like alice, got %q", got)
	}
	e.caddy.waitForAudit(t, "rate_limited", 5*time.Second)
}

// TestCodeLockoutNotifiesTheManagerAsADenyDoes: on a profile with
// notify_failed_login, five wrong codes mail the user's manager the
// failed-login notice.
func TestCodeLockoutNotifiesTheManagerAsADenyDoes(t *testing.T) {
	e := newEnv(t, strings.NewReplacer("@EXPIRY@", "15m", "\t\t\ttype manager\n", "\t\t\ttype user\n").Replace(managerCaddyfile))
	alice := newBrowser(t)
	startLogin(t, e, alice, "alice", "alice@example.test")
	form := newCodeForm(t, e, alice)
	for range 5 {
		form.post(t, "000000")
	}
	if st := status(t, alice, e); st != "denied" {
		t.Fatalf("after five wrong codes the status is %q, want denied", st)
	}
	notice := e.mail.WaitForMessage(t, "bob@example.test", 15*time.Second)
	if !strings.HasPrefix(notice.Subject, "Sign-in stopped after too many wrong codes: Alice Example") || strings.Contains(notice.Text, "token=") {
		t.Fatalf("bob should get a short notice without links, got %q:\n%s", notice.Subject, notice.Text)
	}
}

// TestMailedCodeWarnsAndCodeFallbackOffLeavesItOut: a user's mail says
// plainly never to tell the code; with code_fallback off there is no code
// to tell, and no box for one on the waiting page.
func TestMailedCodeWarnsAndCodeFallbackOffLeavesItOut(t *testing.T) {
	for _, tc := range []struct {
		name, caddyfile string
		code            bool
	}{
		{"default", defaultCaddyfile, true},
		{"code_fallback off", strings.Replace(defaultCaddyfile, "\t\t\tfallback staff\n", "\t\t\tfallback staff\n\t\t\tcode_fallback off\n", 1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.caddyfile)
			b := newBrowser(t)
			link := startLogin(t, e, b, "alice", "alice@example.test")
			msg := e.mail.WaitForMessage(t, "alice@example.test", 15*time.Second)
			hasCode := mailedCode.MatchString(msg.Text)
			warns := strings.Contains(msg.Text, "Never tell this code to anyone; we will never ask for it.") && strings.Contains(msg.HTML, "Never tell this code to anyone; we will never ask for it.")
			if hasCode != tc.code || warns != tc.code {
				t.Fatalf("the mail carries a code: %v, warns never to tell it: %v; want both %v:\n%s", hasCode, warns, tc.code, msg.Text)
			}
			box := strings.Contains(b.get(e.URL("/.mailauth/wait")).Body, `name="code"`)
			if box != tc.code {
				t.Fatalf("the waiting page offers a code box: %v, want %v", box, tc.code)
			}
			if body := confirmAndComplete(t, e, b, link); !strings.Contains(body, `user="alice"`) {
				t.Fatalf("the link signs in either way: %s", body)
			}
		})
	}
}
