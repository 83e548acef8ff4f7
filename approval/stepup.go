package approval

import (
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"unicode"

	"github.com/mailauth/caddy-mailauth/directory"
)

// A step-up is a signed-in user asking for the approval a part of the site
// needs and their session does not hold, such as their manager's for a
// route under a manager profile. The user is known, so nothing is typed:
// the identity is looked up again in the directory it came from (for a
// current manager and current group memberships), the site's policies
// pick the profile, and the request runs as a login of that profile whose
// approval, once collected, is added to the session it was asked for.

// Errors of step-ups.
var (
	// ErrNoProfile: the site has no profile for this identity (for
	// example, a user from a directory none of its profiles use).
	ErrNoProfile = errors.New("approval: this part of the site is not for this account")
	// ErrAccountGone: the session's identity is no longer in its
	// directory.
	ErrAccountGone = errors.New("approval: the account was not found in its directory")
	// ErrReasonRequired: the profile asks for a reason and none was given.
	ErrReasonRequired = errors.New("approval: a reason is required")
	// ErrStepUpLimited: too many requests for this identity; try later.
	ErrStepUpLimited = errors.New("approval: too many access requests")
	// ErrDirectoryUnavailable: the identity's directory could not answer.
	ErrDirectoryUnavailable = errors.New("approval: the directory could not be reached")
)

// maxReason bounds a step-up's reason, in runes.
const maxReason = 500

// StepUpView is what the step-up page shows: who the user is, what the
// part of the site needs, and whether the session had it until recently.
type StepUpView struct {
	User, Name, Email, Directory string
	// Profile and Type are what the site needs for this user.
	Profile string
	Type    ProfileType
	// Justification says whether a reason is optional or required.
	Justification Justification
	// Ended is the approval of that profile the session held, if it has
	// run out or was ended: the page says since when.
	Ended *Approval
	// Refreshed is set when the session satisfies the site after all,
	// once its policy memberships were evaluated anew: it is the cookie to
	// set, and no request is needed.
	Refreshed string
}

// StepUpRequest asks, on behalf of a signed-in user, for the approval a
// site needs.
type StepUpRequest struct {
	Site *Site
	// Session is the user's verified session.
	Session *Session
	// Reason is the user's justification.
	Reason string
	// ReturnURL is the page that needs the approval.
	ReturnURL, App, ClientIP, UserAgent string
}

// CheckStepUp looks the session's identity up again and says what the
// site needs for it. Reading only, it is what the step-up page's GET does.
func (s *Service) CheckStepUp(ctx context.Context, site *Site, sess *Session) (*StepUpView, error) {
	id, p, policies, err := s.stepUpProfile(ctx, site, sess)
	if err != nil {
		return nil, err
	}
	v := &StepUpView{User: id.Username, Name: id.Name, Email: id.Email, Directory: id.Directory, Profile: p.Name, Type: p.Type, Justification: p.Justification}
	if v.Justification == "" {
		v.Justification = JustificationOptional
	}
	fresh := *sess
	fresh.Policies, fresh.PolicyEpoch = policies, s.policyEpoch
	now := s.now().Unix()
	if acc, _ := s.authorize(site, &fresh, now, s.revoked.load()); acc == AccessGranted {
		if v.Refreshed, err = s.cfg.Codec.Encode(&fresh); err != nil {
			return nil, err
		}
		return v, nil
	}
	for _, a := range sess.Approvals() {
		if a.Profile == p.Name {
			a := a
			if a.Until > now {
				// Still within its time, so it was ended early.
				a.Until = now
			}
			v.Ended = &a
		}
	}
	return v, nil
}

// StepUp starts the request for the approval the site needs and returns
// what the browser keeps to wait for it, as Start does for a sign-in.
func (s *Service) StepUp(ctx context.Context, req StepUpRequest) (*Started, error) {
	id, p, policies, err := s.stepUpProfile(ctx, req.Site, req.Session)
	if err != nil {
		return nil, err
	}
	reason := cleanReason(req.Reason)
	if reason == "" && p.Justification == JustificationRequired {
		return nil, ErrReasonRequired
	}
	if !s.limits.LoginIdentity.Allow(strings.ToLower(id.Directory + "\x00" + id.Username)) {
		s.audit.Record(EventRateLimited, &Login{Username: id.Username, Profile: p.Name, App: req.App, ClientIP: req.ClientIP}, Detail{Limit: "login_per_identity"})
		return nil, ErrStepUpLimited
	}
	l, started, err := s.newLogin(p, req.Session.User, req.ReturnURL, req.App, req.ClientIP, req.UserAgent)
	if err != nil {
		return nil, err
	}
	l.Username, l.Name, l.Email, l.ManagerEmail = id.Username, id.Name, id.Email, id.ManagerEmail
	l.Type, l.Directory, l.Policies = p.Type, id.Directory, policies
	l.NumberMatching = p.numberMatching()
	l.Language = s.languageOf(id)
	l.StepUpOf = hex.EncodeToString(req.Session.ID[:])
	l.Reason = reason
	entry, err := s.loginEntry(l, p.LinkExpiration)
	if err != nil {
		return nil, err
	}
	s.audit.Record(EventStepUpRequested, l, Detail{Route: l.ReturnURL, Directory: l.Directory, Session: l.StepUpOf[:16], Reason: reason})
	s.request(ctx, l, p, req.Site, entry)
	return started, nil
}

// stepUpProfile finds the session's identity in the directory it came
// from and the profile the site picks for it. A directory error fails
// closed: a namesake elsewhere never stands in.
func (s *Service) stepUpProfile(ctx context.Context, site *Site, sess *Session) (*directory.Identity, *Profile, string, error) {
	d := site.directory(sess.Directory)
	if d == nil {
		return nil, nil, "", ErrNoProfile
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.LookupTimeout)
	defer cancel()
	id, err := d.Lookup(ctx, sess.User)
	switch {
	case errors.Is(err, directory.ErrNotFound):
		return nil, nil, "", ErrAccountGone
	case err != nil:
		s.audit.Record(EventDirectoryError, &Login{Username: sess.User}, Detail{Directory: sess.Directory, Err: err})
		return nil, nil, "", ErrDirectoryUnavailable
	case id.Username != sess.User:
		// The input matched someone else's mail address.
		return nil, nil, "", ErrAccountGone
	}
	dec := site.Choose(id, false)
	if dec.Profile == nil {
		return nil, nil, "", ErrNoProfile
	}
	return id, dec.Profile, s.matchedPolicies(id), nil
}

// cleanReason trims a reason, turns control characters (line breaks
// included) into spaces and bounds its length, so it reads as one line in
// mail and logs.
func cleanReason(r string) string {
	r = strings.Map(func(c rune) rune {
		if unicode.IsControl(c) || c == '\u2028' || c == '\u2029' {
			return ' '
		}
		return c
	}, r)
	r = strings.Join(strings.Fields(r), " ")
	if n := []rune(r); len(n) > maxReason {
		r = string(n[:maxReason])
	}
	return r
}
