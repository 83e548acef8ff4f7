// Package approval is the core of caddy-mailauth: the login state machine,
// link tokens, session cookies and the audit trail. It knows nothing of
// Caddy; the caddymodule package translates configuration and HTTP into
// calls on a Service.
package approval

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/approval/mailtemplate"
	"github.com/mailauth/caddy-mailauth/mailer"
	"github.com/mailauth/caddy-mailauth/store"
)

// Errors the HTTP layer turns into pages.
var (
	// ErrBadInput: the login form's identity field is empty or malformed.
	ErrBadInput = errors.New("approval: enter a username or email address")
	// ErrUnknownProfile: the caller named a profile that does not exist.
	ErrUnknownProfile = errors.New("approval: unknown profile")
	// ErrLoginNotFound: no login matches the pending cookie (it is wrong,
	// or the login is long gone).
	ErrLoginNotFound = errors.New("approval: login not found")
	// ErrLinkInvalid: the link token is malformed, used or expired.
	ErrLinkInvalid = errors.New("approval: link invalid, used or expired")
	// ErrLoginExpired: the login ran out of time before it was approved.
	ErrLoginExpired = errors.New("approval: login expired")
	// ErrAlreadyDecided: the login was approved or denied already.
	ErrAlreadyDecided = errors.New("approval: login already decided")
	// ErrNotApproved: the login is still pending, so there is no session
	// to collect yet.
	ErrNotApproved = errors.New("approval: login not approved")
	// ErrDenied: the approver denied the login.
	ErrDenied = errors.New("approval: login denied")
)

// MailQueue is where the Service puts mail. It must persist the message
// before returning and never wait on a mail server.
type MailQueue interface {
	Enqueue(ctx context.Context, m *mailer.Message) error
}

// Config is what a Service is built from.
type Config struct {
	// Store keeps logins and link tokens.
	Store store.Store
	// Mail queues outgoing mail.
	Mail MailQueue
	// Profiles by name.
	Profiles map[string]*Profile
	// Policies are every configured policy. Sessions record which match
	// their identity, so that a site can pick the user's profile without a
	// directory lookup.
	Policies []*Policy
	// Codec signs session cookies.
	Codec *SessionCodec
	// CodeKey keys the HMAC under which one-time codes are stored; 32
	// random bytes, the same on every instance that shares the store.
	CodeKey []byte
	// SessionLifetime is how long a session lasts at most.
	SessionLifetime time.Duration
	// CookieDomain, when set, lets return targets be https URLs on hosts
	// under it (see SafeReturnTarget).
	CookieDomain string
	// IdleTimeout ends a session that has not been used for this long;
	// zero means only SessionLifetime applies.
	IdleTimeout time.Duration
	// Audit records events; nil discards them.
	Audit *Auditor
	// Logger takes diagnostics that are not audit events.
	Logger *zap.Logger
	// RateLimits bound login starts, redemptions and approval mails; the
	// zero value means no limits (tests), DefaultRateLimits sane ones.
	RateLimits RateLimits
	// Revocations is where the service keeps the revoked sessions it
	// refuses. Services given the same Revocations share what any of them
	// has read: caddymodule passes one per store, so that a config loaded
	// while the store cannot be read (a reload during an outage) starts
	// from the list the config before it kept. Nil: a list of its own.
	Revocations *Revocations
	// SharedRateLimits keeps the rate-limit counts in Store, so that every
	// instance sharing it counts against the same limits. Each limited
	// event then costs store round trips; an embedded store, which one
	// process owns, has no use for it.
	SharedRateLimits bool
	// LookupTimeout bounds the directory lookup of one login.
	LookupTimeout time.Duration
	// DefaultLanguage words the mails of users whose directory entry
	// names no shipped language, and every mail to an approver (see
	// renderApprovalMail). Empty: English.
	DefaultLanguage string
	// LanguageAttribute is the identity attribute that holds a user's own
	// language ("de", "tr-TR"). Empty: no user has one.
	LanguageAttribute string
	// Brand is the operator's branding, shown in every mail.
	Brand mailtemplate.Brand
	// Notice renders failed-login notices. Nil: the built-in templates.
	Notice *mailtemplate.Templates
	// Now and Rand default to the real clock and crypto/rand; tests
	// replace them.
	Now  func() time.Time
	Rand io.Reader
}

// Service runs logins. It is safe for concurrent use.
type Service struct {
	*sessions
	*notices
	*auditQueries
	cfg Config
	// kv and notifier are what logins and links use of the store: records,
	// and announcements of a login's change to its waiting pages.
	kv       KV
	notifier store.Notifier
	// policyEpoch digests cfg.Policies; see policyEpoch.
	policyEpoch uint32
	limits      *RateLimiters
	// background runs the revocation refresh, apart from wg, which
	// counts dispatches that Wait waits for.
	background sync.WaitGroup
	audit      *Auditor
	now        func() time.Time
	rand       io.Reader
	ctx        context.Context
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

// NewService checks cfg and returns a Service. Close it to stop the
// background work of logins still being dispatched.
func NewService(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Mail == nil || cfg.Codec == nil {
		return nil, errors.New("approval: store, mail queue and session codec are required")
	}
	if len(cfg.CodeKey) < 32 {
		return nil, errors.New("approval: a code key of 32 bytes is required")
	}
	if cfg.SessionLifetime <= 0 {
		return nil, errors.New("approval: session lifetime must be positive")
	}
	for name, p := range cfg.Profiles {
		if p.Templates == nil || p.LinkExpiration <= 0 || p.Server == "" {
			return nil, fmt.Errorf("approval: profile %q is incomplete", name)
		}
	}
	notice := cfg.Notice
	if notice == nil {
		var err error
		if notice, err = mailtemplate.Notice(); err != nil {
			return nil, err
		}
	}
	s := &Service{cfg: cfg, kv: cfg.Store, notifier: cfg.Store, audit: cfg.Audit, now: cfg.Now, rand: cfg.Rand}
	s.setPolicies(cfg.Policies)
	if s.audit == nil {
		s.audit = NewAuditor(nil)
	}
	if s.cfg.Logger == nil {
		s.cfg.Logger = zap.NewNop()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.rand == nil {
		s.rand = rand.Reader
	}
	s.limits = NewRateLimiters(cfg.RateLimits, s.now)
	if cfg.SharedRateLimits {
		s.limits = NewSharedRateLimiters(cfg.RateLimits, cfg.Store, s.now, s.cfg.Logger)
	}
	if s.cfg.LookupTimeout <= 0 {
		s.cfg.LookupTimeout = 10 * time.Second
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.sessions = &sessions{
		codec: cfg.Codec, revoked: cfg.Revocations, kv: cfg.Store, notifier: cfg.Store,
		audit: s.audit, log: s.cfg.Logger, now: s.now, lifetime: cfg.SessionLifetime, idle: cfg.IdleTimeout,
		ctx: s.ctx, background: &s.background,
	}
	s.sessions.start()
	s.auditQueries = &auditQueries{log: cfg.Store, audit: s.audit}
	s.notices = &notices{
		profiles: cfg.Profiles, templates: notice, kv: cfg.Store, mail: cfg.Mail, audit: s.audit, log: s.cfg.Logger,
		now: s.now, rand: s.rand, language: cfg.DefaultLanguage, brand: cfg.Brand,
	}
	return s, nil
}

// Close stops background dispatch and waits for it.
func (s *Service) Close() {
	s.cancel()
	s.wg.Wait()
	s.background.Wait()
}

// Wait blocks until every login started so far has been dispatched: its
// user looked up and its mail queued. Tests and benchmarks use it.
func (s *Service) Wait() { s.wg.Wait() }

// Now is the service's clock, for pages that show times.
func (s *Service) Now() time.Time { return s.now() }

// Profile returns the named profile, or nil.
func (s *Service) Profile(name string) *Profile { return s.cfg.Profiles[name] }

// ipKey groups client addresses for rate limits (an IPv6 host owns its
// whole /64); an address that does not parse is its own key.
func ipKey(ip string) string {
	if a, err := netip.ParseAddr(ip); err == nil {
		return IPKey(a)
	}
	return ip
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary so the stored value stays valid UTF-8.
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
