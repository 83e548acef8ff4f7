package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mailauth/caddy-mailauth/test/limitedsmtp"
)

// mailDelayed is the status's mail_delayed for b's login.
func mailDelayed(t *testing.T, b *browser, e *env) (state string, delayed bool) {
	t.Helper()
	r := b.get(e.URL("/.mailauth/status"))
	var s struct {
		State       string `json:"state"`
		MailDelayed *bool  `json:"mail_delayed"`
	}
	if err := json.Unmarshal([]byte(r.Body), &s); err != nil || s.MailDelayed == nil {
		t.Fatalf("status (%d) is not JSON with mail_delayed: %s", r.Status, r.Body)
	}
	return s.State, *s.MailDelayed
}

// TestWaitingPageSaysMailIsDelayedToKnownAndUnknownUsersAlike: the relay
// takes one mail a minute, so bob's mail waits behind alice's. After a few
// seconds bob's waiting page says mail is delayed, and so does the page of
// someone who does not exist (who has no mail at all): the signal is the
// outbox being behind, never the user's own mail.
func TestWaitingPageSaysMailIsDelayedToKnownAndUnknownUsersAlike(t *testing.T) {
	relay, err := limitedsmtp.Start(limitedsmtp.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	server := strings.Replace(plainMailServer("relay", relay.Port), "\t\t\ttimeout 2s\n", "\t\t\ttimeout 2s\n\t\t\trate 1/1m\n", 1)
	e := newMailEnv(t, nil, server, "relay", "15m")

	alice, bob, nobody := newBrowser(t), newBrowser(t), newBrowser(t)
	postLogin(t, e, alice, "alice")
	deadline := time.Now().Add(10 * time.Second)
	for relay.Stats().Accepted < 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if relay.Stats().Accepted != 1 {
		t.Fatal("alice's mail did not reach the relay within 10s")
	}
	started := time.Now()
	postLogin(t, e, bob, "bob")
	postLogin(t, e, nobody, "nobody")

	for name, b := range map[string]*browser{"bob": bob, "nobody": nobody} {
		if state, delayed := mailDelayed(t, b, e); state != "pending" || delayed {
			t.Errorf("%s right after the login: state %s, mail_delayed %v; want pending and not (yet) delayed", name, state, delayed)
		}
	}
	time.Sleep(time.Until(started.Add(5500 * time.Millisecond)))
	for name, b := range map[string]*browser{"bob": bob, "nobody": nobody} {
		if state, delayed := mailDelayed(t, b, e); state != "pending" || !delayed {
			t.Errorf("%s after 5.5s with the relay at its rate: state %s, mail_delayed %v; want pending and delayed", name, state, delayed)
		}
	}
	if got := relay.Stats().Accepted; got != 1 {
		t.Errorf("the relay got %d mails within its 1/1m rate; want 1", got)
	}
	page := bob.get(e.URL("/.mailauth/wait"))
	if page.Status != http.StatusOK || !strings.Contains(page.Body, `id="mail-delayed"`) {
		t.Errorf("waiting page (%d) has no mail-delayed notice for the script to show:\n%s", page.Status, page.Body)
	}
	if lines := mailerLines(e.caddy, "mail failed"); len(lines) > 0 {
		t.Errorf("held mail was counted as failed: %s", fmt.Sprint(lines))
	}
}

// TestQuietSiteNeverSaysMailIsDelayed: with mail leaving at once, a login
// that waits longer than the delay threshold (nobody opened the link) is
// not told its mail is delayed.
func TestQuietSiteNeverSaysMailIsDelayed(t *testing.T) {
	relay, err := limitedsmtp.Start(limitedsmtp.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	e := newMailEnv(t, nil, plainMailServer("relay", relay.Port), "relay", "15m")
	bob, nobody := newBrowser(t), newBrowser(t)
	postLogin(t, e, bob, "bob")
	postLogin(t, e, nobody, "nobody")
	time.Sleep(5500 * time.Millisecond)
	for name, b := range map[string]*browser{"bob": bob, "nobody": nobody} {
		if state, delayed := mailDelayed(t, b, e); state != "pending" || delayed {
			t.Errorf("%s after 5.5s on a quiet site: state %s, mail_delayed %v; want pending and not delayed", name, state, delayed)
		}
	}
	if got := relay.Stats().Accepted; got != 1 {
		t.Errorf("relay got %d mails; want bob's 1", got)
	}
}
