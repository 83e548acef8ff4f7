package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/mailauth/caddy-mailauth/approval"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Cookie names. The browser enforces what the prefixes promise: a
// "__Host-" cookie is Secure, host-only and for Path=/, so no other host,
// not even a sibling subdomain, can set or shadow it; a "__Secure-" cookie
// is only Secure, and a sibling can set one for the parent domain. The
// session cookie is "__Host-" unless cookie_domain shares it across
// subdomains.
//
// The pending cookie is always "__Host-": it names the login this browser
// may collect, and a sibling that planted one could tie the browser to a
// login the sibling started. A request to the endpoints that carries it
// twice is refused rather than served by either. Path=/, which "__Host-"
// requires, also sends it to the app's paths, where it has no business:
// it is a secret of the sign-in endpoints, and an app (or its logs) that
// held it while the browser had a login in progress could collect that
// login's session itself. So it is removed from the Cookie header before
// a request goes on; the search for it is part of the one pass that finds
// the session cookie, and only a request that has it pays for the
// rewrite. (The session cookie goes on as it always has: the app already
// acts as the user.)
//
// The "__Secure-mailauth_pending" cookie of earlier versions is no longer
// read: it was only good for a login in progress, so after an upgrade a
// browser that was waiting is asked to sign in again.
const (
	hostSessionCookie   = "__Host-mailauth_session"
	sharedSessionCookie = "__Secure-mailauth_session"
	pendingCookie       = "__Host-mailauth_pending"
	prefix              = "/.mailauth/"
)

// defaultIdentityHeaders are request headers that apps commonly trust as
// the signed-in user. A client could send them itself, so they are
// removed from every request before it goes on, in every spelling that
// an app could read as the same name (see headerSet); the site then sets
// its own with header_up from the placeholders.
var defaultIdentityHeaders = []string{
	"X-Remote-User", "X-Remote-Email", "X-Remote-Name", "X-Remote-Groups",
	"Remote-User", "Remote-Email", "Remote-Name", "Remote-Groups",
	"X-Forwarded-User", "X-Forwarded-Email", "X-Forwarded-Preferred-Username", "X-Forwarded-Groups",
	"X-Auth-Request-User", "X-Auth-Request-Email", "X-Auth-Request-Preferred-Username", "X-Auth-Request-Groups",
	"X-Webauth-User", "X-Webauth-Email",
}

// Handler is the "mailauth" HTTP handler. It serves the login endpoints
// under /.mailauth/ and lets a request through to the next handler only
// with a valid session cookie, setting {http.auth.user.id} and
// {http.auth.user.email} as Caddy's basic auth does.
type Handler struct {
	// DefaultProfile names the profile (from the global mailauth block)
	// that runs logins on this site. Required.
	DefaultProfile string `json:"default_profile,omitempty"`
	// Policies names the global policies this site uses, in order. The
	// first whose attribute matches the user picks the profile; no match
	// means DefaultProfile.
	Policies []string `json:"policies,omitempty"`
	// StripHeaders are request headers removed from every request before
	// it reaches the next handler, so a client cannot claim an identity by
	// sending them itself. A name also removes every spelling that differs
	// only in case or in which of '-', '_' and '.' separates its words
	// (X_Remote_User, x-remote_user, X.Remote.User), since CGI, FastCGI and
	// PHP turn them all into the same variable (HTTP_X_REMOTE_USER).
	// Default: the common identity headers (X-Remote-User, Remote-User,
	// X-Forwarded-User, X-Auth-Request-User and their Email, Name and
	// Groups companions). Setting it replaces the default list. Headers set
	// with header_up from {http.auth.user.*} are set after this, by the
	// proxy.
	StripHeaders []string `json:"strip_headers,omitempty"`

	// sessionCookie is the session cookie's name, prefixed by whether it
	// is shared across subdomains.
	sessionCookie string
	strip         headerSet
	app           *App
	site          *approval.Site
	// users and managers say who approves logins on this site, and
	// matching whether its waiting page shows a number to match.
	users, managers, matching bool
	csrf                      *http.CrossOriginProtection
	logger                    *zap.Logger
	// stopping closes when the HTTP server that serves this handler
	// begins to shut down, which ends long polls at once: a graceful
	// shutdown (a reload, too) waits for every request in flight.
	stopping context.Context
	stop     context.CancelFunc
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.mailauth",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision finds the mailauth app and checks the site's profile.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.stopping, h.stop = context.WithCancel(context.Background())
	if srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok {
		srv.RegisterOnShutdown(h.stop)
	}
	if h.DefaultProfile == "" {
		return errors.New("mailauth: default_profile is required")
	}
	appIface, err := ctx.App("mailauth")
	if err != nil {
		return fmt.Errorf("mailauth: loading the mailauth app (configure it in the global mailauth block): %w", err)
	}
	h.app = appIface.(*App)
	if h.app.service == nil {
		return errors.New("mailauth: the global mailauth block is missing")
	}
	if h.site, err = h.app.site(h.DefaultProfile, h.Policies); err != nil {
		return err
	}
	h.sessionCookie = hostSessionCookie
	if h.app.CookieDomain != "" {
		h.sessionCookie = sharedSessionCookie
	}
	if len(h.StripHeaders) > 0 {
		h.strip = newHeaderSet(h.StripHeaders)
	} else {
		h.strip = newHeaderSet(defaultIdentityHeaders)
	}
	h.users, h.managers = h.site.Approvers()
	h.matching = h.site.NumberMatching()
	// Cross-site POSTs are refused: a login form posted from another site
	// would let it flood inboxes or fix a session.
	h.csrf = http.NewCrossOriginProtection()
	return nil
}

// ServeHTTP serves the endpoints, or checks the session and passes on.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	h.strip.removeFrom(r.Header)
	if strings.HasPrefix(r.URL.Path, prefix) {
		return h.serveEndpoint(w, r)
	}
	if v, ok, pending := cookieValueAnd(r.Header, h.sessionCookie, pendingCookie); ok {
		var a approval.Authenticated
		err := h.app.service.Authenticate(h.site, v, &a)
		switch {
		case err == nil && a.Access == approval.AccessGranted:
			if fresh := h.app.service.RefreshSession(&a.Session); fresh != "" {
				h.setSessionCookie(w, fresh, a.Session.ExpiresAt)
			}
			repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
			repl.Set("http.auth.user.id", a.ID)
			repl.Set("http.auth.user.email", a.Email)
			repl.Set("http.auth.user.directory", a.Directory)
			if ap := a.Approval(); ap.Type == approval.TypeManager {
				// Only routes that a manager's grant opened pay for these.
				repl.Set("http.auth.user.approver", ap.Approver)
				repl.Set("http.auth.user.grant_until", time.Unix(ap.Until, 0).UTC().Format(time.RFC3339))
			}
			if pending {
				removeCookie(r.Header, pendingCookie)
			}
			return next.ServeHTTP(w, r)
		case err == nil:
			// Signed in, but not with what this route needs: ask for it
			// rather than sign in again.
			return h.needsApproval(w, r)
		}
		if c := h.logger.Check(zapcore.DebugLevel, "session cookie refused"); c != nil {
			c.Write(zap.Error(err))
		}
	}
	if (r.Method == http.MethodGet || r.Method == http.MethodHead) && acceptsHTML(r) {
		http.Redirect(w, r, prefix+"login?return="+url.QueryEscape(r.URL.RequestURI()), http.StatusFound)
		return nil
	}
	return h.unauthorized(w, r)
}

// unauthorized answers a client that cannot follow a redirect to a login
// page (a script, an API client) with a 401 that says where a person
// signs in, rather than an empty body.
func (h *Handler) unauthorized(w http.ResponseWriter, r *http.Request) error {
	login := prefix + "login?return=" + url.QueryEscape(r.URL.RequestURI())
	hdr := w.Header()
	hdr.Set("WWW-Authenticate", `MailAuth realm="`+siteHost(r)+`"`)
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusUnauthorized)
	return json.NewEncoder(w).Encode(map[string]string{
		"error":   "unauthenticated",
		"message": "This route needs a mailauth session: sign in with a browser at login, then send its session cookie.",
		"login":   login,
	})
}

func (h *Handler) serveEndpoint(w http.ResponseWriter, r *http.Request) error {
	hdr := w.Header()
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("X-Frame-Options", "DENY")
	// Pages set their own CSP with a script nonce when they render; this
	// one covers everything else served here.
	hdr.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	if r.Method == http.MethodPost {
		if err := h.csrf.Check(r); err != nil {
			return caddyhttp.Error(http.StatusForbidden, err)
		}
		r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	}
	route := strings.TrimPrefix(r.URL.Path, prefix)
	switch route {
	case "wait", "status", "code", "complete", "resend":
		// These act on the login the pending cookie names; with two,
		// one may have been planted, and picking either could serve the
		// planter's login.
		if cookieCount(r.Header, pendingCookie) > 1 {
			h.logger.Warn("refused a request carrying two pending cookies", zap.String("path", r.URL.Path), zap.String("client_ip", clientIP(r)))
			return h.render(w, r, http.StatusBadRequest, "message.html", pageData{
				Title:     "cookies.two.title",
				Message:   "cookies.two",
				Action:    "common.sign_in",
				ActionURL: prefix + "login",
			})
		}
	}
	switch {
	case route == "login" && isGet(r):
		return h.loginForm(w, r)
	case route == "login" && r.Method == http.MethodPost:
		return h.loginStart(w, r)
	case route == "wait" && isGet(r):
		return h.wait(w, r)
	case route == "status" && isGet(r):
		return h.status(w, r)
	case route == "verify" && isGet(r):
		return h.verifyOpen(w, r)
	case route == "verify" && r.Method == http.MethodPost:
		return h.verifyConfirm(w, r)
	case route == "code" && r.Method == http.MethodPost:
		return h.code(w, r)
	case route == "resend" && r.Method == http.MethodPost:
		return h.resend(w, r)
	case route == "complete" && r.Method == http.MethodPost:
		return h.complete(w, r)
	case route == "logout" && r.Method == http.MethodPost:
		return h.logout(w, r)
	case route == "stepup" && isGet(r):
		return h.stepUpForm(w, r)
	case route == "stepup" && r.Method == http.MethodPost:
		return h.stepUpStart(w, r)
	case route == "grants" && isGet(r):
		return h.grantsPage(w, r)
	case route == "grants" && r.Method == http.MethodPost:
		return h.endGrant(w, r)
	case route == "session" && isGet(r):
		return h.sessionPage(w, r)
	case route == "logout" && isGet(r):
		session, _ := cookieValue(r.Header, h.sessionCookie)
		return h.render(w, r, http.StatusOK, "logout.html", pageData{Title: "logout.heading", CSRF: h.app.csrfToken(session)})
	case strings.HasPrefix(route, "static/") && isGet(r):
		return h.serveStatic(w, strings.TrimPrefix(route, "static/"))
	}
	return caddyhttp.Error(http.StatusNotFound, nil)
}

func isGet(r *http.Request) bool { return r.Method == http.MethodGet || r.Method == http.MethodHead }

// acceptsHTML tells browsers from API clients: a browser that is sent to a
// login page can follow it, a script needs a 401.
func acceptsHTML(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		if strings.Contains(v, "text/html") {
			return true
		}
	}
	return false
}

// clientIP is the address Caddy resolved for the client, which honours the
// server's trusted_proxies setting; a raw X-Forwarded-For is never read.
func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// siteHost is the host the request was for, used only as the app's name
// in pages and mail; links never use it.
func siteHost(r *http.Request) string {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(host)
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == ':' || c == '[' || c == ']') {
			return "this site"
		}
	}
	if host == "" {
		return "this site"
	}
	return host
}

// Cleanup ends the long polls of an unloaded config, in case its server
// did not shut down (its listener lives on in the next config).
func (h *Handler) Cleanup() error {
	if h.stop != nil {
		h.stop()
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
