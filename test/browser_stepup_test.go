package test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestBrowserStepUpToAGrantAndTheManagerEndsIt walks the sensitive-routes
// flow in Chromium: carol, signed in by her own link, opens /finance and
// asks for access with a reason; dave approves for 8 hours on his device
// and carol's waiting tab moves on to /finance by itself. dave then signs
// in himself, opens his grants page and ends the grant, and carol's next
// request to /finance is refused while /home still works.
func TestBrowserStepUpToAGrantAndTheManagerEndsIt(t *testing.T) {
	s := newSensitiveSite(t, oneHostCaddyfile, false)
	site := s.finance
	browserCtx := launchChromium(t)
	carol, dave, phone := newDevice(t, browserCtx), newDevice(t, browserCtx), newDevice(t, browserCtx)

	// signIn signs who in on tab by the link in their mail, opened on
	// the phone.
	signIn := func(tab context.Context, who, address, start string) {
		t.Helper()
		navigate(t, tab, who, site+start)
		waitPage(t, tab, who+"'s login form", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "Username or email") })
		if err := withTimeout(tab, 5*time.Second, func(ctx context.Context) error {
			return chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("identity"), who))
		}); err != nil {
			t.Fatal(err)
		}
		click(t, tab, "the login button", `form[action="/.mailauth/login"] button[type="submit"]`)
		waitPage(t, tab, who+"'s waiting page", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "Check your email") })
		msg := s.mail.WaitForMessage(t, address, 10*time.Second)
		s.mail.DeleteAll(t)
		navigate(t, phone, who+"'s phone", linkIn(t, msg.Text))
		pickNumber(t, phone, shownNumber(t, tab))
		click(t, phone, "Confirm", `form[action="/.mailauth/verify"] button[type="submit"]`)
		waitPage(t, tab, who+"'s tab to move on to "+start, 10*time.Second, func(p page) bool { return p.URL == site+start })
	}

	signIn(carol, "carol", "carol@example.test", "/home")
	waitPage(t, carol, "carol's /home", 2*time.Second, func(p page) bool { return strings.Contains(p.Text, `upstream saw user="carol"`) })

	navigate(t, carol, "carol", site+"/finance/ledger")
	waitPage(t, carol, "the step-up page", 5*time.Second, func(p page) bool {
		return strings.Contains(p.Text, "This part needs your manager's approval") && strings.Contains(p.Text, "carol")
	})
	screenshot(t, carol, "stepup")
	if err := withTimeout(carol, 5*time.Second, func(ctx context.Context) error {
		return chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("reason"), "quarter-end review"))
	}); err != nil {
		t.Fatal(err)
	}
	click(t, carol, "Request access", `form[action="/.mailauth/stepup"] button[type="submit"]`)
	waitPage(t, carol, "carol's waiting page", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "Waiting for your manager") })

	msg := s.mail.WaitForMessage(t, "dave@example.test", 10*time.Second)
	s.mail.DeleteAll(t)
	if !strings.Contains(msg.Text, "quarter-end review") || !strings.Contains(msg.Text, "/finance/ledger") {
		t.Errorf("dave's mail should carry the reason and the page:\n%s", msg.Text)
	}
	links := decisionLink.FindAllString(msg.Text, -1)
	if len(links) != 2 {
		t.Fatalf("dave's mail should carry Approve and Deny:\n%s", msg.Text)
	}
	navigate(t, dave, "dave", links[0])
	waitPage(t, dave, "dave's approval page", 5*time.Second, func(p page) bool {
		return strings.Contains(p.Text, "asks for access") && strings.Contains(p.Text, "quarter-end review") && strings.Contains(p.Text, "8 hours")
	})
	pickNumber(t, dave, shownNumber(t, carol))
	click(t, dave, "8 hours", `input[name="duration"][value="8h"]`)
	screenshot(t, dave, "stepup-approve")
	click(t, dave, "Approve", "button.approve")
	waitPage(t, dave, "dave's confirmation", 5*time.Second, func(p page) bool {
		return strings.Contains(p.Text, "You approved access") && strings.Contains(p.Text, "for 8 hours")
	})
	waitPage(t, carol, "carol's tab to reach /finance/ledger by itself", 10*time.Second, func(p page) bool {
		return p.URL == site+"/finance/ledger" && strings.Contains(p.Text, `approver="dave@example.test"`)
	})

	// dave signs in through the gateway himself and ends the grant.
	signIn(dave, "dave", "dave@example.test", "/.mailauth/grants")
	waitPage(t, dave, "dave's grants page", 5*time.Second, func(p page) bool {
		return strings.Contains(p.Text, "Access you granted") && strings.Contains(p.Text, "carol") && strings.Contains(p.Text, "quarter-end review")
	})
	screenshot(t, dave, "grants")
	click(t, dave, "End now", `form[action="/.mailauth/grants"] button[type="submit"]`)
	waitPage(t, dave, "the grant ended", 5*time.Second, func(p page) bool {
		return strings.Contains(p.Text, "The grant has ended") && !strings.Contains(p.Text, "quarter-end review")
	})

	navigate(t, carol, "carol", site+"/finance/ledger")
	waitPage(t, carol, "carol's next /finance request to be refused", 5*time.Second, func(p page) bool {
		return strings.Contains(p.Text, "This part needs your manager's approval") && strings.Contains(p.Text, "ended at")
	})
	navigate(t, carol, "carol", site+"/home")
	waitPage(t, carol, "carol's /home", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, `upstream saw user="carol"`) })
}
