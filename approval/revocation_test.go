package approval

import (
	"errors"
	"testing"
	"time"
)

// signIn runs alice's login to the end and returns her session cookie.
func (h *harness) signIn() *Completed {
	h.t.Helper()
	st, token := h.startKnown()
	if _, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA); err != nil {
		h.t.Fatal(err)
	}
	c, err := h.svc.Complete(bg, st.Pending, testIP, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

func TestLogoutKillsTheSessionEvenForACopiedCookie(t *testing.T) {
	h := newHarness(t)
	c := h.signIn()
	var s Session
	if err := h.svc.VerifySession(c.Cookie, &s); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Logout(bg, &s, testApp, testIP, testUA); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.VerifySession(c.Cookie, &s); !errors.Is(err, ErrSessionRevoked) {
		t.Fatalf("a copy of the cookie after logout = %v, want ErrSessionRevoked", err)
	}
	other := h.signIn()
	if err := h.svc.VerifySession(other.Cookie, &s); err != nil {
		t.Fatalf("a fresh login (new session id) must work: %v", err)
	}
}

func TestRevokingAUserReachesAnotherInstanceOnTheSameStore(t *testing.T) {
	h := newHarness(t)
	c := h.signIn()
	other, err := NewService(h.svc.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var s Session
	if err := other.VerifySession(c.Cookie, &s); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.RevokeUser(bg, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.VerifySession(c.Cookie, &s); !errors.Is(err, ErrSessionRevoked) {
		t.Fatalf("on the revoking instance the session must die at once, got %v", err)
	}
	// The other instance hears of it on the store's notifier, well
	// before its periodic refresh.
	deadline := time.Now().Add(2 * time.Second)
	for other.VerifySession(c.Cookie, &s) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the other instance still accepts the session 2 s after the revocation")
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.clock.Advance(time.Second)
	if err := h.svc.VerifySession(h.signIn().Cookie, &s); err != nil {
		t.Fatalf("a session issued after the revocation must work: %v", err)
	}
}

func TestIdleSessionsExpireAndUseSlidesTheDeadline(t *testing.T) {
	h := newHarnessTuned(t, nil, nil, func(c *Config) { c.IdleTimeout = time.Hour })
	c := h.signIn()
	if got := time.Unix(c.Session.ExpiresAt, 0).Sub(h.clock.Now()); got != time.Hour {
		t.Fatalf("a new session should expire after the idle timeout, got %s", got)
	}
	var s Session
	h.clock.Advance(10 * time.Minute)
	if err := h.svc.VerifySession(c.Cookie, &s); err != nil || h.svc.RefreshSession(&s) != "" {
		t.Fatalf("early on no refresh is due (err %v)", err)
	}
	h.clock.Advance(25 * time.Minute)
	if err := h.svc.VerifySession(c.Cookie, &s); err != nil {
		t.Fatal(err)
	}
	fresh := h.svc.RefreshSession(&s)
	if fresh == "" || time.Unix(s.ExpiresAt, 0).Sub(h.clock.Now()) != time.Hour {
		t.Fatalf("past half the idle timeout, use should slide the deadline a full hour; got %q, %v", fresh, time.Unix(s.ExpiresAt, 0))
	}
	h.clock.Advance(61 * time.Minute)
	if err := h.svc.VerifySession(fresh, &s); !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("an hour idle must end the session, got %v", err)
	}
}

func TestSlidingNeverPassesTheSessionLifetime(t *testing.T) {
	h := newHarnessTuned(t, nil, nil, func(c *Config) { c.IdleTimeout = 40 * time.Minute }) // lifetime is testLifetime
	c := h.signIn()
	cookie := c.Cookie
	var s Session
	for range 100 {
		h.clock.Advance(30 * time.Minute)
		if err := h.svc.VerifySession(cookie, &s); err != nil {
			if !errors.Is(err, ErrSessionExpired) {
				t.Fatal(err)
			}
			break
		}
		if fresh := h.svc.RefreshSession(&s); fresh != "" {
			cookie = fresh
		}
		if time.Unix(s.ExpiresAt, 0).After(time.Unix(c.Session.IssuedAt, 0).Add(testLifetime)) {
			t.Fatalf("a refreshed session outlives session_lifetime: %v", time.Unix(s.ExpiresAt, 0))
		}
	}
	if err := h.svc.VerifySession(cookie, &s); !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("a session kept busy must still end at its lifetime, got %v", err)
	}
}

// TestLinkWorksOneSecondBeforeExpiryAndNotOneAfter pins the boundary with
// the injected clock.
func TestLinkWorksOneSecondBeforeExpiryAndNotOneAfter(t *testing.T) {
	h := newHarness(t)
	st, token := h.startKnown()
	h.clock.Advance(testLinkLife - time.Second)
	if _, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA); err != nil {
		t.Fatalf("at TTL-1s the link must work: %v", err)
	}
	if w, _ := h.svc.Watch(bg, h.site, st.Pending); w.State != StateApproved {
		t.Fatalf("state %q", w.State)
	}
	st2, token2 := h.startKnown()
	h.clock.Advance(testLinkLife + time.Second)
	if _, err := h.svc.ConfirmLink(bg, token2, "", testIP, testUA); !errors.Is(err, ErrLoginExpired) {
		t.Fatalf("at TTL+1s the link must fail as expired, got %v", err)
	}
	if w, _ := h.svc.Watch(bg, h.site, st2.Pending); w.State != StateExpired {
		t.Fatalf("at TTL+1s the waiting page must say expired, got %q", w.State)
	}
}

func TestRevocationsLostByTheStoreAreRestoredFromMemory(t *testing.T) {
	h := newHarness(t)
	c := h.signIn()
	if err := h.svc.RevokeUser(bg, "alice"); err != nil {
		t.Fatal(err)
	}
	// A Redis restarted without persistence: the key is simply gone.
	if err := h.store.Delete(bg, revocationLists.key("")); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.loadRevocations(bg); err != nil {
		t.Fatal(err)
	}
	var s Session
	if err := h.svc.VerifySession(c.Cookie, &s); !errors.Is(err, ErrSessionRevoked) {
		t.Fatalf("after the store lost the revocations, the revoked session verifies: %v", err)
	}
	fresh, err := NewService(h.svc.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if err := fresh.VerifySession(c.Cookie, &s); !errors.Is(err, ErrSessionRevoked) {
		t.Fatalf("an instance started afterwards accepts the revoked session (the revocations were not written back): %v", err)
	}
}

func TestLogoutRevocationOutlivesTheIdleDeadlineOfTheCookieLoggedOutWith(t *testing.T) {
	h := newHarnessTuned(t, nil, nil, func(c *Config) { c.IdleTimeout = time.Hour })
	c := h.signIn()
	var copied Session
	h.clock.Advance(35 * time.Minute)
	if err := h.svc.VerifySession(c.Cookie, &copied); err != nil {
		t.Fatal(err)
	}
	refreshed := h.svc.RefreshSession(&copied)
	if refreshed == "" {
		t.Fatal("35 minutes into a 1 h idle timeout a copy in use should be refreshed")
	}
	var s Session
	if err := h.svc.VerifySession(c.Cookie, &s); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Logout(bg, &s, testApp, testIP, testUA); err != nil {
		t.Fatal(err)
	}
	// Past the logged-out cookie's idle deadline, another revocation
	// prunes the list.
	h.clock.Advance(30 * time.Minute)
	if err := h.svc.RevokeUser(bg, "carol"); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.VerifySession(refreshed, &s); !errors.Is(err, ErrSessionRevoked) {
		t.Fatalf("a copy refreshed before logout, used after the logged-out cookie's idle deadline = %v, want ErrSessionRevoked", err)
	}
}

// serviceOn is another service on h's store, as another instance (or the
// next config of this one) would run, through a faulty wrapper.
func (h *harness) serviceOn(t *testing.T, fs *faultyStore, revs *Revocations) *Service {
	t.Helper()
	cfg := h.svc.cfg
	cfg.Store, cfg.Revocations = fs, revs
	svc, err := NewService(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	return svc
}

func TestRevocationsUnreadAtStartRefuseEverySessionUntilRead(t *testing.T) {
	h := newHarness(t)
	revoked, valid := h.signIn(), h.signIn()
	var s Session
	if err := h.svc.VerifySession(revoked.Cookie, &s); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Logout(bg, &s, testApp, testIP, testUA); err != nil {
		t.Fatal(err)
	}

	fs := newFaultyStore(h.store)
	fs.failNext("Get revocations", 1_000_000)
	svc := h.serviceOn(t, fs, nil)
	if svc.RevocationsRead() {
		t.Fatal("a service that could not read the revocations says it has")
	}
	for name, c := range map[string]*Completed{"revoked": revoked, "valid": valid} {
		if err := svc.VerifySession(c.Cookie, &s); !errors.Is(err, ErrRevocationsUnread) {
			t.Errorf("the %s session before the revocations are read = %v, want ErrRevocationsUnread (fail closed)", name, err)
		}
	}

	fs.failNext("Get revocations", 0)
	deadline := time.Now().Add(5 * RevocationRetry)
	for !svc.RevocationsRead() {
		if time.Now().After(deadline) {
			t.Fatalf("the revocations were not read within %v of the store answering", 5*RevocationRetry)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := svc.VerifySession(revoked.Cookie, &s); !errors.Is(err, ErrSessionRevoked) {
		t.Errorf("once read, the logged-out session = %v, want ErrSessionRevoked", err)
	}
	if err := svc.VerifySession(valid.Cookie, &s); err != nil {
		t.Errorf("once read, the valid session = %v, want it accepted", err)
	}
}

func TestANewConfigStartsFromTheRevocationsTheProcessRead(t *testing.T) {
	h := newHarness(t)
	revs := new(Revocations)
	old := h.serviceOn(t, newFaultyStore(h.store), revs)
	revoked, valid := h.signIn(), h.signIn()
	var s Session
	if err := old.VerifySession(revoked.Cookie, &s); err != nil {
		t.Fatal(err)
	}
	if err := old.RevokeSession(bg, &s); err != nil {
		t.Fatal(err)
	}
	// The store stops answering; the config is reloaded.
	fs := newFaultyStore(h.store)
	fs.failNext("Get revocations", 1_000_000)
	next := h.serviceOn(t, fs, revs)
	if !next.RevocationsRead() {
		t.Fatal("a service handed the revocations the process read must not wait for the store")
	}
	if err := next.VerifySession(revoked.Cookie, &s); !errors.Is(err, ErrSessionRevoked) {
		t.Errorf("the revoked session after the reload = %v, want ErrSessionRevoked", err)
	}
	if err := next.VerifySession(valid.Cookie, &s); err != nil {
		t.Errorf("a valid session after the reload = %v, want it accepted", err)
	}
}
