package caddymodule

import (
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/mailauth/caddy-mailauth/approval"
	"github.com/mailauth/caddy-mailauth/locale"
)

// validate checks the whole config: each block on its own, then what
// blocks say about each other and about the app's options. A JSON config
// meets it at load; a Caddyfile when it is adapted, too, so that the error
// can name the line. It opens no file and expands no placeholder, which
// load does after it.
func (a *App) validate() error {
	for _, d := range []struct {
		field string
		value caddy.Duration
	}{{"session_lifetime", a.SessionLifetime}, {"session_idle_timeout", a.SessionIdleTimeout}, {"audit_retention", a.AuditRetention}} {
		if d.value < 0 {
			return fieldErr("", d.field, "must be positive")
		}
	}
	if a.DefaultLanguage != "" && locale.Normalize(a.DefaultLanguage) == "" {
		return fieldErr("", "default_language", "%q has no message catalogue (have: %s)", a.DefaultLanguage, strings.Join(locale.Languages(), ", "))
	}
	if err := a.RateLimit.Validate(); err != nil {
		return err
	}
	if a.Brand != nil {
		if err := a.Brand.Validate(); err != nil {
			return err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(a.MailServers)) {
		c := a.MailServers[name]
		if c == nil {
			return &FieldError{Block: "mail_server", Name: name, Reason: "empty"}
		}
		if err := c.Validate(); err != nil {
			return named(err, name)
		}
	}
	if len(a.Profiles) == 0 {
		return fieldErr("", "", "no profile is configured; add a profile block")
	}
	for _, name := range slices.Sorted(maps.Keys(a.Profiles)) {
		if err := named(a.validateProfile(a.Profiles[name]), name); err != nil {
			return err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(a.Policies)) {
		if err := named(a.validatePolicy(a.Policies[name]), name); err != nil {
			return err
		}
	}
	return nil
}

// validateProfile checks c on its own, then the mail servers and
// directories it names and its grants against session_lifetime.
func (a *App) validateProfile(c *ProfileConfig) error {
	if c == nil {
		return &FieldError{Block: "profile", Reason: "empty"}
	}
	if err := c.Validate(); err != nil {
		return err
	}
	f := func(field, format string, args ...any) error { return fieldErr("profile", field, format, args...) }
	if len(c.MailServers) == 0 && len(a.MailServers) != 1 {
		return f("mail_servers", "required when there is not exactly one mail_server")
	}
	for _, s := range c.MailServers {
		if _, ok := a.MailServers[s]; !ok {
			return f("mail_servers", "no mail_server named %q", s)
		}
	}
	for _, d := range c.Fallback {
		if _, ok := a.Directories[d]; !ok {
			return f("fallback", "no directory named %q (have: %s)", d, names(a.Directories))
		}
	}
	if approval.ProfileType(c.Type) != approval.TypeManager {
		return nil
	}
	lifetime := a.sessionLifetime()
	if c.GrantMax < 0 || time.Duration(c.GrantMax) > lifetime {
		return f("grant_max", "%s must be positive and at most session_lifetime (%s): a grant cannot outlive its session", time.Duration(c.GrantMax), lifetime)
	}
	limit := time.Duration(c.GrantMax)
	if limit == 0 {
		limit = lifetime
	}
	for _, v := range c.GrantDurations {
		if g, _ := approval.ParseGrantDuration(v); !g.EndOfDay && g.For > limit {
			return f("grant_durations", "%s is longer than grant_max (%s); shorten it or raise grant_max", v, limit)
		}
	}
	return nil
}

// validatePolicy checks c on its own, then the profile and directory it
// names. Those two are checked together, so their errors point at the end
// of a Caddyfile block, not at one of its lines.
func (a *App) validatePolicy(c *PolicyConfig) error {
	if c == nil {
		return &FieldError{Block: "policy", Reason: "empty"}
	}
	if err := c.Validate(); err != nil {
		return err
	}
	f := func(field, format string, args ...any) error {
		fe := fieldErr("policy", field, format, args...)
		fe.atEnd = true
		return fe
	}
	p := a.Profiles[c.Profile]
	if p == nil {
		return f("profile", "no profile named %q (have: %s)", c.Profile, names(a.Profiles))
	}
	if c.Directory == "" {
		return nil
	}
	if _, ok := a.Directories[c.Directory]; !ok {
		return f("directory", "no directory named %q (have: %s)", c.Directory, names(a.Directories))
	}
	if !slices.Contains(p.Fallback, c.Directory) {
		return f("directory", "%q is not in the fallback list of profile %q (%s)", c.Directory, c.Profile, strings.Join(p.Fallback, ", "))
	}
	return nil
}

// Validate checks what the profile says on its own: the values of its
// fields first, then the required ones, then the options that only one
// type of profile takes. The app checks the names it refers to.
func (c *ProfileConfig) Validate() error {
	if err := c.validateValues(); err != nil {
		return err
	}
	if c.Server == "" {
		return fieldErr("profile", "server", "required (the base URL of links in mail, such as https://apps.example.com)")
	}
	if len(c.Fallback) == 0 {
		return fieldErr("profile", "fallback", "required (the directories that users come from)")
	}
	return c.validateTypeOptions()
}

func (c *ProfileConfig) validateValues() error {
	f := func(field, format string, args ...any) error { return fieldErr("profile", field, format, args...) }
	switch approval.ProfileType(c.Type) {
	case "", approval.TypeUser, approval.TypeManager:
	default:
		return f("type", "%q is not a profile type (user or manager)", c.Type)
	}
	if c.LinkExpiration < 0 {
		return f("link_expiration", "must be positive")
	}
	for _, a := range c.Approvers {
		if !validAddress(a) {
			return f("approvers", "%q is not a mail address", a)
		}
	}
	seen := map[string]bool{}
	for _, v := range c.GrantDurations {
		g, err := approval.ParseGrantDuration(v)
		if err != nil {
			return f("grant_durations", "%v", err)
		}
		if seen[g.Key()] {
			return f("grant_durations", "%s is listed twice", v)
		}
		seen[g.Key()] = true
	}
	switch approval.Justification(c.Justification) {
	case "", approval.JustificationOptional, approval.JustificationRequired:
	default:
		return f("justification", "want optional or required")
	}
	if c.Message != "" && c.MessageFile != "" {
		return f("message_file", "conflicts with message; set one")
	}
	return nil
}

// validateTypeOptions refuses the options that the profile's type does
// not take.
func (c *ProfileConfig) validateTypeOptions() error {
	f := func(field, format string, args ...any) error { return fieldErr("profile", field, format, args...) }
	manager := approval.ProfileType(c.Type) == approval.TypeManager
	escalate, expires := time.Duration(c.EscalateAfter), c.linkExpiration()
	if (escalate != 0 || len(c.Approvers) > 0) && !manager {
		return f("escalate_after", "escalation needs type manager")
	}
	if escalate < 0 || (escalate > 0 && escalate >= expires) {
		return f("escalate_after", "%s must be positive and shorter than link_expiration (%s)", escalate, expires)
	}
	if c.DisableNumberMatching && manager {
		return f("number_matching", "a manager profile always matches numbers")
	}
	if !manager {
		for _, g := range []struct {
			field string
			set   bool
		}{{"grant_durations", len(c.GrantDurations) > 0}, {"grant_max", c.GrantMax != 0}, {"justification", c.Justification != ""}} {
			if g.set {
				return f(g.field, "only a manager profile gives time-boxed grants; set type manager or remove %s", g.field)
			}
		}
	}
	if c.DisableCodeFallback && manager {
		return f("code_fallback", "a manager profile never mails a code; code_fallback is for type user")
	}
	return nil
}

// linkExpiration is link_expiration with its default.
func (c *ProfileConfig) linkExpiration() time.Duration {
	if c.LinkExpiration == 0 {
		return defaultLinkExpiration
	}
	return time.Duration(c.LinkExpiration)
}

// Validate checks what the policy says on its own: that its values that
// are written /.../ are regular expressions, and that the required fields
// are set. The app checks the profile and directory it names.
func (c *PolicyConfig) Validate() error {
	f := func(field, format string, args ...any) error { return fieldErr("policy", field, format, args...) }
	for _, v := range c.Values {
		if len(v) >= 2 && v[0] == '/' && v[len(v)-1] == '/' {
			if _, err := regexp.Compile(v[1 : len(v)-1]); err != nil {
				return f("values", "%q is not a valid regular expression: %v", v, err)
			}
		}
	}
	for _, r := range []struct {
		field string
		set   bool
	}{{"profile", c.Profile != ""}, {"attribute", c.Attribute != ""}, {"values", len(c.Values) > 0}} {
		if !r.set {
			return f(r.field, "required")
		}
	}
	return nil
}
