package caddymodule

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
)

// Per-form CSRF tokens. Every POST that acts for a browser's pending login
// or session carries a token derived from that cookie, so another site,
// which cannot read the cookie, cannot forge the form; Caddy's
// CrossOriginProtection checks Origin and Sec-Fetch-Site on top. The
// token is an HMAC of the cookie under a key of the app's, so it needs no
// storage and is the same on every instance.

const csrfField = "csrf"

// csrfToken is the form token for a cookie value; empty without a cookie.
func (a *App) csrfToken(cookie string) string {
	if cookie == "" {
		return ""
	}
	m := hmac.New(sha256.New, a.keyring.Form)
	m.Write([]byte("form\x00" + cookie))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:18])
}

// csrfOK checks the posted form token against the cookie it is bound to.
func (a *App) csrfOK(r *http.Request, cookie string) bool {
	want := a.csrfToken(cookie)
	got := r.PostForm.Get(csrfField)
	return want != "" && hmac.Equal([]byte(got), []byte(want))
}
