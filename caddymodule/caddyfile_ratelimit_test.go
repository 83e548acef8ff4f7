package caddymodule

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/mailauth/caddy-mailauth/approval"
)

// dispenseRateLimit parses src, which starts with rate_limit, as
// parseGlobal hands it over: on the option's name.
func dispenseRateLimit(t *testing.T, src string) (*RateLimitConfig, error) {
	t.Helper()
	d := caddyfile.NewTestDispenser(src)
	if !d.Next() || d.Val() != "rate_limit" {
		t.Fatalf("test input does not start with rate_limit: %q", src)
	}
	rl := &RateLimitConfig{}
	return rl, rl.UnmarshalCaddyfile(d)
}

func TestCaddyfileRateLimitTakesEveryOption(t *testing.T) {
	got, err := dispenseRateLimit(t, `rate_limit {
		login_per_ip 40/10m
		login_per_identity 3/15m
		redeem_per_ip off
		mails_per_manager 10/h
		open_per_ip 60/10m
		code_failures_per_identity 6/12h
	}`)
	if err != nil {
		t.Fatalf("a rate_limit block using every option does not parse: %v", err)
	}
	want := RateLimitConfig{LoginPerIP: "40/10m", LoginPerIdentity: "3/15m", RedeemPerIP: "off", MailsPerManager: "10/h", OpenPerIP: "60/10m", CodeFailuresPerIdentity: "6/12h"}
	if *got != want {
		t.Fatalf("rate_limit parsed to %+v, want %+v (values kept as written)", *got, want)
	}
}

func TestCaddyfileRateLimitLeavesUnsetOptionsEmpty(t *testing.T) {
	for _, src := range []string{"rate_limit", "rate_limit {\n}", "rate_limit {\n\tredeem_per_ip 60/10m\n}"} {
		got, err := dispenseRateLimit(t, src)
		if err != nil {
			t.Fatalf("%q does not parse: %v", src, err)
		}
		if got.LoginPerIP != "" || got.LoginPerIdentity != "" || got.MailsPerManager != "" || got.OpenPerIP != "" || got.CodeFailuresPerIdentity != "" {
			t.Fatalf("%q parsed to %+v; options not written must stay empty so that defaults apply", src, *got)
		}
	}
}

func TestCaddyfileRateLimitErrorsNameOptionAndLine(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		line      int
		want      string
	}{
		{"unknown option", "rate_limit {\n\tlogin_per_user 5/15m\n}", 2, `rate_limit: unknown option "login_per_user" (login_per_ip, login_per_identity, redeem_per_ip, mails_per_manager, open_per_ip, code_failures_per_identity)`},
		{"set twice", "rate_limit {\n\tlogin_per_ip 20/10m\n\tlogin_per_ip 30/10m\n}", 3, "rate_limit: login_per_ip: set twice"},
		{"no value", "rate_limit {\n\tredeem_per_ip\n}", 2, "rate_limit: redeem_per_ip: want one limit such as 5/15m, or off"},
		{"two values", "rate_limit {\n\tredeem_per_ip 5 /15m\n}", 2, "rate_limit: redeem_per_ip: want one limit"},
		{"not a limit", "rate_limit {\n\tlogin_per_identity five\n}", 2, `rate_limit: login_per_identity: "five" is not a rate limit`},
		{"zero events", "rate_limit {\n\n\tmails_per_manager 0/h\n}", 3, `rate_limit: mails_per_manager: "0/h": events must be at least 1 (write off for no limit)`},
		{"bad window", "rate_limit {\n\tlogin_per_ip 20/10\n}", 2, `rate_limit: login_per_ip: "20/10": window "10" is not a duration`},
		{"argument on the option line", "rate_limit 20/10m {\n\tlogin_per_ip 20/10m\n}", 1, `rate_limit: unexpected argument "20/10m"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dispenseRateLimit(t, tc.src)
			at := ", at Testfile:" + strconv.Itoa(tc.line)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) || !strings.HasSuffix(err.Error(), at) {
				t.Fatalf("parse error is %v, want one starting %q and ending %q", err, tc.want, at)
			}
		})
	}
}

func TestRateLimitConfigAppliesDefaults(t *testing.T) {
	def := approval.DefaultRateLimits()
	for _, c := range []*RateLimitConfig{nil, {}} {
		got, err := c.limits()
		if err != nil || got != def {
			t.Fatalf("limits of %v = %+v, %v; want the defaults %+v", c, got, err, def)
		}
	}
	if def.LoginPerIP != (approval.Limit{Events: 20, Per: 10 * time.Minute}) ||
		def.LoginPerIdentity != (approval.Limit{Events: 5, Per: 15 * time.Minute}) ||
		def.RedeemPerIP != (approval.Limit{Events: 30, Per: 10 * time.Minute}) ||
		def.MailsPerManager != (approval.Limit{Events: 20, Per: time.Hour}) ||
		def.OpenPerIP != (approval.Limit{Events: 30, Per: 10 * time.Minute}) ||
		def.CodeFailuresPerIdentity != (approval.Limit{Events: 10, Per: 24 * time.Hour}) {
		t.Fatalf("defaults are %+v; want 20/10m, 5/15m, 30/10m, 20/h, 30/10m and 10/24h as documented on RateLimitConfig", def)
	}
}

func TestRateLimitConfigOverridesOnlyWhatIsSet(t *testing.T) {
	var c RateLimitConfig
	if err := json.Unmarshal([]byte(`{"login_per_identity":"3/1h","mails_per_manager":"off"}`), &c); err != nil {
		t.Fatal(err)
	}
	got, err := c.limits()
	if err != nil {
		t.Fatalf("limits: %v", err)
	}
	want := approval.DefaultRateLimits()
	want.LoginPerIdentity = approval.Limit{Events: 3, Per: time.Hour}
	want.MailsPerManager = approval.Limit{}
	if got != want {
		t.Fatalf("limits = %+v, want %+v (set fields parsed, others defaulted)", got, want)
	}
}

func TestRateLimitConfigErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		c    RateLimitConfig
		want string
	}{
		{RateLimitConfig{LoginPerIP: "lots"}, `rate_limit: login_per_ip: "lots" is not a rate limit`},
		{RateLimitConfig{LoginPerIdentity: "0/1m"}, `rate_limit: login_per_identity: "0/1m": events must be at least 1`},
		{RateLimitConfig{RedeemPerIP: "30/0s"}, `rate_limit: redeem_per_ip: "30/0s": the window must be longer than zero`},
		{RateLimitConfig{MailsPerManager: "20/day"}, `rate_limit: mails_per_manager: "20/day": window "day" is not a duration`},
		{RateLimitConfig{OpenPerIP: "many/1m"}, `rate_limit: open_per_ip: "many/1m": events "many" is not a whole number`},
		{RateLimitConfig{CodeFailuresPerIdentity: "ten/24h"}, `rate_limit: code_failures_per_identity: "ten/24h": events "ten" is not a whole number`},
	} {
		if _, err := tc.c.limits(); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("limits of %+v: error %v, want one starting %q", tc.c, err, tc.want)
		}
	}
}
