package caddymodule

import (
	"bytes"
	"crypto/rand"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/mailauth/caddy-mailauth/approval"
	"github.com/mailauth/caddy-mailauth/locale"
)

//go:embed pages/*.html
var pageFiles embed.FS

//go:embed static
var staticFiles embed.FS

// pageSet is every page in every language: each page template includes
// the shared layout, and each language has its own copy whose functions
// word messages from that language's catalogue.
type pageSet map[string]map[string]*template.Template

// pageFuncs are the template functions of pages in the language of c.
// Every one returns either a plain string (escaped by html/template where
// it is used) or template.HTML built from escaped values only.
func pageFuncs(c *locale.Catalog) template.FuncMap {
	esc := template.HTMLEscapeString
	clock := func(t time.Time) template.HTML {
		// The server's answer is UTC; page.js rewords it in the
		// browser's own time zone.
		u := t.UTC()
		return template.HTML(`<time datetime="` + u.Format(time.RFC3339) + `">` + esc(u.Format("15:04 MST")) + `</time>`)
	}
	return template.FuncMap{
		"lang": func() string { return c.Tag },
		"t":    c.HTML,
		"tt":   c.Text,
		"ta":   func(key string, args []any) template.HTML { return c.HTML(key, args...) },
		"human": func(d time.Duration) string {
			return c.Duration(d)
		},
		"clock": clock,
		"strongClock": func(t time.Time, id string) template.HTML {
			attr := ""
			if id != "" {
				attr = ` id="` + esc(id) + `"`
			}
			return template.HTML("<strong" + attr + ">" + string(clock(t)) + "</strong>")
		},
		"strong": func(s string) template.HTML { return template.HTML("<strong>" + esc(s) + "</strong>") },
		"strongID": func(s, id string) template.HTML {
			return template.HTML(`<strong id="` + esc(id) + `">` + esc(s) + "</strong>")
		},
		"code": func(s string) template.HTML { return template.HTML("<code>" + esc(s) + "</code>") },
		// link takes only hrefs the templates build from site paths and
		// query-escaped values.
		"link": func(href, text string) template.HTML {
			return template.HTML(`<a href="` + esc(href) + `">` + esc(text) + "</a>")
		},
		"query":   url.QueryEscape,
		"support": supportHTML,
		"grant": func(key, label string) string {
			if key == approval.EndOfDayKey {
				return c.Text("grant.end_of_day")
			}
			if g, err := approval.ParseGrantDuration(key); err == nil && key != "" {
				return c.Duration(g.For)
			}
			return label
		},
		"remaining": func(at, now time.Time) template.HTML {
			left := max(0, int(time.Until(at).Seconds()))
			return template.HTML(`<span id="remaining" data-expires-in="` + strconv.Itoa(left) + `" data-words="` + esc(durationWords(c)) + `">` + esc(c.Duration(at.Sub(now))) + "</span>")
		},
		"until": func(t time.Time) int { return max(0, int(time.Until(t).Seconds())) },
		"unix":  func(n int64) time.Time { return time.Unix(n, 0) },
	}
}

// durationWords are the catalogue's duration units as JSON, for wait.js,
// which counts the time left down in the page's language.
func durationWords(c *locale.Catalog) string {
	w := map[string]any{"join": c.Text("duration.join", "{1}", "{2}")}
	for _, u := range []string{"second", "minute", "hour"} {
		w[u] = []string{c.Text("duration."+u+".one", "{1}"), c.Text("duration."+u+".other", "{1}")}
	}
	b, _ := json.Marshal(w)
	return string(b)
}

// supportHTML words the brand's support contact as a link where it is an
// address or a URL (validated at load).
func supportHTML(s string) template.HTML {
	esc := template.HTMLEscapeString
	switch {
	case strings.HasPrefix(s, "https://"):
		return template.HTML(`<a href="` + esc(s) + `">` + esc(s) + "</a>")
	case validAddress(s):
		return template.HTML(`<a href="mailto:` + esc(s) + `">` + esc(s) + "</a>")
	}
	return template.HTML(esc(s))
}

// pageNames are the pages mailauth renders, besides layout.html.
var pageNames = func() []string {
	entries, _ := fs.Glob(pageFiles, "pages/*.html")
	var out []string
	for _, e := range entries {
		out = append(out, path.Base(e))
	}
	return out
}()

// defaultPages are the built-in pages; they must parse.
var defaultPages = func() pageSet {
	p, err := parsePages(nil)
	if err != nil {
		panic(err)
	}
	return p
}()

// parsePages parses every page in every language, with overrides (by
// file name, such as "login.html") replacing the built-in text. A page
// that does not parse is an error that names it.
func parsePages(overrides map[string]string) (pageSet, error) {
	source := func(name string) (string, error) {
		if s, ok := overrides[name]; ok {
			return s, nil
		}
		b, err := pageFiles.ReadFile("pages/" + name)
		return string(b), err
	}
	out := pageSet{}
	for _, tag := range locale.Languages() {
		funcs := pageFuncs(locale.Get(tag))
		src, err := source("layout.html")
		if err != nil {
			return nil, err
		}
		layout, err := template.New("layout.html").Funcs(funcs).Parse(src)
		if err != nil {
			return nil, fmt.Errorf("layout.html: %w", err)
		}
		out[tag] = map[string]*template.Template{}
		for _, name := range pageNames {
			if name == "layout.html" {
				continue
			}
			src, err := source(name)
			if err != nil {
				return nil, err
			}
			t, err := template.Must(layout.Clone()).New(name).Parse(src)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			out[tag][name] = t
		}
	}
	return out, nil
}

// loadTemplateDir reads the operator's templates directory: page
// overrides by file name at its top (login.html, layout.html, …) and mail
// overrides under mail/ (body.html, manager_subject.txt, …). A file whose
// name mailauth has no template for is refused, so a misspelt override
// does not silently leave the default in place.
func loadTemplateDir(dir string) (pages map[string]string, mails map[string]string, err error) {
	pages, mails = map[string]string{}, map[string]string{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() {
			if name != "mail" {
				return nil, nil, fmt.Errorf("%s: not a template folder (only mail/ holds templates)", filepath.Join(dir, name))
			}
			sub, err := os.ReadDir(filepath.Join(dir, "mail"))
			if err != nil {
				return nil, nil, err
			}
			for _, m := range sub {
				p := filepath.Join(dir, "mail", m.Name())
				if !slices.Contains(mailTemplateNames, m.Name()) {
					return nil, nil, fmt.Errorf("%s: no mail template has this name (have: %s)", p, strings.Join(mailTemplateNames, ", "))
				}
				b, err := os.ReadFile(p)
				if err != nil {
					return nil, nil, err
				}
				mails[m.Name()] = string(b)
			}
			continue
		}
		p := filepath.Join(dir, name)
		if !slices.Contains(pageNames, name) {
			return nil, nil, fmt.Errorf("%s: no page has this name (have: %s)", p, strings.Join(pageNames, ", "))
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, nil, err
		}
		pages[name] = string(b)
	}
	return pages, mails, nil
}

// pageBrand is what the layout shows of the operator's brand.
type pageBrand struct {
	// Name is shown at the top of every page and in its title.
	Name string
	// Logo and CSS are the module's own URLs of the logo and of the
	// stylesheet that sets the brand colour; empty when not configured.
	Logo, CSS string
	// Support is the address or URL people are told to contact.
	Support string
}

// pageData is everything a page may show. Every value is escaped by
// html/template on output. Title, Error, Message, Action and Notice are
// message keys of the catalogues; Args fill the placeholders of Message
// and Error.
type pageData struct {
	Title     string
	App       string
	Return    string
	Error     string
	Message   string
	Args      []any
	Action    string
	ActionURL string
	Token     string
	Login     *approval.LoginView
	Link      *approval.LinkView
	Now       time.Time
	// Brand is the operator's branding.
	Brand pageBrand
	// Input prefills the login form: what this browser typed for the
	// login it has in progress.
	Input string
	// ResendIn is how many seconds are left before the waiting page may
	// send the mail again.
	ResendIn int
	// Users and Managers say who may approve logins on this site; the
	// waiting page words itself by these, never by the user.
	Users, Managers bool
	// Matching says whether the waiting page shows the number to match.
	Matching bool
	// Codes says whether the waiting page offers the box for the mailed
	// code (approval.Site.CodeFallback).
	Codes bool
	// LinkMayExpireSooner says that the site's profiles differ in link
	// lifetime, so the waiting page's expiry, the same for every login of
	// the site, is the longest of them, not every link's.
	LinkMayExpireSooner bool
	// Nonce lets the page's own script run under the CSP; it is new for
	// every response.
	Nonce string
	// CSRF is the form token bound to the browser's pending or session
	// cookie.
	CSRF string
	// StepUp is what the step-up page shows, SiteID the site it is for and
	// Reason what the user typed.
	StepUp *approval.StepUpView
	SiteID string
	Reason string
	// Grants are the running grants the signed-in manager (Email) gave.
	Grants []approval.GrantInfo
	Email  string
	// Notice says what an action just did.
	Notice string
	// Session is the signed-in session the session page describes.
	Session *approval.Session
}

// pageLanguage is the language a page is worded in: the shipped one the
// browser's Accept-Language asks for first, else the deployment's
// default_language.
func (h *Handler) pageLanguage(r *http.Request) string {
	def := locale.Default
	if h.app != nil && h.app.language != "" {
		def = h.app.language
	}
	if r == nil {
		return def
	}
	return locale.Match(r.Header.Get("Accept-Language"), def)
}

// render writes a page. It renders into a buffer first so a template error
// becomes a clean 500 rather than half a page.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, status int, name string, d pageData) error {
	set := defaultPages
	if h.app != nil && h.app.pages != nil {
		set = h.app.pages
		d.Brand = h.app.brand
	}
	lang := h.pageLanguage(r)
	t := set[lang][name]
	if t == nil {
		return caddyhttp.Error(http.StatusInternalServerError, errors.New("mailauth: no page "+name))
	}
	var n [16]byte
	if _, err := rand.Read(n[:]); err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	d.Nonce = base64.RawStdEncoding.EncodeToString(n[:])
	// Only a script carrying this response's nonce runs: no inline-script
	// exception, no third-party origin. The logo is served from the
	// module's own static path, so img-src stays 'self'.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'nonce-"+d.Nonce+"'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	w.Header().Set("Content-Language", lang)
	w.Header().Add("Vary", "Accept-Language")
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout.html", d); err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, err := w.Write(buf.Bytes())
	return err
}

// unavailable answers 503 with a page saying so, when the store cannot be
// reached: sign-in fails closed, while sessions already issued keep
// working because checking one needs no store.
func (h *Handler) unavailable(w http.ResponseWriter, r *http.Request, title, message string) error {
	w.Header().Set("Retry-After", "30")
	return h.render(w, r, http.StatusServiceUnavailable, "message.html", pageData{Title: title, Message: message})
}

// serveStatic serves the embedded assets and the operator's brand logo
// and colour stylesheet.
func (h *Handler) serveStatic(w http.ResponseWriter, name string) error {
	if h.app != nil {
		switch name {
		case brandLogoPath:
			if h.app.logo != nil {
				return serveAsset(w, h.app.logoType, h.app.logo)
			}
		case brandCSSPath:
			if h.app.brandCSS != nil {
				return serveAsset(w, "text/css; charset=utf-8", h.app.brandCSS)
			}
		}
	}
	b, err := staticFiles.ReadFile("static/" + path.Clean("/" + name)[1:])
	if err != nil {
		return caddyhttp.Error(http.StatusNotFound, nil)
	}
	return serveAsset(w, mime.TypeByExtension(path.Ext(name)), b)
}

func serveAsset(w http.ResponseWriter, contentType string, b []byte) error {
	w.Header().Set("Content-Type", contentType)
	// An SVG logo opened on its own must not run script either.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; sandbox")
	// Assets are embedded in the binary or read at load, and brand URLs
	// carry a hash of their content, so they change only with it.
	w.Header().Set("Cache-Control", "public, max-age=3600")
	_, err := w.Write(b)
	return err
}
