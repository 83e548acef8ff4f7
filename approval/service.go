// Package approval is the core of caddy-mailauth: the login state machine,
// link tokens, session cookies and the audit trail. It knows nothing of
// Caddy; the caddymodule package translates configuration and HTTP into
// calls on a Service.
package approval

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/directory"
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
	Brand mailer.Brand
	// Notice renders failed-login notices. Nil: the built-in templates.
	Notice *mailer.Templates
	// Now and Rand default to the real clock and crypto/rand; tests
	// replace them.
	Now  func() time.Time
	Rand io.Reader
}

// Service runs logins. It is safe for concurrent use.
type Service struct {
	cfg Config
	// policyEpoch digests cfg.Policies; see policyEpoch.
	policyEpoch uint32
	notice      *mailer.Templates
	limits      *RateLimiters
	revoked     *Revocations
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
		if notice, err = mailer.NoticeTemplates(); err != nil {
			return nil, err
		}
	}
	s := &Service{cfg: cfg, notice: notice, audit: cfg.Audit, now: cfg.Now, rand: cfg.Rand, revoked: cfg.Revocations}
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
	s.startRevocations()
	s.background.Add(1)
	go s.sweepGrants()
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

// StartRequest is a login form submission with what is known of the
// browser that sent it.
type StartRequest struct {
	// Site says which profiles and directories apply.
	Site      *Site
	Input     string
	ReturnURL string
	App       string
	ClientIP  string
	UserAgent string
}

// Started is what the browser that started a login gets to keep.
type Started struct {
	// Pending is the pending-login cookie value: it names the login and
	// proves that this browser started it.
	Pending string
	// Reference is the support reference.
	Reference string
	// ExpiresAt is when the waiting page says the login expires
	// (Site.WaitLifetime after the start), which may be later than the
	// link; it is the same for every login of the site.
	ExpiresAt time.Time
}

// maxInput bounds the identity field; an email address is at most 254.
const maxInput = 254

// Start begins a login. Its answer depends only on the input's shape and
// on how many logins the client's address has started (a
// *RateLimitedError, which wraps ErrRateLimited), never on whether the
// user exists: the directory lookup and the mail run in the background
// after the answer is decided, so neither the response nor its timing
// reveals who has an account.
func (s *Service) Start(ctx context.Context, req StartRequest) (*Started, error) {
	input, err := NormalizeIdentity(req.Input)
	if err != nil {
		return nil, err
	}
	if req.Site == nil || req.Site.Default == nil {
		return nil, ErrUnknownProfile
	}
	// Until the user is found, the login runs on the site's default
	// profile; dispatch moves it to the profile a policy picks.
	p := req.Site.Default
	// The per-IP limit comes before anything is written, so a flood from
	// one address stores no login and only a folded audit record. It keys
	// on the client's address alone, so refusing openly tells nothing
	// about who has an account, and the browser learns when to come back
	// rather than waiting for a mail that will not come. The per-identity
	// limit, which would tell, stays silent in dispatch.
	if ipk := ipKey(req.ClientIP); !s.limits.LoginIP.Allow(ipk) {
		s.audit.Record(EventRateLimited, &Login{Profile: p.Name, Input: input, App: req.App, ClientIP: req.ClientIP, UserAgent: truncate(req.UserAgent, 512)}, Detail{Limit: "login_per_ip"})
		return nil, limitedBy(s.limits.LoginIP, "login_per_ip", ipk)
	}
	l, started, err := s.newLogin(p, input, req.ReturnURL, req.App, req.ClientIP, req.UserAgent)
	if err != nil {
		return nil, err
	}
	started.ExpiresAt = req.Site.waitExpiry(l)
	if err := s.putLogin(ctx, l, req.Site.longestLink+loginGrace); err != nil {
		return nil, err
	}
	s.audit.Record(EventLoginStarted, l, Detail{})
	// dispatch owns l from here on: it fills in the user as it finds them.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.dispatch(l, req.Site)
	}()
	return started, nil
}

// newLogin makes a pending login of profile p with its secrets, and what
// the browser that asked keeps of it.
func (s *Service) newLogin(p *Profile, input, returnURL, app, clientIP, userAgent string) (*Login, *Started, error) {
	id, err := newSecret(s.rand, 16)
	if err != nil {
		return nil, nil, err
	}
	secret, err := newSecret(s.rand, tokenBytes)
	if err != nil {
		return nil, nil, err
	}
	ref, err := newReference(s.rand)
	if err != nil {
		return nil, nil, err
	}
	match, err := newMatchCode(s.rand)
	if err != nil {
		return nil, nil, err
	}
	now := s.now()
	l := &Login{
		ID:          id,
		PendingHash: hashSecret(secret),
		Reference:   ref,
		Profile:     p.Name,
		Input:       input,
		App:         app,
		ReturnURL:   SafeReturnTarget(returnURL, s.cfg.CookieDomain),
		ClientIP:    clientIP,
		UserAgent:   truncate(userAgent, 512),
		CreatedAt:   now,
		ExpiresAt:   now.Add(p.LinkExpiration),
		State:       StatePending,
		MatchCode:   match,
	}
	return l, &Started{Pending: id + "." + secret, Reference: ref, ExpiresAt: l.ExpiresAt}, nil
}

// dispatch finds the user, picks the profile and queues the approval
// mail. Failures are audited, not returned: the browser already has its
// answer.
func (s *Service) dispatch(l *Login, site *Site) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.LookupTimeout)
	defer cancel()
	id, err := directory.Lookup(ctx, site.Directories, l.Input, func(d directory.Directory, err error) {
		s.audit.Record(EventDirectoryError, l, Detail{Directory: d.Name(), Err: err})
	})
	if err != nil {
		if errors.Is(err, directory.ErrNotFound) {
			s.audit.Record(EventUserUnknown, l, Detail{})
		} else if errors.Is(err, directory.ErrNoEmail) {
			s.audit.Record(EventDirectoryError, l, Detail{Err: err})
		}
		return
	}
	d := site.Choose(id, false)
	if d.Profile == nil {
		s.audit.Record(EventUserUnknown, l, Detail{Directory: id.Directory, Reason: "no policy matched and the default profile does not use this directory"})
		return
	}
	p := d.Profile
	if !s.limits.LoginIdentity.Allow(strings.ToLower(id.Directory + "\x00" + id.Username)) {
		l.Username, l.Name, l.Email, l.ManagerEmail, l.Profile = id.Username, id.Name, id.Email, id.ManagerEmail, p.Name
		s.audit.Record(EventRateLimited, l, Detail{Limit: "login_per_identity"})
		s.notifyFailed(ctx, l, OutcomeRateLimited)
		return
	}
	if d.Policy != nil {
		s.audit.Record(EventPolicyMatched, l, Detail{Policy: d.Policy.Name, Profile: p.Name, Directory: id.Directory})
	}
	expires := l.CreatedAt.Add(p.LinkExpiration)
	if !s.now().Before(expires) {
		s.audit.Record(EventMailAbandoned, l, Detail{Reason: "the link expired before the directory answered"})
		return
	}
	l.Username, l.Name, l.Email, l.ManagerEmail = id.Username, id.Name, id.Email, id.ManagerEmail
	l.Profile, l.Type, l.ExpiresAt = p.Name, p.Type, expires
	l.Directory, l.Policies = id.Directory, s.matchedPolicies(id)
	l.NumberMatching = p.numberMatching()
	l.Language = s.languageOf(id)
	// Nothing else writes the login before its first token exists (no
	// link, no code, no decision can reach it), so the filled-in login is
	// written blind, in the same transaction as the tokens: one sync
	// instead of one per key.
	loginEntry, err := s.loginEntry(l, site.longestLink)
	if err != nil {
		s.audit.Record(EventMailFailed, l, Detail{Reason: "store", Err: err})
		return
	}
	defer s.keepCodeLockout(ctx, l)
	s.request(ctx, l, p, site, loginEntry)
}

// request sends the mail that decides l, whose user and profile are
// known: a link to the user under a user profile, or the request to the
// approvers under a manager profile. loginEntry is written with the
// tokens.
func (s *Service) request(ctx context.Context, l *Login, p *Profile, site *Site, loginEntry store.Entry) {
	s.scheduleExpiryNotice(ctx, l)
	if p.Type != TypeManager {
		s.ask(ctx, l, p, l.Email, askOptions{with: []store.Entry{loginEntry}})
		return
	}
	if l.ManagerEmail == "" {
		// The user waits on the same page as everyone else; only the audit
		// log, under the login's reference, says why nothing comes.
		s.writeLogin(ctx, l, loginEntry)
		s.audit.Record(EventDirectoryError, l, Detail{Directory: l.Directory, Reason: "the user has no manager email (LDAP manager attribute, or sponsor for local users)"})
		return
	}
	now, later := s.approverChain(ctx, site, p, l)
	if len(now) == 0 {
		// Nobody but the user could approve: the request fails closed
		// behind the same waiting page as any other.
		s.writeLogin(ctx, l, loginEntry)
		s.audit.Record(EventNoApprover, l, Detail{Directory: l.Directory, Reason: "the manager, escalation target and approvers are all the user themself, or there are none"})
		return
	}
	s.ask(ctx, l, p, now[0], askOptions{with: []store.Entry{loginEntry}})
	for _, to := range now[1:] {
		s.ask(ctx, l, p, to, askOptions{})
	}
	if p.EscalateAfter > 0 {
		for _, to := range later {
			s.ask(ctx, l, p, to, askOptions{notBefore: l.CreatedAt.Add(p.EscalateAfter), escalatedFrom: now[0]})
		}
	}
}

func (s *Service) writeLogin(ctx context.Context, l *Login, e store.Entry) {
	if err := s.cfg.Store.PutMany(ctx, []store.Entry{e}); err != nil {
		s.audit.Record(EventMailFailed, l, Detail{Reason: "store", Err: err})
	}
}

// askOptions schedule an ask: an escalation waits until notBefore and
// says whom it escalates from.
type askOptions struct {
	notBefore     time.Time
	escalatedFrom string
	// with are further keys to write in the same transaction as the
	// tokens (the filled-in login).
	with []store.Entry
}

// loginEntry is the store entry of l, kept for longest (the longest link
// lifetime of any profile it could have) and a grace.
func (s *Service) loginEntry(l *Login, longest time.Duration) (store.Entry, error) {
	ttl := l.CreatedAt.Add(longest + loginGrace).Sub(s.now())
	if ttl <= 0 {
		ttl = time.Second
	}
	return logins.entry(l.ID, l, ttl)
}

// ask sends recipient the mail that decides the login: a sign-in link for
// the user, or Approve and Deny links for an approver. Each link carries
// its own token, bound to this login, this action and this recipient.
func (s *Service) ask(ctx context.Context, l *Login, p *Profile, recipient string, opt askOptions) {
	actions := []string{actionApprove}
	if p.Type == TypeManager {
		actions = append(actions, actionDeny)
		if !s.limits.Manager.Allow(strings.ToLower(recipient)) {
			if len(opt.with) > 0 {
				if err := s.cfg.Store.PutMany(ctx, opt.with); err != nil {
					s.audit.Record(EventMailFailed, l, Detail{Reason: "store", Err: err})
				}
			}
			s.audit.Record(EventRateLimited, l, Detail{Limit: "mails_per_manager", To: recipient})
			return
		}
	}
	ttl := l.ExpiresAt.Sub(s.now())
	entries := append([]store.Entry(nil), opt.with...)
	tokens := make(map[string]string, len(actions))
	for _, a := range actions {
		token, err := newSecret(s.rand, tokenBytes)
		if err != nil {
			s.cfg.Logger.Error("dispatching login", zap.String("reference", l.Reference), zap.Error(err))
			return
		}
		entry, err := links.entry(hashSecret(token), &linkRecord{LoginID: l.ID, Action: a, Recipient: recipient}, ttl)
		if err != nil {
			s.cfg.Logger.Error("dispatching login", zap.String("reference", l.Reference), zap.Error(err))
			return
		}
		entries = append(entries, entry)
		tokens[a] = token
	}
	code := ""
	if p.codeFallback() {
		var entry store.Entry
		var err error
		if code, entry, err = s.newCode(l, ttl); err != nil {
			s.cfg.Logger.Error("dispatching login", zap.String("reference", l.Reference), zap.Error(err))
			return
		}
		entries = append(entries, entry)
	}
	if err := s.persist(ctx, func() error { return s.cfg.Store.PutMany(ctx, entries) }); err != nil {
		s.audit.Record(EventMailFailed, l, Detail{Reason: "store", Err: err})
		return
	}
	msg, err := s.renderApprovalMail(l, p, recipient, tokens, opt.escalatedFrom, code)
	if err != nil {
		s.audit.Record(EventMailFailed, l, Detail{Reason: "template", Err: err})
		return
	}
	if !opt.notBefore.IsZero() {
		msg.NotBefore, msg.LoginID, msg.Purpose = opt.notBefore, l.ID, purposeEscalation
	}
	if err := s.persist(ctx, func() error { return s.cfg.Mail.Enqueue(ctx, msg) }); err != nil {
		s.audit.Record(EventMailFailed, l, Detail{Reason: "outbox", Err: err})
		return
	}
	d := Detail{To: msg.To, MessageID: msg.ID}
	if !opt.notBefore.IsZero() {
		d.NotBefore, d.Purpose = opt.notBefore, msg.Purpose
	}
	s.audit.Record(EventMailQueued, l, d)
}

// persist runs a store write of dispatch, retrying while ctx lasts: the
// browser already has its answer, so a write that fails now (a Redis
// failover takes a few seconds) would leave the user waiting for a mail
// that never comes. Each try is whole: a PutMany or an Enqueue either
// happened or did not, and repeating one writes the same keys again.
func (s *Service) persist(ctx context.Context, write func() error) error {
	wait := 50 * time.Millisecond
	for {
		err := write()
		if err == nil || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// link builds a landing-page link on the profile's server. A decision
// link also carries the other token of its pair, so the landing page can
// offer both buttons; each token still does only its own action.
func link(p *Profile, token, pair string) string {
	u := strings.TrimRight(p.Server, "/") + VerifyPath + "?token=" + token
	if pair != "" {
		u += "&pair=" + pair
	}
	return u
}

func (s *Service) renderApprovalMail(l *Login, p *Profile, recipient string, tokens map[string]string, escalatedFrom, code string) (*mailer.Message, error) {
	data := mailer.TemplateData{
		Link:        link(p, tokens[actionApprove], tokens[actionDeny]),
		User:        mailer.TemplateUser{Name: l.Name, Username: l.Username, Email: l.Email},
		App:         l.App,
		ClientIP:    l.ClientIP,
		Browser:     DescribeBrowser(l.UserAgent),
		RequestedAt: l.CreatedAt,
		ExpiresAt:   l.ExpiresAt,
		Reference:   l.Reference,
		Code:        code,
		Language:    s.cfg.DefaultLanguage,
		Brand:       s.cfg.Brand,
		StepUp:      l.StepUpOf != "",
		Route:       l.ReturnURL,
		Reason:      l.Reason,
	}
	if recipient == l.Email && l.Language != "" {
		// The user's own mail, in the user's own language. A mail to an
		// approver stays in the deployment's: the approver's language
		// would cost a second directory lookup, and the user's is theirs.
		data.Language = l.Language
	}
	if deny := tokens[actionDeny]; deny != "" {
		data.DenyLink = link(p, deny, tokens[actionApprove])
		data.Approver = recipient
		data.EscalatedFrom = escalatedFrom
	}
	subject, text, html, err := p.Templates.Render(data)
	if err != nil {
		return nil, err
	}
	mid, err := newSecret(s.rand, 16)
	if err != nil {
		return nil, err
	}
	return &mailer.Message{
		ID:        mid,
		Servers:   p.MailServers,
		To:        recipient,
		Subject:   subject,
		Text:      text,
		HTML:      html,
		ExpiresAt: l.ExpiresAt,
		Reference: l.Reference,
	}, nil
}

// LoginView is what the waiting page may show about a login.
// It depends on the site and on nothing the directory said about the
// user (see waitview.go).
type LoginView struct {
	// MatchCode is the number to show for number matching.
	MatchCode string
	Reference string
	// State is the login's state with the site's expiry applied.
	State     State
	App       string
	ReturnURL string
	CreatedAt time.Time
	// ExpiresAt is the site's expiry for the login (Site.WaitLifetime
	// after CreatedAt), not necessarily its link's.
	ExpiresAt time.Time
	// StepUp says a signed-in user asks for more access; only then is
	// Type, the type of the profile asked, set: the user is known, so it
	// reveals nothing, while for a sign-in it would tell who exists.
	StepUp bool
	Type   ProfileType
	// GrantUntil and GrantLabel describe a manager's grant, once approved.
	GrantUntil time.Time
	GrantLabel string
	GrantKey   string
	// Input is what was typed on the login form: the browser's own
	// words, which say nothing of whether they name anyone.
	Input string
	// Ended says why a denied login ended (an Ended constant), so the page
	// can say what happened and what to do next.
	Ended string
}

// Watch returns the state of the login that the pending cookie names, as
// long as the cookie proves that its holder started it, as the waiting
// page of site may show it.
func (s *Service) Watch(ctx context.Context, site *Site, pending string) (*LoginView, error) {
	l, err := s.pendingLogin(ctx, pending)
	if err != nil {
		return nil, err
	}
	return s.view(l, site), nil
}

func (s *Service) view(l *Login, site *Site) *LoginView {
	expires := site.waitExpiry(l)
	v := &LoginView{
		MatchCode:  l.MatchCode,
		Reference:  l.Reference,
		State:      waitState(l, s.now(), expires),
		App:        l.App,
		ReturnURL:  l.ReturnURL,
		CreatedAt:  l.CreatedAt,
		ExpiresAt:  expires,
		GrantUntil: l.GrantUntil,
		GrantLabel: l.GrantLabel,
		GrantKey:   l.GrantKey,
		Input:      l.Input,
		Ended:      l.Ended,
	}
	if l.StepUpOf != "" {
		v.StepUp, v.Type = true, l.Type
	}
	return v
}

// LinkView is what the link landing page shows about the login that a link
// decides, so the person who opened it can tell whether to go ahead.
type LinkView struct {
	Reference   string
	User        string
	Username    string
	Email       string
	App         string
	ClientIP    string
	Browser     string
	RequestedAt time.Time
	ExpiresAt   time.Time
	State       State
	// Type is the profile type: user links confirm a sign-in, manager
	// links approve or deny one.
	Type ProfileType
	// Action is what this link's token does: "approve" or "deny".
	Action string
	// Pair is the other token of a manager's Approve/Deny pair, echoed
	// only after it was checked to belong to the same login.
	Pair string
	// Decider is who decided, once the login is decided.
	Decider string
	// Choices, when set, are the three numbers the opener picks from for
	// number matching; the right one is on the waiting browser's screen.
	Choices []string
	// Route is the page the user asked for, and Reason why, when they
	// gave one (a step-up asks for it).
	Route, Reason string
	// StepUp says the user is signed in already and asks for more access.
	StepUp bool
	// Durations are the grant durations a manager can choose when
	// approving, the default first.
	Durations []GrantChoice
	// GrantUntil and GrantLabel describe the grant, once approved.
	GrantUntil time.Time
	GrantLabel string
	GrantKey   string
	// Ended says why a denied login ended (an Ended constant).
	Ended string
}

// OpenLink shows what a link would do without changing anything: mail
// scanners open links, and a GET must not burn them. pair is the other
// token of a manager link pair, or empty.
func (s *Service) OpenLink(ctx context.Context, token, pair, clientIP, userAgent string) (*LinkView, error) {
	// Only links that find no token count against the address, so a
	// valid link is never refused to a scanner or an office behind one
	// address; once an address has spent its budget on made-up or dead
	// links, it is answered as invalid without a store read.
	ipk := ipKey(clientIP)
	if s.limits.OpenIP.RetryAfter(ipk) > 0 {
		s.audit.Record(EventRateLimited, nil, Detail{Limit: "open_per_ip", ClientIP: clientIP})
		return nil, ErrLinkInvalid
	}
	rec, err := s.linkRecord(ctx, token)
	if err != nil {
		if errors.Is(err, ErrLinkInvalid) {
			s.limits.OpenIP.Allow(ipk)
			s.audit.Record(EventLinkRejected, nil, Detail{ClientIP: clientIP, Reason: "unknown or used token"})
		}
		return nil, err
	}
	l, err := s.getLogin(ctx, rec.LoginID)
	if errors.Is(err, ErrLoginNotFound) {
		return nil, ErrLinkInvalid
	}
	if err != nil {
		return nil, err
	}
	s.audit.Record(EventLinkOpened, l, Detail{Action: rec.Action, OpenerIP: clientIP, OpenerUserAgent: truncate(userAgent, 512)})
	v := s.linkView(l, rec)
	if l.NumberMatching && rec.Action == actionApprove {
		v.Choices = matchChoices(l.MatchCode, token)
	}
	if p := s.cfg.Profiles[l.Profile]; l.Type == TypeManager && p != nil {
		v.Durations = s.grantChoices(p, s.now())
	}
	if pair != "" && pair != token {
		if pr, err := s.linkRecord(ctx, pair); err == nil && pr.LoginID == rec.LoginID && pr.Action != rec.Action {
			v.Pair = pair
			if l.NumberMatching && pr.Action == actionApprove {
				// The approve button of a deny link's page posts the
				// pair, so its choices are the pair's.
				v.Choices = matchChoices(l.MatchCode, pair)
			}
		}
	}
	return v, nil
}

func (s *Service) linkRecord(ctx context.Context, token string) (*linkRecord, error) {
	if !validSecret(token) {
		return nil, ErrLinkInvalid
	}
	return validLink(links.get(ctx, s.cfg.Store, hashSecret(token)))
}

// validLink passes on a link record that names an action; any other, or
// one that does not read, is an invalid link, as a missing one is.
func validLink(rec *linkRecord, err error) (*linkRecord, error) {
	if errors.Is(err, errCorrupt) || err == nil && rec.Action != actionApprove && rec.Action != actionDeny {
		return nil, ErrLinkInvalid
	}
	return rec, err
}

// Confirmation is the POST of a link's landing page.
type Confirmation struct {
	// Token is the link's token; Match the number the opener picked.
	Token, Match string
	// Duration is the grant duration a manager chose (a GrantChoice key);
	// empty means the profile's first, and a user's own link has none.
	Duration string
	// ClientIP and UserAgent describe who decided.
	ClientIP, UserAgent string
}

// ConfirmLink is Confirm without a grant duration.
func (s *Service) ConfirmLink(ctx context.Context, token, match, clientIP, userAgent string) (*LinkView, error) {
	return s.Confirm(ctx, Confirmation{Token: token, Match: match, ClientIP: clientIP, UserAgent: userAgent})
}

// Confirm redeems a link: the token is taken from the store, so it works
// once, and the login is approved or denied as the token says. Of an
// Approve and a Deny sent at the same moment, exactly one decides; the
// other is refused and audited.
//
// c.Match is the number the opener picked. An approval of a login that
// asks for number matching with the wrong number (or none) spends the
// token and approves nothing. A manager's approval is a grant of the
// duration c.Duration, starting now.
func (s *Service) Confirm(ctx context.Context, c Confirmation) (*LinkView, error) {
	token, clientIP, userAgent := c.Token, c.ClientIP, c.UserAgent
	if !validSecret(token) {
		return nil, ErrLinkInvalid
	}
	if !s.limits.RedeemIP.Allow(ipKey(clientIP)) {
		// Answered as an invalid link, without touching the store, so a
		// guesser learns nothing and costs nothing.
		s.audit.Record(EventRateLimited, nil, Detail{Limit: "redeem_per_ip", ClientIP: clientIP})
		return nil, ErrLinkInvalid
	}
	if c.Duration != "" {
		// A duration the profile does not offer is refused before the
		// token is taken, so the approver can pick again.
		if err := s.checkDuration(ctx, token, c.Duration); err != nil {
			return nil, err
		}
	}
	rec, raw, err := links.take(ctx, s.cfg.Store, hashSecret(token))
	if errors.Is(err, ErrLinkInvalid) {
		s.audit.Record(EventLinkRejected, nil, Detail{ClientIP: clientIP, Reason: "unknown or used token"})
		return nil, ErrLinkInvalid
	}
	if rec, err = validLink(rec, err); err != nil {
		return nil, err
	}
	l, err := s.getLogin(ctx, rec.LoginID)
	if errors.Is(err, ErrLoginNotFound) {
		return nil, ErrLinkInvalid
	}
	if err != nil {
		s.restoreToken(ctx, token, raw, nil)
		return nil, err
	}
	decider := rec.Recipient
	if decider == "" {
		decider = l.Email
	}
	if rec.Action == actionApprove && l.NumberMatching && l.EffectiveState(s.now()) == StatePending && !matches(c.Match, l.MatchCode) {
		s.audit.Record(EventMatchFailed, l, Detail{Decider: decider, DeciderIP: clientIP, NoneOfThese: Some(c.Match == NoneOfThese)})
		// The link is spent, so the login ends with it: its waiting page
		// says so and offers to start again, instead of showing a number
		// that nothing can approve any more.
		if ended, ok := s.endLogin(ctx, l.ID, decider, EndedWrongNumber); ok {
			l = ended
			s.audit.Record(EventDenied, l, Detail{Decider: decider, Reason: "wrong number", DeciderIP: clientIP})
		}
		return s.linkView(l, rec), ErrWrongMatch
	}
	now := s.now()
	var grant *grantTerms
	if rec.Action == actionApprove && l.Type == TypeManager {
		if grant, err = s.newGrantTerms(l, c.Duration, now); err != nil {
			return nil, err
		}
	}
	var prior *Login
	err = s.updateLogin(ctx, l.ID, func(cur *Login) error {
		switch cur.EffectiveState(now) {
		case StatePending:
			cur.State, cur.DecidedAt, cur.Decider = StateApproved, now, decider
			if rec.Action == actionDeny {
				cur.State = StateDenied
			} else if grant != nil {
				grant.apply(cur)
			}
			return nil
		case StateExpired:
			return ErrLoginExpired
		default:
			c := *cur
			prior = &c
			return ErrAlreadyDecided
		}
	})
	if err != nil {
		if errors.Is(err, ErrLoginExpired) || errors.Is(err, ErrAlreadyDecided) {
			d := Detail{Reason: err.Error(), Action: rec.Action, Decider: decider, DeciderIP: clientIP}
			if prior != nil {
				d.DecidedBy, d.State = prior.Decider, string(prior.State)
				l = prior
			}
			s.audit.Record(EventDecisionRefused, l, d)
			if prior != nil {
				v := s.linkView(l, rec)
				return v, ErrAlreadyDecided
			}
		}
		if redeemFailed(err) {
			s.restoreToken(ctx, token, raw, l)
		}
		return nil, err
	}
	l.State, l.DecidedAt, l.Decider = StateApproved, now, decider
	ev := EventApproved
	if rec.Action == actionDeny {
		l.State, ev = StateDenied, EventDenied
	} else if grant != nil {
		grant.apply(l)
	}
	s.audit.Record(ev, l, Detail{Decider: decider, DeciderIP: clientIP, DeciderUserAgent: truncate(userAgent, 512)})
	if ev == EventDenied {
		s.notifyFailed(ctx, l, OutcomeDenied)
	}
	if grant != nil {
		if err := s.putGrant(ctx, l); err != nil {
			// The grant works without its record (the cookie carries it);
			// only listing and ending it from the grants page need it.
			s.cfg.Logger.Warn("recording a grant", zap.String("reference", l.Reference), zap.Error(err))
		}
		s.audit.Record(EventGrantIssued, l, Detail{Grant: l.Grant, Duration: l.GrantLabel, Until: l.GrantUntil, Approver: decider})
	}
	return s.linkView(l, rec), nil
}

// grantTerms are the grant a manager's approval gives.
type grantTerms struct {
	id         GrantID
	until      time.Time
	label, key string
}

func (g *grantTerms) apply(l *Login) {
	l.Grant, l.GrantUntil, l.GrantLabel, l.GrantKey = g.id.String(), g.until, g.label, g.key
}

// newGrantTerms makes the grant of approving l now for the duration key.
// A key the profile no longer offers (the config changed since the page
// was shown) falls back to the shortest, so the approver's choice never
// becomes more access than offered.
func (s *Service) newGrantTerms(l *Login, key string, now time.Time) (*grantTerms, error) {
	p := s.cfg.Profiles[l.Profile]
	if p == nil {
		return nil, fmt.Errorf("approval: login %s has no profile %q", l.Reference, l.Profile)
	}
	durations, limit := s.grantTerms(p)
	d, err := grantDuration(durations, key)
	if err != nil {
		d = durations[0]
		for _, g := range durations[1:] {
			if g.until(now, limit).Before(d.until(now, limit)) {
				d = g
			}
		}
	}
	g := &grantTerms{until: d.until(now, limit), label: d.Label(), key: d.Key()}
	if _, err := io.ReadFull(s.rand, g.id[:]); err != nil {
		return nil, fmt.Errorf("approval: reading randomness: %w", err)
	}
	return g, nil
}

// checkDuration refuses a grant duration that the profile of the token's
// login does not offer, without spending the token.
func (s *Service) checkDuration(ctx context.Context, token, key string) error {
	rec, err := s.linkRecord(ctx, token)
	if err != nil {
		return err
	}
	l, err := s.getLogin(ctx, rec.LoginID)
	if errors.Is(err, ErrLoginNotFound) {
		return ErrLinkInvalid
	}
	if err != nil {
		return err
	}
	if p := s.cfg.Profiles[l.Profile]; l.Type == TypeManager && p != nil {
		durations, _ := s.grantTerms(p)
		if _, err := grantDuration(durations, key); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) linkView(l *Login, rec *linkRecord) *LinkView {
	user := l.Name
	if user == "" {
		user = l.Username
	}
	typ := l.Type
	if typ == "" {
		typ = TypeUser
	}
	return &LinkView{
		Reference:   l.Reference,
		User:        user,
		Username:    l.Username,
		Email:       l.Email,
		App:         l.App,
		ClientIP:    l.ClientIP,
		Browser:     DescribeBrowser(l.UserAgent),
		RequestedAt: l.CreatedAt,
		ExpiresAt:   l.ExpiresAt,
		State:       l.EffectiveState(s.now()),
		Type:        typ,
		Action:      rec.Action,
		Decider:     l.Decider,
		Route:       l.ReturnURL,
		Reason:      l.Reason,
		StepUp:      l.StepUpOf != "",
		GrantUntil:  l.GrantUntil,
		GrantLabel:  l.GrantLabel,
		GrantKey:    l.GrantKey,
		Ended:       l.Ended,
	}
}

// Completed is a session handed to the browser that started the login.
type Completed struct {
	// Cookie is the signed session cookie value.
	Cookie string
	// Session is what the cookie holds.
	Session Session
	// ReturnURL is where the browser goes next.
	ReturnURL string
}

// ErrStepUpSession: a step-up was approved, but the browser collecting it
// no longer holds the session it was asked for (it signed out, or it is
// another browser).
var ErrStepUpSession = errors.New("approval: the step-up's session is not this browser's")

// Complete hands the session of an approved login to the browser holding
// its pending cookie, once: the login becomes completed. A sign-in gets a
// new session; a step-up adds its approval to current, the session it
// was asked for, which the browser must still hold.
func (s *Service) Complete(ctx context.Context, pending, clientIP string, current *Session) (*Completed, error) {
	l, err := s.pendingLogin(ctx, pending)
	if err != nil {
		return nil, err
	}
	if l.StepUpOf != "" && (current == nil || hex.EncodeToString(current.ID[:]) != l.StepUpOf) {
		return nil, ErrStepUpSession
	}
	now := s.now()
	err = s.updateLogin(ctx, l.ID, func(cur *Login) error {
		switch cur.EffectiveState(now) {
		case StateApproved:
			cur.State = StateCompleted
			return nil
		case StatePending:
			return ErrNotApproved
		case StateExpired:
			return ErrLoginExpired
		case StateDenied:
			return ErrDenied
		default:
			return ErrAlreadyDecided
		}
	})
	if err != nil {
		return nil, err
	}
	c := &Completed{ReturnURL: l.ReturnURL}
	if l.StepUpOf != "" {
		c.Session = *current
	} else {
		if _, err := io.ReadFull(s.rand, c.Session.ID[:]); err != nil {
			return nil, fmt.Errorf("approval: reading randomness: %w", err)
		}
		c.Session.IssuedAt = now.Unix()
		c.Session.ExpiresAt = now.Add(s.cfg.SessionLifetime).Unix()
		if idle := s.cfg.IdleTimeout; idle > 0 && idle < s.cfg.SessionLifetime {
			c.Session.ExpiresAt = now.Add(idle).Unix()
		}
	}
	sess := &c.Session
	sess.User, sess.Email, sess.Directory = l.Username, l.Email, l.Directory
	sess.Policies, sess.PolicyEpoch = l.Policies, s.policyEpoch
	sess.AddApproval(s.approvalOf(l, sess), now.Unix())
	c.Cookie, err = s.cfg.Codec.Encode(sess)
	if err != nil {
		return nil, err
	}
	d := Detail{Session: fmt.Sprintf("%x", sess.ID[:8]), SessionExpires: time.Unix(sess.ExpiresAt, 0), CollectorIP: clientIP}
	if l.StepUpOf != "" {
		d.StepUp = true
	} else {
		s.recordSession(ctx, l, sess, clientIP)
	}
	s.audit.Record(EventSessionIssued, l, d)
	return c, nil
}

// approvalOf is the approval an approved login gives its session: a
// manager's grant until its time, or the user's own approval for as long
// as the session may live.
func (s *Service) approvalOf(l *Login, sess *Session) Approval {
	a := Approval{Profile: l.Profile, Type: TypeUser, At: l.DecidedAt.Unix(), Until: sess.IssuedAt + int64(s.cfg.SessionLifetime/time.Second)}
	if l.Type == TypeManager {
		a.Type, a.Approver = TypeManager, l.Decider
		if !l.GrantUntil.IsZero() {
			a.Until = min(a.Until, l.GrantUntil.Unix())
		}
		a.Grant, _ = ParseGrantID(l.Grant)
	}
	return a
}

// VerifySession checks a session cookie value. It does no store I/O.
// A revoked session is refused from memory, and every session while the
// revocations have not been read (ErrRevocationsUnread).
func (s *Service) VerifySession(value string, sess *Session) error {
	if err := s.cfg.Codec.Decode(value, s.now(), sess); err != nil {
		return err
	}
	return s.revoked.check(sess)
}

// RefreshSession slides a session's idle deadline: once less than half of
// the idle timeout is left, it returns a new cookie that expires a full
// idle timeout from now, never past the session's absolute lifetime. It
// returns "" when no refresh is due, which is almost always, so the
// authenticated path rarely pays for an encode.
func (s *Service) RefreshSession(sess *Session) string {
	idle := s.cfg.IdleTimeout
	if idle <= 0 {
		return ""
	}
	now := s.now()
	hard := time.Unix(sess.IssuedAt, 0).Add(s.cfg.SessionLifetime)
	left := time.Unix(sess.ExpiresAt, 0).Sub(now)
	if left > idle/2 || !hard.After(time.Unix(sess.ExpiresAt, 0)) {
		return ""
	}
	next := *sess
	next.ExpiresAt = minTime(now.Add(idle), hard).Unix()
	cookie, err := s.cfg.Codec.Encode(&next)
	if err != nil {
		return ""
	}
	*sess = next
	return cookie
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// Logout ends a session everywhere: it is revoked in the store as well as
// cleared from the browser by the caller.
func (s *Service) Logout(ctx context.Context, sess *Session, site, clientIP, userAgent string) error {
	err := s.RevokeSession(ctx, sess)
	s.audit.Record(EventLogout, &Login{Username: sess.User, Profile: sess.Profile(), App: site, ClientIP: clientIP, UserAgent: truncate(userAgent, 512)}, Detail{Session: fmt.Sprintf("%x", sess.ID[:8])})
	return err
}

// MailEvent turns outbox events into audit lines. Wire it as the outbox's
// event callback.
func (s *Service) MailEvent(ev mailer.Event) {
	var kind Event
	switch ev.Kind {
	case mailer.EventSkipped:
		// A scheduled mail that no longer matters; BeforeSend, which
		// decided that, has nothing to report.
		return
	case mailer.EventDeferred:
		// Held back by the servers' rates in a burst: nothing was tried,
		// and one record per held mail would flood the trail. Metrics
		// count them; the server's backoff is logged once.
		return
	case mailer.EventSent:
		kind = EventMailSent
	case mailer.EventRetry:
		kind = EventMailRetry
	case mailer.EventAbandoned:
		kind = EventMailAbandoned
	default:
		kind = EventMailFailed
	}
	d := Detail{Server: ev.Server, Attempt: Some(ev.Attempt), Code: ev.Code, Err: ev.Err}
	var l *Login
	if ev.Message != nil {
		l = &Login{Reference: ev.Message.Reference}
		d.To, d.MessageID = ev.Message.To, ev.Message.ID
	}
	s.audit.Record(kind, l, d)
}

// pendingLogin finds the login a pending cookie names and checks that the
// cookie's secret is the one its browser was given.
func (s *Service) pendingLogin(ctx context.Context, pending string) (*Login, error) {
	id, secret, ok := strings.Cut(pending, ".")
	if !ok || id == "" || !validSecret(secret) {
		return nil, ErrLoginNotFound
	}
	l, err := s.getLogin(ctx, id)
	if err != nil {
		return nil, err
	}
	if !secretMatches(secret, l.PendingHash) {
		return nil, ErrLoginNotFound
	}
	return l, nil
}

func (s *Service) getLogin(ctx context.Context, id string) (*Login, error) {
	return logins.get(ctx, s.cfg.Store, id)
}

func (s *Service) putLogin(ctx context.Context, l *Login, ttl time.Duration) error {
	return logins.put(ctx, s.cfg.Store, l.ID, l, ttl)
}

// updateLogin applies fn to the stored login atomically.
func (s *Service) updateLogin(ctx context.Context, id string, fn func(*Login) error) error {
	err := logins.update(ctx, s.cfg.Store, id, 0, func(l *Login, found bool) error {
		if !found {
			return ErrLoginNotFound
		}
		return fn(l)
	})
	if err == nil {
		// Waiting pages of this login, on any instance, look again now
		// rather than at their next poll.
		if perr := s.cfg.Store.Publish(ctx, logins.key(id), nil); perr != nil {
			s.cfg.Logger.Debug("publishing a login change", zap.Error(perr))
		}
	}
	return err
}

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
