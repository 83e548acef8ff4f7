// Package caddymodule plugs caddy-mailauth into Caddy: the "mailauth" app
// (a global option block) owns the store, mailer, directories and profiles,
// and the "mailauth" HTTP handler (a site directive) protects routes with
// them. The logic lives in the packages this one configures.
package caddymodule

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net/mail"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/approval"
	"github.com/mailauth/caddy-mailauth/directory"
	"github.com/mailauth/caddy-mailauth/internal/loopback"
	"github.com/mailauth/caddy-mailauth/keyring"
	"github.com/mailauth/caddy-mailauth/mailer"
	"github.com/mailauth/caddy-mailauth/store"
)

func init() {
	caddy.RegisterModule(App{})
}

// Defaults.
const (
	defaultSessionLifetime = 8 * time.Hour
	defaultIdleTimeout     = time.Hour
	defaultLinkExpiration  = 15 * time.Minute
	minAdvisedExpiration   = 5 * time.Minute
	maxAdvisedExpiration   = 24 * time.Hour
)

// App is the "mailauth" app: the shared part of caddy-mailauth that every
// site using the "mailauth" handler relies on. It is configured by the
// global "mailauth" option block.
type App struct {
	// Store says where state is kept. Default: Badger under Caddy's data
	// directory.
	Store *StoreConfig `json:"store,omitempty"`
	// SessionLifetime is how long a session cookie stays valid after
	// sign-in. Default: 8h.
	SessionLifetime caddy.Duration `json:"session_lifetime,omitempty"`
	// SessionIdleTimeout ends a session not used for this long; use slides
	// it, up to SessionLifetime. Default: 1h. Set it to session_lifetime or
	// more to turn it off.
	SessionIdleTimeout caddy.Duration `json:"session_idle_timeout,omitempty"`
	// SessionKeys are base64-encoded 32-byte keys that sign session
	// cookies: the first signs, all verify, so a key can be rotated out
	// without signing everybody out. Placeholders such as
	// {env.MAILAUTH_KEYS} expand at load. Default: one key generated once
	// and kept in the store, shared by every instance using that store.
	SessionKeys []string `json:"session_keys,omitempty"`
	// CookieDomain, when set, scopes the session cookie to a parent domain
	// (such as "example.com") so one sign-in covers its subdomains.
	// Default: the cookie belongs to the exact host that set it.
	CookieDomain string `json:"cookie_domain,omitempty"`
	// MailServers are the SMTP servers, by name.
	MailServers map[string]*MailServerConfig `json:"mail_servers,omitempty"`
	// Directories are the sources of identities, by name.
	Directories map[string]*DirectoryConfig `json:"directories,omitempty"`
	// Profiles say how approval runs, by name. Sites pick one with
	// default_profile.
	Profiles map[string]*ProfileConfig `json:"profiles,omitempty"`
	// Policies choose a profile from user attributes, by name. Sites list
	// the ones they use with policies.
	Policies map[string]*PolicyConfig `json:"policies,omitempty"`
	// RateLimit sets the abuse limits on login starts, link and code
	// redemptions and manager mails. Default: 20/10m login starts per
	// client IP, 5/15m per identity, 30/10m redemptions per client IP and
	// 20/h approval mails per manager.
	RateLimit *RateLimitConfig `json:"rate_limit,omitempty"`
	// AuditRetention is how long audit records are kept in the store,
	// where the admin API queries them and `caddy mailauth audit verify`
	// checks their hash chain. The mailauth.audit log lines are kept as
	// long as the log's own rotation says. Default: 90 days (2160h).
	AuditRetention caddy.Duration `json:"audit_retention,omitempty"`
	// Brand is the operator's name, logo, colour and support contact,
	// shown on every page and mail. Default: none.
	Brand *BrandConfig `json:"brand,omitempty"`
	// Templates is a directory of templates that replace the built-in
	// ones: pages by their file name at its top (login.html, wait.html,
	// layout.html, …) and mails under mail/ (body.html, manager_body.txt,
	// notice_subject.txt, …). The built-in templates in the module's
	// source (caddymodule/pages, mailer/templates) are the starting point.
	// A profile's own subject and message still win over mail/. A file
	// that does not parse, or whose name no template has, is refused at
	// load with its path. Default: the built-in templates only.
	Templates string `json:"templates,omitempty"`
	// DefaultLanguage is the language (a shipped catalogue: en, tr or de)
	// of pages whose browser asks for none of the shipped ones, of every
	// mail to an approver, and of a user's own mail when the directory
	// names no shipped language for them. Default: en.
	DefaultLanguage string `json:"default_language,omitempty"`
	// LanguageAttribute is the directory attribute that holds a user's own
	// language ("de", "tr-TR"), which their own mail is worded in. LDAP
	// directories ask for it with every lookup; local users set it with
	// attr. Default: preferredLanguage.
	LanguageAttribute string `json:"language_attribute,omitempty"`

	// pages are the pages in every language, with the templates
	// directory's overrides; mailOverrides its mail templates by name.
	pages         pageSet
	mailOverrides map[string]string
	notice        *mailer.Templates
	language      string
	brand         pageBrand
	mailBrand     mailer.Brand
	logo          []byte
	logoType      string
	brandCSS      []byte

	limits approval.RateLimits
	// keyring holds the keys derived from the signing keys.
	keyring  *keyring.Keys
	logger   *zap.Logger
	profiles map[string]*approval.Profile
	policies map[string]*approval.Policy
	dirs     map[string]directory.Directory
	storeID  string
	store    store.Store
	outbox   *mailer.Outbox
	// smtp carries the outbox's mail; Stop ends its sessions.
	smtp    *mailer.SMTP
	service *approval.Service
	trail   *approval.AuditTrail
	// storedKey is the session key kept in the store, when none is
	// configured; keyring.Keep puts it back should the store lose it.
	storedKey []byte
	stop      context.CancelFunc
	stopped   chan struct{}
	// sites are the sites this config's handlers protect.
	sites *siteSet

	// revocations are the store's, shared with the other configs of this
	// process (pooledStore).
	revocations *approval.Revocations
}

// siteSet holds sites by ID; handlers add theirs as they provision.
type siteSet struct {
	mu   sync.Mutex
	byID map[string]*approval.Site
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "mailauth",
		New: func() caddy.Module { return new(App) },
	}
}

// stores holds open stores across config reloads: a reload provisions the
// new config before it cleans up the old one, and Badger refuses a second
// open of the same directory.
var stores = caddy.NewUsagePool()

// pooledStore is an open store and the session revocations read from it,
// which every config of this process that uses the store shares: a config
// loaded while the store cannot be read starts from the list the config
// before it kept, rather than refusing every session until the store
// answers (see approval.Config.Revocations).
type pooledStore struct {
	store.Store
	revocations *approval.Revocations
}

func (p pooledStore) Destruct() error { return p.Close() }

// Provision checks the configuration and builds the store, mailer,
// directories, profiles and the approval service.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	a.sites = &siteSet{byID: map[string]*approval.Site{}}
	lifetime := time.Duration(a.SessionLifetime)
	if lifetime == 0 {
		lifetime = defaultSessionLifetime
	}
	if lifetime < 0 {
		return errors.New("mailauth: session_lifetime must be positive")
	}
	idle := time.Duration(a.SessionIdleTimeout)
	if idle == 0 {
		idle = defaultIdleTimeout
	}
	if idle < 0 {
		return errors.New("mailauth: session_idle_timeout must be positive")
	}
	if idle >= lifetime {
		idle = 0 // no shorter than the lifetime: only the lifetime applies
	}

	servers, err := a.build()
	if err != nil {
		return err
	}
	if err := a.openStore(); err != nil {
		return err
	}
	codec, err := a.keys(ctx)
	if err != nil {
		return err
	}
	if a.AuditRetention < 0 {
		return errors.New("mailauth: audit_retention must be positive")
	}
	audit := approval.NewAuditor(a.logger.Named("audit"))
	a.trail = approval.NewAuditTrail(a.store, time.Duration(a.AuditRetention), a.logger.Named("audit_trail"))
	audit.Persist(a.trail, nil)
	smtp, err := mailer.NewSMTP(servers)
	if err != nil {
		return fmt.Errorf("mailauth: %w", err)
	}
	mets, err := newAppMetrics(ctx.GetMetricsRegistry(), sortedKeys(a.profiles), sortedKeys(servers), sortedKeys(a.dirs), a.store.OutboxLen,
		func() time.Duration { return a.outbox.OldestFailing() })
	if err != nil {
		return fmt.Errorf("mailauth: metrics: %w", err)
	}
	// One wrapper per directory, shared by every profile that uses it:
	// sites tell their directories apart by name.
	counted := make(map[string]directory.Directory, len(a.dirs))
	for name, d := range a.dirs {
		counted[name] = mets.counted(d)
	}
	for _, p := range a.profiles {
		for i, d := range p.Directories {
			if c, ok := counted[d.Name()]; ok {
				p.Directories[i] = c
			}
		}
	}
	audit.Observe(mets.audit)
	a.trail.OnDrop(mets.auditDropped)
	smtp.OnDial(mets.dialed)
	mailLog := a.logger.Named("mailer")
	smtp.OnThrottle(func(server string, until time.Time, err error) {
		mailLog.Warn("mail server is throttling; not using it for a while",
			zap.String("server", server), zap.Time("until", until), zap.Error(err))
	})
	a.smtp = smtp
	var svc *approval.Service
	a.outbox = mailer.NewOutbox(a.store, smtp, mailLog, func(ev mailer.Event) {
		mets.mail(ev)
		svc.MailEvent(ev)
	})
	svc, err = approval.NewService(approval.Config{
		Store:      a.store,
		Mail:       a.outbox,
		Profiles:   a.profiles,
		Policies:   slices.Collect(maps.Values(a.policies)),
		Codec:      codec,
		CodeKey:    a.keyring.Code,
		RateLimits: a.limits,
		// Instances sharing a Redis share its limits, too.
		SharedRateLimits:  a.Store != nil && a.Store.Backend == "redis",
		Revocations:       a.revocations,
		SessionLifetime:   lifetime,
		IdleTimeout:       idle,
		CookieDomain:      a.CookieDomain,
		DefaultLanguage:   a.language,
		LanguageAttribute: a.languageAttribute(),
		Brand:             a.mailBrand,
		Notice:            a.notice,
		Audit:             audit,
		Logger:            a.logger,
		Now:               now,
	})
	if err != nil {
		return err
	}
	a.outbox.BeforeSend(svc.BeforeSend)
	if err := a.outbox.SealWith(a.keyring.Outbox...); err != nil {
		return fmt.Errorf("mailauth: %w", err)
	}
	a.service = svc
	return nil
}

// build turns the configuration into directories, profiles and policies.
// It opens nothing and dials nothing, so `caddy mailauth explain` can use
// it beside a running Caddy that holds the store.
func (a *App) build() (map[string]mailer.ServerConfig, error) {
	if a.logger == nil {
		a.logger = zap.NewNop()
	}
	var err error
	if a.limits, err = a.RateLimit.limits(); err != nil {
		return nil, fmt.Errorf("mailauth: %w", err)
	}
	if err := a.buildPresentation(); err != nil {
		return nil, err
	}
	repl := caddy.NewReplacer()
	servers, err := a.mailServers(repl)
	if err != nil {
		return nil, err
	}
	for name, sc := range servers {
		if sc.InsecureTLSOK && !loopback.Host(sc.Host) {
			a.logger.Warn("mail_server may send sign-in links in clear text (insecure_tls_ok)",
				zap.String("mail_server", name), zap.String("host", sc.Host), zap.String("tls", string(sc.TLS)))
		}
	}
	if a.dirs, err = a.directories(repl); err != nil {
		return nil, err
	}
	if a.profiles, err = a.buildProfiles(servers, a.dirs); err != nil {
		return nil, err
	}
	a.policies = make(map[string]*approval.Policy, len(a.Policies))
	for name, c := range a.Policies {
		if c == nil {
			return nil, fmt.Errorf("mailauth: policy %q: empty", name)
		}
		p := a.profiles[c.Profile]
		if p == nil {
			return nil, fmt.Errorf("mailauth: policy %q: profile: no profile named %q (have: %s)", name, c.Profile, names(a.profiles))
		}
		if c.Directory != "" && a.dirs[c.Directory] == nil {
			return nil, fmt.Errorf("mailauth: policy %q: directory: no directory named %q (have: %s)", name, c.Directory, names(a.dirs))
		}
		pol, err := approval.NewPolicy(name, p, c.Directory, c.Attribute, c.Values)
		if err != nil {
			return nil, fmt.Errorf("mailauth: %w", err)
		}
		a.policies[name] = pol
	}
	return servers, nil
}

// site builds what a site with this default profile and these policies
// runs on; the error names the handler field at fault.
func (a *App) site(defaultProfile string, policies []string) (*approval.Site, error) {
	def := a.profiles[defaultProfile]
	if def == nil {
		return nil, fmt.Errorf("mailauth: default_profile: no profile named %q (have: %s)", defaultProfile, names(a.profiles))
	}
	pols := make([]*approval.Policy, 0, len(policies))
	for _, n := range policies {
		p := a.policies[n]
		if p == nil {
			return nil, fmt.Errorf("mailauth: policies: no policy named %q (have: %s)", n, names(a.policies))
		}
		pols = append(pols, p)
	}
	site := approval.NewSite(def, pols)
	if a.sites == nil {
		return site, nil
	}
	a.sites.mu.Lock()
	defer a.sites.mu.Unlock()
	if known, ok := a.sites.byID[site.ID]; ok {
		return known, nil
	}
	a.sites.byID[site.ID] = site
	return site, nil
}

// siteByID is a site that a handler of this config protects, by its ID:
// the step-up page is served by whichever handler the host routes
// /.mailauth/ to, and learns from the ID which site asked.
func (a *App) siteByID(id string) *approval.Site {
	if a.sites == nil {
		return nil
	}
	a.sites.mu.Lock()
	defer a.sites.mu.Unlock()
	return a.sites.byID[id]
}

// mailServers maps the mail_server blocks to mailer configs: placeholders
// in username and password are expanded and tls_ca is read. Errors name
// the server and the field.
func (a *App) mailServers(repl *caddy.Replacer) (map[string]mailer.ServerConfig, error) {
	out := make(map[string]mailer.ServerConfig, len(a.MailServers))
	for name, c := range a.MailServers {
		if c == nil {
			return nil, fmt.Errorf("mailauth: mail_server %q: empty", name)
		}
		sc, err := c.serverConfig(name, repl.ReplaceKnown(c.Username, ""), repl.ReplaceKnown(c.Password, ""))
		if err == nil {
			err = sc.Validate()
		}
		if err != nil {
			var ce *mailer.ConfigError
			if errors.As(err, &ce) {
				return nil, fmt.Errorf("mailauth: mail_server %q: %s: %s", name, ce.Field, ce.Reason)
			}
			return nil, fmt.Errorf("mailauth: mail_server %q: %w", name, err)
		}
		if c.TLSCA != "" {
			pool, err := loadCAs(c.TLSCA)
			if err != nil {
				return nil, fmt.Errorf("mailauth: mail_server %q: tls_ca: %w", name, err)
			}
			sc.RootCAs = pool
		}
		out[name] = sc
	}
	return out, nil
}

func (a *App) directories(repl *caddy.Replacer) (map[string]directory.Directory, error) {
	out := make(map[string]directory.Directory, len(a.Directories))
	for name, c := range a.Directories {
		if c == nil {
			return nil, fmt.Errorf("mailauth: directory %q: empty", name)
		}
		d, err := a.directory(name, c, repl)
		if err != nil {
			return nil, err
		}
		out[name] = d
	}
	return out, nil
}

func (a *App) directory(name string, c *DirectoryConfig, repl *caddy.Replacer) (directory.Directory, error) {
	switch c.Type {
	case "local":
		users := make([]directory.LocalUser, 0, len(c.Users))
		for _, u := range c.Users {
			users = append(users, directory.LocalUser{Username: u.Username, Name: u.Name, Email: u.Email, Sponsor: u.Sponsor, Attributes: u.Attributes})
		}
		d, err := directory.NewLocal(name, users)
		if err != nil {
			return nil, fmt.Errorf("mailauth: %w", err)
		}
		return d, nil
	case "ldap":
		attrs := c.Attributes
		if la := a.languageAttribute(); !slices.ContainsFunc(attrs, func(s string) bool { return strings.EqualFold(s, la) }) {
			// Asked for with every lookup, so the user's mail can be in
			// their own language.
			attrs = append(slices.Clone(attrs), la)
		}
		cfg := directory.LDAPConfig{
			URL:                 c.URL,
			BindDN:              c.BindDN,
			BindPassword:        repl.ReplaceKnown(c.BindPassword, ""),
			BaseDN:              c.BaseDN,
			UserFilter:          c.UserFilter,
			UsernameAttribute:   c.UsernameAttribute,
			MailAttribute:       c.MailAttribute,
			ManagerAttribute:    c.ManagerAttribute,
			NameAttribute:       c.NameAttribute,
			DepartmentAttribute: c.DepartmentAttribute,
			Attributes:          attrs,
			StartTLS:            c.StartTLS,
			Timeout:             time.Duration(c.Timeout),
			PoolSize:            c.PoolSize,
		}
		if c.TLSCA != "" {
			pem, err := os.ReadFile(c.TLSCA)
			if err != nil {
				return nil, fmt.Errorf("mailauth: directory %q: tls_ca: %w", name, err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("mailauth: directory %q: tls_ca: %s holds no PEM certificate", name, c.TLSCA)
			}
		}
		d, err := directory.NewLDAP(name, cfg, a.logger.Named("directory"))
		if err != nil {
			return nil, fmt.Errorf("mailauth: %w", err)
		}
		return d, nil
	case "":
		return nil, fmt.Errorf("mailauth: directory %q: type is required (local or ldap)", name)
	}
	return nil, fmt.Errorf("mailauth: directory %q: type %q is not supported (local or ldap)", name, c.Type)
}

func (a *App) buildProfiles(servers map[string]mailer.ServerConfig, dirs map[string]directory.Directory) (map[string]*approval.Profile, error) {
	if len(a.Profiles) == 0 {
		return nil, errors.New("mailauth: no profile is configured; add a profile block")
	}
	out := make(map[string]*approval.Profile, len(a.Profiles))
	for name, c := range a.Profiles {
		if c == nil {
			return nil, fmt.Errorf("mailauth: profile %q: empty", name)
		}
		field := func(f string, format string, args ...any) error {
			return fmt.Errorf("mailauth: profile %q: %s: %s", name, f, fmt.Sprintf(format, args...))
		}
		p := &approval.Profile{Name: name, Type: approval.ProfileType(c.Type)}
		switch p.Type {
		case "":
			p.Type = approval.TypeUser
		case approval.TypeUser, approval.TypeManager:
		default:
			return nil, field("type", "%q is not a profile type (user or manager)", c.Type)
		}
		if c.Server == "" {
			return nil, field("server", "required: the base URL of links in mail, such as https://apps.example.com")
		}
		u, err := url.Parse(c.Server)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return nil, field("server", "%q must be an http or https URL with a host and no path, such as https://apps.example.com", c.Server)
		}
		if u.Scheme == "http" && !loopback.Host(u.Hostname()) {
			return nil, field("server", "%q sends sign-in links in clear text; use https:// (http:// is allowed only for loopback hosts such as localhost)", c.Server)
		}
		p.Server = u.Scheme + "://" + u.Host
		p.LinkExpiration = time.Duration(c.LinkExpiration)
		if p.LinkExpiration == 0 {
			p.LinkExpiration = defaultLinkExpiration
		}
		if p.LinkExpiration < 0 {
			return nil, field("link_expiration", "must be positive")
		}
		if p.LinkExpiration < minAdvisedExpiration || p.LinkExpiration > maxAdvisedExpiration {
			a.logger.Warn("link_expiration outside the recommended range: users need time to reach their inbox, and 15m to 30m is recommended",
				zap.String("profile", name), zap.Duration("link_expiration", p.LinkExpiration))
		}
		p.MailServers = c.MailServers
		if len(p.MailServers) == 0 {
			if len(servers) != 1 {
				return nil, field("mail_servers", "required when there is not exactly one mail_server")
			}
			for n := range servers {
				p.MailServers = []string{n}
			}
		}
		for _, s := range p.MailServers {
			if _, ok := servers[s]; !ok {
				return nil, field("mail_servers", "no mail_server named %q", s)
			}
		}
		if len(c.Fallback) == 0 {
			return nil, field("fallback", "required: name the directories that users come from")
		}
		for _, dn := range c.Fallback {
			d, ok := dirs[dn]
			if !ok {
				return nil, field("fallback", "no directory named %q (have: %s)", dn, names(dirs))
			}
			p.Directories = append(p.Directories, d)
		}
		if c.Message != "" && c.MessageFile != "" {
			return nil, field("message_file", "conflicts with message; set one")
		}
		text := c.Message
		if c.MessageFile != "" {
			b, err := os.ReadFile(c.MessageFile)
			if err != nil {
				return nil, field("message_file", "%v", err)
			}
			text = string(b)
		}
		html := ""
		if c.MessageHTMLFile != "" {
			b, err := os.ReadFile(c.MessageHTMLFile)
			if err != nil {
				return nil, field("message_html_file", "%v", err)
			}
			html = string(b)
		}
		parse, kind := mailer.ParseTemplates, ""
		if p.Type == approval.TypeManager {
			parse, kind = mailer.ParseManagerTemplates, "manager_"
		}
		subject := c.Subject
		if subject == "" {
			subject = a.mailOverrides[kind+"subject.txt"]
		}
		if text == "" {
			text = a.mailOverrides[kind+"body.txt"]
		}
		if html == "" {
			html = a.mailOverrides[kind+"body.html"]
		}
		p.Templates, err = parse(subject, text, html)
		if err != nil {
			return nil, field("subject/message", "%v", err)
		}
		p.NotifyFailedLogin = c.NotifyFailedLogin
		p.EscalateAfter, p.Approvers = time.Duration(c.EscalateAfter), c.Approvers
		if (p.EscalateAfter != 0 || len(p.Approvers) > 0) && p.Type != approval.TypeManager {
			return nil, field("escalate_after", "escalation needs type manager")
		}
		if p.EscalateAfter < 0 || (p.EscalateAfter > 0 && p.EscalateAfter >= p.LinkExpiration) {
			return nil, field("escalate_after", "%s must be positive and shorter than link_expiration (%s)", p.EscalateAfter, p.LinkExpiration)
		}
		if c.DisableNumberMatching && p.Type == approval.TypeManager {
			return nil, field("number_matching", "a manager profile always matches numbers")
		}
		p.NoNumberMatching = c.DisableNumberMatching
		if err := a.buildGrants(p, c, field); err != nil {
			return nil, err
		}
		if c.DisableCodeFallback && p.Type == approval.TypeManager {
			return nil, field("code_fallback", "a manager profile never mails a code; code_fallback is for type user")
		}
		p.NoCodeFallback = c.DisableCodeFallback
		for _, a := range p.Approvers {
			if !validAddress(a) {
				return nil, field("approvers", "%q is not a mail address", a)
			}
		}
		out[name] = p
	}
	return out, nil
}

// sessionLifetime is session_lifetime with its default.
func (a *App) sessionLifetime() time.Duration {
	if a.SessionLifetime == 0 {
		return defaultSessionLifetime
	}
	return time.Duration(a.SessionLifetime)
}

// buildGrants reads a manager profile's grant durations, cap and
// justification; other profiles may not set them.
func (a *App) buildGrants(p *approval.Profile, c *ProfileConfig, field func(string, string, ...any) error) error {
	if p.Type != approval.TypeManager {
		for f, set := range map[string]bool{"grant_durations": len(c.GrantDurations) > 0, "grant_max": c.GrantMax != 0, "justification": c.Justification != ""} {
			if set {
				return field(f, "only a manager profile gives time-boxed grants; set type manager or remove %s", f)
			}
		}
		return nil
	}
	lifetime := a.sessionLifetime()
	p.GrantMax = time.Duration(c.GrantMax)
	if p.GrantMax < 0 || p.GrantMax > lifetime {
		return field("grant_max", "%s must be positive and at most session_lifetime (%s): a grant cannot outlive its session", p.GrantMax, lifetime)
	}
	limit := p.GrantMax
	if limit == 0 {
		limit = lifetime
	}
	seen := map[string]bool{}
	for _, v := range c.GrantDurations {
		g, err := approval.ParseGrantDuration(v)
		if err != nil {
			return field("grant_durations", "%v", err)
		}
		if !g.EndOfDay && g.For > limit {
			return field("grant_durations", "%s is longer than grant_max (%s); shorten it or raise grant_max", v, limit)
		}
		if seen[g.Key()] {
			return field("grant_durations", "%s is listed twice", v)
		}
		seen[g.Key()] = true
		p.GrantDurations = append(p.GrantDurations, g)
	}
	switch approval.Justification(c.Justification) {
	case "", approval.JustificationOptional, approval.JustificationRequired:
		p.Justification = approval.Justification(c.Justification)
	default:
		return field("justification", "%q is not optional or required", c.Justification)
	}
	return nil
}

func (a *App) openStore() error {
	sc := a.Store
	if sc == nil {
		sc = &StoreConfig{}
	}
	switch sc.Backend {
	case "", "badger":
		return a.openBadger(sc)
	case "redis":
		return a.openRedis(sc)
	}
	return fmt.Errorf("mailauth: store: backend %q is not supported (badger, redis)", sc.Backend)
}

func (a *App) openBadger(sc *StoreConfig) error {
	dir := sc.Path
	if dir == "" {
		dir = filepath.Join(caddy.AppDataDir(), "mailauth")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("mailauth: store: path: %w", err)
	}
	id := "badger:" + dir
	val, _, err := stores.LoadOrNew(id, func() (caddy.Destructor, error) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		s, err := store.OpenBadger(store.BadgerOptions{Dir: dir}, a.logger.Named("store"))
		if err != nil {
			return nil, err
		}
		return pooledStore{Store: s, revocations: new(approval.Revocations)}, nil
	})
	if err != nil {
		return fmt.Errorf("mailauth: store: opening %s: %w", dir, err)
	}
	a.storeID = id
	a.store, a.revocations = val.(pooledStore).Store, val.(pooledStore).revocations
	return nil
}

// defaultRedisDialTimeout is short so that a page answers 503 quickly
// while Redis is down, rather than after go-redis's 5 s.
const defaultRedisDialTimeout = 2 * time.Second

func (a *App) openRedis(sc *StoreConfig) error {
	repl := caddy.NewReplacer()
	opts := store.RedisOptions{
		URL:           repl.ReplaceKnown(sc.URL, ""),
		TLS:           sc.TLS,
		TLSCA:         sc.TLSCA,
		KeyPrefix:     sc.KeyPrefix,
		PoolSize:      sc.PoolSize,
		DialTimeout:   time.Duration(sc.DialTimeout),
		MasterName:    sc.SentinelMaster,
		SentinelAddrs: sc.SentinelAddrs,
		ClusterAddrs:  sc.ClusterAddrs,
	}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = defaultRedisDialTimeout
	}
	// Pooled by everything that tells one shared store from another, so
	// a reload reuses the connections and subscriptions.
	id := fmt.Sprintf("redis:%s|%s|%s|%s|%s", opts.URL, opts.KeyPrefix, opts.MasterName, strings.Join(opts.SentinelAddrs, ","), strings.Join(opts.ClusterAddrs, ","))
	val, _, err := stores.LoadOrNew(id, func() (caddy.Destructor, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*opts.DialTimeout)
		defer cancel()
		s, err := store.OpenRedis(ctx, opts, a.logger.Named("store"))
		if err != nil {
			return nil, err
		}
		return pooledStore{Store: s, revocations: new(approval.Revocations)}, nil
	})
	if err != nil {
		return fmt.Errorf("mailauth: store redis: %w", err)
	}
	a.storeID = id
	a.store, a.revocations = val.(pooledStore).Store, val.(pooledStore).revocations
	return nil
}

// keys loads the signing keys (session_keys, or the key kept in the
// store, made once) and derives the others from them.
func (a *App) keys(ctx context.Context) (*approval.SessionCodec, error) {
	var signing [][]byte
	if len(a.SessionKeys) > 0 {
		repl := caddy.NewReplacer()
		encoded := make([]string, len(a.SessionKeys))
		for i, k := range a.SessionKeys {
			encoded[i] = repl.ReplaceKnown(k, "")
		}
		var err error
		if signing, err = keyring.Parse(encoded); err != nil {
			return nil, fmt.Errorf("mailauth: session_keys: %w", err)
		}
	} else {
		key, err := keyring.LoadOrCreate(ctx, a.store)
		if err != nil {
			return nil, fmt.Errorf("mailauth: %w", err)
		}
		a.storedKey, signing = key, [][]byte{key}
	}
	codec, err := approval.NewSessionCodec(signing...)
	if err != nil {
		return nil, fmt.Errorf("mailauth: session_keys: %w", err)
	}
	if a.keyring, err = keyring.Derive(signing...); err != nil {
		return nil, err
	}
	return codec, nil
}

// Start runs the outbox worker.
func (a *App) Start() error {
	ctx, cancel := context.WithCancel(context.Background())
	a.stop = cancel
	a.stopped = make(chan struct{})
	go func() {
		defer close(a.stopped)
		if a.storedKey != nil {
			go keyring.Keep(ctx, a.store, a.storedKey, keyring.KeepInterval, a.logger)
		}
		a.outbox.Run(ctx)
	}()
	return nil
}

// Stop ends the outbox worker and waits for logins still being dispatched,
// so no work of this config outlives it.
func (a *App) Stop() error {
	if a.stop != nil {
		a.stop()
		<-a.stopped
	}
	if a.smtp != nil {
		// The outbox has stopped; its sessions end with a QUIT.
		a.smtp.Close()
	}
	if a.service != nil {
		a.service.Close()
	}
	return nil
}

// Cleanup releases the store; the last config using it closes it.
func (a *App) Cleanup() error {
	a.closeDirectories()
	// The trail closes here rather than in Stop: requests of this config
	// may still be finishing, and recording, until every app has stopped.
	if a.trail != nil {
		a.trail.Close()
		a.trail = nil
	}
	if a.storeID == "" {
		return nil
	}
	_, err := stores.Delete(a.storeID)
	a.storeID = ""
	return err
}

func names[T any](m map[string]T) string {
	if len(m) == 0 {
		return "none"
	}
	return strings.Join(slices.Sorted(maps.Keys(m)), ", ")
}

// validAddress reports whether s parses as a mail address.
func validAddress(s string) bool {
	_, err := mail.ParseAddress(s)
	return err == nil
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
