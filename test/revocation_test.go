package test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestLogoutKillsACopyThatWasRefreshedAfterTheLoggedOutOne: a thief's copy
// of the session cookie, kept alive by use, outlives the idle deadline of
// the cookie the owner logs out with. The revocation must outlast it: it
// lasts until the session's absolute expiry, even once later revocations
// prune the list.
func TestLogoutKillsACopyThatWasRefreshedAfterTheLoggedOutOne(t *testing.T) {
	// A 6 s idle timeout: a cookie is refreshed once less than 3 s are left.
	cfg := strings.Replace(defaultCaddyfile, "\t\tsession_lifetime 1h\n", "\t\tsession_lifetime 1h\n\t\tsession_idle_timeout 6s\n", 1)
	e := newEnv(t, cfg)
	owner := newBrowser(t)
	confirmAndComplete(t, e, owner, startLogin(t, e, owner, "alice", "alice@example.test"))
	signedIn := time.Now()

	// The thief copies the cookie and keeps using it; the owner does not.
	thief := newBrowser(t)
	site, _ := url.Parse(e.URL("/"))
	thief.jar.SetCookies(site, []*http.Cookie{{Name: "__Host-mailauth_session", Value: owner.cookie(e.URL("/"), "__Host-mailauth_session"), Path: "/", Secure: true}})
	stolen := thief.cookie(e.URL("/"), "__Host-mailauth_session")
	time.Sleep(time.Until(signedIn.Add(3500 * time.Millisecond)))
	if r := thief.get(e.URL("/app")); r.Status != http.StatusOK {
		t.Fatalf("the copied cookie should work before logout, got %d", r.Status)
	}
	if thief.cookie(e.URL("/"), "__Host-mailauth_session") == stolen {
		t.Fatal("the thief's use 3.5 s into a 6 s idle timeout should have refreshed the copy")
	}

	// The owner logs out with the cookie that was never refreshed.
	if r := postWithToken(t, e, owner, "/.mailauth/logout", "/.mailauth/logout", nil); r.Status != http.StatusOK {
		t.Fatalf("logout: %d", r.Status)
	}
	if r := thief.get(e.URL("/app")); r.Status != http.StatusFound {
		t.Fatalf("right after logout the refreshed copy must be refused, got %d", r.Status)
	}

	// Past the logged-out cookie's idle deadline (and inside the refreshed
	// copy's), another revocation rewrites the list, which drops the
	// entries that have expired.
	time.Sleep(time.Until(signedIn.Add(7 * time.Second)))
	if code, body := e.admin(t, http.MethodDelete, "/mailauth/sessions?user=bob"); code != http.StatusOK {
		t.Fatalf("revoking bob: %d %s", code, body)
	}
	if r := thief.get(e.URL("/app")); r.Status != http.StatusFound {
		t.Fatalf("the refreshed copy came back to life once the list was pruned (%d): a revocation must last until the session's absolute expiry", r.Status)
	}
}
