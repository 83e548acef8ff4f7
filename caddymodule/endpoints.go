package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/approval"
)

// signInClosed answers 503 while the service has not read the session
// revocations (approval.Service.RevocationsRead): it refuses every session
// until then, so it must not send anyone through a sign-in whose session
// it would refuse, nor claim a logout it could not record. It reports
// whether it answered.
func (h *Handler) signInClosed(w http.ResponseWriter) (bool, error) {
	if h.app.service.RevocationsRead() {
		return false, nil
	}
	return true, h.unavailable(w, "Sign-in is unavailable", "Sign-in is unavailable right now. Please try again in a minute.")
}

// loginForm shows the sign-in form, or sends a browser that is already
// signed in straight on.
func (h *Handler) loginForm(w http.ResponseWriter, r *http.Request) error {
	if closed, err := h.signInClosed(w); closed {
		return err
	}
	ret := approval.SafeReturnTarget(r.URL.Query().Get("return"), h.app.CookieDomain)
	if v, ok := cookieValue(r.Header, h.sessionCookie); ok {
		var s approval.Session
		if h.app.service.VerifySession(v, &s) == nil {
			http.Redirect(w, r, ret, http.StatusSeeOther)
			return nil
		}
	}
	return h.render(w, http.StatusOK, "login.html", pageData{Title: "Sign in", App: siteHost(r), Return: ret})
}

// loginStart starts a login and sends the browser to the waiting page. The
// answer is the same whether or not the user exists.
func (h *Handler) loginStart(w http.ResponseWriter, r *http.Request) error {
	if closed, err := h.signInClosed(w); closed {
		return err
	}
	if err := r.ParseForm(); err != nil {
		return caddyhttp.Error(http.StatusBadRequest, err)
	}
	ret := approval.SafeReturnTarget(r.PostForm.Get("return"), h.app.CookieDomain)
	input := r.PostForm["identity"]
	if len(input) != 1 {
		// Two identity fields are a crafted form: refuse rather than pick.
		return h.render(w, http.StatusBadRequest, "login.html", pageData{Title: "Sign in", App: siteHost(r), Return: ret, Error: "Enter one username or email address."})
	}
	started, err := h.app.service.Start(r.Context(), approval.StartRequest{
		Site:      h.site,
		Input:     input[0],
		ReturnURL: ret,
		App:       siteHost(r),
		ClientIP:  clientIP(r),
		UserAgent: r.UserAgent(),
	})
	if errors.Is(err, approval.ErrBadInput) {
		return h.render(w, http.StatusBadRequest, "login.html", pageData{Title: "Sign in", App: siteHost(r), Return: ret, Error: "Enter one username or email address, without spaces, commas or line breaks."})
	}
	if limited, ok := errors.AsType[*approval.RateLimitedError](err); ok {
		// The per-IP limit keys on the address alone, so saying so tells
		// nothing about users (see Service.Start).
		return h.tooManyLogins(w, ret, limited.RetryAfter)
	}
	if err != nil {
		h.logger.Error("starting a login", zap.Error(err))
		return h.unavailable(w, "Sign-in is unavailable", "Sign-in is unavailable right now. Please try again in a minute.")
	}
	h.setPendingCookie(w, started)
	http.Redirect(w, r, prefix+"wait", http.StatusSeeOther)
	return nil
}

// wait shows the waiting page for the login this browser started.
func (h *Handler) wait(w http.ResponseWriter, r *http.Request) error {
	v, err := h.watch(r)
	if errors.Is(err, approval.ErrLoginNotFound) {
		return h.render(w, http.StatusOK, "message.html", pageData{Title: "No sign-in in progress", Message: "This browser has no sign-in in progress.", Action: "Sign in", ActionURL: prefix + "login"})
	}
	if err != nil {
		h.logger.Error("reading a login for its waiting page", zap.Error(err))
		return h.unavailable(w, "Try again", "Sign-in is unavailable right now. Please reload this page in a minute.")
	}
	pending, _ := cookieValue(r.Header, pendingCookie)
	d := pageData{Title: "Check your email", App: v.App, Return: v.ReturnURL, Login: v, Now: time.Now(), Users: h.users, Managers: h.managers, Matching: h.matching, CSRF: h.app.csrfToken(pending)}
	d.LinkMayExpireSooner, d.Codes = h.site.LinkLifetimesDiffer(), h.site.CodeFallback()
	if v.StepUp {
		// A step-up's user is known, so its page is worded for the one
		// profile it asked, not for every profile of the site, and its
		// expiry is the link's own.
		d.Users, d.Managers = v.Type != approval.TypeManager, v.Type == approval.TypeManager
		d.Matching, d.Codes, d.LinkMayExpireSooner = true, d.Codes && d.Users, false
	}
	switch r.URL.Query().Get("code") {
	case "wrong":
		d.Error = "That code is not right. Check the mail and try again."
	case "locked":
		d.Error = "Too many wrong codes: this sign-in request is closed."
	case "paused":
		d.Error = "Too many wrong codes have been typed for this name lately, so codes are switched off for it for now. Open the link in the mail instead: it still works."
	}
	if !h.users {
		d.Title = "Waiting for approval"
	}
	switch v.State {
	case approval.StateExpired:
		d.Title = "Request expired"
		return h.render(w, http.StatusOK, "expired.html", d)
	case approval.StateDenied:
		d.Title = "Sign-in denied"
		return h.render(w, http.StatusOK, "denied.html", d)
	case approval.StateCompleted:
		http.Redirect(w, r, v.ReturnURL, http.StatusSeeOther)
		return nil
	}
	return h.render(w, http.StatusOK, "wait.html", d)
}

// longPoll bounds how long a status request with wait= is held. Well
// under the idle timeouts of common proxies and load balancers (60 s).
const longPoll = 25 * time.Second

// status answers the waiting page's polls. With wait=<state> it is a long
// poll: the answer waits until the login is no longer in that state, or
// longPoll has passed, so a waiting browser costs a request per change
// rather than one a second.
func (h *Handler) status(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	var v *approval.LoginView
	var err error
	if known := approval.State(r.URL.Query().Get("wait")); known != "" {
		v, err = h.watchChange(r, known)
	} else {
		v, err = h.watch(r)
	}
	if err != nil {
		w.WriteHeader(http.StatusNotFound)
		return json.NewEncoder(w).Encode(map[string]string{"state": "unknown"})
	}
	left := int(time.Until(v.ExpiresAt).Seconds())
	if left < 0 {
		left = 0
	}
	return json.NewEncoder(w).Encode(struct {
		State     approval.State `json:"state"`
		ExpiresIn int            `json:"expires_in"`
		// MailDelayed is mailDelayed's answer for this login.
		MailDelayed bool `json:"mail_delayed"`
	}{v.State, left, h.mailDelayed(v)})
}

// mailDelayedAfter is how long a login waits, and its mail with it, before
// the waiting page says that mail is delayed.
const mailDelayedAfter = 5 * time.Second

// mailDelayed says whether the waiting page should tell this login that
// mail is delayed. It must not tell whether the user exists, and an
// unknown user's login has no mail at all, so it never looks at this
// login's own mail: it is true for every pending login older than
// mailDelayedAfter while the outbox is that far behind with sign-in mail
// (the oldest it is working on has waited that long). Known and unknown
// users alike see it in a burst and not otherwise; what it reveals is
// that the site is busy, which every user of it sees anyway.
func (h *Handler) mailDelayed(v *approval.LoginView) bool {
	return v.State == approval.StatePending && time.Since(v.CreatedAt) >= mailDelayedAfter &&
		h.app.outbox.MailDelay() >= mailDelayedAfter
}

func (h *Handler) watchChange(r *http.Request, known approval.State) (*approval.LoginView, error) {
	p, ok := cookieValue(r.Header, pendingCookie)
	if !ok {
		return nil, approval.ErrLoginNotFound
	}
	ctx, cancel := context.WithTimeout(r.Context(), longPoll)
	defer cancel()
	stop := context.AfterFunc(h.stopping, cancel)
	defer stop()
	return h.app.service.WatchChange(ctx, h.site, p, known)
}

func (h *Handler) watch(r *http.Request) (*approval.LoginView, error) {
	p, ok := cookieValue(r.Header, pendingCookie)
	if !ok {
		return nil, approval.ErrLoginNotFound
	}
	return h.app.service.Watch(r.Context(), h.site, p)
}

// verifyOpen is the link landing page. It shows what the link approves and
// a Confirm button; it changes nothing, because mail scanners open links.
func (h *Handler) verifyOpen(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	token := q.Get("token")
	v, err := h.app.service.OpenLink(r.Context(), token, q.Get("pair"), clientIP(r), r.UserAgent())
	if err != nil {
		return h.linkError(w, err)
	}
	switch v.State {
	case approval.StatePending:
	case approval.StateApproved, approval.StateDenied, approval.StateCompleted:
		return h.render(w, http.StatusGone, "decided.html", pageData{Title: "Already decided", App: v.App, Link: v})
	default:
		return h.linkError(w, approval.ErrLoginExpired)
	}
	title := "Confirm sign-in"
	if v.Type == approval.TypeManager {
		title = "Approve or deny sign-in"
	}
	return h.render(w, http.StatusOK, "verify.html", pageData{Title: title, App: v.App, Link: v, Token: token})
}

// verifyConfirm redeems the link.
func (h *Handler) verifyConfirm(w http.ResponseWriter, r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return caddyhttp.Error(http.StatusBadRequest, err)
	}
	v, err := h.app.service.Confirm(r.Context(), approval.Confirmation{
		Token: r.PostForm.Get("token"), Match: r.PostForm.Get("match"), Duration: r.PostForm.Get("duration"),
		ClientIP: clientIP(r), UserAgent: r.UserAgent(),
	})
	if errors.Is(err, approval.ErrAlreadyDecided) && v != nil {
		return h.render(w, http.StatusConflict, "decided.html", pageData{Title: "Already decided", App: v.App, Link: v})
	}
	if err != nil {
		return h.linkError(w, err)
	}
	title := "Sign-in approved"
	if v.State == approval.StateDenied {
		title = "Sign-in denied"
	}
	return h.render(w, http.StatusOK, "approved.html", pageData{Title: title, App: v.App, Link: v})
}

func (h *Handler) linkError(w http.ResponseWriter, err error) error {
	switch {
	case errors.Is(err, approval.ErrBadDuration):
		return h.render(w, http.StatusBadRequest, "message.html", pageData{Title: "Choose a duration", Message: "That duration is not one this approval offers. Go back, pick one of the durations shown and approve again: nothing was decided yet."})
	case errors.Is(err, approval.ErrWrongMatch):
		return h.render(w, http.StatusForbidden, "message.html", pageData{Title: "Number did not match", Message: "That was not the number shown on the screen of the browser that asked to sign in, so nothing was approved and this link no longer works. If you did start this sign-in, start it again and pick the number your screen shows. If you did not, someone else may be trying to sign in with your account: tell your IT team."})
	case errors.Is(err, approval.ErrLinkInvalid), errors.Is(err, approval.ErrAlreadyDecided):
		return h.render(w, http.StatusGone, "message.html", pageData{Title: "Link not valid", Message: "This sign-in link has already been used or has expired. Links work once and only for a short time. Start a new sign-in from the app if you still need one."})
	case errors.Is(err, approval.ErrLoginExpired):
		return h.render(w, http.StatusGone, "message.html", pageData{Title: "Link expired", Message: "This sign-in request has expired. Start a new sign-in from the app."})
	}
	h.logger.Error("redeeming a link", zap.Error(err))
	return h.unavailable(w, "Try again", "The link could not be checked right now. Please try again in a minute.")
}

// complete hands the session to the browser that started the login.
func (h *Handler) complete(w http.ResponseWriter, r *http.Request) error {
	if closed, err := h.signInClosed(w); closed {
		return err
	}
	p, ok := cookieValue(r.Header, pendingCookie)
	if !ok {
		http.Redirect(w, r, prefix+"login", http.StatusSeeOther)
		return nil
	}
	if err := r.ParseForm(); err != nil || !h.app.csrfOK(r, p) {
		return caddyhttp.Error(http.StatusForbidden, errors.New("mailauth: form token missing or wrong"))
	}
	current, _ := h.session(r)
	c, err := h.app.service.Complete(r.Context(), p, clientIP(r), current)
	switch {
	case errors.Is(err, approval.ErrStepUpSession):
		clearCookie(w, pendingCookie, "/", "")
		return h.render(w, http.StatusForbidden, "message.html", pageData{Title: "Sign in again", Message: "Access was approved for a session this browser no longer holds (you signed out meanwhile, or it was another browser). Sign in and ask again.", Action: "Sign in", ActionURL: prefix + "login"})
	case errors.Is(err, approval.ErrNotApproved):
		http.Redirect(w, r, prefix+"wait", http.StatusSeeOther)
		return nil
	case errors.Is(err, approval.ErrDenied):
		clearCookie(w, pendingCookie, "/", "")
		return h.render(w, http.StatusForbidden, "denied.html", pageData{Title: "Sign-in denied"})
	case errors.Is(err, approval.ErrLoginNotFound), errors.Is(err, approval.ErrAlreadyDecided), errors.Is(err, approval.ErrLoginExpired):
		clearCookie(w, pendingCookie, "/", "")
		http.Redirect(w, r, prefix+"login", http.StatusSeeOther)
		return nil
	case err != nil:
		h.logger.Error("completing a login", zap.Error(err))
		return h.unavailable(w, "Try again", "Sign-in could not be completed right now. Please reload this page in a minute.")
	}
	clearCookie(w, pendingCookie, "/", "")
	h.setSessionCookie(w, c.Cookie, c.Session.ExpiresAt)
	http.Redirect(w, r, c.ReturnURL, http.StatusSeeOther)
	return nil
}

// logout ends the session in this browser.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request) error {
	if closed, err := h.signInClosed(w); closed {
		return err
	}
	if v, ok := cookieValue(r.Header, h.sessionCookie); ok {
		if err := r.ParseForm(); err != nil || !h.app.csrfOK(r, v) {
			return caddyhttp.Error(http.StatusForbidden, errors.New("mailauth: form token missing or wrong"))
		}
		var s approval.Session
		if h.app.service.VerifySession(v, &s) == nil {
			if err := h.app.service.Logout(r.Context(), &s, siteHost(r), clientIP(r), r.UserAgent()); err != nil {
				// The cookie is still cleared below; the session could only
				// come back from a copy of the cookie, until it expires.
				h.logger.Error("revoking a session at logout", zap.Error(err))
			}
		}
	}
	clearCookie(w, h.sessionCookie, "/", h.app.CookieDomain)
	return h.render(w, http.StatusOK, "message.html", pageData{Title: "Signed out", Message: "You are signed out.", Action: "Sign in again", ActionURL: prefix + "login"})
}

func clearCookie(w http.ResponseWriter, name, path, domain string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: path, Domain: domain, MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
}

// code redeems the one-time code typed into the waiting page; on success
// the browser gets its session at once.
func (h *Handler) code(w http.ResponseWriter, r *http.Request) error {
	if closed, err := h.signInClosed(w); closed {
		return err
	}
	if err := r.ParseForm(); err != nil {
		return caddyhttp.Error(http.StatusBadRequest, err)
	}
	p, ok := cookieValue(r.Header, pendingCookie)
	if !ok {
		http.Redirect(w, r, prefix+"login", http.StatusSeeOther)
		return nil
	}
	if !h.app.csrfOK(r, p) {
		return caddyhttp.Error(http.StatusForbidden, errors.New("mailauth: form token missing or wrong"))
	}
	err := h.app.service.RedeemCode(r.Context(), p, r.PostForm.Get("code"), clientIP(r))
	switch {
	case errors.Is(err, approval.ErrWrongCode):
		http.Redirect(w, r, prefix+"wait?code=wrong", http.StatusSeeOther)
		return nil
	case errors.Is(err, approval.ErrCodeLocked):
		http.Redirect(w, r, prefix+"wait?code=locked", http.StatusSeeOther)
		return nil
	case errors.Is(err, approval.ErrCodesPaused):
		http.Redirect(w, r, prefix+"wait?code=paused", http.StatusSeeOther)
		return nil
	case errors.Is(err, approval.ErrLoginNotFound):
		http.Redirect(w, r, prefix+"login", http.StatusSeeOther)
		return nil
	case err != nil && !errors.Is(err, approval.ErrAlreadyDecided):
		if errors.Is(err, approval.ErrLoginExpired) {
			http.Redirect(w, r, prefix+"wait", http.StatusSeeOther)
			return nil
		}
		h.logger.Error("redeeming a code", zap.Error(err))
		return h.unavailable(w, "Try again", "The code could not be checked right now. Please try again in a minute.")
	}
	return h.complete(w, r)
}

// setSessionCookie sets the session cookie. Its Expires follows the
// signed expiry, which the server enforces whatever the browser keeps.
func (h *Handler) setSessionCookie(w http.ResponseWriter, value string, expires int64) {
	http.SetCookie(w, &http.Cookie{
		Name:     h.sessionCookie,
		Value:    value,
		Path:     "/",
		Domain:   h.app.CookieDomain,
		Expires:  time.Unix(expires, 0),
		Secure:   true,
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
	})
}

// tooManyLogins answers a login start refused by the per-IP limit: 429,
// with Retry-After and a page that says when to come back.
func (h *Handler) tooManyLogins(w http.ResponseWriter, ret string, retry time.Duration) error {
	secs := int(math.Ceil(retry.Seconds()))
	mins := max(1, (secs+59)/60)
	when := "1 minute"
	if mins > 1 {
		when = strconv.Itoa(mins) + " minutes"
	}
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	return h.render(w, http.StatusTooManyRequests, "message.html", pageData{
		Title:     "Too many sign-in attempts",
		Message:   "Too many sign-in attempts from your network; try again in " + when + ".",
		Action:    "Back to sign-in",
		ActionURL: prefix + "login?return=" + url.QueryEscape(ret),
	})
}
