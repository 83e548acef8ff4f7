package test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestThisWasntMeStopsTheSignInAndIsAudited(t *testing.T) {
	e := newEnv(t, defaultCaddyfile)
	b, phone := newBrowser(t), newBrowser(t)
	if r := b.post(e.URL("/.mailauth/login"), url.Values{"identity": {"alice"}}); r.Status != http.StatusSeeOther {
		t.Fatalf("login: %d", r.Status)
	}
	link := e.onSite(linkIn(t, e.mail.WaitForMessage(t, "alice@example.test", 10*time.Second).Text))
	if r := phone.get(link); !strings.Contains(r.Body, "This wasn&#39;t me") && !strings.Contains(r.Body, "This wasn't me") {
		t.Fatalf("the user's link page should offer This wasn't me:\n%s", r.Body)
	}
	r := phone.post(e.URL("/.mailauth/verify"), url.Values{"token": {tokenOf(link)}, "action": {"not_me"}})
	if r.Status != http.StatusOK || !strings.Contains(r.Body, "Sign-in stopped") {
		t.Fatalf("This wasn't me: %d\n%s", r.Status, r.Body)
	}
	if st := status(t, b, e); st != "denied" {
		t.Fatalf("after This wasn't me the login is %q, want denied", st)
	}
	if w := b.get(e.URL("/.mailauth/wait")); !strings.Contains(w.Body, "Sign-in stopped") || !strings.Contains(w.Body, "Start again") {
		t.Errorf("the waiting page should say the sign-in was stopped and offer to start again:\n%s", w.Body)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		found := false
		for _, ev := range e.caddy.auditEvents(t) {
			if ev["event"] == "denied" && ev["reason"] == "not me" && ev["decider"] == "alice@example.test" {
				found = true
			}
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no audit event denied with reason \"not me\" and alice as decider")
		}
	}
	if r := phone.post(e.URL("/.mailauth/verify"), url.Values{"token": {tokenOf(link)}, "match": {"10"}}); r.Status != http.StatusGone {
		t.Errorf("the link is spent after This wasn't me; confirming got %d", r.Status)
	}
}

// languagesCaddyfile words pages and approvers' mails in German; alice's
// directory entry asks for Turkish.
var languagesCaddyfile = strings.NewReplacer(
	"session_lifetime 1h", "session_lifetime 1h\n\t\tdefault_language de",
	"attr department IT", "attr department IT\n\t\t\t\tattr preferredLanguage tr-TR",
	`subject "Sign in to {{.App}}"`, "",
).Replace(defaultCaddyfile)

func TestEachUsersMailIsInTheirOwnLanguageElseTheDefault(t *testing.T) {
	e := newEnv(t, languagesCaddyfile)
	for who, want := range map[string][]string{
		"alice": {"Giriş yapın: ", "Girişe devam et", "Bu bağlantıyı", "dakika"},
		"bob":   {"Anmelden bei ", "Weiter zur Anmeldung", "Minuten"},
	} {
		b := newBrowser(t)
		if r := b.post(e.URL("/.mailauth/login"), url.Values{"identity": {who}}); r.Status != http.StatusSeeOther {
			t.Fatalf("login: %d", r.Status)
		}
		msg := e.mail.WaitForMessage(t, who+"@example.test", 10*time.Second)
		e.mail.DeleteAll(t)
		all := msg.Subject + "\n" + msg.Text + "\n" + msg.HTML
		for _, w := range want[:1] {
			if !strings.HasPrefix(msg.Subject, w) {
				t.Errorf("%s's subject should start %q: %q", who, w, msg.Subject)
			}
		}
		for _, w := range want[1:] {
			if !strings.Contains(strings.ToLower(all), strings.ToLower(w)) {
				t.Errorf("%s's mail should say %q:\n%s", who, w, msg.Text)
			}
		}
		// The page follows the browser, not the directory: b sends no
		// Accept-Language, so the site's default, German.
		if w := b.get(e.URL("/.mailauth/wait")); !strings.Contains(w.Body, `<html lang="de">`) || !strings.Contains(w.Body, "Sehen Sie in Ihr Postfach") {
			t.Errorf("the waiting page without Accept-Language should be in the default language, German:\n%s", w.Body)
		}
	}
}

func TestSendAgainAnswersAlikeForKnownAndUnknownNames(t *testing.T) {
	e := newEnv(t, defaultCaddyfile)
	var answers []*response
	var browsers []*browser
	for _, who := range []string{"alice", "mallory"} {
		b := newBrowser(t)
		if r := b.post(e.URL("/.mailauth/login"), url.Values{"identity": {who}}); r.Status != http.StatusSeeOther {
			t.Fatalf("login: %d", r.Status)
		}
		browsers = append(browsers, b)
	}
	for _, b := range browsers {
		if r := postWithToken(t, e, b, "/.mailauth/wait", "/.mailauth/resend", nil); r.Status != http.StatusSeeOther || !strings.HasPrefix(r.Location, "/.mailauth/wait?resend=") {
			t.Fatalf("send again within the cooldown should send the browser back to wait: %d %q", r.Status, r.Location)
		}
	}
	e.advanceClock(t, 61*time.Second)
	for _, b := range browsers {
		answers = append(answers, postWithToken(t, e, b, "/.mailauth/wait", "/.mailauth/resend", nil))
	}
	k, u := answers[0], answers[1]
	if k.Status != u.Status || k.Location != u.Location || len(k.Body) != len(u.Body) || k.Status != http.StatusSeeOther {
		t.Fatalf("send again answered a known and an unknown name differently: %d %q vs %d %q", k.Status, k.Location, u.Status, u.Location)
	}
	if wk, wu := browsers[0].get(e.URL("/.mailauth/wait")), browsers[1].get(e.URL("/.mailauth/wait")); samePage(wk.Body) != samePage(wu.Body) {
		t.Fatalf("after send again the waiting pages differ:\n%s\n---\n%s", wk.Body, wu.Body)
	}
	e.mail.WaitForMessage(t, "alice@example.test", 10*time.Second)
}
