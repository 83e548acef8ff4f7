package approval

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"strings"

	"github.com/mailauth/caddy-mailauth/directory"
)

// Access is a site's verdict on a valid session.
type Access uint8

// Verdicts of Authenticate.
const (
	// AccessGranted: the session holds an approval the site accepts.
	AccessGranted Access = iota
	// AccessStepUp: the user is known, but the site needs an approval the
	// session does not hold (or no longer holds): ask for it, without a
	// new sign-in.
	AccessStepUp
	// AccessStale: the policies changed since the session's memberships
	// were evaluated, so which profile the site would pick is unknown
	// until the user is looked up again.
	AccessStale
	// AccessNone: the site has no profile for this identity, such as a
	// user from a directory that none of its profiles use.
	AccessNone
)

// Authenticated is what Authenticate found out about a request's session.
type Authenticated struct {
	// Session is the verified session.
	Session Session
	// Access is the site's verdict.
	Access Access
	// ID, Email and Directory are the identity as interface values for
	// Caddy's replacer, boxed once per cookie so that setting them on a
	// request allocates nothing.
	ID, Email, Directory any

	// approval indexes the approval that let the request through. An
	// index, not a pointer into Session: a pointer would make every
	// Authenticated escape to the heap.
	approval int
}

// Approval is, on AccessGranted, the approval that let the request
// through.
func (a *Authenticated) Approval() *Approval {
	if a.Access != AccessGranted {
		return nil
	}
	return &a.Session.approvals[a.approval]
}

// Authenticate checks a session cookie for site: that it is genuine,
// unexpired and not revoked (the error), and whether it holds an approval
// the site accepts (a.Access). It does no store I/O: everything it needs
// is in the cookie and in memory, and a cookie seen before costs no
// allocation either.
func (s *Service) Authenticate(site *Site, cookie string, a *Authenticated) error {
	now := s.now()
	v, err := s.cfg.Codec.verify(cookie, now)
	if err != nil {
		return err
	}
	a.Session = v.session
	a.ID, a.Email, a.Directory = v.id, v.email, v.directory
	if err := s.revoked.check(&a.Session); err != nil {
		return err
	}
	a.Access, a.approval = s.authorize(site, &a.Session, now.Unix(), s.revoked.load())
	return nil
}

// authorize picks the profile the site would choose for the session's
// identity and looks for an approval that satisfies it: one of that very
// profile, or a manager's grant where the site would ask the user only
// (a manager's approval is the stronger check), unexpired and not ended.
// It returns the approval's index.
func (s *Service) authorize(site *Site, sess *Session, now int64, revoked *revocationSet) (Access, int) {
	if len(site.Policies) > 0 && sess.PolicyEpoch != s.policyEpoch {
		return AccessStale, -1
	}
	want := site.profileFor(sess)
	if want == nil {
		return AccessNone, -1
	}
	for i := range sess.approvals[:sess.n] {
		a := &sess.approvals[i]
		if now >= a.Until {
			continue
		}
		if a.Profile != want.Name && (want.Type != TypeUser || a.Type != TypeManager) {
			continue
		}
		if a.Type == TypeManager && revoked.grantEnded(a.Grant) {
			continue
		}
		return AccessGranted, i
	}
	return AccessStepUp, -1
}

// profileFor is the profile the site picks for the session's identity,
// from the policy memberships the session carries: the first of the
// site's policies that matched, else the default profile. Either must use
// the identity's directory, so an "alice" from a directory the site does
// not use is nobody here.
func (s *Site) profileFor(sess *Session) *Profile {
	p := s.Default
	for _, pol := range s.Policies {
		if sess.hasPolicy(pol) {
			p = pol.Profile
			break
		}
	}
	if !p.hasDirectory(sess.Directory) {
		return nil
	}
	return p
}

// ProfileFor is the profile the site picks for the session's identity,
// or nil; see Authenticate.
func (s *Site) ProfileFor(sess *Session) *Profile { return s.profileFor(sess) }

// matchedPolicies says which configured policies match id, as
// Session.Policies holds it.
func (s *Service) matchedPolicies(id *directory.Identity) string {
	var matched []int
	for _, p := range s.cfg.Policies {
		if p.Match(id) {
			matched = append(matched, p.index)
		}
	}
	return policyBits(matched)
}

// setPolicies numbers the configured policies in name order, the order
// policyEpoch digests, and keeps them with their epoch. Instances with the
// same policies number them alike, so a session's bit set means the same
// on each.
func (s *Service) setPolicies(policies []*Policy) {
	sorted := slices.Clone(policies)
	slices.SortFunc(sorted, func(a, b *Policy) int { return strings.Compare(a.Name, b.Name) })
	for i, p := range sorted {
		p.index = i + 1
	}
	s.cfg.Policies, s.policyEpoch = sorted, policyEpoch(sorted)
}

// policyEpoch digests what policy memberships depend on: every policy's
// name, profile, directory, attribute and values. A session whose
// memberships were evaluated under another digest has them looked up
// again before a site with policies relies on them.
func policyEpoch(policies []*Policy) uint32 {
	sorted := slices.Clone(policies)
	slices.SortFunc(sorted, func(a, b *Policy) int { return strings.Compare(a.Name, b.Name) })
	h := sha256.New()
	for _, p := range sorted {
		for _, f := range append([]string{p.Name, p.Profile.Name, p.Directory, p.Attribute}, p.Values...) {
			var n [4]byte
			binary.BigEndian.PutUint32(n[:], uint32(len(f)))
			h.Write(n[:])
			h.Write([]byte(f))
		}
		h.Write([]byte{0})
	}
	return binary.BigEndian.Uint32(h.Sum(nil))
}

// siteID names a site by its default profile and policies, so that a
// step-up page served by any handler of the host knows which site asked.
func siteID(def *Profile, policies []*Policy) string {
	h := sha256.New()
	h.Write([]byte(def.Name))
	for _, p := range policies {
		h.Write([]byte{0})
		h.Write([]byte(p.Name))
	}
	return hex.EncodeToString(h.Sum(nil)[:6])
}
