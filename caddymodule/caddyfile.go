package caddymodule

import (
	"encoding/json"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("mailauth", parseGlobal)
	httpcaddyfile.RegisterHandlerDirective("mailauth", parseHandler)
	// Authentication belongs with Caddy's own basic_auth: after rewrites,
	// before anything that serves or proxies.
	httpcaddyfile.RegisterDirectiveOrder("mailauth", httpcaddyfile.After, "basic_auth")
}

// parseGlobal sets up the mailauth app from the global option block:
//
//	mailauth {
//		store badger <dir>
//		session_lifetime <duration>
//		session_idle_timeout <duration>
//		session_keys <base64 key...>
//		cookie_domain <domain>
//		brand {
//			name <name>
//			logo <image file>
//			color <#rrggbb>
//			support <address or https URL>
//		}
//		templates <directory>
//		default_language en|de|tr
//		language_attribute <attribute>
//		rate_limit {
//			login_per_ip <n>/<window>
//			login_per_identity <n>/<window>
//			redeem_per_ip <n>/<window>
//			mails_per_manager <n>/<window>
//			code_failures_per_identity <n>/<window>
//		}
//		mail_server <name> {
//			host <host>
//			port <port>
//			tls starttls|implicit|opportunistic|none
//			insecure_tls_ok
//			tls_ca <pem file>
//			username <user>
//			password <password>
//			auth auto|plain|login|cram-md5
//			from <address>
//			helo <name>
//			timeout <duration>
//		}
//		directory <name> local {
//			user <username> {
//				name <display name>
//				email <address>
//				sponsor <address>
//				attr <key> <value...>
//			}
//		}
//		directory <name> ldap {
//			url ldap[s]://<host>[:<port>]
//			bind_dn <dn>
//			bind_password <password>
//			base_dn <dn>
//			user_filter <filter with {input}>
//			username_attribute <attribute>
//			mail_attribute <attribute>
//			manager_attribute <attribute>
//			name_attribute <attribute>
//			department_attribute <attribute>
//			attributes <attribute...>
//			start_tls
//			tls_ca <pem file>
//			timeout <duration>
//			pool_size <n>
//		}
//		profile <name> {
//			type user|manager
//			server <base URL>
//			subject <template>
//			message <template>
//			message_file <path>
//			message_html_file <path>
//			link_expiration <duration>
//			mail_servers <name...>
//			fallback <directory...>
//			notify_failed_login
//			escalate_after <duration>
//			approvers <address...>
//			number_matching on|off
//			grant_durations <duration|end_of_day...>
//			grant_max <duration>
//			justification optional|required
//			code_fallback on|off
//		}
//		policy <name> {
//			profile <profile>
//			directory <directory>
//			attribute <attribute>
//			values <value...>
//		}
//	}
//
// A name used twice, an unknown option, or a reference to a mail server or
// directory that the block does not define is an error naming the line.
func parseGlobal(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("the mailauth global option may appear only once")
	}
	app := &App{
		MailServers: map[string]*MailServerConfig{},
		Directories: map[string]json.RawMessage{},
		Profiles:    map[string]*ProfileConfig{},
		Policies:    map[string]*PolicyConfig{},
	}
	d.Next() // the option name
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	start := *d
	if err := parseOptions(d, block{options: app.globalOptions()}); err != nil {
		return nil, err
	}
	// Checked once the whole block is read, since a profile may name a
	// directory defined below it.
	if err := app.validate(); err != nil {
		return nil, appErrorAt(start, err)
	}
	return httpcaddyfile.App{Name: "mailauth", Value: caddyconfig.JSON(app, nil)}, nil
}

// globalOptions is how parseGlobal reads each option into a.
func (a *App) globalOptions() optionTable {
	return optionTable{
		{name: "store", read: func(d *caddyfile.Dispenser, _ string) (err error) {
			a.Store, err = parseStore(d)
			return err
		}},
		{name: "session_lifetime", read: durationOption(&a.SessionLifetime)},
		{name: "audit_retention", read: durationOption(&a.AuditRetention)},
		{name: "session_idle_timeout", read: durationOption(&a.SessionIdleTimeout)},
		{name: "session_keys", read: listArg(&a.SessionKeys, " key")},
		{name: "cookie_domain", read: stringArg(&a.CookieDomain)},
		{name: "templates", read: stringArg(&a.Templates)},
		{name: "default_language", read: stringArg(&a.DefaultLanguage)},
		{name: "language_attribute", read: stringArg(&a.LanguageAttribute)},
		{name: "brand", read: func(d *caddyfile.Dispenser, _ string) (err error) {
			a.Brand, err = parseBrand(d)
			return err
		}},
		{name: "rate_limit", read: func(d *caddyfile.Dispenser, _ string) error {
			a.RateLimit = &RateLimitConfig{}
			return a.RateLimit.UnmarshalCaddyfile(d)
		}},
		{name: "mail_server", many: true, read: namedBlock(a.MailServers)},
		{name: "directory", many: true, read: func(d *caddyfile.Dispenser, _ string) error {
			name, dir, err := parseDirectory(d, a.Directories)
			if err == nil {
				a.Directories[name] = dir
			}
			return err
		}},
		{name: "profile", many: true, read: namedBlock(a.Profiles)},
		{name: "policy", many: true, read: namedBlock(a.Policies)},
	}
}

// namedBlock reads `<keyword> <name> { … }` into a new entry of m, which
// parses its own block.
func namedBlock[T any, P interface {
	*T
	caddyfile.Unmarshaler
}](m map[string]P) option {
	return func(d *caddyfile.Dispenser, what string) error {
		name, err := blockName(d, what, m)
		if err != nil {
			return err
		}
		c := P(new(T))
		m[name] = c
		return c.UnmarshalCaddyfile(d)
	}
}

// blockName reads the name after a block keyword and refuses a name used
// twice; the dispenser is left on the name.
func blockName[T any](d *caddyfile.Dispenser, opt string, existing map[string]T) (string, error) {
	if !d.NextArg() {
		return "", d.Errf("%s: want a name", opt)
	}
	name := d.Val()
	if _, dup := existing[name]; dup {
		return "", d.Errf("%s %q: defined twice", opt, name)
	}
	if d.NextArg() {
		return "", d.Errf("%s %q: unexpected %q", opt, name, d.Val())
	}
	return name, nil
}

// parseHandler sets up the handler from the site directive:
//
//	mailauth {
//		default_profile <name>
//		policies <policy...>
//	}
func parseHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := &Handler{}
	h.Next() // the directive name
	if h.NextArg() {
		return nil, h.ArgErr()
	}
	for h.NextBlock(0) {
		switch h.Val() {
		case "default_profile":
			if m.DefaultProfile != "" {
				return nil, h.Err("default_profile: set twice")
			}
			if !h.NextArg() || h.CountRemainingArgs() > 0 {
				return nil, h.Err("default_profile: want one profile name")
			}
			m.DefaultProfile = h.Val()
		case "policies":
			if m.Policies != nil {
				return nil, h.Err("policies: set twice")
			}
			m.Policies = h.RemainingArgs()
			if len(m.Policies) == 0 {
				return nil, h.Err("policies: name at least one policy")
			}
		default:
			return nil, h.Errf("unknown mailauth option %q", h.Val())
		}
	}
	if m.DefaultProfile == "" {
		return nil, h.Err("default_profile: required (the profile that runs logins on this site)")
	}
	return m, nil
}

// parseBrand reads
//
//	brand {
//		name <name>
//		logo <image file>
//		color <#rrggbb>
//		support <address or https URL>
//	}
//
// and checks it as load does (BrandConfig.Validate); the logo file itself
// is read when the config loads.
func parseBrand(d *caddyfile.Dispenser) (*BrandConfig, error) {
	if d.NextArg() {
		return nil, d.Errf("brand: takes a block, not %q", d.Val())
	}
	b := &BrandConfig{}
	start := *d
	err := parseOptions(d, block{prefix: "brand", listOptions: true, options: optionTable{
		{name: "name", read: stringArg(&b.Name)},
		{name: "logo", read: stringArg(&b.Logo)},
		{name: "color", read: stringArg(&b.Color)},
		{name: "support", read: stringArg(&b.Support)},
	}})
	if err != nil {
		return nil, err
	}
	return b, errorAt(start, b.Validate())
}
