package approval

import "time"

// State is where a login stands.
type State string

// A login moves pending → approved | denied | expired, then approved →
// completed once the waiting browser has collected its session. Expired is
// derived from the clock, never written, so nothing has to sweep the store.
const (
	StatePending   State = "pending"
	StateApproved  State = "approved"
	StateDenied    State = "denied"
	StateExpired   State = "expired"
	StateCompleted State = "completed"
)

// Login is one pending request to sign in, as kept in the store.
type Login struct {
	// ID names the login in store keys; it is not secret.
	ID string `json:"id"`
	// PendingHash is the hash of the secret held in the starting browser's
	// pending cookie. Only that browser can watch and complete the login.
	PendingHash string `json:"pending_hash"`
	// Reference is the short code shown to the user for support.
	Reference string `json:"reference"`
	// Profile is the name of the profile that runs the approval.
	Profile string `json:"profile"`
	// Input is what the user typed.
	Input string `json:"input"`
	// Username, Name and Email are filled in once the directory lookup
	// has found the user; they stay empty for an unknown input.
	Username string `json:"username,omitempty"`
	Name     string `json:"name,omitempty"`
	Email    string `json:"email,omitempty"`
	// ManagerEmail is the user's manager (LDAP manager, local sponsor):
	// the approver under a manager profile, and who gets failed-login
	// notices.
	ManagerEmail string `json:"manager_email,omitempty"`
	// Type is the type of the profile that runs the login.
	Type ProfileType `json:"type,omitempty"`
	// App is the host name of the protected site.
	App string `json:"app"`
	// ReturnURL is the site-relative path to go to after sign-in.
	ReturnURL string `json:"return_url"`
	// ClientIP and UserAgent describe the browser that asked.
	ClientIP  string `json:"client_ip"`
	UserAgent string `json:"user_agent"`
	// CreatedAt is when the login started; ExpiresAt is when its link dies.
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// State is the stored state; see EffectiveState.
	State State `json:"state"`
	// MatchCode is the two-digit number the waiting browser shows and the
	// link's landing page asks for; NumberMatching says whether the chosen
	// profile requires it.
	MatchCode      string `json:"match_code"`
	NumberMatching bool   `json:"number_matching,omitempty"`
	// DecidedAt is when the login was approved or denied, and Decider
	// the address of who decided.
	DecidedAt time.Time `json:"decided_at,omitzero"`
	Decider   string    `json:"decider,omitempty"`
	// Directory is the directory the identity came from, once known.
	Directory string `json:"directory,omitempty"`
	// Policies says which policies matched the identity when the user was
	// looked up, as Session.Policies holds it.
	Policies string `json:"policies,omitempty"`
	// StepUpOf is the hex id of the session this login adds an approval
	// to: a signed-in user asking for more. Empty for a sign-in.
	StepUpOf string `json:"step_up_of,omitempty"`
	// Reason is the user's justification of a step-up, shown to the
	// approver.
	Reason string `json:"reason,omitempty"`
	// Grant, GrantUntil and GrantLabel describe the time-boxed grant a
	// manager approved: its id (hex), when it ends and the duration chosen,
	// as the approver saw it ("1 hour", "until end of day").
	Grant      string    `json:"grant,omitempty"`
	GrantUntil time.Time `json:"grant_until,omitzero"`
	GrantLabel string    `json:"grant_label,omitempty"`
	// GrantKey is the duration chosen as its GrantDuration key ("8h",
	// "end_of_day"), so pages can word it in their own language.
	GrantKey string `json:"grant_key,omitempty"`
	// Ended says why a denied login ended when nobody denied it as such
	// (one of the Ended constants); empty for an approver's deny.
	Ended string `json:"ended,omitempty"`
	// Language is the user's own language from the directory
	// (Config.LanguageAttribute), the one their mail is worded in; empty
	// means the deployment's default.
	Language string `json:"language,omitempty"`
}

// Why a login ended without an approver's deny. The waiting page and the
// link's landing page word what happened and what to do next from it.
const (
	// EndedReplaced: the same browser started a new login (start again,
	// send again), so the older one's link must not approve anything.
	EndedReplaced = "replaced"
	// EndedWrongNumber: the link was opened and a number other than the
	// waiting screen's (or "none of these") was picked.
	EndedWrongNumber = "wrong_number"
	// EndedNotMe: the user said "This wasn't me" on the link's page.
	EndedNotMe = "not_me"
	// EndedCodeLocked: too many wrong codes were typed.
	EndedCodeLocked = "code_locked"
)

// EffectiveState is the state with expiry applied: a pending login past its
// expiry is expired.
func (l *Login) EffectiveState(now time.Time) State {
	if l.State == StatePending && !now.Before(l.ExpiresAt) {
		return StateExpired
	}
	return l.State
}

// linkRecord is what a link token's hash points to.
type linkRecord struct {
	LoginID string `json:"login_id"`
	Action  string `json:"action"`
	// Recipient is the address the link was mailed to: whoever redeems
	// it decides as that person.
	Recipient string `json:"recipient,omitempty"`
}

// Link actions. A token is bound to one login and one action.
const (
	actionApprove = "approve"
	actionDeny    = "deny"
)

// loginGrace is how long a login outlives its link, so a waiting browser
// can still learn that it expired, or collect an approval made at the last
// second.
const loginGrace = time.Hour
