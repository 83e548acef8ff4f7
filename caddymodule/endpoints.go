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
	"github.com/mailauth/caddy-mailauth/locale"
)

// signInClosed answers 503 while the service has not read the session
// revocations (approval.Service.RevocationsRead): it refuses every session
// until then, so it must not send anyone through a sign-in whose session
// it would refuse, nor claim a logout it could not record. It reports
// whether it answered.
func (h *Handler) signInClosed(w http.ResponseWriter, r *http.Request) (bool, error) {
	if h.app.service.RevocationsRead() {
		return false, nil
	}
	return true, h.unavailable(w, r, "unavailable.signin.title", "unavailable.signin")
}

// loginForm shows the sign-in form, or sends a browser that is already
// signed in straight on.
func (h *Handler) loginForm(w http.ResponseWriter, r *http.Request) error {
	if closed, err := h.signInClosed(w, r); closed {
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
	return h.render(w, r, http.StatusOK, "login.html", pageData{Title: "login.title", App: siteHost(r), Return: ret, Input: h.typedBefore(r)})
}

// typedBefore is what this browser typed for the sign-in it has in
// progress, so "start again" comes back to a filled-in form. Only a
// browser that holds a pending cookie pays for the store read, and the
// answer is its own words, whoever they name.
func (h *Handler) typedBefore(r *http.Request) string {
	if _, ok := cookieValue(r.Header, pendingCookie); !ok {
		return ""
	}
	v, err := h.watch(r)
	if err != nil || v.StepUp {
		return ""
	}
	return v.Input
}

// loginStart starts a login and sends the browser to the waiting page. The
// answer is the same whether or not the user exists.
func (h *Handler) loginStart(w http.ResponseWriter, r *http.Request) error {
	if closed, err := h.signInClosed(w, r); closed {
		return err
	}
	if err := r.ParseForm(); err != nil {
		return caddyhttp.Error(http.StatusBadRequest, err)
	}
	ret := approval.SafeReturnTarget(r.PostForm.Get("return"), h.app.CookieDomain)
	input := r.PostForm["identity"]
	if len(input) != 1 {
		// Two identity fields are a crafted form: refuse rather than pick.
		return h.render(w, r, http.StatusBadRequest, "login.html", pageData{Title: "login.title", App: siteHost(r), Return: ret, Error: "login.error.one"})
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
		return h.render(w, r, http.StatusBadRequest, "login.html", pageData{Title: "login.title", App: siteHost(r), Return: ret, Input: input[0], Error: "login.error.shape"})
	}
	if limited, ok := errors.AsType[*approval.RateLimitedError](err); ok {
		// The per-IP limit keys on the address alone, so saying so tells
		// nothing about users (see Service.Start).
		return h.tooManyLogins(w, r, ret, limited.RetryAfter)
	}
	if err != nil {
		h.logger.Error("starting a login", zap.Error(err))
		return h.unavailable(w, r, "unavailable.signin.title", "unavailable.signin")
	}
	if old, ok := cookieValue(r.Header, pendingCookie); ok {
		// Starting again replaces this browser's older login, so the
		// older mail's link says so instead of asking for a number that
		// no screen shows any more.
		h.app.service.Replace(r.Context(), old)
	}
	h.setPendingCookie(w, started)
	http.Redirect(w, r, prefix+"wait", http.StatusSeeOther)
	return nil
}

// pendingForm reads a form that the waiting page posts about its login,
// and returns the pending cookie. handled means it has answered already:
// sign-in is closed, there is no login (back to the login page), or the
// form token is missing or wrong (403).
func (h *Handler) pendingForm(w http.ResponseWriter, r *http.Request) (pending string, handled bool, err error) {
	if closed, err := h.signInClosed(w, r); closed {
		return "", true, err
	}
	p, ok := cookieValue(r.Header, pendingCookie)
	if !ok {
		http.Redirect(w, r, prefix+"login", http.StatusSeeOther)
		return "", true, nil
	}
	if err := r.ParseForm(); err != nil || !h.app.csrfOK(r, p) {
		return "", true, caddyhttp.Error(http.StatusForbidden, errors.New("mailauth: form token missing or wrong"))
	}
	return p, false, nil
}

// resend sends the mail again from the waiting page: a new login for what
// was typed, replacing this one, once ResendCooldown has passed since it
// started. It is a login start, counted by the same limits.
func (h *Handler) resend(w http.ResponseWriter, r *http.Request) error {
	p, handled, err := h.pendingForm(w, r)
	if handled {
		return err
	}
	started, err := h.app.service.Resend(r.Context(), approval.StartRequest{
		Site: h.site, App: siteHost(r), ClientIP: clientIP(r), UserAgent: r.UserAgent(),
	}, p)
	if soon, ok := errors.AsType[*approval.ResendTooSoonError](err); ok {
		http.Redirect(w, r, prefix+"wait?resend="+strconv.Itoa(int(math.Ceil(soon.Wait.Seconds()))), http.StatusSeeOther)
		return nil
	}
	if limited, ok := errors.AsType[*approval.RateLimitedError](err); ok {
		return h.tooManyLogins(w, r, "", limited.RetryAfter)
	}
	switch {
	case errors.Is(err, approval.ErrLoginNotFound):
		http.Redirect(w, r, prefix+"login", http.StatusSeeOther)
		return nil
	case errors.Is(err, approval.ErrNotResendable):
		http.Redirect(w, r, prefix+"wait", http.StatusSeeOther)
		return nil
	case err != nil:
		h.logger.Error("sending a login again", zap.Error(err))
		return h.unavailable(w, r, "unavailable.signin.title", "unavailable.signin")
	}
	h.setPendingCookie(w, started)
	http.Redirect(w, r, prefix+"wait?resent=1", http.StatusSeeOther)
	return nil
}

// wait shows the waiting page for the login this browser started.
func (h *Handler) wait(w http.ResponseWriter, r *http.Request) error {
	v, err := h.watch(r)
	if errors.Is(err, approval.ErrLoginNotFound) {
		if _, signedIn := h.session(r); signedIn {
			// The sign-in finished in another request of this browser
			// (the code form, while a poll was answering): it is signed
			// in, not lost.
			return h.render(w, r, http.StatusOK, "message.html", pageData{Title: "wait.signed_in.title", Message: "wait.signed_in", Action: "wait.signed_in.action", ActionURL: "/"})
		}
		return h.render(w, r, http.StatusOK, "message.html", pageData{Title: "wait.none.title", Message: "wait.none", Action: "common.sign_in", ActionURL: prefix + "login"})
	}
	if err != nil {
		h.logger.Error("reading a login for its waiting page", zap.Error(err))
		return h.unavailable(w, r, "unavailable.title", "unavailable.reload")
	}
	pending, _ := cookieValue(r.Header, pendingCookie)
	d := pageData{Title: "wait.users.heading", App: v.App, Return: v.ReturnURL, Login: v, Now: time.Now(), Users: h.users, Managers: h.managers, Matching: h.matching, CSRF: h.app.csrfToken(pending)}
	d.ResendIn = int(math.Ceil(h.app.service.ResendIn(v.CreatedAt).Seconds()))
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
		d.Error = "wait.error.code_wrong"
	case "locked":
		d.Error = "wait.error.code_locked"
	case "paused":
		d.Error = "wait.error.code_paused"
	}
	if n, err := strconv.Atoi(r.URL.Query().Get("resend")); err == nil && n > 0 {
		d.Error, d.Args = "wait.error.resend_soon", []any{n}
	}
	if !h.users {
		d.Title = "wait.managers.heading"
	}
	switch v.State {
	case approval.StateExpired:
		d.Title = "expired.heading"
		return h.render(w, r, http.StatusOK, "expired.html", d)
	case approval.StateDenied:
		d.Title = "denied.heading"
		return h.render(w, r, http.StatusOK, "denied.html", d)
	case approval.StateCompleted:
		http.Redirect(w, r, v.ReturnURL, http.StatusSeeOther)
		return nil
	}
	return h.render(w, r, http.StatusOK, "wait.html", d)
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
		return h.linkError(w, r, err)
	}
	switch v.State {
	case approval.StatePending:
	case approval.StateApproved, approval.StateDenied, approval.StateCompleted:
		return h.render(w, r, http.StatusGone, "decided.html", pageData{Title: "decided.heading", App: v.App, Link: v})
	default:
		return h.linkError(w, r, approval.ErrLoginExpired)
	}
	title := "verify.user.heading"
	if v.Type == approval.TypeManager {
		title = "verify.manager.title"
	}
	return h.render(w, r, http.StatusOK, "verify.html", pageData{Title: title, App: v.App, Link: v, Token: token})
}

// verifyConfirm redeems the link.
func (h *Handler) verifyConfirm(w http.ResponseWriter, r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return caddyhttp.Error(http.StatusBadRequest, err)
	}
	if r.PostForm.Get("action") == "not_me" {
		return h.notMe(w, r)
	}
	v, err := h.app.service.Confirm(r.Context(), approval.Confirmation{
		Token: r.PostForm.Get("token"), Match: r.PostForm.Get("match"), Duration: r.PostForm.Get("duration"),
		ClientIP: clientIP(r), UserAgent: r.UserAgent(),
	})
	if errors.Is(err, approval.ErrAlreadyDecided) && v != nil {
		return h.render(w, r, http.StatusConflict, "decided.html", pageData{Title: "decided.heading", App: v.App, Link: v})
	}
	if errors.Is(err, approval.ErrWrongMatch) && v != nil {
		return h.wrongNumber(w, r, v, r.PostForm.Get("match") == approval.NoneOfThese)
	}
	if err != nil {
		return h.linkError(w, r, err)
	}
	title := "approved.user.heading"
	if v.State == approval.StateDenied {
		title = "approved.manager.denied.heading"
	}
	return h.render(w, r, http.StatusOK, "approved.html", pageData{Title: title, App: v.App, Link: v})
}

// notMe is "This wasn't me" on a user's own link page: the login is
// denied and audited as not the user's.
func (h *Handler) notMe(w http.ResponseWriter, r *http.Request) error {
	v, err := h.app.service.NotMe(r.Context(), approval.NotMeRequest{Token: r.PostForm.Get("token"), ClientIP: clientIP(r), UserAgent: r.UserAgent()})
	if errors.Is(err, approval.ErrAlreadyDecided) && v != nil {
		return h.render(w, r, http.StatusConflict, "decided.html", pageData{Title: "decided.heading", App: v.App, Link: v})
	}
	if err != nil {
		return h.linkError(w, r, err)
	}
	return h.render(w, r, http.StatusOK, "approved.html", pageData{Title: "approved.not_me.heading", App: v.App, Link: v})
}

// wrongNumber says that a wrong number (or "None of these") approved
// nothing and ended the request, and what to do next: the user starts
// again, an approver asks the user to.
func (h *Handler) wrongNumber(w http.ResponseWriter, r *http.Request, v *approval.LinkView, none bool) error {
	d := pageData{Title: "match.title", App: v.App, Args: []any{v.User}}
	switch {
	case v.Type == approval.TypeManager:
		d.Message = "match.manager"
	case none:
		d.Message, d.Action, d.ActionURL = "match.none", "common.start_again", prefix+"login"
	default:
		d.Message, d.Action, d.ActionURL = "match.user", "common.start_again", prefix+"login"
	}
	return h.render(w, r, http.StatusForbidden, "message.html", d)
}

func (h *Handler) linkError(w http.ResponseWriter, r *http.Request, err error) error {
	switch {
	case errors.Is(err, approval.ErrBadDuration):
		return h.render(w, r, http.StatusBadRequest, "message.html", pageData{Title: "link.duration.title", Message: "link.duration"})
	case errors.Is(err, approval.ErrWrongMatch):
		return h.render(w, r, http.StatusForbidden, "message.html", pageData{Title: "match.title", Message: "match.user", Action: "common.start_again", ActionURL: prefix + "login"})
	case errors.Is(err, approval.ErrLinkInvalid), errors.Is(err, approval.ErrAlreadyDecided):
		return h.render(w, r, http.StatusGone, "message.html", pageData{Title: "link.invalid.title", Message: "link.invalid", Action: "common.start_new", ActionURL: prefix + "login"})
	case errors.Is(err, approval.ErrLoginExpired):
		return h.render(w, r, http.StatusGone, "message.html", pageData{Title: "link.expired.title", Message: "link.expired", Action: "common.start_new", ActionURL: prefix + "login"})
	}
	h.logger.Error("redeeming a link", zap.Error(err))
	return h.unavailable(w, r, "unavailable.title", "unavailable.link")
}

// complete hands the session to the browser that started the login.
func (h *Handler) complete(w http.ResponseWriter, r *http.Request) error {
	p, handled, err := h.pendingForm(w, r)
	if handled {
		return err
	}
	current, _ := h.session(r)
	c, err := h.app.service.Complete(r.Context(), p, clientIP(r), current)
	switch {
	case errors.Is(err, approval.ErrStepUpSession):
		clearCookie(w, pendingCookie, "/", "")
		return h.render(w, r, http.StatusForbidden, "message.html", pageData{Title: "complete.stepup_session.title", Message: "complete.stepup_session", Action: "common.sign_in", ActionURL: prefix + "login"})
	case errors.Is(err, approval.ErrNotApproved):
		http.Redirect(w, r, prefix+"wait", http.StatusSeeOther)
		return nil
	case errors.Is(err, approval.ErrDenied):
		clearCookie(w, pendingCookie, "/", "")
		return h.render(w, r, http.StatusForbidden, "denied.html", pageData{Title: "denied.heading"})
	case errors.Is(err, approval.ErrLoginNotFound), errors.Is(err, approval.ErrAlreadyDecided), errors.Is(err, approval.ErrLoginExpired):
		clearCookie(w, pendingCookie, "/", "")
		http.Redirect(w, r, prefix+"login", http.StatusSeeOther)
		return nil
	case err != nil:
		h.logger.Error("completing a login", zap.Error(err))
		return h.unavailable(w, r, "unavailable.title", "unavailable.complete")
	}
	clearCookie(w, pendingCookie, "/", "")
	h.setSessionCookie(w, c.Cookie, c.Session.ExpiresAt)
	http.Redirect(w, r, c.ReturnURL, http.StatusSeeOther)
	return nil
}

// logout ends the session in this browser.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request) error {
	if closed, err := h.signInClosed(w, r); closed {
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
	return h.render(w, r, http.StatusOK, "message.html", pageData{Title: "logout.done.title", Message: "logout.done", Action: "logout.again", ActionURL: prefix + "login"})
}

func clearCookie(w http.ResponseWriter, name, path, domain string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: path, Domain: domain, MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
}

// code redeems the one-time code typed into the waiting page; on success
// the browser gets its session at once.
func (h *Handler) code(w http.ResponseWriter, r *http.Request) error {
	if closed, err := h.signInClosed(w, r); closed {
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
		return h.unavailable(w, r, "unavailable.title", "unavailable.code")
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
func (h *Handler) tooManyLogins(w http.ResponseWriter, r *http.Request, ret string, retry time.Duration) error {
	secs := int(math.Ceil(retry.Seconds()))
	mins := max(1, (secs+59)/60)
	when := locale.Get(h.pageLanguage(r)).Duration(time.Duration(mins) * time.Minute)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	return h.render(w, r, http.StatusTooManyRequests, "message.html", pageData{
		Title:     "limit.login.title",
		Message:   "limit.login",
		Args:      []any{when},
		Action:    "limit.login.back",
		ActionURL: prefix + "login?return=" + url.QueryEscape(ret),
	})
}
