//go:build mailauth_testclock

package caddymodule

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// This file is compiled only into test builds (go build -tags
// mailauth_testclock): it lets integration tests move the clock of a real
// Caddy forward, so that a grant's hour can pass in a second. Release
// builds, `make build` and xcaddy builds never have it.

var offset atomic.Int64

// now is the real time plus what the tests have advanced.
var now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }

func init() {
	caddy.RegisterModule(testClockAPI{})
}

// testClockAPI serves POST /mailauth-test/clock?advance=<duration> on the
// admin endpoint.
type testClockAPI struct{}

// CaddyModule returns the Caddy module information.
func (testClockAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "admin.api.mailauth_testclock", New: func() caddy.Module { return new(testClockAPI) }}
}

// Routes returns the admin route.
func (testClockAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/mailauth-test/clock", Handler: caddy.AdminHandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if r.Method != http.MethodPost {
			return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("use POST")}
		}
		d, err := time.ParseDuration(r.URL.Query().Get("advance"))
		if err != nil || d < 0 {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("advance: want a positive duration")}
		}
		offset.Add(int64(d))
		_, err = fmt.Fprintf(w, "%s\n", now().UTC().Format(time.RFC3339))
		return err
	})}}
}

// Interface guards
var _ caddy.AdminRouter = testClockAPI{}
