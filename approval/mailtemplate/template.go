// Package mailtemplate words the mail the core sends: sign-in links,
// approval requests and failed-login notices, from templates (the built-in
// ones or an operator's) in the language of the catalogue a mail asks for.
// It renders subject, text and HTML; mailer carries what it renders.
package mailtemplate

import (
	_ "embed"
	"fmt"
	htmltemplate "html/template"
	"strings"
	texttemplate "text/template"
	"time"
	"unicode"

	"github.com/mailauth/caddy-mailauth/locale"
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

// User is the person a sign-in mail is about.
type User struct {
	// Name is the display name; it may be empty.
	Name string
	// Username is the directory account name.
	Username string
	// Email is the address the login is for.
	Email string
}

// Data is what a mail template can refer to. Every string in it may
// come from the request (App, ClientIP, Browser) or the directory, so the
// HTML template escapes them all.
type Data struct {
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
	User User
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
	// Language is the tag of the catalogue the mail is worded from ("en",
	// "tr", "de"); empty or unknown means English.
	Language string
	// Brand is the operator's branding; its zero value shows none.
	Brand Brand
}

// Brand is what a mail shows of the operator's brand. Mail carries no
// logo: mail clients block remote images (and report who opened them),
// many drop data: URLs, and the brand's name on its colour says the same
// without either.
type Brand struct {
	// Name heads the mail, on Color.
	Name string
	// Color is a CSS hex colour ("#0b5fff") and ColorText the colour of
	// text on it (black or white, whichever contrasts more).
	Color, ColorText string
	// Support is the address or URL the footer tells people to contact.
	Support string
}

// Templates renders the subject, plain-text and HTML parts of a mail, in
// every shipped language. It is safe for concurrent use.
type Templates struct {
	byLang map[string]*templateSet
}

type templateSet struct {
	subject *texttemplate.Template
	text    *texttemplate.Template
	html    *htmltemplate.Template
}

// textFuncs are the functions of subject and text templates in the
// language of c: t words a catalogue message, tp its plural by a count,
// human a duration, date and clock a time.
func textFuncs(c *locale.Catalog) texttemplate.FuncMap {
	return texttemplate.FuncMap{
		"t":      c.Text,
		"tp":     c.Plural,
		"human":  c.Duration,
		"date":   c.Date,
		"clock":  locale.Clock,
		"strong": func(s string) string { return s },
		"lang":   func() string { return c.Tag },
	}
}

// htmlFuncs are textFuncs for the HTML part, where t escapes the message
// and its arguments except markup built by strong.
func htmlFuncs(c *locale.Catalog) htmltemplate.FuncMap {
	return htmltemplate.FuncMap{
		"t":     c.HTML,
		"tp":    func(key string, n int, args ...any) string { return c.Plural(key, n, args...) },
		"human": c.Duration,
		"date":  c.Date,
		"clock": locale.Clock,
		"strong": func(s string) htmltemplate.HTML {
			return htmltemplate.HTML("<strong>" + htmltemplate.HTMLEscapeString(s) + "</strong>")
		},
		"lang": func() string { return c.Tag },
	}
}

// Parse parses the three parts of a mail; an empty argument selects
// the built-in default. Each template is also run once against sample data,
// so a template that refers to a field Data lacks is refused here,
// at config load, rather than when the first user asks for a link.
func Parse(subject, text, html string) (*Templates, error) {
	if subject == "" {
		subject = defaultSubject
	}
	if text == "" {
		text = defaultText
	}
	if html == "" {
		html = defaultHTML
	}
	t := Templates{byLang: map[string]*templateSet{}}
	for _, tag := range locale.Languages() {
		c := locale.Get(tag)
		var set templateSet
		var err error
		if set.subject, err = texttemplate.New("subject").Option("missingkey=error").Funcs(textFuncs(c)).Parse(subject); err != nil {
			return nil, fmt.Errorf("mailer: template subject: %w", err)
		}
		if set.text, err = texttemplate.New("text").Option("missingkey=error").Funcs(textFuncs(c)).Parse(text); err != nil {
			return nil, fmt.Errorf("mailer: template text: %w", err)
		}
		if set.html, err = htmltemplate.New("html").Option("missingkey=error").Funcs(htmlFuncs(c)).Parse(html); err != nil {
			return nil, fmt.Errorf("mailer: template html: %w", err)
		}
		t.byLang[tag] = &set
	}
	for _, tag := range locale.Languages() {
		d := sampleData()
		d.Language = tag
		if _, _, _, err := t.Render(d); err != nil {
			return nil, err
		}
	}
	return &t, nil
}

// sampleData fills every field, so that a trial run reaches every branch
// that depends on a field being set.
func sampleData() Data {
	at := time.Date(2025, 1, 2, 10, 42, 0, 0, time.UTC)
	return Data{
		Link:        "https://apps.example.com/.mailauth/verify?token=sample",
		DenyLink:    "https://apps.example.com/.mailauth/verify?token=sample-deny",
		Approver:    "bob@example.com",
		Outcome:     "denied",
		Brand:       Brand{Name: "Example Access", Color: "#0b5fff", ColorText: "#ffffff", Support: "it-help@example.com"},
		Repeats:     2,
		User:        User{Name: "Alice Example", Username: "alice", Email: "alice@example.com"},
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
func (t *Templates) Render(d Data) (subject, text, html string, err error) {
	tag := locale.Normalize(d.Language)
	if tag == "" {
		tag = locale.Default
	}
	d.Language = tag
	set := t.byLang[tag]
	if d.ExpiresIn == "" && !d.RequestedAt.IsZero() && !d.ExpiresAt.IsZero() {
		d.ExpiresIn = locale.Get(tag).Duration(d.ExpiresAt.Sub(d.RequestedAt))
	}
	var b strings.Builder
	if err := set.subject.Execute(&b, d); err != nil {
		return "", "", "", fmt.Errorf("mailer: template subject: %w", err)
	}
	subject = singleLine(b.String())
	b.Reset()
	if err := set.text.Execute(&b, d); err != nil {
		return "", "", "", fmt.Errorf("mailer: template text: %w", err)
	}
	text = b.String()
	b.Reset()
	if err := set.html.Execute(&b, d); err != nil {
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

// HumanDuration words d in English (locale.Catalog.Duration, the one
// wording of durations): "15 minutes", "1 hour 30 minutes", seconds under
// a minute. Commands and logs use it; pages and mails word durations in
// their own language.
func HumanDuration(d time.Duration) string { return locale.English.Duration(d) }
