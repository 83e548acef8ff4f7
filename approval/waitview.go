package approval

import "time"

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
