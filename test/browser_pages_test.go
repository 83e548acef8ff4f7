package test

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// pagesCaddyfile is a branded deployment with both profile types:
// localhost confirms users' own links and sends /finance/* to their
// manager; mgr.localhost asks the manager for every sign-in. alice and
// carl have bob as their sponsor. @LOGO@ is the brand's logo file.
const pagesCaddyfile = `{
	admin 127.0.0.1:%[2]d
	auto_https off
	mailauth {
		store badger %[4]s
		session_lifetime 8h
		session_idle_timeout 8h
		# alice starts again, and again, on purpose.
		rate_limit {
			login_per_identity 50/15m
		}
		brand {
			name "Acme Access"
			logo @LOGO@
			color "#0b5fff"
			support it-help@acme.example
		}
		mail_server local {
			host 127.0.0.1
			port %[3]d
			tls none
			from "Acme Access <gateway@example.test>"
		}
		directory staff local {
			user alice {
				name "Alice Example"
				email alice@example.test
				sponsor bob@example.test
			}
			user bob {
				name "Bob Manager"
				email bob@example.test
			}
			user carl {
				name "Carl Contractor"
				email carl@example.test
				sponsor bob@example.test
			}
		}
		profile daily {
			type user
			server http://localhost:%[1]d
			fallback staff
		}
		profile sensitive {
			type manager
			server http://localhost:%[1]d
			link_expiration 30m
			fallback staff
			grant_durations 1h 8h end_of_day
		}
	}
}

http://localhost:%[1]d {
	bind 127.0.0.1
	route /finance/* {
		mailauth {
			default_profile sensitive
		}
		reverse_proxy %[5]s {
			header_up X-Remote-User {http.auth.user.id}
		}
	}
	route {
		mailauth {
			default_profile daily
		}
		reverse_proxy %[5]s {
			header_up X-Remote-User {http.auth.user.id}
			header_up X-Remote-Email {http.auth.user.email}
		}
	}
}

http://mgr.localhost:%[1]d {
	bind 127.0.0.1
	mailauth {
		default_profile sensitive
	}
	reverse_proxy %[5]s {
		header_up X-Remote-User {http.auth.user.id}
		header_up X-Remote-Email {http.auth.user.email}
	}
}
`

const acmeLogo = `<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64"><rect width="64" height="64" rx="14" fill="#0b5fff"/><path d="M18 46 32 16l14 30h-8l-6-14-6 14z" fill="#fff"/></svg>`

func newPagesEnv(t *testing.T) *env {
	t.Helper()
	logo := filepath.Join(t.TempDir(), "logo.svg")
	if err := os.WriteFile(logo, []byte(acmeLogo), 0o600); err != nil {
		t.Fatal(err)
	}
	return newEnv(t, strings.ReplaceAll(pagesCaddyfile, "@LOGO@", logo))
}

// eval runs a script in the tab and returns its value.
func eval[T any](t *testing.T, tab context.Context, what, script string) T {
	t.Helper()
	var v T
	if err := withTimeout(tab, 5*time.Second, func(ctx context.Context) error {
		var err error
		v, err = chromedp.Run(ctx, chromedp.Evaluate[T](script))
		return err
	}); err != nil {
		t.Fatalf("reading %s: %v", what, err)
	}
	return v
}

// keys types on the keyboard of the tab, into whatever has the focus.
func keys(t *testing.T, tab context.Context, what, k string) {
	t.Helper()
	if err := withTimeout(tab, 5*time.Second, func(ctx context.Context) error {
		return chromedp.Do(ctx, chromedp.KeyEvent(k))
	}); err != nil {
		t.Fatalf("pressing %s: %v", what, err)
	}
}

// tabTo presses Tab until the focused element matches the CSS selector,
// as a keyboard user moves through the page.
func tabTo(t *testing.T, tab context.Context, selector string) {
	t.Helper()
	for range 30 {
		if eval[bool](t, tab, "the focus", `document.activeElement && document.activeElement.matches(`+jsString(selector)+`)`) {
			return
		}
		keys(t, tab, "Tab", kb.Tab)
	}
	t.Fatalf("30 presses of Tab never reached %s; the focus is on %s", selector, eval[string](t, tab, "the focus", `document.activeElement.outerHTML.slice(0, 200)`))
}

func jsString(s string) string { return fmt.Sprintf("%q", s) }

// startLoginIn types who into the login form of host in the tab with the
// keyboard alone and waits for the waiting page.
func startLoginIn(t *testing.T, tab context.Context, base, path, who, waitingText string) {
	t.Helper()
	navigate(t, tab, who, base+path)
	waitPage(t, tab, who+"'s login form", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "Username or email") })
	// The field has the focus on arrival (autofocus), so typing and Enter
	// are all it takes.
	if eval[string](t, tab, "the focus", `document.activeElement.id`) != "identity" {
		t.Fatal("the login form should put the focus on its field")
	}
	typed := who + "\r"
	if eval[string](t, tab, "the prefilled name", `document.getElementById("identity").value`) == who {
		typed = "\r" // start again brings back what was typed
	} else {
		eval[bool](t, tab, "the field", `(document.getElementById("identity").value = "", true)`)
	}
	keys(t, tab, "the user name and Enter", typed)
	waitPage(t, tab, who+"'s waiting page", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, waitingText) })
}

// confirmByKeyboard confirms a user's own link on the tab with the
// keyboard alone: Tab into the number group, arrow keys to the number,
// Tab to Confirm, Enter.
func confirmByKeyboard(t *testing.T, tab context.Context, number string) {
	t.Helper()
	tabTo(t, tab, `input[name="match"]`)
	for range 5 {
		if eval[string](t, tab, "the picked number", `(document.querySelector('input[name="match"]:checked') || {}).value || ""`) == number {
			break
		}
		keys(t, tab, "the down arrow", kb.ArrowDown)
	}
	if got := eval[string](t, tab, "the picked number", `(document.querySelector('input[name="match"]:checked') || {}).value || ""`); got != number {
		t.Fatalf("the arrow keys should move through the numbers as one radio group; %s is picked, want %s", got, number)
	}
	tabTo(t, tab, `button.approve`)
	keys(t, tab, "Enter", "\r")
}

// mailLink waits for the next mail to address and returns its link (the
// Approve link of a manager's mail) and the message.
func mailLink(t *testing.T, e *env, address string) string {
	t.Helper()
	msg := e.mail.WaitForMessage(t, address, 10*time.Second)
	e.mail.DeleteAll(t)
	return linkIn(t, msg.Text)
}

// TestBrowserEveryPageIsAccessibleAndFits walks every page of both
// flows in Chromium, each checked by checkPage (axe-core WCAG 2.2 AA in
// light and dark, no overflow at 360 and 1280 px, screenshots), with the
// defects of the first walk-through pinned: the manager's Approve comes
// first and full width, a wrong number or a replaced request says so and
// offers a way on, This wasn't me stops a sign-in, and the waiting page
// shows what was typed, hides Continue while pending, shows times in the
// browser's time zone and stills its animation for reduced motion.
func TestBrowserEveryPageIsAccessibleAndFits(t *testing.T) {
	e := newPagesEnv(t)
	site, mgr := e.Server(), fmt.Sprintf("http://mgr.localhost:%d", e.Port)
	browserCtx := launchChromiumFor(t, 4*time.Minute)
	alice, phone, bob, carl := newDevice(t, browserCtx), newDevice(t, browserCtx), newDevice(t, browserCtx), newDevice(t, browserCtx)
	if err := withTimeout(alice, 5*time.Second, func(ctx context.Context) error {
		_, err := chromedp.Call(ctx, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: "Asia/Tokyo"})
		return err
	}); err != nil {
		t.Fatal(err)
	}

	// Sign-in by her own link, with the keyboard alone.
	navigate(t, alice, "alice", site+"/app")
	waitPage(t, alice, "the login form", 5*time.Second, func(p page) bool {
		return strings.Contains(p.Text, "Username or email") && strings.Contains(p.Text, "Acme Access")
	})
	checkPage(t, alice, "login")
	startLoginIn(t, alice, site, "/app", "alice", "Check your email")
	if got := eval[string](t, alice, "what was typed", `document.getElementById("typed").textContent`); got != "alice" {
		t.Errorf("the waiting page should show what was typed (alice), shows %q", got)
	}
	if eval[bool](t, alice, "Continue", `document.getElementById("complete").offsetParent !== null`) {
		t.Error("Continue should be hidden while the sign-in is pending")
	}
	utc := eval[string](t, alice, "the expiry", `document.querySelector(".expiry time").getAttribute("datetime")`)
	at, err := time.Parse(time.RFC3339, utc)
	if err != nil {
		t.Fatalf("the expiry's datetime %q: %v", utc, err)
	}
	if shown, want := eval[string](t, alice, "the expiry", `document.querySelector(".expiry time").textContent`), at.In(time.FixedZone("JST", 9*3600)).Format("15:04"); !strings.Contains(shown, want) {
		t.Errorf("in Tokyo the waiting page should show the expiry as %s local time, shows %q", want, shown)
	}
	if a := eval[string](t, alice, "the animation", `getComputedStyle(document.querySelector(".pulse")).animationName`); a != "pulse" {
		t.Errorf("the waiting indicator should pulse by default, animation %q", a)
	}
	setMedia(t, alice, map[string]string{"prefers-reduced-motion": "reduce"})
	if a := eval[string](t, alice, "the animation", `getComputedStyle(document.querySelector(".pulse")).animationName`); a != "none" {
		t.Errorf("with prefers-reduced-motion the waiting indicator must not move, animation %q", a)
	}
	checkPage(t, alice, "wait")
	keepScreenshot(t, "wait-360-light", "wait.png")
	number := shownNumber(t, alice)
	userMail := e.mail.WaitForMessage(t, "alice@example.test", 10*time.Second)
	e.mail.DeleteAll(t)
	checkMail(t, phone, userMail.HTML, userMail.Text, "user-mail")
	link := linkIn(t, userMail.Text)

	navigate(t, phone, "the phone", link)
	waitPage(t, phone, "the confirm page", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "Confirm sign-in") })
	if n := eval[int](t, phone, "the choices", `new Set([...document.querySelectorAll(".numbers .choice")].map(e => Math.round(e.getBoundingClientRect().top))).size`); n != 1 {
		t.Errorf("the three numbers should share one row, they take %d", n)
	}
	if !strings.Contains(eval[string](t, phone, "the choices", `document.querySelector("fieldset.choices").innerText`), "None of these") {
		t.Error("the number group should offer None of these")
	}
	checkPage(t, phone, "verify-user")
	confirmByKeyboard(t, phone, number)
	waitPage(t, phone, "the confirmation", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "Sign-in confirmed") })
	checkPage(t, phone, "confirmed")
	waitPage(t, alice, "alice at the app", 10*time.Second, func(p page) bool { return strings.Contains(p.Text, `upstream saw user="alice"`) })

	navigate(t, phone, "the phone", link)
	waitPage(t, phone, "the used link", 5*time.Second, func(p page) bool {
		return strings.Contains(p.Text, "Link not valid") && strings.Contains(p.Text, "Start a new sign-in")
	})
	checkPage(t, phone, "link-used")

	navigate(t, alice, "alice", site+"/.mailauth/session")
	waitPage(t, alice, "the session page", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "Your access") })
	checkPage(t, alice, "session")
	navigate(t, alice, "alice", site+"/.mailauth/logout")
	waitPage(t, alice, "the sign-out page", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "Sign out") })
	checkPage(t, alice, "logout")
	click(t, alice, "Sign out", `form[action="/.mailauth/logout"] button`)
	waitPage(t, alice, "signed out", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "You are signed out") })
	checkPage(t, alice, "signed-out")

	// Start again: the form comes back filled in, the older mail's link
	// says it was replaced, and a wrong number says so on both screens.
	startLoginIn(t, alice, site, "/app", "alice", "Check your email")
	old := mailLink(t, e, "alice@example.test")
	click(t, alice, "Not right? Start again", `.typed a`)
	waitPage(t, alice, "the login form again", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "Username or email") })
	if v := eval[string](t, alice, "the prefilled name", `document.getElementById("identity").value`); v != "alice" {
		t.Errorf("start again should bring back what was typed, the field holds %q", v)
	}
	click(t, alice, "Email me a sign-in link", `form[action="/.mailauth/login"] button`)
	waitPage(t, alice, "the new waiting page", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "Check your email") })
	fresh := mailLink(t, e, "alice@example.test")
	navigate(t, phone, "the phone", old)
	waitPage(t, phone, "the replaced link", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "newer one replaced") })
	checkPage(t, phone, "link-replaced")
	navigate(t, phone, "the phone", fresh)
	waitPage(t, phone, "the confirm page", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "Confirm sign-in") })
	click(t, phone, "None of these", `input[name="match"][value="none"] + span`)
	click(t, phone, "Confirm", `button.approve`)
	waitPage(t, phone, "the none-of-these page", 5*time.Second, func(p page) bool {
		return strings.Contains(p.Text, "Number did not match") && strings.Contains(p.Text, "Start again")
	})
	checkPage(t, phone, "wrong-number")
	waitPage(t, alice, "alice's page to say the number did not match", 10*time.Second, func(p page) bool {
		return strings.Contains(p.Text, "The number did not match") && strings.Contains(p.Text, "Start again")
	})
	checkPage(t, alice, "wait-wrong-number")

	// This wasn't me.
	click(t, alice, "Start again", `a.button`)
	waitPage(t, alice, "the login form again", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "Username or email") })
	click(t, alice, "Email me a sign-in link", `form[action="/.mailauth/login"] button`)
	waitPage(t, alice, "the new waiting page", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "Check your email") })
	navigate(t, phone, "the phone", mailLink(t, e, "alice@example.test"))
	waitPage(t, phone, "the confirm page", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "This wasn't me") })
	click(t, phone, "This wasn't me", `#not-me`)
	waitPage(t, phone, "the stopped page", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "Sign-in stopped") })
	checkPage(t, phone, "not-me")
	waitPage(t, alice, "alice's page to say the sign-in was stopped", 10*time.Second, func(p page) bool { return strings.Contains(p.Text, "Sign-in stopped") })
	checkPage(t, alice, "wait-not-me")
	e.caddy.waitForAudit(t, "replaced", 5*time.Second)

	// Manager Approval: carl asks on mgr.localhost, bob approves.
	startLoginIn(t, carl, mgr, "/app", "carl", "Waiting for approval")
	checkPage(t, carl, "wait-manager")
	msg := e.mail.WaitForMessage(t, "bob@example.test", 10*time.Second)
	e.mail.DeleteAll(t)
	checkMail(t, bob, msg.HTML, msg.Text, "manager-mail")
	keepScreenshot(t, "manager-mail-360-light", "manager-mail.png")
	links := decisionLink.FindAllString(msg.Text, -1)
	if len(links) != 2 {
		t.Fatalf("bob's mail should carry Approve and Deny:\n%s", msg.Text)
	}
	navigate(t, bob, "bob", links[0])
	waitPage(t, bob, "bob's approval page", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "Carl Contractor asks to sign in") })
	for _, width := range []int64{360, 1280} {
		setViewport(t, bob, width, 800)
		checkDecisionLayout(t, bob, width)
	}
	checkPage(t, bob, "verify-manager")
	pickNumber(t, bob, shownNumber(t, carl))
	click(t, bob, "Approve", "button.approve")
	waitPage(t, bob, "bob's confirmation", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "You approved the sign-in of Carl Contractor") })
	checkPage(t, bob, "approved-manager")
	waitPage(t, carl, "carl at the app", 10*time.Second, func(p page) bool { return strings.Contains(p.Text, `upstream saw user="carl"`) })
	navigate(t, bob, "bob", links[1])
	waitPage(t, bob, "the decided page", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "Already decided") })
	checkPage(t, bob, "decided")

	// bob denies carl's next request.
	navigate(t, carl, "carl", mgr+"/.mailauth/logout")
	click(t, carl, "Sign out", `form[action="/.mailauth/logout"] button`)
	waitPage(t, carl, "carl signed out", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "You are signed out") })
	startLoginIn(t, carl, mgr, "/app", "carl", "Waiting for approval")
	msg = e.mail.WaitForMessage(t, "bob@example.test", 10*time.Second)
	e.mail.DeleteAll(t)
	links = decisionLink.FindAllString(msg.Text, -1)
	navigate(t, bob, "bob", links[1])
	waitPage(t, bob, "bob's deny page", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "Deny") })
	click(t, bob, "Deny", "button.deny")
	waitPage(t, bob, "bob's denial", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "You denied") })
	checkPage(t, bob, "denied-manager")
	waitPage(t, carl, "carl's denied page", 10*time.Second, func(p page) bool { return strings.Contains(p.Text, "Sign-in denied") })
	checkPage(t, carl, "wait-denied")

	// Step-up: alice, signed in, asks for /finance; bob grants 8 hours.
	startLoginIn(t, alice, site, "/home", "alice", "Check your email")
	navigate(t, phone, "the phone", mailLink(t, e, "alice@example.test"))
	confirmByKeyboard(t, phone, shownNumber(t, alice))
	waitPage(t, alice, "alice at /home", 10*time.Second, func(p page) bool { return strings.Contains(p.Text, `upstream saw user="alice"`) })
	navigate(t, alice, "alice", site+"/finance/ledger")
	waitPage(t, alice, "the step-up page", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "This part needs your manager's approval") })
	checkPage(t, alice, "stepup")
	click(t, alice, "Request access", `form[action="/.mailauth/stepup"] button`)
	waitPage(t, alice, "alice waits for bob", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "Waiting for your manager") })
	checkPage(t, alice, "wait-stepup")
	msg = e.mail.WaitForMessage(t, "bob@example.test", 10*time.Second)
	e.mail.DeleteAll(t)
	navigate(t, bob, "bob", decisionLink.FindAllString(msg.Text, -1)[0])
	waitPage(t, bob, "bob's step-up page", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "asks for access") })
	checkPage(t, bob, "verify-stepup")
	pickNumber(t, bob, shownNumber(t, alice))
	click(t, bob, "8 hours", `input[name="duration"][value="8h"]`)
	click(t, bob, "Approve", "button.approve")
	waitPage(t, bob, "bob's confirmation", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "for 8 hours") })
	waitPage(t, alice, "alice at /finance", 10*time.Second, func(p page) bool { return strings.Contains(p.Text, "path=/finance/ledger") })

	// bob signs in himself and sees the grant.
	startLoginIn(t, bob, site, "/.mailauth/grants", "bob", "Check your email")
	navigate(t, phone, "the phone", mailLink(t, e, "bob@example.test"))
	confirmByKeyboard(t, phone, shownNumber(t, bob))
	waitPage(t, bob, "bob's grants", 10*time.Second, func(p page) bool {
		return strings.Contains(p.Text, "Access you granted") && strings.Contains(p.Text, "Alice Example")
	})
	checkPage(t, bob, "grants")

	// A request nobody decides expires.
	navigate(t, carl, "carl", mgr+"/app")
	startLoginIn(t, carl, mgr, "/app", "carl", "Waiting for approval")
	e.advanceClock(t, 31*time.Minute)
	// The long poll would see it within 25 s; a reload sees it now.
	navigate(t, carl, "carl", mgr+"/.mailauth/wait")
	waitPage(t, carl, "carl's expired page", 5*time.Second, func(p page) bool { return strings.Contains(p.Text, "Request expired") })
	checkPage(t, carl, "expired")
}

// checkDecisionLayout pins the manager's approval page: Approve, with
// its numbers, first and full width; the numbers in one row; Deny right
// below, not a screen away.
func checkDecisionLayout(t *testing.T, tab context.Context, width int64) {
	t.Helper()
	type box struct{ Top, Bottom, Left, Right float64 }
	type layout struct {
		Approve, Deny, Form, Card box
		Rows                      int
	}
	l := eval[layout](t, tab, "the decision layout", `(() => {
		const b = e => { const r = e.getBoundingClientRect(); return {Top: r.top, Bottom: r.bottom, Left: r.left, Right: r.right}; };
		const approve = document.querySelector("button.approve"), deny = document.querySelector("button.deny");
		return {Approve: b(approve), Deny: b(deny), Form: b(approve.form), Card: b(document.querySelector(".decisions")),
			Rows: new Set([...document.querySelectorAll(".numbers .choice")].map(e => Math.round(e.getBoundingClientRect().top))).size};
	})()`)
	if l.Approve.Top >= l.Deny.Top {
		t.Errorf("at %d px Approve (top %.0f) should come before Deny (top %.0f)", width, l.Approve.Top, l.Deny.Top)
	}
	if w, full := l.Approve.Right-l.Approve.Left, l.Card.Right-l.Card.Left; w < full-1 {
		t.Errorf("at %d px Approve should take the full width (%.0f px), takes %.0f", width, full, w)
	}
	if w, full := l.Form.Right-l.Form.Left, l.Card.Right-l.Card.Left; w < full-1 {
		t.Errorf("at %d px the Approve form with its numbers should take the full width (%.0f px), takes %.0f", width, full, w)
	}
	if gap := l.Deny.Top - l.Approve.Bottom; gap > 120 {
		t.Errorf("at %d px Deny is %.0f px below Approve; it should follow right after", width, gap)
	}
	if l.Rows != 1 {
		t.Errorf("at %d px the three numbers should share one row, they take %d", width, l.Rows)
	}
}

// checkMail renders a mail's HTML part in the tab and checks it as a
// page, and its text part for reading as plain text.
func checkMail(t *testing.T, tab context.Context, html, text, name string) {
	t.Helper()
	navigate(t, tab, "the mail", "data:text/html;charset=utf-8;base64,"+base64.StdEncoding.EncodeToString([]byte(html)))
	checkPage(t, tab, name)
	// Plain text reads on any client when it carries no markup, each link
	// stands on a line of its own (so it stays clickable when the client
	// wraps the paragraphs), and no line nears SMTP's 998.
	links := 0
	for i, line := range strings.Split(text, "\n") {
		if strings.Contains(line, "://") {
			links++
			if strings.TrimSpace(line) != linkPattern.FindString(line) && !decisionLink.MatchString(strings.TrimSpace(line)) {
				t.Errorf("line %d of the %s's text part should hold its link alone: %q", i+1, name, line)
			}
		}
		if n := utf8.RuneCountInString(line); n > 400 {
			t.Errorf("line %d of the %s's text part is %d characters long", i+1, name, n)
		}
		if strings.Contains(line, "</") || strings.Contains(line, "<a ") || strings.Contains(line, "&amp;") {
			t.Errorf("line %d of the %s's text part carries markup: %s", i+1, name, line)
		}
	}
	if links == 0 {
		t.Errorf("the %s's text part carries no link:\n%s", name, text)
	}
}
