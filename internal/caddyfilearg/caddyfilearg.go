// Package caddyfilearg reads option values from a Caddyfile the way every
// part of caddy-mailauth does, so that the app and its guest modules word
// their errors alike.
package caddyfilearg

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// Duration reads the one positive duration that must follow an option;
// what names the option in the error.
func Duration(d *caddyfile.Dispenser, what string) (caddy.Duration, error) {
	if !d.NextArg() || d.CountRemainingArgs() > 0 {
		return 0, d.Errf("%s: want one duration", what)
	}
	dur, err := caddy.ParseDuration(d.Val())
	if err != nil {
		return 0, d.Errf("%s: %v", what, err)
	}
	if dur <= 0 {
		return 0, d.Errf("%s: must be positive", what)
	}
	return caddy.Duration(dur), nil
}
