package approval

import (
	"time"

	"github.com/mailauth/caddy-mailauth/approval/mailtemplate"
	"github.com/mailauth/caddy-mailauth/directory"
)

// ProfileType says who approves a login.
type ProfileType string

// Profile types.
const (
	// TypeUser: the user approves their own login from a link in their mail.
	TypeUser ProfileType = "user"
	// TypeManager: the user's manager approves or denies the login.
	TypeManager ProfileType = "manager"
)

// Profile is how approval runs for the logins it is chosen for.
type Profile struct {
	// Name is the profile's configured name.
	Name string
	// Type says who approves.
	Type ProfileType
	// Server is the base URL that links in mail start with, such as
	// "https://apps.example.com". It comes from configuration and never
	// from a request, so a forged Host header cannot redirect a link.
	Server string
	// LinkExpiration is how long a link works after the login started.
	LinkExpiration time.Duration
	// MailServers names the mail servers to send through, in order.
	MailServers []string
	// Directories are tried in order to find the user.
	Directories []directory.Directory
	// Templates render the approval mail.
	Templates *mailtemplate.Templates
	// NotifyFailedLogin mails the user's manager a short notice when a
	// login is denied, expires undecided, is rate limited or is stopped
	// by wrong codes.
	NotifyFailedLogin bool
	// EscalateAfter, under a manager profile, also sends a request the
	// manager has not decided by then to the manager's manager, or, when
	// the directory knows none, to Approvers. Zero: never.
	EscalateAfter time.Duration
	// Approvers are the fallback addresses of escalation.
	Approvers []string
	// NoNumberMatching turns number matching off for a user profile. A
	// manager profile always matches numbers.
	NoNumberMatching bool
	// GrantDurations are what a manager may choose from when approving,
	// in the order shown; the first is the default. Empty means
	// DefaultGrantDurations.
	GrantDurations []GrantDuration
	// GrantMax caps every grant of this profile; zero means the session
	// lifetime.
	GrantMax time.Duration
	// Justification says whether a step-up asks for a reason:
	// JustificationOptional (the default) or JustificationRequired.
	Justification Justification
	// NoCodeFallback leaves the one-time code out of a user profile's
	// mail, so there is nothing a phisher could ask the user to read out.
	// A manager profile never mails a code.
	NoCodeFallback bool
}

// codeFallback says whether this profile's mail carries a one-time code
// that can be typed into the waiting page instead of opening the link.
func (p *Profile) codeFallback() bool {
	return p.Type != TypeManager && !p.NoCodeFallback
}

// Justification says whether a step-up request must give a reason.
type Justification string

// Justification settings.
const (
	JustificationOptional Justification = "optional"
	JustificationRequired Justification = "required"
)

// numberMatching says whether links of this profile ask for the waiting
// browser's number.
func (p *Profile) numberMatching() bool {
	return p.Type == TypeManager || !p.NoNumberMatching
}

// VerifyPath is the site path of the link landing page. Links are
// Server + VerifyPath + "?token=…".
const VerifyPath = "/.mailauth/verify"
