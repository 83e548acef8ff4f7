package caddymodule

import (
	"github.com/caddyserver/caddy/v2"
)

// ProfileConfig says how approval runs for the logins it applies to.
type ProfileConfig struct {
	// Type is who approves: "user" (the user clicks a link sent to their
	// own address, the default) or "manager" (the user's manager, from
	// LDAP's manager attribute or a local user's sponsor, approves or
	// denies from a mail).
	Type string `json:"type,omitempty"`
	// Server is the base URL of links in mail, such as
	// "https://apps.example.com". Required. Links are never built from a
	// request's Host header, so a forged header cannot redirect them.
	// http:// is refused unless the host is loopback (localhost, a name
	// under .localhost, 127.0.0.0/8 or ::1), since the links would travel
	// in clear text.
	Server string `json:"server,omitempty"`
	// Subject is the mail subject, a text/template. Default: "Sign in to
	// {{.App}}".
	Subject string `json:"subject,omitempty"`
	// Message is the plain-text body, a text/template with the fields
	// .Link, .User.Name, .User.Username, .User.Email, .App, .ClientIP,
	// .Browser, .RequestedAt, .ExpiresAt, .ExpiresIn and .Reference, and
	// .Language and .Brand; {{t "mail.hello" …}} (any catalogue key),
	// {{date …}} and {{clock …}} word text and times from the catalogue of
	// the mail's language. Default: a built-in message (or the templates
	// directory's mail/body.txt).
	// Conflicts with MessageFile.
	Message string `json:"message,omitempty"`
	// MessageFile is a file holding Message, read when the config loads.
	MessageFile string `json:"message_file,omitempty"`
	// MessageHTMLFile is a file holding the HTML part, an html/template
	// with the same fields (and .DenyLink and .Approver in manager mail).
	// Default: a built-in accessible layout.
	MessageHTMLFile string `json:"message_html_file,omitempty"`
	// LinkExpiration is how long a link works. Default: 15m. Values
	// under 5m or over 24h load with a warning; 15m to 30m is recommended.
	LinkExpiration caddy.Duration `json:"link_expiration,omitempty"`
	// MailServers names the mail servers to send through, in order.
	// Default: all configured servers when there is exactly one.
	MailServers []string `json:"mail_servers,omitempty"`
	// Fallback names the directories that identities come from, tried in
	// order; the first that knows the user wins. Required.
	Fallback []string `json:"fallback,omitempty"`
	// NotifyFailedLogin mails the user's manager a short notice when a
	// login is denied, expires undecided, is rate limited or is stopped
	// by five wrong codes. Repeats for the same user
	// within 15 minutes are grouped into the next notice. Default: off.
	NotifyFailedLogin bool `json:"notify_failed_login,omitempty"`
	// EscalateAfter, on a manager profile, also sends a request that the
	// manager has not decided by then to the manager's own manager (from
	// the directory), or to Approvers when there is none. The first
	// decision wins. Must be shorter than LinkExpiration. Default: off.
	EscalateAfter caddy.Duration `json:"escalate_after,omitempty"`
	// Approvers are the addresses an escalation goes to when the manager
	// has no manager in the directory.
	Approvers []string `json:"approvers,omitempty"`
	// DisableNumberMatching turns number matching off for a user profile:
	// the link's landing page then confirms without asking for the number
	// the waiting browser shows. Manager profiles always match numbers.
	// Default: false (number matching on).
	DisableNumberMatching bool `json:"disable_number_matching,omitempty"`
	// GrantDurations, on a manager profile, are the durations the manager
	// chooses from when approving, the first preselected: Go durations
	// such as "1h" or "90m", or "end_of_day" (the next midnight in the
	// server's time zone). The grant starts when the manager approves and
	// ends at its time even if the session lives longer. Default: 1h, 8h
	// and end_of_day (those longer than grant_max left out).
	GrantDurations []string `json:"grant_durations,omitempty"`
	// GrantMax, on a manager profile, caps every grant. It cannot be
	// longer than session_lifetime. Default: session_lifetime.
	GrantMax caddy.Duration `json:"grant_max,omitempty"`
	// Justification, on a manager profile, says whether a signed-in user
	// who asks for more access (a step-up) must give a reason, which the
	// approver sees: "optional" or "required". Default: optional.
	Justification string `json:"justification,omitempty"`
	// DisableCodeFallback leaves the six-digit code out of a user
	// profile's mail (the link alone signs in), and the code box off the
	// waiting page of sites where no profile mails one. A code can be read
	// out to a phisher who started the login with the user's address;
	// turn it off where users can always open the link. Manager profiles
	// never mail a code. Default: false (user profiles mail a code).
	DisableCodeFallback bool `json:"disable_code_fallback,omitempty"`
}

// PolicyConfig chooses a profile for the users whose attribute matches.
// Sites list the policies they use, in order; the first match applies and
// no match means the site's default_profile.
type PolicyConfig struct {
	// Profile is applied to matching users. Required.
	Profile string `json:"profile,omitempty"`
	// Directory, when set, limits the policy to users found in that
	// directory, which must be in the profile's fallback list. Default:
	// any of the profile's fallback directories.
	Directory string `json:"directory,omitempty"`
	// Attribute is the identity attribute compared, such as "memberOf",
	// "department", "mail", "username" or "group_name". Required.
	Attribute string `json:"attribute,omitempty"`
	// Values match the attribute: an exact string, a wildcard with "*"
	// (both ignore case), or a regular expression written "/.../" (taken
	// as written; "(?i)" ignores case). A multi-valued attribute matches
	// when any of its values does. Required.
	Values []string `json:"values,omitempty"`
}
