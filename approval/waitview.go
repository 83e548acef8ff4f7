package approval

import (
	"context"
	"time"
)

// What the waiting browser learns of its login must not depend on who the
// user is. Anyone can start a login for any name and watch its waiting
// page and status, so a login's expiry, which dispatch sets from the
// profile a policy picks for the user, would tell who exists (unknown
// names keep the default profile's) and who is, say, an executive.
//
// The waiting page and status therefore show one expiry for every login of
// a site: its creation plus the longest link lifetime of the profiles the
// site may pick (Site.WaitLifetime). The real expiry, the profile's, stays
// on the login and is what links, codes, mail and the admin API use. The
// longest rather than the default, because the page must never give up
// while a link that would still approve is out: with the default, an
// executive's manager could approve after the page had said "expired".
//
// Between the two expiries the public state follows the public one only:
//   - the real expiry comes first (a 15-minute profile on a site that also
//     has a 30-minute one): the login shows pending until the public
//     expiry, just like a name nobody has, although its link and code
//     stopped working at the real one; the mail, which only the mailbox's
//     owner reads, gives the real time;
//   - the real expiry comes last: only when a reload shortened the site's
//     longest profile while logins were open. The login shows expired at
//     the public expiry; if its link is used after that, the approval is
//     shown, which only the mailbox's owner or the manager can cause.
//
// Decided states are shown as they are: approved and completed need the
// mailbox or the manager, and the one an attacker can cause, denied after
// five wrong codes, comes to every login alike.

// WaitLifetime is how long after it starts the waiting page of any login
// on the site says the login is open: the longest link lifetime of the
// profiles the site may pick.
func (s *Site) WaitLifetime() time.Duration { return s.longestLink }

// LinkLifetimesDiffer reports whether the profiles the site may pick have
// different link lifetimes, so that the waiting page's expiry is an upper
// bound for some users rather than their link's.
func (s *Site) LinkLifetimesDiffer() bool {
	for _, p := range s.policyProfiles() {
		if p.LinkExpiration != s.Default.LinkExpiration {
			return true
		}
	}
	return false
}

// waitExpiry is when the waiting page of l says it expires. A nil site
// (no waiting page) means the login's own expiry, and so does a step-up:
// its user is signed in and known, so its real expiry tells nothing, and
// its profile need not be one of the site serving the waiting page.
func (s *Site) waitExpiry(l *Login) time.Time {
	if s == nil || l.StepUpOf != "" {
		return l.ExpiresAt
	}
	return l.CreatedAt.Add(s.longestLink)
}

// waitState is l's state as its waiting page may show it at now, with
// expires its waitExpiry.
func waitState(l *Login, now, expires time.Time) State {
	if l.State == StatePending && !now.Before(expires) {
		return StateExpired
	}
	return l.State
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
