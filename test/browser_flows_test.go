package test

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// TestBrowserSignInCompletesWithJavaScriptOff: with scripts disabled, the
// waiting page's meta refresh shows the approval and its Continue button
// takes the browser to the app; times stay in UTC.
func TestBrowserSignInCompletesWithJavaScriptOff(t *testing.T) {
	e := newEnv(t, defaultCaddyfile)
	site := e.Server()
	browserCtx := launchChromium(t)
	tab, phone := newDevice(t, browserCtx), newDevice(t, browserCtx)
	if err := withTimeout(tab, 5*time.Second, func(ctx context.Context) error {
		_, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	navigate(t, tab, "the no-script tab", site+"/app/nojs")
	waitPage(t, tab, "the login form", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "Username or email") })
	if err := withTimeout(tab, 5*time.Second, func(ctx context.Context) error {
		return chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("identity"), "alice\r"))
	}); err != nil {
		t.Fatal(err)
	}
	p := waitPage(t, tab, "the waiting page", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "Check your email") })
	if !regexp.MustCompile(`open until \d\d:\d\d UTC`).MatchString(p.Text) {
		t.Errorf("without JavaScript the waiting page should give its times in UTC:\n%s", p.Text)
	}
	if strings.Contains(p.Text, "Continue") {
		t.Errorf("Continue should not show while the sign-in is pending:\n%s", p.Text)
	}
	number := regexp.MustCompile(`\b(\d\d)\b`).FindStringSubmatch(p.Text[strings.Index(p.Text, "pick this number"):])
	if number == nil {
		t.Fatalf("no number on the waiting page:\n%s", p.Text)
	}
	navigate(t, phone, "the phone", linkIn(t, e.mail.WaitForMessage(t, "alice@example.test", 10*time.Second).Text))
	pickNumber(t, phone, number[1])
	click(t, phone, "Confirm", `button.approve`)
	waitPage(t, phone, "the confirmation", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "Sign-in confirmed") })
	// The meta refresh (every 5 s) shows the approval with Continue.
	waitPage(t, tab, "the approved waiting page", 12*time.Second, func(p page) bool {
		return strings.Contains(p.Text, "Sign-in approved") && strings.Contains(p.Text, "Continue")
	})
	click(t, tab, "Continue", `#complete button`)
	waitPage(t, tab, "the app", 5*time.Second, func(p page) bool {
		return strings.Contains(p.Text, `upstream saw user="alice"`) && strings.Contains(p.Text, "path=/app/nojs")
	})
}

// TestBrowserCodeFormWinsOverTheWaitingPagesPoll: a right code, pasted
// as the mail shows it with a space ("398 036"), signs the user in every
// time, although the waiting page's long poll answers "approved" while
// the code's POST is on its way (it used to post complete or reload and
// land 2 runs in 6 on "No sign-in in progress"). Then "send again" waits
// out its cooldown and mails a new link.
func TestBrowserCodeFormWinsOverTheWaitingPagesPoll(t *testing.T) {
	e := newEnv(t, strings.Replace(defaultCaddyfile, "session_lifetime 1h", "session_lifetime 1h\n\t\trate_limit {\n\t\t\tlogin_per_identity 50/15m\n\t\t}", 1))
	site := e.Server()
	browserCtx := launchChromium(t)
	code := regexp.MustCompile(`waiting for you: (\d{6})`)
	for run := range 6 {
		tab := newDevice(t, browserCtx)
		navigate(t, tab, "the tab", site+"/app/code")
		waitPage(t, tab, "the login form", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "Username or email") })
		if err := withTimeout(tab, 5*time.Second, func(ctx context.Context) error {
			return chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("identity"), "alice\r"))
		}); err != nil {
			t.Fatal(err)
		}
		waitPage(t, tab, "the waiting page", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "Check your email") })
		msg := e.mail.WaitForMessage(t, "alice@example.test", 10*time.Second)
		e.mail.DeleteAll(t)
		m := code.FindStringSubmatch(msg.Text)
		if m == nil {
			t.Fatalf("the mail carries no code:\n%s", msg.Text)
		}
		pasted := m[1][:3] + " " + m[1][3:]
		if err := withTimeout(tab, 5*time.Second, func(ctx context.Context) error {
			return chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("code"), pasted+"\r"))
		}); err != nil {
			t.Fatal(err)
		}
		p := waitPage(t, tab, "the app after the code", 10*time.Second, func(p page) bool {
			return strings.Contains(p.Text, `upstream saw user="alice"`) || strings.Contains(p.Text, "No sign-in in progress") || strings.Contains(p.Text, "Username or email")
		})
		if !strings.Contains(p.Text, "path=/app/code") {
			t.Fatalf("run %d: the code %q should land on the app, landed on %s:\n%s", run+1, pasted, p.URL, p.Text)
		}
	}

	tab := newDevice(t, browserCtx)
	navigate(t, tab, "the tab", site+"/app/resend")
	waitPage(t, tab, "the login form", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "Username or email") })
	if err := withTimeout(tab, 5*time.Second, func(ctx context.Context) error {
		return chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("identity"), "alice\r"))
	}); err != nil {
		t.Fatal(err)
	}
	waitPage(t, tab, "the waiting page", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "You can send again in") })
	first := linkIn(t, e.mail.WaitForMessage(t, "alice@example.test", 10*time.Second).Text)
	e.mail.DeleteAll(t)
	if !eval[bool](t, tab, "Send again", `document.getElementById("resend").disabled`) {
		t.Error("Send again should be disabled during its cooldown")
	}
	e.advanceClock(t, 61*time.Second)
	navigate(t, tab, "the tab", site+"/.mailauth/wait")
	waitPage(t, tab, "the waiting page", 5*time.Second, func(p page) bool {
		return strings.Contains(p.Text, "Send again") && !strings.Contains(p.Text, "You can send again in")
	})
	click(t, tab, "Send again", `#resend`)
	waitPage(t, tab, "the new waiting page", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "You can send again in") })
	second := linkIn(t, e.mail.WaitForMessage(t, "alice@example.test", 10*time.Second).Text)
	if second == first {
		t.Fatal("send again should mail a new link")
	}
	r := newBrowser(t).get(e.onSite(first))
	if !strings.Contains(r.Body, "newer one replaced") {
		t.Errorf("the first mail's link should say a newer request replaced it:\n%s", r.Body)
	}
}

// TestBrowserGermanAndTurkishPagesFitToo: the longer words of German
// and the different order of Turkish still fit 360 px and pass axe-core,
// on the pages a user sees most.
func TestBrowserGermanAndTurkishPagesFitToo(t *testing.T) {
	e := newEnv(t, strings.Replace(defaultCaddyfile, "session_lifetime 1h", "session_lifetime 1h\n\t\trate_limit {\n\t\t\tlogin_per_identity 50/15m\n\t\t}", 1))
	site := e.Server()
	browserCtx := launchChromium(t)
	for lang, want := range map[string][]string{
		"de": {"Benutzername oder E-Mail", "Sehen Sie in Ihr Postfach", "Anmeldung bestätigen", "Anmeldung bestätigt"},
		"tr": {"Kullanıcı adı veya e-posta", "E-postanıza bakın", "Girişi onaylayın", "Giriş onaylandı"},
	} {
		tab, phone := newDevice(t, browserCtx), newDevice(t, browserCtx)
		for _, d := range []context.Context{tab, phone} {
			if err := withTimeout(d, 5*time.Second, func(ctx context.Context) error {
				_, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Accept-Language": lang}})
				return err
			}); err != nil {
				t.Fatal(err)
			}
		}
		navigate(t, tab, lang, site+"/app/"+lang)
		waitPage(t, tab, "the "+lang+" login form", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, want[0]) })
		checkPage(t, tab, lang+"-login")
		if err := withTimeout(tab, 5*time.Second, func(ctx context.Context) error {
			return chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("identity"), "alice\r"))
		}); err != nil {
			t.Fatal(err)
		}
		waitPage(t, tab, "the "+lang+" waiting page", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, want[1]) })
		checkPage(t, tab, lang+"-wait")
		msg := e.mail.WaitForMessage(t, "alice@example.test", 10*time.Second)
		e.mail.DeleteAll(t)
		navigate(t, phone, lang+" phone", linkIn(t, msg.Text))
		waitPage(t, phone, "the "+lang+" confirm page", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, want[2]) })
		checkPage(t, phone, lang+"-verify-user")
		pickNumber(t, phone, shownNumber(t, tab))
		click(t, phone, "Confirm", `button.approve`)
		waitPage(t, phone, "the "+lang+" confirmation", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, want[3]) })
		waitPage(t, tab, "the app", 10*time.Second, func(p page) bool { return strings.Contains(p.Text, "path=/app/"+lang) })
	}
}
