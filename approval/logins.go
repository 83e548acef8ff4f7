package approval

import (
	"context"
	"errors"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/directory"
	"github.com/mailauth/caddy-mailauth/store"
)

// Logins: the start of a login, its dispatch to the directory and the
// mail that asks for a decision, and the record the rest reads.

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
	if err := s.kv.PutMany(ctx, []store.Entry{e}); err != nil {
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
				if err := s.kv.PutMany(ctx, opt.with); err != nil {
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
	if err := s.persist(ctx, func() error { return s.kv.PutMany(ctx, entries) }); err != nil {
		s.audit.Record(EventMailFailed, l, Detail{Reason: "store", Err: err})
		return
	}
	msg, err := s.renderApprovalMail(l, p, recipient, tokens, opt.escalatedFrom, code)
	if err != nil {
		s.audit.Record(EventMailFailed, l, Detail{Reason: "template", Err: err})
		return
	}
	if !opt.notBefore.IsZero() {
		msg.NotBefore, msg.Tag = opt.notBefore, scheduleTag(purposeEscalation, l.ID)
	}
	if err := s.persist(ctx, func() error { return s.cfg.Mail.Enqueue(ctx, msg) }); err != nil {
		s.audit.Record(EventMailFailed, l, Detail{Reason: "outbox", Err: err})
		return
	}
	d := Detail{To: msg.To, MessageID: msg.ID}
	if !opt.notBefore.IsZero() {
		d.NotBefore, d.Purpose = opt.notBefore, purposeEscalation
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
	return logins.get(ctx, s.kv, id)
}

func (s *Service) putLogin(ctx context.Context, l *Login, ttl time.Duration) error {
	return logins.put(ctx, s.kv, l.ID, l, ttl)
}

// updateLogin applies fn to the stored login atomically.
func (s *Service) updateLogin(ctx context.Context, id string, fn func(*Login) error) error {
	err := logins.update(ctx, s.kv, id, 0, func(l *Login, found bool) error {
		if !found {
			return ErrLoginNotFound
		}
		return fn(l)
	})
	if err == nil {
		// Waiting pages of this login, on any instance, look again now
		// rather than at their next poll.
		if perr := s.notifier.Publish(ctx, logins.key(id), nil); perr != nil {
			s.cfg.Logger.Debug("publishing a login change", zap.Error(perr))
		}
	}
	return err
}
