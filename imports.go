// Package mailauth is caddy-mailauth, passwordless email-link sign-in for
// Caddy. Importing it registers the Caddy modules, so
// `xcaddy build --with github.com/mailauth/caddy-mailauth` picks them up.
package mailauth

import (
	_ "github.com/mailauth/caddy-mailauth/caddymodule"
)
