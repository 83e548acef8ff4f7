package test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's Chromium, which CI installs.
const chromiumPath = "/usr/bin/chromium"

// TestBrowserWaitingPageMovesOnByItself drives a real headless Chromium
// through the User Approval flow: the tab that asks to sign in is left
// alone on the waiting page while the link is confirmed in a second,
// separate browser context (another cookie store, as another device), and
// the waiting page's script must take the first tab on to the app by itself.
func TestBrowserWaitingPageMovesOnByItself(t *testing.T) {
	e := newEnv(t, defaultCaddyfile)
	site := e.Server() // http://localhost:PORT: a secure context for Chromium
	appURL := site + "/app/page"
	loginURL := site + "/.mailauth/login?return=" + url.QueryEscape("/app/page")

	browserCtx := launchChromium(t)

	// Tab 1 is the browser that asks to sign in; its console and uncaught
	// exceptions are kept so a failure can show what the page's script did.
	var consoleMu sync.Mutex
	var console []string
	note := func(format string, args ...any) {
		consoleMu.Lock()
		defer consoleMu.Unlock()
		console = append(console, fmt.Sprintf(format, args...))
	}
	tab1, cancelTab1 := chromedp.NewContext(browserCtx, chromedp.WithNewBrowserContext(),
		chromedp.WithListener(func(ev any) {
			switch ev := ev.(type) {
			case *runtime.EventExceptionThrown:
				d := ev.ExceptionDetails
				desc := ""
				if d.Exception != nil {
					desc = d.Exception.Description
				}
				note("exception: %s %s (%s:%d)", d.Text, desc, d.URL, d.LineNumber)
			case *runtime.EventConsoleAPICalled:
				var parts []string
				for _, a := range ev.Args {
					if a.Description != "" {
						parts = append(parts, a.Description)
					} else {
						parts = append(parts, string(a.Value))
					}
				}
				note("console.%s: %s", ev.Type, strings.Join(parts, " "))
			case *cdplog.EventEntryAdded:
				note("log %s/%s: %s %s", ev.Entry.Source, ev.Entry.Level, ev.Entry.Text, ev.Entry.URL)
			}
		}))
	t.Cleanup(cancelTab1)
	if err := chromedp.Do(tab1); err != nil {
		t.Fatalf("opening tab 1: %v", err)
	}
	if _, err := chromedp.Call(tab1, cdplog.Enable, cdp.Empty{}); err != nil {
		t.Fatalf("enabling the log domain in tab 1: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			consoleMu.Lock()
			defer consoleMu.Unlock()
			t.Logf("tab 1 console (%d lines):\n%s", len(console), strings.Join(console, "\n"))
		}
	})

	// 1. The app sends tab 1 to the login form; it asks for a link.
	navigate(t, tab1, "tab 1", appURL)
	p := waitPage(t, tab1, "tab 1 to land on the login form", 5*time.Second, func(p page) bool {
		return p.URL == loginURL && strings.Contains(p.Text, "Sign in")
	})
	if !strings.Contains(p.Text, "Username or email") {
		t.Fatalf("the login form lacks its label; it shows:\n%s", p.Text)
	}
	screenshot(t, tab1, "login")
	if err := withTimeout(tab1, 5*time.Second, func(ctx context.Context) error {
		return chromedp.Do(ctx,
			chromedp.SendKeys(chromedp.ID("identity"), "alice"),
			chromedp.Click(chromedp.CSS(`form[action="/.mailauth/login"] button[type="submit"]`)),
		)
	}); err != nil {
		t.Fatalf("typing alice into #identity and submitting the login form: %v", err)
	}
	waitPage(t, tab1, "tab 1 to reach the waiting page after submitting the login form", 5*time.Second, func(p page) bool {
		return p.URL == site+"/.mailauth/wait" && strings.Contains(p.Text, "Check your email")
	})
	screenshot(t, tab1, "wait")

	pending1 := cookieNamed(t, tab1, "tab 1", site+"/.mailauth/wait", "__Host-mailauth_pending")
	if pending1 == nil {
		t.Fatal("tab 1 has no mailauth_pending cookie after starting the login")
	}
	if !pending1.Secure || !pending1.HTTPOnly || pending1.Path != "/" || strings.HasPrefix(pending1.Domain, ".") {
		t.Errorf("pending cookie in tab 1 should be Secure, HttpOnly, host-only and for Path=/ (__Host-); got secure=%v httponly=%v path=%q domain=%q", pending1.Secure, pending1.HTTPOnly, pending1.Path, pending1.Domain)
	}

	// 2. The mail.
	msg := e.mail.WaitForMessage(t, "alice@example.test", 10*time.Second)
	link := linkIn(t, msg.Text)
	if !strings.HasPrefix(link, site+"/.mailauth/verify?token=") {
		t.Fatalf("the link should be on the profile's server %s, got %s", site, link)
	}

	// 3. Another device: a separate browser context with its own cookies.
	tab2 := newDevice(t, browserCtx)
	if c1, c2 := chromedp.FromContext(tab1).BrowserContextID, chromedp.FromContext(tab2).BrowserContextID; c1 == c2 {
		t.Fatalf("tab 1 and tab 2 share the browser context %q; they must be separate devices", c1)
	}
	if c := cookieNamed(t, tab2, "tab 2", site+"/.mailauth/wait", "__Host-mailauth_pending"); c != nil {
		t.Fatal("tab 2 sees tab 1's pending cookie: the two browser contexts share a cookie store")
	}

	navigate(t, tab2, "tab 2", link)
	p = waitPage(t, tab2, "tab 2 to show the Confirm page for the link", 5*time.Second, func(p page) bool {
		return strings.Contains(p.Text, "Confirm sign-in")
	})
	if !strings.Contains(p.Text, "as Alice Example") {
		t.Errorf("the Confirm page should name the user who signs in (Alice Example); it shows:\n%s", p.Text)
	}
	screenshot(t, tab2, "verify")
	// Number matching: pick the number that tab 1's waiting page shows.
	pickNumber(t, tab2, shownNumber(t, tab1))
	confirmed := time.Now()
	if err := withTimeout(tab2, 5*time.Second, func(ctx context.Context) error {
		return chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`form[action="/.mailauth/verify"] button[type="submit"]`)))
	}); err != nil {
		t.Fatalf("clicking Confirm in tab 2: %v", err)
	}
	waitPage(t, tab2, "tab 2 to show that the sign-in is confirmed", 5*time.Second, func(p page) bool {
		return strings.Contains(p.Text, "Sign-in confirmed")
	})
	screenshot(t, tab2, "confirmed")

	// 4. Tab 1 is not touched: its script notices the approval, completes
	// the login and lands on the app.
	p = waitPage(t, tab1, "tab 1 to move on by itself from the waiting page to "+appURL, 10*time.Second, func(p page) bool {
		return p.URL == appURL && strings.Contains(p.Text, `upstream saw user="alice"`)
	})
	t.Logf("tab 1 reached the app %s after Confirm was clicked", time.Since(confirmed).Round(time.Millisecond))
	if !strings.Contains(p.Text, `email="alice@example.test" path=/app/page`) {
		t.Errorf("the upstream should see alice's email and the app path; it shows:\n%s", p.Text)
	}
	if c := cookieNamed(t, tab1, "tab 1", appURL, "__Host-mailauth_session"); c == nil {
		t.Error("tab 1 reached the app but holds no mailauth_session cookie")
	}
	if c := cookieNamed(t, tab1, "tab 1", site+"/.mailauth/wait", "__Host-mailauth_pending"); c != nil {
		t.Error("the pending cookie should be cleared once the login is completed")
	}

	// The device that confirmed never gets the session.
	for _, name := range []string{"__Host-mailauth_session", "__Host-mailauth_pending"} {
		if c := cookieNamed(t, tab2, "tab 2", site+"/.mailauth/wait", name); c != nil {
			t.Errorf("tab 2, which only confirmed the link, holds a %s cookie", name)
		}
	}
	navigate(t, tab2, "tab 2", appURL)
	waitPage(t, tab2, "tab 2 (which only confirmed) to be sent to the login form when it opens the app", 5*time.Second, func(p page) bool {
		return p.URL == loginURL && strings.Contains(p.Text, "Username or email")
	})
}

// launchChromium starts headless Chromium for one test and stops it when
// the test ends. Tabs made from the returned context with
// chromedp.WithNewBrowserContext() are separate devices.
func launchChromium(t *testing.T) context.Context {
	t.Helper()
	return launchChromiumFor(t, 90*time.Second)
}

// launchChromiumFor is launchChromium for a test that walks many pages:
// the browser lives at most limit.
func launchChromiumFor(t *testing.T, limit time.Duration) context.Context {
	t.Helper()
	// The whole browser lives at most this long, whatever hangs.
	root, cancelAll := context.WithTimeout(context.Background(), limit)
	t.Cleanup(cancelAll)

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "chromium-profile")),
		chromedp.WindowSize(900, 800),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(root, opts...)
	// Cancelling the allocator stops Chromium and waits for the process.
	t.Cleanup(cancelAlloc)

	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(cancelBrowser)
	start := time.Now()
	if err := chromedp.Do(browserCtx); err != nil {
		t.Fatalf("starting Chromium at %s: %v", chromiumPath, err)
	}
	t.Logf("Chromium started in %s", time.Since(start).Round(time.Millisecond))
	return browserCtx
}

// newDevice opens a tab in a browser context of its own: its own cookies.
func newDevice(t *testing.T, browserCtx context.Context) context.Context {
	t.Helper()
	tab, cancel := chromedp.NewContext(browserCtx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("opening a tab in a new browser context: %v", err)
	}
	return tab
}

// click clicks the element matching the CSS selector.
func click(t *testing.T, tab context.Context, what, selector string) {
	t.Helper()
	if err := withTimeout(tab, 5*time.Second, func(ctx context.Context) error {
		return chromedp.Do(ctx, chromedp.Click(chromedp.CSS(selector)))
	}); err != nil {
		t.Fatalf("clicking %s (%s): %v", what, selector, err)
	}
}

// shownNumber reads the number a waiting page shows for number matching.
func shownNumber(t *testing.T, tab context.Context) string {
	t.Helper()
	var n string
	if err := withTimeout(tab, 5*time.Second, func(ctx context.Context) error {
		var err error
		n, err = chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("match-code").textContent`))
		return err
	}); err != nil {
		t.Fatalf("reading the number on the waiting page: %v", err)
	}
	return strings.TrimSpace(n)
}

// pickNumber chooses n among the landing page's three numbers.
func pickNumber(t *testing.T, tab context.Context, n string) {
	t.Helper()
	click(t, tab, "number "+n, `input[name="match"][value="`+n+`"] + span`)
}

// page is what a tab shows: its location and the body's visible text.
type page struct {
	URL  string `json:"url"`
	Text string `json:"text"`
}

func withTimeout(ctx context.Context, d time.Duration, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return f(ctx)
}

// navigate loads u in the tab and waits for the load event.
func navigate(t *testing.T, tab context.Context, name, u string) {
	t.Helper()
	if err := withTimeout(tab, 10*time.Second, func(ctx context.Context) error {
		return chromedp.Do(ctx, chromedp.Navigate(u))
	}); err != nil {
		t.Fatalf("%s: navigating to %s: %v", name, u, err)
	}
}

// waitPage polls the tab until ok holds, and fails the test after timeout.
// Errors while a page is being replaced are expected and only retried.
func waitPage(t *testing.T, tab context.Context, what string, timeout time.Duration, ok func(page) bool) page {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, timeout)
	defer cancel()
	var last page
	var lastErr error
	for {
		p, err := chromedp.Run(ctx, chromedp.Evaluate[page](`({url: location.href, text: document.body ? document.body.innerText : ""})`))
		if err == nil {
			last, lastErr = p, nil
			if ok(p) {
				return p
			}
		} else {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %s waiting for %s; last location %q (last error: %v), showing:\n%s", timeout, what, last.URL, lastErr, last.Text)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// cookieNamed returns the named cookie the tab's cookie store would send
// to u, or nil.
func cookieNamed(t *testing.T, tab context.Context, name, u, cookie string) *network.Cookie {
	t.Helper()
	var res network.GetCookiesResult
	if err := withTimeout(tab, 5*time.Second, func(ctx context.Context) error {
		var err error
		res, err = chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{u}})
		return err
	}); err != nil {
		t.Fatalf("%s: reading cookies for %s: %v", name, u, err)
	}
	for _, c := range res.Cookies {
		if c.Name == cookie {
			return c
		}
	}
	return nil
}

// screenshot saves a PNG of the whole page to .cache/screenshots for people
// to look at.
func screenshot(t *testing.T, tab context.Context, name string) {
	t.Helper()
	var buf []byte
	if err := withTimeout(tab, 5*time.Second, func(ctx context.Context) error {
		var err error
		buf, err = chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
		return err
	}); err != nil {
		t.Fatalf("screenshot of the %s page: %v", name, err)
	}
	if len(buf) == 0 {
		t.Fatalf("screenshot of the %s page is empty", name)
	}
	dir := filepath.Join(".cache", "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "browser-"+name+".png")
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatalf("saving the screenshot: %v", err)
	}
	t.Logf("screenshot of the %s page: test/%s", name, path)
}
