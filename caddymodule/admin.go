package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/mailauth/caddy-mailauth/approval"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI serves mailauth's operator endpoints on Caddy's admin
// endpoint, which is local and access-controlled by Caddy:
//
//	GET    /mailauth/logins[?all=true]             logins waiting for a decision (all: every stored login)
//	POST   /mailauth/logins/{reference}/deny[?by=] stop a pending login
//	GET    /mailauth/sessions[?user=]              live sessions
//	DELETE /mailauth/sessions?user=<username>      revoke every session of a user
//	DELETE /mailauth/sessions/{id}                 revoke one session
//	GET    /mailauth/audit?since=&after=&user=&event=&limit=   query the stored audit trail
//	GET    /mailauth/audit/verify                  check the audit trail's hash chain
//	POST   /mailauth/audit/verify                  the same, against the checkpoint in the body
//	GET    /mailauth/audit/checkpoint              a signed checkpoint of the trail's head
//	GET    /mailauth/grants[?approver=&user=]      running time-boxed grants
//	DELETE /mailauth/grants/{id}[?by=]             end a grant everywhere
type adminAPI struct {
	app *App
}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.mailauth",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Provision finds the mailauth app, when the config has one.
func (a *adminAPI) Provision(ctx caddy.Context) error {
	if app, err := ctx.AppIfConfigured("mailauth"); err == nil {
		a.app = app.(*App)
	}
	return nil
}

// Routes returns the admin routes.
func (a *adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/mailauth/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

func (a *adminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	if a.app == nil || a.app.service == nil {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.New("mailauth is not configured")}
	}
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/mailauth/"), "/"), "/")
	switch {
	case len(parts) == 1 && parts[0] == "logins":
		return a.listLogins(w, r)
	case len(parts) == 3 && parts[0] == "logins" && parts[2] == "deny":
		return a.denyLogin(w, r, parts[1])
	case len(parts) == 1 && parts[0] == "sessions":
		if r.Method == http.MethodDelete {
			return a.revokeUser(w, r)
		}
		return a.listSessions(w, r)
	case len(parts) == 2 && parts[0] == "sessions":
		return a.revokeSession(w, r, parts[1])
	case len(parts) == 1 && parts[0] == "audit":
		return a.queryAudit(w, r)
	case len(parts) == 2 && parts[0] == "audit" && parts[1] == "verify":
		return a.verifyAudit(w, r)
	case len(parts) == 2 && parts[0] == "audit" && parts[1] == "checkpoint":
		return a.auditCheckpoint(w, r)
	case len(parts) == 1 && parts[0] == "grants":
		return a.listGrants(w, r)
	case len(parts) == 2 && parts[0] == "grants":
		return a.endGrant(w, r, parts[1])
	}
	return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("resource not found: %s", r.URL.Path)}
}

func method(r *http.Request, want string) error {
	if r.Method != want {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed on %s; use %s", r.Method, r.URL.Path, want)}
	}
	return nil
}

func badParam(name, problem string) error {
	return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("parameter %s: %s", name, problem)}
}

// storeFailed wraps an error of the store, which is on the other side of
// a disk or network and may be down.
func storeFailed(what string, err error) error {
	return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: fmt.Errorf("%s: %w", what, err)}
}

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func boolParam(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, badParam(name, fmt.Sprintf("%q is not true or false", v))
	}
	return b, nil
}

func (a *adminAPI) listLogins(w http.ResponseWriter, r *http.Request) error {
	if err := method(r, http.MethodGet); err != nil {
		return err
	}
	all, err := boolParam(r, "all")
	if err != nil {
		return err
	}
	logins, err := a.app.service.ListLogins(r.Context(), all)
	if err != nil {
		return storeFailed("listing logins", err)
	}
	return writeJSON(w, map[string]any{"logins": logins})
}

func (a *adminAPI) denyLogin(w http.ResponseWriter, r *http.Request, reference string) error {
	if err := method(r, http.MethodPost); err != nil {
		return err
	}
	info, err := a.app.service.DenyLogin(r.Context(), reference, r.URL.Query().Get("by"))
	switch {
	case errors.Is(err, approval.ErrLoginNotFound):
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no login has reference %q", reference)}
	case errors.Is(err, approval.ErrAlreadyDecided), errors.Is(err, approval.ErrLoginExpired):
		return caddy.APIError{HTTPStatus: http.StatusConflict, Err: fmt.Errorf("login %s cannot be denied: %w", reference, err)}
	case err != nil:
		return storeFailed("denying login "+reference, err)
	}
	return writeJSON(w, info)
}

func (a *adminAPI) listSessions(w http.ResponseWriter, r *http.Request) error {
	if err := method(r, http.MethodGet); err != nil {
		return err
	}
	sessions, err := a.app.service.ListSessions(r.Context(), strings.TrimSpace(r.URL.Query().Get("user")))
	if err != nil {
		return storeFailed("listing sessions", err)
	}
	return writeJSON(w, map[string]any{"sessions": sessions})
}

func (a *adminAPI) revokeUser(w http.ResponseWriter, r *http.Request) error {
	user := strings.TrimSpace(r.URL.Query().Get("user"))
	if user == "" {
		return badParam("user", "required (the username whose sessions end)")
	}
	if err := a.app.service.RevokeUser(r.Context(), user); err != nil {
		return storeFailed(fmt.Sprintf("revoking the sessions of %q", user), err)
	}
	return writeJSON(w, map[string]string{"revoked_user": user})
}

func (a *adminAPI) revokeSession(w http.ResponseWriter, r *http.Request, id string) error {
	if err := method(r, http.MethodDelete); err != nil {
		return err
	}
	info, err := a.app.service.RevokeSessionID(r.Context(), id, r.URL.Query().Get("by"))
	switch {
	case errors.Is(err, approval.ErrBadSessionID):
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("session id %q: %w", id, err)}
	case errors.Is(err, approval.ErrSessionNotFound):
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no live session has id %s", id)}
	case err != nil:
		return storeFailed("revoking session "+id, err)
	}
	return writeJSON(w, map[string]any{"revoked_session": info})
}

func (a *adminAPI) queryAudit(w http.ResponseWriter, r *http.Request) error {
	if err := method(r, http.MethodGet); err != nil {
		return err
	}
	q, err := auditQuery(r, time.Now())
	if err != nil {
		return err
	}
	page, err := a.app.service.QueryAudit(r.Context(), q)
	if err != nil {
		return storeFailed("reading the audit trail", err)
	}
	return writeJSON(w, page)
}

// defaultAuditLimit is how many records an audit query without limit gets.
const defaultAuditLimit = 100

// auditQuery reads the query parameters of GET /mailauth/audit.
func auditQuery(r *http.Request, now time.Time) (approval.AuditQuery, error) {
	v := r.URL.Query()
	q := approval.AuditQuery{User: strings.TrimSpace(v.Get("user")), Event: approval.Event(v.Get("event")), Limit: defaultAuditLimit}
	if s := v.Get("since"); s != "" {
		// An RFC 3339 time, or a duration meaning that long ago.
		if t, err := time.Parse(time.RFC3339, s); err == nil {
			q.Since = t
		} else if d, err := caddy.ParseDuration(s); err == nil && d > 0 {
			q.Since = now.Add(-d)
		} else {
			return q, badParam("since", fmt.Sprintf("%q is neither an RFC 3339 time (2026-11-30T08:00:00Z) nor a positive duration (24h, 7d)", s))
		}
	}
	if s := v.Get("after"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return q, badParam("after", fmt.Sprintf("%q is not a record number (the next of a previous answer)", s))
		}
		q.After = n
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > approval.MaxAuditLimit {
			return q, badParam("limit", fmt.Sprintf("%q is not a number from 1 to %d", s, approval.MaxAuditLimit))
		}
		q.Limit = n
	}
	if q.Event != "" && !approval.KnownEvent(q.Event) {
		return q, badParam("event", fmt.Sprintf("%q is not an audit event (such as login_started, approved, denied, session_issued)", q.Event))
	}
	return q, nil
}

func (a *adminAPI) verifyAudit(w http.ResponseWriter, r *http.Request) error {
	if r.Method == http.MethodPost {
		return a.verifyAuditSince(w, r)
	}
	if err := method(r, http.MethodGet); err != nil {
		return err
	}
	rep, err := a.app.verifyAudit(r.Context())
	if err != nil {
		return storeFailed("verifying the audit trail", err)
	}
	return writeJSON(w, rep)
}

// maxCheckpointBody bounds the checkpoint a POST may carry; one is about
// 400 bytes.
const maxCheckpointBody = 16 << 10

func (a *adminAPI) verifyAuditSince(w http.ResponseWriter, r *http.Request) error {
	var cp approval.Checkpoint
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxCheckpointBody)).Decode(&cp); err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("the body is not a checkpoint (as GET /mailauth/audit/checkpoint exports): %w", err)}
	}
	rep, err := a.app.verifyAuditSince(r.Context(), &cp)
	switch {
	case errors.Is(err, approval.ErrCheckpointForged), errors.Is(err, approval.ErrCheckpointUnknownKey), errors.Is(err, approval.ErrNotACheckpoint):
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("checkpoint refused: %w", err)}
	case err != nil:
		return storeFailed("verifying the audit trail", err)
	}
	return writeJSON(w, rep)
}

func (a *adminAPI) auditCheckpoint(w http.ResponseWriter, r *http.Request) error {
	if err := method(r, http.MethodGet); err != nil {
		return err
	}
	cp, err := a.app.auditCheckpoint(r.Context())
	if errors.Is(err, approval.ErrAuditEmpty) {
		return caddy.APIError{HTTPStatus: http.StatusConflict, Err: errors.New("the audit trail has no records yet: nothing to anchor")}
	}
	if err != nil {
		return storeFailed("making an audit checkpoint", err)
	}
	return writeJSON(w, cp)
}

func (a *adminAPI) listGrants(w http.ResponseWriter, r *http.Request) error {
	if err := method(r, http.MethodGet); err != nil {
		return err
	}
	q := r.URL.Query()
	grants, err := a.app.service.ListGrants(r.Context(), strings.TrimSpace(q.Get("approver")), strings.TrimSpace(q.Get("user")))
	if err != nil {
		return storeFailed("listing grants", err)
	}
	return writeJSON(w, map[string]any{"grants": grants})
}

func (a *adminAPI) endGrant(w http.ResponseWriter, r *http.Request, id string) error {
	if err := method(r, http.MethodDelete); err != nil {
		return err
	}
	by := "operator"
	if name := strings.TrimSpace(r.URL.Query().Get("by")); name != "" {
		by += " " + name
	}
	g, err := a.app.service.EndGrant(r.Context(), id, "", by)
	switch {
	case errors.Is(err, approval.ErrGrantNotFound):
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no running grant has id %s", id)}
	case err != nil:
		return storeFailed("ending grant "+id, err)
	}
	return writeJSON(w, map[string]any{"ended_grant": g})
}

// Interface guards
var (
	_ caddy.AdminRouter = (*adminAPI)(nil)
	_ caddy.Provisioner = (*adminAPI)(nil)
)
