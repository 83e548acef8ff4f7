package mailer

import (
	_ "embed"
	"fmt"
	htmltemplate "html/template"
	"strings"
	texttemplate "text/template"
	"time"
	"unicode"
)

// The built-in sign-in mail for User Approval.
var (
	//go:embed templates/subject.txt
	defaultSubject string
	//go:embed templates/body.txt
	defaultText string
	//go:embed templates/body.html
	defaultHTML string
)

// TemplateUser is the person a sign-in mail is about.
type TemplateUser struct {
	// Name is the display name; it may be empty.
	Name string
	// Username is the directory account name.
	Username string
	// Email is the address the login is for.
	Email string
}

// TemplateData is what a mail template can refer to. Every string in it may
// come from the request (App, ClientIP, Browser) or the directory, so the
// HTML template escapes them all.
type TemplateData struct {
	// Link is the one-time sign-in or approval link.
	Link string
	// DenyLink is the link that refuses the request, in Manager Approval
	// mail; it is empty in a user's own sign-in mail.
	DenyLink string
	// Approver is who is asked to decide, in Manager Approval mail.
	Approver string
	// EscalatedFrom is the manager who was asked first and has not decided,
	// in an escalated Manager Approval mail; empty otherwise.
	EscalatedFrom string
	// Outcome says how a failed sign-in ended, in a failed-login notice:
	// "denied", "expired" or "rate limited".
	Outcome string
	// Repeats counts the failed sign-ins of the same user that earlier
	// notices left out, so a manager gets one mail, not a storm.
	Repeats int
	// User is who asked to sign in.
	User TemplateUser
	// App is the name or host of the protected site.
	App string
	// ClientIP and Browser describe where the request came from.
	ClientIP string
	Browser  string
	// RequestedAt is when the login started; ExpiresAt is when Link stops
	// working.
	RequestedAt time.Time
	ExpiresAt   time.Time
	// ExpiresIn is the link's lifetime in words ("15 minutes"). When empty,
	// Render derives it from RequestedAt and ExpiresAt.
	ExpiresIn string
	// Reference is the login's support reference.
	Reference string
	// MatchCode is the code the waiting browser shows. The default templates
	// leave it out on purpose: the landing page asks the reader to pick it,
	// which only protects them if the mail does not give it away.
	MatchCode string
	// Code is the one-time code a user can type into the waiting page
	// instead of opening Link; empty in Manager Approval mail.
	Code string
	// StepUp says a signed-in user asks for more access (a step-up), to
	// the page Route, for Reason when they gave one. Route is set for
	// sign-ins too: the page the user wanted.
	StepUp bool
	Route  string
	Reason string
}

// Templates renders the subject, plain-text and HTML parts of a mail.
// It is safe for concurrent use.
type Templates struct {
	subject *texttemplate.Template
	text    *texttemplate.Template
	html    *htmltemplate.Template
}

// ParseTemplates parses the three parts of a mail; an empty argument selects
// the built-in default. Each template is also run once against sample data,
// so a template that refers to a field TemplateData lacks is refused here,
// at config load, rather than when the first user asks for a link.
func ParseTemplates(subject, text, html string) (*Templates, error) {
	if subject == "" {
		subject = defaultSubject
	}
	if text == "" {
		text = defaultText
	}
	if html == "" {
		html = defaultHTML
	}
	var t Templates
	var err error
	if t.subject, err = texttemplate.New("subject").Option("missingkey=error").Parse(subject); err != nil {
		return nil, fmt.Errorf("mailer: template subject: %w", err)
	}
	if t.text, err = texttemplate.New("text").Option("missingkey=error").Parse(text); err != nil {
		return nil, fmt.Errorf("mailer: template text: %w", err)
	}
	if t.html, err = htmltemplate.New("html").Option("missingkey=error").Parse(html); err != nil {
		return nil, fmt.Errorf("mailer: template html: %w", err)
	}
	if _, _, _, err := t.Render(sampleData()); err != nil {
		return nil, err
	}
	return &t, nil
}

// sampleData fills every field, so that a trial run reaches every branch
// that depends on a field being set.
func sampleData() TemplateData {
	at := time.Date(2025, 1, 2, 10, 42, 0, 0, time.UTC)
	return TemplateData{
		Link:        "https://apps.example.com/.mailauth/verify?token=sample",
		DenyLink:    "https://apps.example.com/.mailauth/verify?token=sample-deny",
		Approver:    "bob@example.com",
		Outcome:     "denied",
		Repeats:     2,
		User:        TemplateUser{Name: "Alice Example", Username: "alice", Email: "alice@example.com"},
		App:         "apps.example.com",
		ClientIP:    "203.0.113.7",
		Browser:     "Firefox on Windows",
		RequestedAt: at,
		ExpiresAt:   at.Add(15 * time.Minute),
		Reference:   "REF-SAMPLE",
		MatchCode:   "42",
		Code:        "123456",
	}
}

// Render produces the three parts for d. The subject is reduced to a single
// line, since a line break in it would end the header.
func (t *Templates) Render(d TemplateData) (subject, text, html string, err error) {
	if d.ExpiresIn == "" && !d.RequestedAt.IsZero() && !d.ExpiresAt.IsZero() {
		d.ExpiresIn = HumanDuration(d.ExpiresAt.Sub(d.RequestedAt))
	}
	var b strings.Builder
	if err := t.subject.Execute(&b, d); err != nil {
		return "", "", "", fmt.Errorf("mailer: template subject: %w", err)
	}
	subject = singleLine(b.String())
	b.Reset()
	if err := t.text.Execute(&b, d); err != nil {
		return "", "", "", fmt.Errorf("mailer: template text: %w", err)
	}
	text = b.String()
	b.Reset()
	if err := t.html.Execute(&b, d); err != nil {
		return "", "", "", fmt.Errorf("mailer: template html: %w", err)
	}
	return subject, text, b.String(), nil
}

// singleLine joins the words of s with single spaces, dropping line breaks
// and other control characters.
func singleLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	return strings.Join(strings.Fields(s), " ")
}

// HumanDuration spells out d for people in the largest units that fit, to
// the minute ("15 minutes", "1 hour 30 minutes"); under a minute it counts
// seconds. Mail, pages and commands all use it, so they word a duration
// alike.
func HumanDuration(d time.Duration) string {
	if d < time.Minute {
		return plural(int(d.Round(time.Second)/time.Second), "second")
	}
	d = d.Round(time.Minute)
	h, m := int(d/time.Hour), int(d%time.Hour/time.Minute)
	switch {
	case h == 0:
		return plural(m, "minute")
	case m == 0:
		return plural(h, "hour")
	default:
		return plural(h, "hour") + " " + plural(m, "minute")
	}
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}
