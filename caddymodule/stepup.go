package caddymodule

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/approval"
)

// Step-up, grants and the session page: what a signed-in user sees when a
// route needs more than their session holds, what a manager sees of the
// grants they gave, and what a user holds.

// needsApproval answers a signed-in request that this route does not
// accept: a browser goes to the step-up page, an API client gets a 403
// saying where to go.
func (h *Handler) needsApproval(w http.ResponseWriter, r *http.Request) error {
	to := prefix + "stepup?site=" + h.site.ID + "&return=" + url.QueryEscape(r.URL.RequestURI())
	if (r.Method == http.MethodGet || r.Method == http.MethodHead) && acceptsHTML(r) {
		http.Redirect(w, r, to, http.StatusFound)
		return nil
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusForbidden)
	return json.NewEncoder(w).Encode(map[string]string{
		"error":   "approval_required",
		"message": "This route needs an approval that the session does not hold; open step_up in a browser to ask for it.",
		"step_up": to,
	})
}

// session returns the browser's verified session, if it has one.
func (h *Handler) session(r *http.Request) (*approval.Session, bool) {
	v, ok := cookieValue(r.Header, h.sessionCookie)
	if !ok {
		return nil, false
	}
	var s approval.Session
	if h.app.service.VerifySession(v, &s) != nil {
		return nil, false
	}
	return &s, true
}

// sessionCSRF is the form token of forms that act for a session. It is
// bound to the session's id, not its cookie value, so a cookie refreshed
// meanwhile (the idle timeout slides it) does not void an open form.
func (h *Handler) sessionCSRF(s *approval.Session) string {
	return h.app.csrfToken("session\x00" + hex.EncodeToString(s.ID[:]))
}

// stepUpSite is the site a step-up is for: the one named in the request,
// which any handler of the host may serve, else this handler's own.
func (h *Handler) stepUpSite(id string) *approval.Site {
	if s := h.app.siteByID(id); s != nil {
		return s
	}
	return h.site
}

// stepUpForm shows what a route needs of a signed-in user: "This part
// needs your manager's approval", with the identity known and a button
// that asks. It changes nothing; a session that satisfies the route once
// its memberships were read again gets a fresh cookie and goes on.
func (h *Handler) stepUpForm(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	ret := approval.SafeReturnTarget(q.Get("return"), h.app.CookieDomain)
	s, ok := h.session(r)
	if !ok {
		http.Redirect(w, r, prefix+"login?return="+url.QueryEscape(ret), http.StatusSeeOther)
		return nil
	}
	site := h.stepUpSite(q.Get("site"))
	v, err := h.app.service.CheckStepUp(r.Context(), site, s)
	if err != nil {
		return h.stepUpError(w, r, err, ret)
	}
	if v.Refreshed != "" {
		h.setSessionCookie(w, v.Refreshed, s.ExpiresAt)
		http.Redirect(w, r, ret, http.StatusSeeOther)
		return nil
	}
	return h.renderStepUp(w, r, http.StatusOK, v, site, ret, "", "")
}

func (h *Handler) renderStepUp(w http.ResponseWriter, r *http.Request, status int, v *approval.StepUpView, site *approval.Site, ret, reason, msg string) error {
	title := "stepup.user.heading"
	if v.Type == approval.TypeManager {
		title = "stepup.manager.heading"
	}
	s, _ := h.session(r)
	return h.render(w, r, status, "stepup.html", pageData{
		Title: title, App: siteHost(r), Return: ret, StepUp: v, SiteID: site.ID, Reason: reason, Error: msg,
		CSRF: h.sessionCSRF(s), Now: h.app.service.Now(),
	})
}

// stepUpStart asks for the approval: the manager gets the request mail
// (or the user a link), and the browser waits on the waiting page as for
// a sign-in, while its session keeps working for the rest of the site.
func (h *Handler) stepUpStart(w http.ResponseWriter, r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return caddyhttp.Error(http.StatusBadRequest, err)
	}
	ret := approval.SafeReturnTarget(r.PostForm.Get("return"), h.app.CookieDomain)
	s, ok := h.session(r)
	if !ok {
		http.Redirect(w, r, prefix+"login?return="+url.QueryEscape(ret), http.StatusSeeOther)
		return nil
	}
	if got := r.PostForm.Get(csrfField); got == "" || got != h.sessionCSRF(s) {
		return caddyhttp.Error(http.StatusForbidden, errors.New("mailauth: form token missing or wrong"))
	}
	site := h.stepUpSite(r.PostForm.Get("site"))
	reason := r.PostForm.Get("reason")
	started, err := h.app.service.StepUp(r.Context(), approval.StepUpRequest{
		Site: site, Session: s, Reason: reason, ReturnURL: ret,
		App: siteHost(r), ClientIP: clientIP(r), UserAgent: r.UserAgent(),
	})
	switch {
	case errors.Is(err, approval.ErrReasonRequired):
		v, cerr := h.app.service.CheckStepUp(r.Context(), site, s)
		if cerr != nil {
			return h.stepUpError(w, r, cerr, ret)
		}
		return h.renderStepUp(w, r, http.StatusBadRequest, v, site, ret, reason, "stepup.error.reason")
	case errors.Is(err, approval.ErrStepUpLimited):
		w.Header().Set("Retry-After", "900")
		return h.render(w, r, http.StatusTooManyRequests, "message.html", pageData{Title: "stepup.limited.title", Message: "stepup.limited", Action: "common.back", ActionURL: ret})
	case err != nil:
		return h.stepUpError(w, r, err, ret)
	}
	h.setPendingCookie(w, started)
	http.Redirect(w, r, prefix+"wait", http.StatusSeeOther)
	return nil
}

func (h *Handler) stepUpError(w http.ResponseWriter, r *http.Request, err error, ret string) error {
	switch {
	case errors.Is(err, approval.ErrNoProfile):
		return h.render(w, r, http.StatusForbidden, "message.html", pageData{Title: "stepup.no_profile.title", App: siteHost(r),
			Message: "stepup.no_profile", Action: "logout.submit", ActionURL: prefix + "logout"})
	case errors.Is(err, approval.ErrAccountGone):
		clearCookie(w, h.sessionCookie, "/", h.app.CookieDomain)
		return h.render(w, r, http.StatusForbidden, "message.html", pageData{Title: "stepup.gone.title", App: siteHost(r),
			Message: "stepup.gone", Action: "common.sign_in", ActionURL: prefix + "login?return=" + url.QueryEscape(ret)})
	}
	h.logger.Error("preparing a step-up", zap.Error(err))
	return h.unavailable(w, r, "unavailable.title", "unavailable.stepup")
}

// grantsPage lists the grants the signed-in manager gave that still run,
// each with a button that ends it.
func (h *Handler) grantsPage(w http.ResponseWriter, r *http.Request) error {
	s, ok := h.session(r)
	if !ok {
		http.Redirect(w, r, prefix+"login?return="+url.QueryEscape(prefix+"grants"), http.StatusSeeOther)
		return nil
	}
	grants, err := h.app.service.ListGrants(r.Context(), s.Email, "")
	if err != nil {
		h.logger.Error("listing grants", zap.Error(err))
		return h.unavailable(w, r, "unavailable.title", "unavailable.grants")
	}
	d := pageData{Title: "grants.heading", App: siteHost(r), Grants: grants, CSRF: h.sessionCSRF(s), Now: h.app.service.Now(), Email: s.Email}
	switch r.URL.Query().Get("ended") {
	case "1":
		d.Notice = "grants.ended"
	case "0":
		d.Error = "grants.already_ended"
	}
	return h.render(w, r, http.StatusOK, "grants.html", d)
}

// endGrant ends one of the signed-in manager's grants, on every instance
// at once.
func (h *Handler) endGrant(w http.ResponseWriter, r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return caddyhttp.Error(http.StatusBadRequest, err)
	}
	s, ok := h.session(r)
	if !ok {
		http.Redirect(w, r, prefix+"login?return="+url.QueryEscape(prefix+"grants"), http.StatusSeeOther)
		return nil
	}
	if got := r.PostForm.Get(csrfField); got == "" || got != h.sessionCSRF(s) {
		return caddyhttp.Error(http.StatusForbidden, errors.New("mailauth: form token missing or wrong"))
	}
	_, err := h.app.service.EndGrant(r.Context(), r.PostForm.Get("grant"), s.Email, s.Email)
	switch {
	case errors.Is(err, approval.ErrGrantNotFound):
		http.Redirect(w, r, prefix+"grants?ended=0", http.StatusSeeOther)
		return nil
	case err != nil:
		h.logger.Error("ending a grant", zap.Error(err))
		return h.unavailable(w, r, "unavailable.title", "unavailable.end_grant")
	}
	http.Redirect(w, r, prefix+"grants?ended=1", http.StatusSeeOther)
	return nil
}

// sessionPage shows who the browser is signed in as and what access it
// holds until when.
func (h *Handler) sessionPage(w http.ResponseWriter, r *http.Request) error {
	s, ok := h.session(r)
	if !ok {
		http.Redirect(w, r, prefix+"login", http.StatusSeeOther)
		return nil
	}
	v, _ := cookieValue(r.Header, h.sessionCookie)
	return h.render(w, r, http.StatusOK, "session.html", pageData{Title: "session.heading", App: siteHost(r), Session: s, Now: h.app.service.Now(), CSRF: h.app.csrfToken(v)})
}

// setPendingCookie gives the browser that started a login (or a step-up)
// the cookie that names it.
func (h *Handler) setPendingCookie(w http.ResponseWriter, started *approval.Started) {
	http.SetCookie(w, &http.Cookie{
		Name:     pendingCookie,
		Value:    started.Pending,
		Path:     "/", // as "__Host-" requires; see pendingCookie
		Expires:  started.ExpiresAt.Add(time.Hour),
		Secure:   true,
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
	})
}
