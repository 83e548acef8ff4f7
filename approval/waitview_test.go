package approval

import (
	"context"
	"testing"
	"time"
)

// newHybridHarness is the harness with a second profile, "sensitive", of
// 30-minute links, that a policy picks for alice; carol keeps the site's
// default profile of 15-minute links.
func newHybridHarness(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t)
	sensitive := *h.site.Default
	sensitive.Name, sensitive.LinkExpiration = "sensitive", 30*time.Minute
	pol, err := NewPolicy("alice-only", &sensitive, "", "username", []string{"alice"})
	if err != nil {
		t.Fatal(err)
	}
	h.svc.cfg.Profiles[sensitive.Name] = &sensitive
	h.site = NewSite(h.site.Default, []*Policy{pol})
	return h
}

func TestWaitingPageShowsOneExpiryWhateverTheProfile(t *testing.T) {
	h := newHybridHarness(t)
	logins := map[string]*Started{"alice (30 min)": h.start(aliceInput), "carol (15 min)": h.start("carol"), "nobody": h.start("nobody")}
	want := h.clock.Now().Add(30 * time.Minute)
	for name, st := range logins {
		if !st.ExpiresAt.Equal(want) {
			t.Errorf("%s: Start says the login expires at %v, want the site's %v", name, st.ExpiresAt, want)
		}
	}
	for _, tc := range []struct {
		after time.Duration
		want  State
	}{
		{time.Minute, StatePending},
		// carol's link is dead now, but her page must look like nobody's.
		{20 * time.Minute, StatePending},
		{31 * time.Minute, StateExpired},
	} {
		h.clock.Advance(tc.after - h.clock.Now().Sub(want.Add(-30*time.Minute)))
		for name, st := range logins {
			v, err := h.svc.Watch(bg, h.site, st.Pending)
			if err != nil {
				t.Fatal(err)
			}
			if v.State != tc.want || !v.ExpiresAt.Equal(want) {
				t.Errorf("%v in: %s's waiting page shows %s until %v, want %s until %v", tc.after, name, v.State, v.ExpiresAt, tc.want, want)
			}
		}
	}
}

func TestLongPollDoesNotAnswerAtTheLinksOwnExpiry(t *testing.T) {
	h := newHybridHarness(t)
	carol := h.start("carol")
	h.clock.Advance(20 * time.Minute) // past carol's link, before the site's expiry
	ctx, cancel := context.WithTimeout(bg, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	v, err := h.svc.WatchChange(ctx, h.site, carol.Pending, StatePending)
	if err != nil {
		t.Fatal(err)
	}
	if v.State != StatePending || time.Since(start) < 250*time.Millisecond {
		t.Fatalf("the long poll answered %s after %v; it must hold, as it does for a name nobody has, until the site's expiry", v.State, time.Since(start))
	}
}

func TestLinkStillDiesAtItsProfilesExpiry(t *testing.T) {
	h := newHybridHarness(t)
	_, token := h.startKnownAs("carol", "carol@example.com")
	h.clock.Advance(testLinkLife + time.Second)
	if _, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA); err == nil {
		t.Fatal("carol's 15-minute link worked after 15 minutes because the waiting page says 30")
	}
}
