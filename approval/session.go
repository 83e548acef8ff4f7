package approval

import (
	"encoding/hex"
	"errors"
)

// Session errors. Callers treat both as "no session"; they are distinct for
// tests and logs.
var (
	ErrSessionInvalid = errors.New("approval: session cookie invalid")
	ErrSessionExpired = errors.New("approval: session expired")
)

// SessionKeySize is the length of a session signing key.
const SessionKeySize = 32

// Session is what a session cookie proves: who the user is, which
// directory vouched for them, and the approvals they hold. A handler lets
// a request through only with an approval it accepts (see Site.Authorize),
// so a session approved for one route cannot open another that asks for
// more.
type Session struct {
	// ID identifies the session for revocation and audit.
	ID [16]byte
	// User is the username, Email the address the login was approved for.
	User, Email string
	// Directory is the directory the identity came from: two directories
	// may both know an "alice", and they are different people.
	Directory string
	// Policies says which of the configured policies matched the identity
	// when it was last looked up: a bit set in hexadecimal, bit i for the
	// i-th policy in name order (see Service.setPolicies). PolicyEpoch is
	// the digest of the policy configuration it was evaluated under, which
	// fixes that order. Together they let a site choose the user's profile
	// without a directory lookup, in a few bytes of cookie however long
	// the names.
	Policies    string
	PolicyEpoch uint32
	// IssuedAt and ExpiresAt are Unix seconds. ExpiresAt slides with the
	// idle timeout; approvals end at their own Until.
	IssuedAt, ExpiresAt int64

	approvals [MaxApprovals]Approval
	n         uint8
}

// Approval is one approval a session holds: which profile approved the
// identity, who approved, when, and until when it counts.
type Approval struct {
	// Profile is the name of the profile that ran the approval, and Type
	// its type.
	Profile string
	Type    ProfileType
	// Approver is the address of the manager or approver who approved; it
	// is empty when the user approved themself.
	Approver string
	// At and Until are Unix seconds: when the approval was given and when
	// it stops counting. A manager's approval is a time-boxed grant; a
	// user's own lasts as long as the session.
	At, Until int64
	// Grant names a manager's grant, so it can be listed and ended; zero
	// for a user's own approval.
	Grant GrantID
}

// GrantID names a time-boxed grant.
type GrantID [8]byte

// String is the id in hex, as the grants page and admin API show it.
func (g GrantID) String() string { return hex.EncodeToString(g[:]) }

// ParseGrantID reads a grant id written by GrantID.String.
func ParseGrantID(s string) (GrantID, bool) {
	var g GrantID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(g) {
		return g, false
	}
	copy(g[:], b)
	return g, true
}

// MaxApprovals is how many approvals a session holds at most. A new
// approval replaces one of the same profile, then an expired one, then the
// one that ends first.
const MaxApprovals = 6

// Approvals returns the session's approvals. The slice shares the
// session's storage.
func (s *Session) Approvals() []Approval { return s.approvals[:s.n] }

// AddApproval records a, replacing an approval of the same profile, then
// an expired one, then the one that ends first, so the newest approval is
// always kept.
func (s *Session) AddApproval(a Approval, now int64) {
	for i := range s.approvals[:s.n] {
		if s.approvals[i].Profile == a.Profile {
			s.approvals[i] = a
			return
		}
	}
	if int(s.n) < len(s.approvals) {
		s.approvals[s.n] = a
		s.n++
		return
	}
	victim := 0
	for i := range s.approvals {
		if s.approvals[i].Until <= now {
			victim = i
			break
		}
		if s.approvals[i].Until < s.approvals[victim].Until {
			victim = i
		}
	}
	s.approvals[victim] = a
}

// hasPolicy reports whether policy p matched the identity. A policy the
// service did not number (index 0) never does.
func (s *Session) hasPolicy(p *Policy) bool {
	i := p.index - 1
	if i < 0 || i/4 >= len(s.Policies) {
		return false
	}
	n := s.Policies[i/4]
	switch {
	case n >= '0' && n <= '9':
		n -= '0'
	case n >= 'a' && n <= 'f':
		n -= 'a' - 10
	default:
		return false
	}
	return n&(1<<(i%4)) != 0
}

// policyBits writes the set of 1-based policy indexes as Session.Policies
// holds it.
func policyBits(indexes []int) string {
	top := 0
	for _, i := range indexes {
		top = max(top, i)
	}
	b := make([]byte, (top+3)/4)
	for _, i := range indexes {
		b[(i-1)/4] |= 1 << ((i - 1) % 4)
	}
	for j, v := range b {
		b[j] = "0123456789abcdef"[v]
	}
	return string(b)
}

// Profile is the profile of the session's first approval, for audit lines
// that name one.
func (s *Session) Profile() string {
	if s.n == 0 {
		return ""
	}
	return s.approvals[0].Profile
}
