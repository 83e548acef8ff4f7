package approval

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"
)

// Links: what a link shows when opened, and its redemption.

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
	return validLink(links.get(ctx, s.kv, hashSecret(token)))
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
	if !validSecret(c.Token) {
		return nil, ErrLinkInvalid
	}
	if !s.redeemAllowed(c.ClientIP) {
		// Answered as an invalid link, without touching the store, so a
		// guesser learns nothing and costs nothing.
		return nil, ErrLinkInvalid
	}
	if c.Duration != "" {
		// A duration the profile does not offer is refused before the
		// token is taken, so the approver can pick again.
		if err := s.checkDuration(ctx, c.Token, c.Duration); err != nil {
			return nil, err
		}
	}
	r, err := s.takeLink(ctx, c)
	if err != nil {
		return nil, err
	}
	if r.rec.Action == actionApprove && r.l.NumberMatching && r.l.EffectiveState(s.now()) == StatePending && !matches(c.Match, r.l.MatchCode) {
		return s.wrongNumber(ctx, c, r)
	}
	return s.decide(ctx, c, r)
}

// redeemAllowed counts one redemption (a link confirmed or refused, a
// code tried) against the client's redeem_per_ip budget, and audits the
// refusal when it is spent.
func (s *Service) redeemAllowed(clientIP string) bool {
	if s.limits.RedeemIP.Allow(ipKey(clientIP)) {
		return true
	}
	s.audit.Record(EventRateLimited, nil, Detail{Limit: "redeem_per_ip", ClientIP: clientIP})
	return false
}

// redemption is a link taken for a decision.
type redemption struct {
	rec *linkRecord
	// raw is the record as stored, to give back should the decision fail
	// on a store error.
	raw []byte
	// l is the login as read before the decision.
	l *Login
	// decider is who the link decides as: its recipient, or the user.
	decider string
}

// takeLink takes the token, so that it works once, and reads its login.
func (s *Service) takeLink(ctx context.Context, c Confirmation) (*redemption, error) {
	rec, raw, err := links.take(ctx, s.kv, hashSecret(c.Token))
	if errors.Is(err, ErrLinkInvalid) {
		s.audit.Record(EventLinkRejected, nil, Detail{ClientIP: c.ClientIP, Reason: "unknown or used token"})
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
		s.restoreToken(ctx, c.Token, raw, nil)
		return nil, err
	}
	decider := rec.Recipient
	if decider == "" {
		decider = l.Email
	}
	return &redemption{rec: rec, raw: raw, l: l, decider: decider}, nil
}

// wrongNumber ends a login whose approval picked the wrong number. The
// link is spent, so the login ends with it: its waiting page says so and
// offers to start again, instead of showing a number that nothing can
// approve any more.
func (s *Service) wrongNumber(ctx context.Context, c Confirmation, r *redemption) (*LinkView, error) {
	l := r.l
	s.audit.Record(EventMatchFailed, l, Detail{Decider: r.decider, DeciderIP: c.ClientIP, NoneOfThese: Some(c.Match == NoneOfThese)})
	if ended, ok := s.endLogin(ctx, l.ID, r.decider, EndedWrongNumber); ok {
		l = ended
		s.audit.Record(EventDenied, l, Detail{Decider: r.decider, Reason: "wrong number", DeciderIP: c.ClientIP})
	}
	return s.linkView(l, r.rec), ErrWrongMatch
}

// decide approves or denies the login as the link says, if it is still
// pending: a manager's approval with its grant, a deny with the
// failed-login notice.
func (s *Service) decide(ctx context.Context, c Confirmation, r *redemption) (*LinkView, error) {
	now := s.now()
	l, deny := r.l, r.rec.Action == actionDeny
	var grant *grantTerms
	if !deny && l.Type == TypeManager {
		var err error
		if grant, err = s.newGrantTerms(l, c.Duration, now); err != nil {
			return nil, err
		}
	}
	decided := func(cur *Login) {
		cur.State, cur.DecidedAt, cur.Decider = StateApproved, now, r.decider
		if deny {
			cur.State = StateDenied
		} else if grant != nil {
			grant.apply(cur)
		}
	}
	var prior *Login
	err := s.updateLogin(ctx, l.ID, func(cur *Login) error {
		switch cur.EffectiveState(now) {
		case StatePending:
			decided(cur)
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
		return s.refused(ctx, c, r, prior, err)
	}
	decided(l)
	ev := EventApproved
	if deny {
		ev = EventDenied
	}
	s.audit.Record(ev, l, Detail{Decider: r.decider, DeciderIP: c.ClientIP, DeciderUserAgent: truncate(c.UserAgent, 512)})
	if deny {
		s.notifyFailed(ctx, l, OutcomeDenied)
	}
	if grant != nil {
		if err := s.putGrant(ctx, l); err != nil {
			// The grant works without its record (the cookie carries it);
			// only listing and ending it from the grants page need it.
			s.cfg.Logger.Warn("recording a grant", zap.String("reference", l.Reference), zap.Error(err))
		}
		s.audit.Record(EventGrantIssued, l, Detail{Grant: l.Grant, Duration: l.GrantLabel, Until: l.GrantUntil, Approver: r.decider})
	}
	return s.linkView(l, r.rec), nil
}

// refused answers a decision the login did not take: it had expired or
// been decided (prior, as it was), which is audited and shown, or the
// store failed, after which the token is given back to try again.
func (s *Service) refused(ctx context.Context, c Confirmation, r *redemption, prior *Login, err error) (*LinkView, error) {
	l := r.l
	if errors.Is(err, ErrLoginExpired) || errors.Is(err, ErrAlreadyDecided) {
		d := Detail{Reason: err.Error(), Action: r.rec.Action, Decider: r.decider, DeciderIP: c.ClientIP}
		if prior != nil {
			d.DecidedBy, d.State = prior.Decider, string(prior.State)
			l = prior
		}
		s.audit.Record(EventDecisionRefused, l, d)
		if prior != nil {
			return s.linkView(l, r.rec), ErrAlreadyDecided
		}
	}
	if redeemFailed(err) {
		s.restoreToken(ctx, c.Token, r.raw, l)
	}
	return nil, err
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
