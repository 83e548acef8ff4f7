package caddymodule

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/mailauth/caddy-mailauth/approval"
)

// rateLimitOptions are the options of a rate_limit block.
var rateLimitOptions = map[string]bool{
	"login_per_ip": true, "login_per_identity": true, "redeem_per_ip": true, "mails_per_manager": true, "open_per_ip": true,
	"code_failures_per_identity": true,
}

// parseRateLimit reads a rate_limit block; the dispenser is on
// "rate_limit":
//
//	rate_limit {
//		login_per_ip       <events>/<window>|off
//		login_per_identity <events>/<window>|off
//		redeem_per_ip      <events>/<window>|off
//		mails_per_manager  <events>/<window>|off
//		open_per_ip        <events>/<window>|off
//		code_failures_per_identity <events>/<window>|off
//	}
//
// A limit reads like 20/10m, 5/15m or 20/h. Options left out keep their
// defaults (RateLimitConfig). Errors name the option and its line: an
// unknown option, one set twice and a value that is not a limit.
func parseRateLimit(d *caddyfile.Dispenser) (*RateLimitConfig, error) {
	if d.NextArg() {
		return nil, d.Errf("rate_limit: unexpected argument %q; the limits go in a block", d.Val())
	}
	rl := &RateLimitConfig{}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if !rateLimitOptions[opt] {
			return nil, d.Errf("rate_limit: unknown option %q (login_per_ip, login_per_identity, redeem_per_ip, mails_per_manager, open_per_ip, code_failures_per_identity)", opt)
		}
		if seen[opt] {
			return nil, d.Errf("rate_limit: %s: set twice", opt)
		}
		seen[opt] = true
		if !d.NextArg() || d.CountRemainingArgs() > 0 {
			return nil, d.Errf("rate_limit: %s: want one limit such as 5/15m, or off", opt)
		}
		v := d.Val()
		if _, err := approval.ParseLimit(v); err != nil {
			return nil, d.Errf("rate_limit: %s: %v", opt, err)
		}
		switch opt {
		case "login_per_ip":
			rl.LoginPerIP = v
		case "login_per_identity":
			rl.LoginPerIdentity = v
		case "redeem_per_ip":
			rl.RedeemPerIP = v
		case "mails_per_manager":
			rl.MailsPerManager = v
		case "open_per_ip":
			rl.OpenPerIP = v
		case "code_failures_per_identity":
			rl.CodeFailuresPerIdentity = v
		}
	}
	return rl, nil
}
