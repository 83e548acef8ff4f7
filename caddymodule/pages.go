package caddymodule

import (
	"bytes"
	"crypto/rand"
	"embed"
	"encoding/base64"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/mailauth/caddy-mailauth/approval"
	"github.com/mailauth/caddy-mailauth/mailer"
)

//go:embed pages/*.html
var pageFiles embed.FS

//go:embed static
var staticFiles embed.FS

// pages are parsed once; each page template includes the shared layout.
var pages = func() map[string]*template.Template {
	funcs := template.FuncMap{
		"clock": func(t time.Time) string { return t.Format("15:04 MST") },
		"human": mailer.HumanDuration,
		"until": func(t time.Time) int { return max(0, int(time.Until(t).Seconds())) },
		"unix":  func(n int64) time.Time { return time.Unix(n, 0) },
	}
	layout := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(pageFiles, "pages/layout.html"))
	out := map[string]*template.Template{}
	entries, _ := fs.Glob(pageFiles, "pages/*.html")
	for _, e := range entries {
		name := path.Base(e)
		if name == "layout.html" {
			continue
		}
		out[name] = template.Must(template.Must(layout.Clone()).ParseFS(pageFiles, e))
	}
	return out
}()

// pageData is everything a page may show. Every value is escaped by
// html/template on output.
type pageData struct {
	Title     string
	App       string
	Return    string
	Error     string
	Message   string
	Action    string
	ActionURL string
	Token     string
	Login     *approval.LoginView
	Link      *approval.LinkView
	Now       time.Time
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

// render writes a page. It renders into a buffer first so a template error
// becomes a clean 500 rather than half a page.
func (h *Handler) render(w http.ResponseWriter, status int, name string, d pageData) error {
	t := pages[name]
	var n [16]byte
	if _, err := rand.Read(n[:]); err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	d.Nonce = base64.RawStdEncoding.EncodeToString(n[:])
	// Only a script carrying this response's nonce runs: no inline-script
	// exception, no third-party origin.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'nonce-"+d.Nonce+"'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
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
func (h *Handler) unavailable(w http.ResponseWriter, title, message string) error {
	w.Header().Set("Retry-After", "30")
	return h.render(w, http.StatusServiceUnavailable, "message.html", pageData{Title: title, Message: message})
}

func serveStatic(w http.ResponseWriter, r *http.Request, name string) error {
	b, err := staticFiles.ReadFile("static/" + path.Clean("/" + name)[1:])
	if err != nil {
		return caddyhttp.Error(http.StatusNotFound, nil)
	}
	w.Header().Set("Content-Type", mime.TypeByExtension(path.Ext(name)))
	// Assets are embedded in the binary, so they change only with it.
	w.Header().Set("Cache-Control", "public, max-age=3600")
	_, err = w.Write(b)
	return err
}
