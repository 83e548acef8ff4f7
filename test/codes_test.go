package test

import (
	"net/http"
	"net/url"
	"slices"
	"testing"
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
