// Package caddymodule plugs caddy-mailauth into Caddy: the "mailauth" app
// (a global option block) owns the store, mailer, directories and profiles,
// and the "mailauth" HTTP handler (a site directive) protects routes with
// them. The logic lives in the packages this one configures.
package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/mail"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/approval"
	"github.com/mailauth/caddy-mailauth/approval/mailtemplate"
	"github.com/mailauth/caddy-mailauth/caddymodule/directories"
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
	// Store says where logins, link tokens, the outbox, the audit trail
	// and the session keys are kept: a module in the mailauth.stores
	// namespace, named by its "backend" key, such as "badger" (embedded,
	// one Caddy process) or "redis" (shared by every Caddy instance that
	// points at the same Redis and key_prefix). Default: Badger under
	// Caddy's data directory.
	Store json.RawMessage `json:"store,omitempty" caddy:"namespace=mailauth.stores inline_key=backend"`
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
	// Directories are the sources of identities, by name: each a module
	// in the mailauth.directories namespace, named by its "type" key, such
	// as "ldap" (an LDAP server) or "local" (users listed in the config).
	Directories map[string]json.RawMessage `json:"directories,omitempty" caddy:"namespace=mailauth.directories inline_key=type"`
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
	// source (caddymodule/pages, approval/mailtemplate/templates) are the starting point.
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
	notice        *mailtemplate.Templates
	language      string
	brand         pageBrand
	mailBrand     mailtemplate.Brand
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
	// dirModules are the modules that built dirs, by the same names, for
	// what `caddy mailauth check` asks of them.
	dirModules map[string]directories.Provider
	store      store.Store
	// sharedStore says that other Caddy instances use the store too.
	sharedStore bool
	outbox      *mailer.Outbox
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
	// process (sharedRevocations).
	revocations *approval.Revocations

	// parent is the context the app was provisioned in; guests is the
	// one its directory and store modules are loaded in, which
	// closeGuests ends.
	parent    caddy.Context
	guests    caddy.Context
	endGuests context.CancelFunc
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

// sharedRevocations holds the session revocations read from each open
// store, keyed by the store, which every config of this process that uses
// the store shares: a config loaded while the store cannot be read starts
// from the list the config before it kept, rather than refusing every
// session until the store answers (see approval.Config.Revocations).
var sharedRevocations = caddy.NewUsagePool()

type pooledRevocations struct{ *approval.Revocations }

func (pooledRevocations) Destruct() error { return nil }

// Provision checks the configuration and builds the store, mailer,
// directories, profiles and the approval service.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	a.parent = ctx
	a.sites = &siteSet{byID: map[string]*approval.Site{}}
	servers, err := a.build()
	if err != nil {
		return err
	}
	lifetime, idle := a.sessionLifetime(), time.Duration(a.SessionIdleTimeout)
	if idle == 0 {
		idle = defaultIdleTimeout
	}
	if idle >= lifetime {
		idle = 0 // no shorter than the lifetime: only the lifetime applies
	}
	if err := a.openStore(); err != nil {
		return err
	}
	codec, err := a.keys(ctx)
	if err != nil {
		return err
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
	a.countLookups(mets)
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
		SharedRateLimits:  a.sharedStore,
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

// countLookups has the profiles' directories counted in mets. There is
// one wrapper per directory, shared by every profile that uses it: sites
// tell their directories apart by name.
func (a *App) countLookups(mets *appMetrics) {
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
}

// build turns the configuration into directories, profiles and policies.
// It opens nothing and dials nothing, so `caddy mailauth explain` can use
// it beside a running Caddy that holds the store.
func (a *App) build() (map[string]mailer.ServerConfig, error) {
	if a.logger == nil {
		a.logger = zap.NewNop()
	}
	if err := a.validate(); err != nil {
		return nil, fmt.Errorf("mailauth: %w", err)
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
	if a.dirs, err = a.directories(); err != nil {
		return nil, err
	}
	if a.profiles, err = a.buildProfiles(servers, a.dirs); err != nil {
		return nil, err
	}
	a.policies = make(map[string]*approval.Policy, len(a.Policies))
	for name, c := range a.Policies {
		pol, err := approval.NewPolicy(name, a.profiles[c.Profile], c.Directory, c.Attribute, c.Values)
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
			if err = fromConfigError(err, name); errors.As(err, new(*FieldError)) {
				return nil, fmt.Errorf("mailauth: %w", err)
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

// buildProfiles makes the approval profiles of a config that validate
// has passed: defaults filled in, names resolved and mail templates read.
func (a *App) buildProfiles(servers map[string]mailer.ServerConfig, dirs map[string]directory.Directory) (map[string]*approval.Profile, error) {
	out := make(map[string]*approval.Profile, len(a.Profiles))
	for name, c := range a.Profiles {
		p, err := a.buildProfile(name, c, servers, dirs)
		if err != nil {
			return nil, fmt.Errorf("mailauth: %w", named(err, name))
		}
		out[name] = p
	}
	return out, nil
}

func (a *App) buildProfile(name string, c *ProfileConfig, servers map[string]mailer.ServerConfig, dirs map[string]directory.Directory) (*approval.Profile, error) {
	p := &approval.Profile{
		Name:              name,
		Type:              approval.ProfileType(c.Type),
		LinkExpiration:    c.linkExpiration(),
		MailServers:       c.MailServers,
		NotifyFailedLogin: c.NotifyFailedLogin,
		EscalateAfter:     time.Duration(c.EscalateAfter),
		Approvers:         c.Approvers,
		NoNumberMatching:  c.DisableNumberMatching,
		NoCodeFallback:    c.DisableCodeFallback,
	}
	if p.Type == "" {
		p.Type = approval.TypeUser
	}
	var err error
	if p.Server, err = linkServer(c.Server); err != nil {
		return nil, err
	}
	if p.LinkExpiration < minAdvisedExpiration || p.LinkExpiration > maxAdvisedExpiration {
		a.logger.Warn("link_expiration outside the recommended range: users need time to reach their inbox, and 15m to 30m is recommended",
			zap.String("profile", name), zap.Duration("link_expiration", p.LinkExpiration))
	}
	if len(p.MailServers) == 0 {
		// validate made sure there is exactly one.
		p.MailServers = slices.Collect(maps.Keys(servers))
	}
	for _, dn := range c.Fallback {
		p.Directories = append(p.Directories, dirs[dn])
	}
	if p.Templates, err = a.profileTemplates(c, p.Type); err != nil {
		return nil, err
	}
	buildGrants(p, c)
	return p, nil
}

// linkServer is the scheme and host of a profile's server URL. It is
// checked here rather than in Validate so that `caddy adapt` still takes
// a Caddyfile whose links would go out in clear text, as it always has;
// loading such a config fails.
func linkServer(server string) (string, error) {
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fieldErr("profile", "server", "%q must be an http or https URL with a host and no path, such as https://apps.example.com", server)
	}
	if u.Scheme == "http" && !loopback.Host(u.Hostname()) {
		return "", fieldErr("profile", "server", "%q sends sign-in links in clear text; use https:// (http:// is allowed only for loopback hosts such as localhost)", server)
	}
	return u.Scheme + "://" + u.Host, nil
}

// profileTemplates reads and parses a profile's mail templates: its own
// subject and message first, then the templates directory's.
func (a *App) profileTemplates(c *ProfileConfig, typ approval.ProfileType) (*mailtemplate.Templates, error) {
	field := func(f string, format string, args ...any) error { return fieldErr("profile", f, format, args...) }
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
	parse, kind := mailtemplate.Parse, ""
	if typ == approval.TypeManager {
		parse, kind = mailtemplate.ParseManager, "manager_"
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
	t, err := parse(subject, text, html)
	if err != nil {
		return nil, field("subject/message", "%v", err)
	}
	return t, nil
}

// sessionLifetime is session_lifetime with its default.
func (a *App) sessionLifetime() time.Duration {
	if a.SessionLifetime == 0 {
		return defaultSessionLifetime
	}
	return time.Duration(a.SessionLifetime)
}

// buildGrants sets a manager profile's grant durations, cap and
// justification, which validate has checked.
func buildGrants(p *approval.Profile, c *ProfileConfig) {
	if p.Type != approval.TypeManager {
		return
	}
	p.GrantMax = time.Duration(c.GrantMax)
	for _, v := range c.GrantDurations {
		if g, err := approval.ParseGrantDuration(v); err == nil {
			p.GrantDurations = append(p.GrantDurations, g)
		}
	}
	p.Justification = approval.Justification(c.Justification)
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

// Cleanup releases the directories and the store; the last config using
// the store closes it.
func (a *App) Cleanup() error {
	// The trail closes here rather than in Stop: requests of this config
	// may still be finishing, and recording, until every app has stopped.
	// The store outlives it, for the trail's last records.
	if a.trail != nil {
		a.trail.Close()
		a.trail = nil
	}
	return a.closeGuests()
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
