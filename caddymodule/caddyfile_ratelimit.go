package caddymodule

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalCaddyfile reads a rate_limit block; the dispenser is on
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
func (c *RateLimitConfig) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.Errf("rate_limit: unexpected argument %q; the limits go in a block", d.Val())
	}
	start := *d
	err := parseOptions(d, block{prefix: "rate_limit", listOptions: true, options: optionTable{
		{name: "login_per_ip", read: limitArg(&c.LoginPerIP)},
		{name: "login_per_identity", read: limitArg(&c.LoginPerIdentity)},
		{name: "redeem_per_ip", read: limitArg(&c.RedeemPerIP)},
		{name: "mails_per_manager", read: limitArg(&c.MailsPerManager)},
		{name: "open_per_ip", read: limitArg(&c.OpenPerIP)},
		{name: "code_failures_per_identity", read: limitArg(&c.CodeFailuresPerIdentity)},
	}})
	if err != nil {
		return err
	}
	return errorAt(start, c.Validate())
}

// limitArg reads a limit's one value, which Validate reads as a limit.
func limitArg(dst *string) option {
	return func(d *caddyfile.Dispenser, what string) error {
		if !d.NextArg() || d.CountRemainingArgs() > 0 {
			return d.Errf("%s: want one limit such as 5/15m, or off", what)
		}
		*dst = d.Val()
		return nil
	}
}
