package caddymodule

import (
	"encoding/json"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/mailauth/caddy-mailauth/approval"
	"github.com/mailauth/caddy-mailauth/internal/caddyfilearg"
	"github.com/mailauth/caddy-mailauth/locale"
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
	// Lines of references, checked once the whole block is read, since a
	// profile may name a directory defined below it.
	type ref struct {
		profile, kind, name string
		d                   caddyfile.Dispenser
	}
	var refs []ref
	seen := map[string]bool{}
	d.Next() // the option name
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for d.NextBlock(0) {
		opt := d.Val()
		once := func() error {
			if seen[opt] {
				return d.Errf("%s: set twice", opt)
			}
			seen[opt] = true
			return nil
		}
		switch opt {
		case "store":
			if err := once(); err != nil {
				return nil, err
			}
			sc, err := parseStore(d)
			if err != nil {
				return nil, err
			}
			app.Store = sc
		case "session_lifetime":
			if err := once(); err != nil {
				return nil, err
			}
			dur, err := durationArg(d, opt)
			if err != nil {
				return nil, err
			}
			app.SessionLifetime = dur
		case "audit_retention":
			if err := once(); err != nil {
				return nil, err
			}
			dur, err := durationArg(d, opt)
			if err != nil {
				return nil, err
			}
			app.AuditRetention = dur
		case "session_idle_timeout":
			if err := once(); err != nil {
				return nil, err
			}
			dur, err := durationArg(d, opt)
			if err != nil {
				return nil, err
			}
			app.SessionIdleTimeout = dur
		case "session_keys":
			if err := once(); err != nil {
				return nil, err
			}
			app.SessionKeys = d.RemainingArgs()
			if len(app.SessionKeys) == 0 {
				return nil, d.Err("session_keys: name at least one key")
			}
		case "cookie_domain", "templates", "default_language", "language_attribute":
			if err := once(); err != nil {
				return nil, err
			}
			if !d.NextArg() || d.CountRemainingArgs() > 0 {
				return nil, d.Errf("%s: want one value", opt)
			}
			switch opt {
			case "cookie_domain":
				app.CookieDomain = d.Val()
			case "templates":
				app.Templates = d.Val()
			case "default_language":
				if locale.Normalize(d.Val()) == "" {
					return nil, d.Errf("default_language: %q has no message catalogue (have: %s)", d.Val(), strings.Join(locale.Languages(), ", "))
				}
				app.DefaultLanguage = d.Val()
			case "language_attribute":
				app.LanguageAttribute = d.Val()
			}
		case "brand":
			if err := once(); err != nil {
				return nil, err
			}
			b, err := parseBrand(d)
			if err != nil {
				return nil, err
			}
			app.Brand = b
		case "rate_limit":
			if err := once(); err != nil {
				return nil, err
			}
			rl, err := parseRateLimit(d)
			if err != nil {
				return nil, err
			}
			app.RateLimit = rl
		case "mail_server":
			name, err := blockName(d, opt, app.MailServers)
			if err != nil {
				return nil, err
			}
			ms, err := parseMailServer(d)
			if err != nil {
				return nil, err
			}
			app.MailServers[name] = ms
		case "directory":
			name, dir, err := parseDirectory(d, app.Directories)
			if err != nil {
				return nil, err
			}
			app.Directories[name] = dir
		case "profile":
			name, err := blockName(d, opt, app.Profiles)
			if err != nil {
				return nil, err
			}
			p := &ProfileConfig{}
			nesting := d.Nesting()
			fields := map[string]bool{}
			for d.NextBlock(nesting) {
				f := d.Val()
				if fields[f] {
					return nil, d.Errf("profile %q: %s: set twice", name, f)
				}
				fields[f] = true
				switch f {
				case "notify_failed_login":
					if d.NextArg() {
						return nil, d.Errf("profile %q: notify_failed_login: takes no value", name)
					}
					p.NotifyFailedLogin = true
				case "type", "server", "subject", "message", "message_file", "message_html_file":
					if !d.NextArg() || d.CountRemainingArgs() > 0 {
						return nil, d.Errf("profile %q: %s: want one value", name, f)
					}
					v := d.Val()
					switch f {
					case "type":
						if v != "user" && v != "manager" {
							return nil, d.Errf("profile %q: type: %q is not a profile type (user or manager)", name, v)
						}
						p.Type = v
					case "server":
						p.Server = v
					case "subject":
						p.Subject = v
					case "message":
						p.Message = v
					case "message_file":
						p.MessageFile = v
					case "message_html_file":
						p.MessageHTMLFile = v
					}
				case "link_expiration":
					dur, err := durationArg(d, "profile "+strconv.Quote(name)+": link_expiration")
					if err != nil {
						return nil, err
					}
					p.LinkExpiration = dur
				case "number_matching":
					if !d.NextArg() || d.CountRemainingArgs() > 0 || (d.Val() != "on" && d.Val() != "off") {
						return nil, d.Errf("profile %q: number_matching: want on or off", name)
					}
					p.DisableNumberMatching = d.Val() == "off"
				case "code_fallback":
					if !d.NextArg() || d.CountRemainingArgs() > 0 || (d.Val() != "on" && d.Val() != "off") {
						return nil, d.Errf("profile %q: code_fallback: want on or off", name)
					}
					p.DisableCodeFallback = d.Val() == "off"
				case "escalate_after":
					dur, err := durationArg(d, "profile "+strconv.Quote(name)+": escalate_after")
					if err != nil {
						return nil, err
					}
					p.EscalateAfter = dur
				case "grant_durations":
					p.GrantDurations = d.RemainingArgs()
					if len(p.GrantDurations) == 0 {
						return nil, d.Errf("profile %q: grant_durations: name at least one duration (such as 1h, 8h or %s)", name, approval.EndOfDayKey)
					}
					for _, g := range p.GrantDurations {
						if _, err := approval.ParseGrantDuration(g); err != nil {
							return nil, d.Errf("profile %q: grant_durations: %v", name, err)
						}
					}
				case "grant_max":
					dur, err := durationArg(d, "profile "+strconv.Quote(name)+": grant_max")
					if err != nil {
						return nil, err
					}
					p.GrantMax = dur
				case "justification":
					if !d.NextArg() || d.CountRemainingArgs() > 0 || (d.Val() != "optional" && d.Val() != "required") {
						return nil, d.Errf("profile %q: justification: want optional or required", name)
					}
					p.Justification = d.Val()
				case "approvers":
					p.Approvers = d.RemainingArgs()
					if len(p.Approvers) == 0 {
						return nil, d.Errf("profile %q: approvers: name at least one address", name)
					}
					for _, a := range p.Approvers {
						if !validAddress(a) {
							return nil, d.Errf("profile %q: approvers: %q is not a mail address", name, a)
						}
					}
				case "mail_servers", "fallback":
					args := d.RemainingArgs()
					if len(args) == 0 {
						return nil, d.Errf("profile %q: %s: name at least one", name, f)
					}
					for _, a := range args {
						refs = append(refs, ref{profile: name, kind: f, name: a, d: *d})
					}
					if f == "fallback" {
						p.Fallback = args
					} else {
						p.MailServers = args
					}
				default:
					return nil, d.Errf("profile %q: unknown option %q", name, f)
				}
			}
			if p.Server == "" {
				return nil, d.Errf("profile %q: server: required (the base URL of links in mail, such as https://apps.example.com)", name)
			}
			if !fields["fallback"] {
				return nil, d.Errf("profile %q: fallback: required (the directories that users come from)", name)
			}
			app.Profiles[name] = p
		case "policy":
			name, err := blockName(d, opt, app.Policies)
			if err != nil {
				return nil, err
			}
			pol, err := parsePolicy(d, name)
			if err != nil {
				return nil, err
			}
			refs = append(refs, ref{profile: name, kind: "policy", name: pol.Profile, d: *d})
			app.Policies[name] = pol
		default:
			return nil, d.Errf("unknown mailauth option %q", opt)
		}
	}
	for _, r := range refs {
		if r.kind == "policy" {
			pol := app.Policies[r.profile]
			prof := app.Profiles[pol.Profile]
			if prof == nil {
				return nil, r.d.Errf("policy %q: profile: no profile named %q", r.profile, pol.Profile)
			}
			if pol.Directory != "" && !slices.Contains(prof.Fallback, pol.Directory) {
				return nil, r.d.Errf("policy %q: directory: %q is not in the fallback list of profile %q", r.profile, pol.Directory, pol.Profile)
			}
			continue
		}
		ok := false
		if r.kind == "fallback" {
			_, ok = app.Directories[r.name]
		} else {
			_, ok = app.MailServers[r.name]
		}
		if !ok {
			what := "directory"
			if r.kind == "mail_servers" {
				what = "mail_server"
			}
			return nil, r.d.Errf("profile %q: %s: no %s named %q", r.profile, r.kind, what, r.name)
		}
	}
	return httpcaddyfile.App{Name: "mailauth", Value: caddyconfig.JSON(app, nil)}, nil
}

// blockName reads the name after a block keyword (and the fixed type words
// that must follow it, such as "local") and refuses a name used twice.
func blockName[T any](d *caddyfile.Dispenser, opt string, existing map[string]T, kinds ...string) (string, error) {
	if !d.NextArg() {
		return "", d.Errf("%s: want a name", opt)
	}
	name := d.Val()
	if _, dup := existing[name]; dup {
		return "", d.Errf("%s %q: defined twice", opt, name)
	}
	for _, k := range kinds {
		if !d.NextArg() {
			return "", d.Errf("%s %q: want the type %q", opt, name, k)
		}
		if d.Val() != k {
			return "", d.Errf("%s %q: type %q is not supported (%s)", opt, name, d.Val(), k)
		}
	}
	if d.NextArg() {
		return "", d.Errf("%s %q: unexpected %q", opt, name, d.Val())
	}
	return name, nil
}

func parsePolicy(d *caddyfile.Dispenser, name string) (*PolicyConfig, error) {
	pol := &PolicyConfig{}
	nesting := d.Nesting()
	fields := map[string]bool{}
	for d.NextBlock(nesting) {
		f := d.Val()
		if fields[f] {
			return nil, d.Errf("policy %q: %s: set twice", name, f)
		}
		fields[f] = true
		switch f {
		case "profile", "directory", "attribute":
			if !d.NextArg() || d.CountRemainingArgs() > 0 {
				return nil, d.Errf("policy %q: %s: want one value", name, f)
			}
			switch f {
			case "profile":
				pol.Profile = d.Val()
			case "directory":
				pol.Directory = d.Val()
			case "attribute":
				pol.Attribute = d.Val()
			}
		case "values":
			pol.Values = d.RemainingArgs()
			if len(pol.Values) == 0 {
				return nil, d.Errf("policy %q: values: name at least one", name)
			}
			for _, v := range pol.Values {
				if len(v) >= 2 && v[0] == '/' && v[len(v)-1] == '/' {
					if _, err := regexp.Compile(v[1 : len(v)-1]); err != nil {
						return nil, d.Errf("policy %q: values: %q is not a valid regular expression: %v", name, v, err)
					}
				}
			}
		default:
			return nil, d.Errf("policy %q: unknown option %q", name, f)
		}
	}
	for _, f := range []string{"profile", "attribute", "values"} {
		if !fields[f] {
			return nil, d.Errf("policy %q: %s: required", name, f)
		}
	}
	return pol, nil
}

// durationArg reads an option's one positive duration.
var durationArg = caddyfilearg.Duration

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
// The logo file is read, and the colour checked, when the config loads.
func parseBrand(d *caddyfile.Dispenser) (*BrandConfig, error) {
	if d.NextArg() {
		return nil, d.Errf("brand: takes a block, not %q", d.Val())
	}
	b := &BrandConfig{}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		f := d.Val()
		if seen[f] {
			return nil, d.Errf("brand: %s: set twice", f)
		}
		seen[f] = true
		if !d.NextArg() || d.CountRemainingArgs() > 0 {
			return nil, d.Errf("brand: %s: want one value", f)
		}
		v := d.Val()
		switch f {
		case "name":
			b.Name = v
		case "logo":
			b.Logo = v
		case "color":
			if _, err := parseHexColor(v); err != nil {
				return nil, d.Errf("brand: color: %q is not a colour like #0b5fff", v)
			}
			b.Color = v
		case "support":
			if !strings.HasPrefix(v, "https://") && !validAddress(v) {
				return nil, d.Errf("brand: support: %q must be a mail address or an https:// URL", v)
			}
			b.Support = v
		default:
			return nil, d.Errf("brand: unknown option %q (name, logo, color, support)", f)
		}
	}
	return b, nil
}
