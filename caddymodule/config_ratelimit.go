package caddymodule

import (
	"github.com/mailauth/caddy-mailauth/approval"
)

// RateLimitConfig sets the abuse limits. Each is written <events>/<window>,
// such as "5/15m", "10/1m" or "100/h", or "off" for no limit. A request
// refused by a limit that could tell whether a user exists
// (login_per_identity, mails_per_manager) gets the same response as an
// accepted one; a login start refused by login_per_ip gets a 429 page
// that says when to try again, and links refused by redeem_per_ip or
// open_per_ip look invalid. Hits are audited, at most one record per
// client address and minute for the per-IP limits. Client IPs are those
// Caddy trusts (its trusted_proxies setting), never a raw X-Forwarded-For.
type RateLimitConfig struct {
	// LoginPerIP limits login starts per client IP (an IPv6 client by its
	// /64). Default: "20/10m".
	LoginPerIP string `json:"login_per_ip,omitempty"`
	// LoginPerIdentity limits login starts per identity, so that no one
	// can flood a person's inbox. Default: "5/15m".
	LoginPerIdentity string `json:"login_per_identity,omitempty"`
	// RedeemPerIP limits link and code redemptions per client IP.
	// Default: "30/10m".
	RedeemPerIP string `json:"redeem_per_ip,omitempty"`
	// MailsPerManager limits approval mails per manager address.
	// Default: "20/h".
	MailsPerManager string `json:"mails_per_manager,omitempty"`
	// OpenPerIP limits, per client IP, the link openings that find no
	// live token (made-up, used or expired links); opening a live link
	// counts nothing. Past it, every link that address opens is answered
	// as invalid without a store read until the budget refills.
	// Default: "30/10m".
	OpenPerIP string `json:"open_per_ip,omitempty"`
	// CodeFailuresPerIdentity limits wrong one-time codes per identity
	// (the name or address as typed, lower-cased) across all its logins;
	// past it, codes are refused for that identity and the waiting page
	// says to use the link, which still works. Names that do not exist
	// are counted the same way. Default: "10/24h".
	CodeFailuresPerIdentity string `json:"code_failures_per_identity,omitempty"`
}

// Validate checks that every limit that is set reads as one.
func (c *RateLimitConfig) Validate() error {
	_, err := c.limits()
	return err
}

// limits returns c as the approval service takes it, with defaults for
// empty fields; a nil c means every default. Errors are *FieldError.
func (c *RateLimitConfig) limits() (approval.RateLimits, error) {
	r := approval.DefaultRateLimits()
	if c == nil {
		return r, nil
	}
	for _, f := range []struct {
		name string
		val  string
		dst  *approval.Limit
	}{
		{"login_per_ip", c.LoginPerIP, &r.LoginPerIP},
		{"login_per_identity", c.LoginPerIdentity, &r.LoginPerIdentity},
		{"redeem_per_ip", c.RedeemPerIP, &r.RedeemPerIP},
		{"mails_per_manager", c.MailsPerManager, &r.MailsPerManager},
		{"open_per_ip", c.OpenPerIP, &r.OpenPerIP},
		{"code_failures_per_identity", c.CodeFailuresPerIdentity, &r.CodeFailuresPerIdentity},
	} {
		if f.val == "" {
			continue
		}
		l, err := approval.ParseLimit(f.val)
		if err != nil {
			return approval.RateLimits{}, fieldErr("rate_limit", f.name, "%v", err)
		}
		*f.dst = l
	}
	return r, nil
}
