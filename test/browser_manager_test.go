package test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestBrowserManagerDecidesAndTheUserSeesItLive: alice's tab waits while
// her manager, on another device, approves (first round) or denies (second
// round); her tab moves on by itself either way.
func TestBrowserManagerDecidesAndTheUserSeesItLive(t *testing.T) {
	e := managerEnv(t, "15m")
	site := e.Server()
	browserCtx := launchChromium(t)

	for _, decision := range []string{"approve", "deny"} {
		alice, bob := newDevice(t, browserCtx), newDevice(t, browserCtx)
		navigate(t, alice, "alice", site+"/app/"+decision)
		waitPage(t, alice, "alice's login form", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "Username or email") })
		if err := withTimeout(alice, 5*time.Second, func(ctx context.Context) error {
			return chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("identity"), "alice"))
		}); err != nil {
			t.Fatal(err)
		}
		click(t, alice, "the login button", `form[action="/.mailauth/login"] button[type="submit"]`)
		waitPage(t, alice, "alice's waiting page", 5*time.Second, func(p page) bool {
			return strings.Contains(p.Text, "Waiting for approval") && strings.Contains(p.Text, "Support reference")
		})
		screenshot(t, alice, "manager-wait")

		msg := e.mail.WaitForMessage(t, "bob@example.test", 10*time.Second)
		e.mail.DeleteAll(t)
		links := decisionLink.FindAllString(msg.Text, -1)
		if len(links) != 2 {
			t.Fatalf("bob's mail should carry Approve and Deny links:\n%s", msg.Text)
		}
		link := links[0]
		if decision == "deny" {
			link = links[1]
		}
		navigate(t, bob, "bob", link)
		waitPage(t, bob, "bob's landing page with both buttons", 5*time.Second, func(p page) bool {
			return strings.Contains(p.Text, "Alice Example asks to sign in") && strings.Contains(p.Text, "Approve") && strings.Contains(p.Text, "Deny")
		})
		screenshot(t, bob, "manager-verify")
		if decision == "approve" {
			pickNumber(t, bob, shownNumber(t, alice))
		}
		click(t, bob, "the "+decision+" button", "button."+decision)
		decided := time.Now()
		want := map[string]string{"approve": "You approved", "deny": "You denied"}[decision]
		waitPage(t, bob, "bob's confirmation", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, want) })

		if decision == "approve" {
			waitPage(t, alice, "alice's tab to reach the app by itself", 10*time.Second, func(p page) bool {
				return p.URL == site+"/app/approve" && strings.Contains(p.Text, `upstream saw user="alice"`)
			})
		} else {
			waitPage(t, alice, "alice's tab to show the denied page by itself", 10*time.Second, func(p page) bool {
				return strings.Contains(p.Text, "Sign-in denied") && strings.Contains(p.Text, "Ask again")
			})
			screenshot(t, alice, "manager-denied")
		}
		if d := time.Since(decided); d > 2*time.Second {
			t.Errorf("alice's tab took %s to show the %s decision; it must within 2s", d.Round(time.Millisecond), decision)
		}
	}
}
