package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI serves mailauth's operator endpoints on Caddy's admin
// endpoint, which is local and access-controlled by Caddy:
//
//	DELETE /mailauth/sessions?user=<username>   revoke every session of a user
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
	switch strings.TrimPrefix(r.URL.Path, "/mailauth/") {
	case "sessions":
		if r.Method != http.MethodDelete {
			return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed; use DELETE", r.Method)}
		}
		user := strings.TrimSpace(r.URL.Query().Get("user"))
		if user == "" {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: errors.New("parameter user: required (the username whose sessions end)")}
		}
		if err := a.app.service.RevokeUser(r.Context(), user); err != nil {
			return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: fmt.Errorf("revoking the sessions of %q: %w", user, err)}
		}
		w.Header().Set("Content-Type", "application/json")
		return json.NewEncoder(w).Encode(map[string]string{"revoked_user": user})
	}
	return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("resource not found: %s", r.URL.Path)}
}

// Interface guards
var (
	_ caddy.AdminRouter = (*adminAPI)(nil)
	_ caddy.Provisioner = (*adminAPI)(nil)
)
