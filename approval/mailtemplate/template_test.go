package mailtemplate

import (
	"strings"
	"testing"
	"time"
)

func requestData() Data {
	at := time.Date(2025, 6, 2, 10, 42, 0, 0, time.UTC)
	return Data{
		Link:        "https://apps.example.com/.mailauth/verify?token=abc123",
		User:        User{Name: "Alice Smith", Username: "asmith", Email: "alice@example.com"},
		App:         "finance.example.com",
		ClientIP:    "203.0.113.7",
		Browser:     "Firefox on Windows",
		RequestedAt: at,
		ExpiresAt:   at.Add(15 * time.Minute),
		Reference:   "K7Q-2ZP",
		MatchCode:   "Z9Q4",
	}
}

func mustDefaults(t *testing.T) *Templates {
	t.Helper()
	tpl, err := Parse("", "", "")
	if err != nil {
		t.Fatalf("default templates do not parse: %v", err)
	}
	return tpl
}

func TestDefaultTemplatesRenderEveryDetailOfTheRequest(t *testing.T) {
	subject, text, html, err := mustDefaults(t).Render(requestData())
	if err != nil {
		t.Fatalf("Render failed: %v", err)
	}
	if subject != "Sign in to finance.example.com" {
		t.Errorf("subject = %q, want %q", subject, "Sign in to finance.example.com")
	}
	details := []string{
		"Alice Smith", "alice@example.com", "asmith", "finance.example.com",
		"203.0.113.7", "Firefox on Windows", "10:42", "K7Q-2ZP",
		"15 minutes", "10:57", "once", "ignore",
	}
	for part, body := range map[string]string{"text": text, "html": html} {
		for _, want := range details {
			if !strings.Contains(body, want) {
				t.Errorf("%s part lacks %q", part, want)
			}
		}
		if strings.Contains(body, "Z9Q4") {
			t.Errorf("%s part shows the match code, which the reader must pick on the landing page unaided", part)
		}
	}
	if !strings.Contains(text, "https://apps.example.com/.mailauth/verify?token=abc123") {
		t.Error("text part lacks the link")
	}
	// The link appears as the button's href, as a second href and as text.
	if n := strings.Count(html, "https://apps.example.com/.mailauth/verify?token=abc123"); n != 3 {
		t.Errorf("html part contains the link %d times, want 3 (button, fallback href, printed text)", n)
	}
}

func TestDefaultHTMLIsAStandaloneAccessibleDocument(t *testing.T) {
	_, _, html, err := mustDefaults(t).Render(requestData())
	if err != nil {
		t.Fatalf("Render failed: %v", err)
	}
	for _, want := range []string{"<!DOCTYPE html>", `<html lang="en">`, "<title>Sign in to finance.example.com</title>", `role="presentation"`} {
		if !strings.Contains(html, want) {
			t.Errorf("html lacks %s", want)
		}
	}
	// Remote resources are blocked by most mail clients and leak that the
	// mail was opened; styles must be inline.
	for _, banned := range []string{"<img", "<link", "<style", "<script", "src=", "url(", "@import"} {
		if strings.Contains(strings.ToLower(html), banned) {
			t.Errorf("html contains %q; the default mail must have no external resources or style blocks", banned)
		}
	}
}

func TestHTMLEscapesFieldsTheRequesterControls(t *testing.T) {
	d := requestData()
	d.App = `<script>alert(1)</script>`
	d.Browser = `"><img src=x onerror=alert(1)>`
	d.User.Name = `<b>Mallory</b>`
	_, _, html, err := mustDefaults(t).Render(d)
	if err != nil {
		t.Fatalf("Render failed: %v", err)
	}
	for _, raw := range []string{"<script>", "<img", "<b>Mallory"} {
		if strings.Contains(html, raw) {
			t.Errorf("html contains unescaped %q", raw)
		}
	}
	if !strings.Contains(html, "&lt;script&gt;") {
		t.Error("html lacks the escaped App value &lt;script&gt;")
	}
}

func TestHTMLRefusesAJavaScriptLink(t *testing.T) {
	d := requestData()
	d.Link = "javascript:alert(1)"
	_, _, html, err := mustDefaults(t).Render(d)
	if err != nil {
		t.Fatalf("Render failed: %v", err)
	}
	if strings.Contains(html, `href="javascript:`) {
		t.Error("html puts a javascript: URL in an href; html/template should have replaced it")
	}
}

func TestSubjectIsKeptToOneLine(t *testing.T) {
	tpl, err := Parse("Sign in to {{.App}}\r\nfor {{.User.Email}}\n", "", "")
	if err != nil {
		t.Fatalf("Parse failed: %v", err)
	}
	d := requestData()
	d.App = "evil\r\nBcc: victim@example.com"
	subject, _, _, err := tpl.Render(d)
	if err != nil {
		t.Fatalf("Render failed: %v", err)
	}
	if strings.ContainsAny(subject, "\r\n") {
		t.Fatalf("subject %q contains a line break", subject)
	}
	if want := "Sign in to evil Bcc: victim@example.com for alice@example.com"; subject != want {
		t.Errorf("subject = %q, want %q", subject, want)
	}
}

func TestCustomTemplatesReplaceOnlyTheGivenParts(t *testing.T) {
	tpl, err := Parse("Your link for {{.App}}", "", "<p>Go to <a href=\"{{.Link}}\">{{.App}}</a></p>")
	if err != nil {
		t.Fatalf("Parse failed: %v", err)
	}
	subject, text, html, err := tpl.Render(requestData())
	if err != nil {
		t.Fatalf("Render failed: %v", err)
	}
	if subject != "Your link for finance.example.com" {
		t.Errorf("subject = %q, want the custom one", subject)
	}
	if !strings.Contains(text, "ignore this mail") {
		t.Error("text part is not the default although no text template was given")
	}
	if html != `<p>Go to <a href="https://apps.example.com/.mailauth/verify?token=abc123">finance.example.com</a></p>` {
		t.Errorf("html = %q, want the custom template's output", html)
	}
}

func TestParseTemplatesRefusesBrokenTemplates(t *testing.T) {
	cases := []struct {
		name                string
		subject, text, html string
		wantIn              string
	}{
		{"subject syntax", "{{.App", "", "", "template subject"},
		{"text syntax", "", "{{if}}", "", "template text"},
		{"html syntax", "", "", "<p>{{end}}</p>", "template html"},
		{"subject unknown field", "{{.Application}}", "", "", "template subject"},
		{"text unknown field", "", "{{.User.Phone}}", "", "template text"},
		{"html unknown field", "", "", "<p>{{.Token}}</p>", "template html"},
		{"html unknown function", "", "", "<p>{{upper .App}}</p>", "template html"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(c.subject, c.text, c.html)
			if err == nil {
				t.Fatal("Parse accepted the template, want an error at load")
			}
			if !strings.Contains(err.Error(), c.wantIn) {
				t.Errorf("error %q does not name %q", err, c.wantIn)
			}
		})
	}
}

func TestRenderDerivesExpiresInUnlessGiven(t *testing.T) {
	tpl, err := Parse("", "{{.ExpiresIn}}", "")
	if err != nil {
		t.Fatalf("Parse failed: %v", err)
	}
	d := requestData()
	d.ExpiresAt = d.RequestedAt.Add(90 * time.Minute)
	if _, text, _, _ := tpl.Render(d); text != "1 hour 30 minutes" {
		t.Errorf("derived ExpiresIn = %q, want %q", text, "1 hour 30 minutes")
	}
	d.ExpiresIn = "a quarter of an hour"
	if _, text, _, _ := tpl.Render(d); text != "a quarter of an hour" {
		t.Errorf("ExpiresIn = %q, want the caller's value kept", text)
	}
}

func TestHumanDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		30 * time.Second:                "30 seconds",
		time.Minute:                     "1 minute",
		15 * time.Minute:                "15 minutes",
		15*time.Minute + 20*time.Second: "15 minutes",
		time.Hour:                       "1 hour",
		2*time.Hour + time.Minute:       "2 hours 1 minute",
		24 * time.Hour:                  "24 hours",
		0:                               "0 seconds",
		time.Second:                     "1 second",
		1500 * time.Millisecond:         "2 seconds",
		89 * time.Second:                "1 minute",
		90 * time.Second:                "2 minutes",
		59 * time.Minute:                "59 minutes",
		90 * time.Minute:                "1 hour 30 minutes",
		8 * time.Hour:                   "8 hours",
	} {
		if got := HumanDuration(d); got != want {
			t.Errorf("HumanDuration(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestDefaultMailWarnsNeverToTellTheCode(t *testing.T) {
	d := requestData()
	d.Code = "482913"
	_, text, html, err := mustDefaults(t).Render(d)
	if err != nil {
		t.Fatal(err)
	}
	for part, body := range map[string]string{"text": text, "html": html} {
		if !strings.Contains(body, "482913") || !strings.Contains(body, "Never tell this code to anyone; we will never ask for it.") {
			t.Errorf("the %s part should carry the code and say plainly never to tell it:\n%s", part, body)
		}
	}
	d.Code = ""
	_, text, html, _ = mustDefaults(t).Render(d)
	for part, body := range map[string]string{"text": text, "html": html} {
		if strings.Contains(body, "Never tell this code") {
			t.Errorf("a mail without a code should not warn about one (%s part)", part)
		}
	}
}
