package test

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
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

// sessionKeyed is defaultCaddyfile with a configured session key, so that
// loading the config needs no store.
var sessionKeyed = strings.Replace(defaultCaddyfile, "\t\tsession_lifetime 1h\n", "\t\tsession_lifetime 1h\n\t\tsession_keys "+base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))+"\n", 1)

// revokedAndValid signs bob in and out, and alice in, on e; it returns
// alice's browser and a copy of bob's logged-out session cookie.
func revokedAndValid(t *testing.T, e *env) (alice *browser, bobCookie string) {
	t.Helper()
	alice, bob := newBrowser(t), newBrowser(t)
	confirmAndComplete(t, e, alice, startLogin(t, e, alice, "alice", "alice@example.test"))
	confirmAndComplete(t, e, bob, startLogin(t, e, bob, "bob", "bob@example.test"))
	bobCookie = bob.cookie(e.URL("/"), "__Host-mailauth_session")
	if r := postWithToken(t, e, bob, "/.mailauth/logout", "/.mailauth/logout", nil); r.Status != http.StatusOK {
		t.Fatalf("bob's logout: %d", r.Status)
	}
	return alice, bobCookie
}

// TestRevocationsUnreadableAtStartFailClosedUntilRead: Caddy starts while
// the revocation list cannot be read. Until it is, sign-in answers 503 and
// no session is let in (a logged-out one might be among them); once the
// list reads, valid sessions work again, without a new sign-in, and the
// logged-out one stays out.
func TestRevocationsUnreadableAtStartFailClosedUntilRead(t *testing.T) {
	s := newShared(t, defaultCaddyfile, 1)
	e := s.nodes[0]
	alice, bobCookie := revokedAndValid(t, e)
	e.caddy.Stop(t)

	rdb := redis.NewClient(&redis.Options{Addr: s.redis.Addr()})
	defer rdb.Close()
	const key = "mailauth:d:revocations"
	saved, err := rdb.Get(t.Context(), key).Bytes()
	if err != nil {
		t.Fatalf("reading the revocation list from Redis: %v", err)
	}
	if err := rdb.Set(t.Context(), key, "not a revocation list", 0).Err(); err != nil {
		t.Fatal(err)
	}
	e.caddy = startCaddy(t, e.Caddyfile, e.Port)

	if r := newBrowser(t).get(e.URL("/.mailauth/login")); r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
		t.Fatalf("the login page while the revocations are unread: %d Retry-After=%q; want 503", r.Status, r.Header.Get("Retry-After"))
	}
	if r := newBrowser(t).post(e.URL("/.mailauth/login"), url.Values{"identity": {"alice"}}); r.Status != http.StatusServiceUnavailable {
		t.Fatalf("starting a login while the revocations are unread: %d, want 503", r.Status)
	}
	if code := appWithSession(t, e, bobCookie); code == http.StatusOK {
		t.Fatal("a logged-out session was let in while the revocations could not be read")
	}
	if r := alice.get(e.URL("/app")); r.Status == http.StatusOK {
		t.Fatalf("a session was let in while the revocations could not be read: %s", r.Body)
	}

	if err := rdb.Set(t.Context(), key, saved, 0).Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for newBrowser(t).get(e.URL("/.mailauth/login")).Status != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("sign-in still answers 503 10 s after the revocations became readable")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := alice.get(e.URL("/app")); r.Status != http.StatusOK || !strings.Contains(r.Body, `user="alice"`) {
		t.Fatalf("alice's session should work again once the list is read: %d %s", r.Status, r.Body)
	}
	if code := appWithSession(t, e, bobCookie); code != http.StatusFound {
		t.Fatalf("bob's logged-out session once the list is read: %d, want the 302 to login", code)
	}
}

// TestReloadWhileRedisIsDownKeepsRefusingLoggedOutSessions: a config
// reloaded while Redis is down cannot read the revocation list; it starts
// from the one the config before it kept, so valid sessions keep working
// through the outage and a logged-out one stays out.
func TestReloadWhileRedisIsDownKeepsRefusingLoggedOutSessions(t *testing.T) {
	s := newShared(t, sessionKeyed, 1)
	e := s.nodes[0]
	alice, bobCookie := revokedAndValid(t, e)

	s.redis.Stop()
	changed := strings.Replace(e.Caddyfile, "session_lifetime 1h", "session_lifetime 2h", 1)
	req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/load", e.AdminPort), strings.NewReader(changed))
	req.Header.Set("Content-Type", "text/caddyfile")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("reload during the outage refused: %d %s", resp.StatusCode, msg)
	}
	if code := appWithSession(t, e, bobCookie); code != http.StatusFound {
		t.Fatalf("after a reload during the outage, bob's logged-out session got %d; want the 302 to login", code)
	}
	if r := alice.get(e.URL("/app")); r.Status != http.StatusOK || !strings.Contains(r.Body, `user="alice"`) {
		t.Fatalf("alice's session should keep working through the outage and the reload: %d %s", r.Status, r.Body)
	}
}
