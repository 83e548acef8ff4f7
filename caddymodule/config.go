package caddymodule

import (
	"github.com/caddyserver/caddy/v2"
)

// StoreConfig says where logins, link tokens, the outbox, the audit trail
// and the session keys are kept.
type StoreConfig struct {
	// Backend is the store engine: "badger" (embedded, one Caddy process,
	// the default) or "redis" (shared by every Caddy instance that points
	// at the same Redis and key_prefix).
	Backend string `json:"backend,omitempty"`
	// Path is Badger's directory. Default: "mailauth" under Caddy's data
	// directory. Only one Caddy process may use a directory at a time.
	Path string `json:"path,omitempty"`

	// URL is the Redis server, redis://[user:password@]host[:port][/db] or
	// rediss://… for TLS. Placeholders such as {env.REDIS_URL} expand at
	// load, which keeps the password out of the config. Required for
	// redis, except with sentinel or cluster addresses, where it may only
	// carry the password and database (redis://:password@/0).
	URL string `json:"url,omitempty"`
	// TLS connects to Redis over TLS, as a rediss:// URL does.
	TLS bool `json:"tls,omitempty"`
	// TLSCA is a PEM file of CA certificates that Redis's certificate must
	// chain to. Default: the system's roots. Verification cannot be turned
	// off.
	TLSCA string `json:"tls_ca,omitempty"`
	// KeyPrefix starts every Redis key, so several deployments can share
	// one Redis. Default: "mailauth:" ("{mailauth}:" in a cluster, where
	// the prefix must hold a hash tag).
	KeyPrefix string `json:"key_prefix,omitempty"`
	// PoolSize is the most connections kept open to each Redis server.
	// Default: go-redis's, 10 per CPU.
	PoolSize int `json:"pool_size,omitempty"`
	// DialTimeout bounds each connection attempt to Redis. Default: 2s,
	// so that a sign-in page answers 503 quickly while Redis is down.
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`
	// SentinelMaster and SentinelAddrs name a Sentinel-managed master:
	// its Sentinel name and the host:port of the Sentinels.
	SentinelMaster string   `json:"sentinel_master,omitempty"`
	SentinelAddrs  []string `json:"sentinel_addrs,omitempty"`
	// ClusterAddrs are host:port seed addresses of a Redis Cluster.
	ClusterAddrs []string `json:"cluster_addrs,omitempty"`
}

// DirectoryConfig is one source of identities: users listed in the
// config ("local") or an LDAP server ("ldap").
type DirectoryConfig struct {
	// Type is "local" or "ldap". Required.
	Type string `json:"type,omitempty"`
	// Users lists the users of a local directory.
	Users []*LocalUserConfig `json:"users,omitempty"`

	// URL is the LDAP server, ldap://host[:port] or ldaps://host[:port].
	// Required for ldap. ldap:// to a host that is not loopback
	// (localhost, a name under .localhost, 127.0.0.0/8 or ::1) needs
	// StartTLS, or the bind password and lookups go in clear text.
	URL string `json:"url,omitempty"`
	// BindDN is the service account that searches; empty binds
	// anonymously.
	BindDN string `json:"bind_dn,omitempty"`
	// BindPassword is BindDN's password; a placeholder such as
	// {env.LDAP_PASSWORD} expands at load.
	BindPassword string `json:"bind_password,omitempty"`
	// BaseDN is the subtree searched for users. Required for ldap.
	BaseDN string `json:"base_dn,omitempty"`
	// UserFilter finds the user; {input} stands for what the user typed,
	// escaped as an LDAP filter value. Default: (|(uid={input})(mail={input})).
	UserFilter string `json:"user_filter,omitempty"`
	// UsernameAttribute holds the account name. Default: uid (use
	// sAMAccountName for Active Directory).
	UsernameAttribute string `json:"username_attribute,omitempty"`
	// MailAttribute holds the user's email. Default: mail.
	MailAttribute string `json:"mail_attribute,omitempty"`
	// ManagerAttribute holds the manager's DN, whose mail attribute becomes
	// the manager email. Default: manager.
	ManagerAttribute string `json:"manager_attribute,omitempty"`
	// NameAttribute holds the display name. Default: cn.
	NameAttribute string `json:"name_attribute,omitempty"`
	// DepartmentAttribute is read into the "department" attribute that
	// policies match. Default: departmentNumber.
	DepartmentAttribute string `json:"department_attribute,omitempty"`
	// Attributes are further LDAP attributes that policies can match.
	// memberOf, group_name, department, mail and username are always there.
	Attributes []string `json:"attributes,omitempty"`
	// StartTLS upgrades an ldap:// connection to TLS before binding.
	StartTLS bool `json:"start_tls,omitempty"`
	// TLSCA is a PEM file of CA certificates that the server's certificate
	// must chain to. Default: the system's roots. Verification cannot be
	// turned off.
	TLSCA string `json:"tls_ca,omitempty"`
	// Timeout bounds each connect and each request. Default: 5s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// PoolSize is how many connections may be open at once. Default: 4.
	PoolSize int `json:"pool_size,omitempty"`
}

// LocalUserConfig is one user of a local directory.
type LocalUserConfig struct {
	// Username is the account name; users may log in with it. Required.
	Username string `json:"username,omitempty"`
	// Name is the display name shown in mail and pages. Optional.
	Name string `json:"name,omitempty"`
	// Email is where the user's sign-in mail goes; users may also log in
	// with it. Required.
	Email string `json:"email,omitempty"`
	// Sponsor is the email of the person who approves this user's logins
	// under a manager profile.
	Sponsor string `json:"sponsor,omitempty"`
	// Attributes are values that policies can match, such as
	// {"department": ["IT"]}.
	Attributes map[string][]string `json:"attributes,omitempty"`
}

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
