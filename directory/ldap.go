package directory

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-ldap/ldap/v3"
	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/internal/loopback"
)

// LDAPConfig configures an LDAP directory. The zero value of every field but
// URL and BaseDN is usable and means the default stated beside it.
type LDAPConfig struct {
	// URL is the server, ldap://host[:port] or ldaps://host[:port]. The
	// host name is also the name the server's certificate must carry.
	// ldap:// without StartTLS is refused unless the host is loopback
	// (localhost, a name under .localhost, 127.0.0.0/8 or ::1).
	URL string
	// BindDN is the service account that searches; empty means anonymous.
	BindDN string
	// BindPassword is BindDN's password; it is required with BindDN.
	BindPassword string
	// BaseDN is where users are searched for (the whole subtree).
	BaseDN string
	// UserFilter finds the user; every {input} is replaced by what the
	// user typed, escaped. Default: (|(uid={input})(mail={input})).
	UserFilter string
	// UsernameAttribute holds the account name. Default: uid.
	UsernameAttribute string
	// MailAttribute holds the user's email address. Default: mail.
	MailAttribute string
	// ManagerAttribute holds the DN of the user's manager, whose
	// MailAttribute becomes the identity's manager email. Default: manager.
	ManagerAttribute string
	// NameAttribute holds the display name. Default: cn.
	NameAttribute string
	// DepartmentAttribute is read into the identity's "department"
	// attribute. Default: departmentNumber.
	DepartmentAttribute string
	// Attributes are further LDAP attributes to copy into the identity,
	// under their names as written here, for policies to match on.
	Attributes []string
	// StartTLS upgrades an ldap:// connection to TLS before binding.
	StartTLS bool
	// RootCAs verifies the server's certificate; nil means the system's.
	RootCAs *x509.CertPool
	// Timeout bounds each connect and each request. Default: 5s.
	Timeout time.Duration
	// PoolSize is how many connections may be open at once; lookups
	// beyond it wait for a free one. Default: 4.
	PoolSize int
}

// LDAP defaults, as LDAPConfig documents them.
const (
	DefaultLDAPUserFilter          = "(|(uid={input})(mail={input}))"
	DefaultLDAPUsernameAttribute   = "uid"
	DefaultLDAPMailAttribute       = "mail"
	DefaultLDAPManagerAttribute    = "manager"
	DefaultLDAPNameAttribute       = "cn"
	DefaultLDAPDepartmentAttribute = "departmentNumber"
	DefaultLDAPTimeout             = 5 * time.Second
	DefaultLDAPPoolSize            = 4
)

// ErrNoEmail means the directory found the user but has no email address
// for them, so no sign-in mail can be sent. It is not ErrNotFound: the user
// exists, and falling through to another directory would be wrong.
var ErrNoEmail = errors.New("directory: user has no email address")

// noEmailError says which user and attribute; it matches ErrNoEmail.
type noEmailError struct{ dir, user, attr string }

func (e *noEmailError) Error() string {
	return fmt.Sprintf("directory %q: user %q has no %s attribute", e.dir, e.user, e.attr)
}

func (e *noEmailError) Is(target error) bool { return target == ErrNoEmail }

// LDAP is a directory backed by an LDAP server. It keeps a few connections
// bound as the service account and is safe for concurrent use.
type LDAP struct {
	name   string
	cfg    LDAPConfig
	logger *zap.Logger
	// attrs are the attributes every user search asks for.
	attrs []string
	pool  *connPool
}

// attributeName matches an attribute description: a name or an OID, with
// options (;lang-en).
var attributeName = regexp.MustCompile(`^(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+)(?:;[A-Za-z0-9-]+)*$`)

// NewLDAP checks cfg, fills in defaults and returns the directory. It does
// no network I/O: the first lookup connects.
func NewLDAP(name string, cfg LDAPConfig, logger *zap.Logger) (*LDAP, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	fail := func(field, format string, args ...any) error {
		return fmt.Errorf("directory %q: %s: %s", name, field, fmt.Sprintf(format, args...))
	}
	u, err := cfg.checkURL(fail)
	if err != nil {
		return nil, err
	}
	for _, check := range [...]func(failFunc) error{cfg.checkBind, cfg.checkSearch, cfg.checkAttributes, cfg.checkLimits} {
		if err := check(fail); err != nil {
			return nil, err
		}
	}
	d := &LDAP{
		name:   name,
		cfg:    cfg,
		logger: logger,
		attrs: uniqueFold(append([]string{
			cfg.UsernameAttribute, cfg.MailAttribute, cfg.NameAttribute,
			cfg.ManagerAttribute, "memberOf", cfg.DepartmentAttribute,
		}, cfg.Attributes...)),
	}
	d.pool = newConnPool(d.name, dialer{
		url:      cfg.URL,
		startTLS: cfg.StartTLS,
		bindDN:   cfg.BindDN,
		password: cfg.BindPassword,
		tls: &tls.Config{
			RootCAs:    cfg.RootCAs,
			ServerName: u.Hostname(),
			MinVersion: tls.VersionTLS12,
		},
	}, cfg.PoolSize, logger)
	return d, nil
}

// failFunc makes the error for a field of the directory's config.
type failFunc func(field, format string, args ...any) error

// checkURL parses the server's URL and refuses clear text to a host that
// is not this machine.
func (cfg *LDAPConfig) checkURL(fail failFunc) (*url.URL, error) {
	u, err := url.Parse(cfg.URL)
	switch {
	case cfg.URL == "":
		return nil, fail("url", "required")
	case err != nil:
		return nil, fail("url", "%v", err)
	case u.Scheme != "ldap" && u.Scheme != "ldaps":
		return nil, fail("url", "scheme must be ldap:// or ldaps://, not %q", u.Scheme)
	case u.Hostname() == "":
		return nil, fail("url", "%q has no host", cfg.URL)
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.User != nil:
		return nil, fail("url", "%q must be only scheme, host and port (set the search base with base_dn)", cfg.URL)
	}
	if cfg.StartTLS && u.Scheme == "ldaps" {
		return nil, fail("start_tls", "not allowed with an ldaps:// url, which is TLS already")
	}
	if u.Scheme == "ldap" && !cfg.StartTLS && !loopback.Host(u.Hostname()) {
		host := u.Hostname()
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		return nil, fail("url", "%q sends the bind password and every lookup in clear text; use ldaps://%s or set start_tls (plain ldap:// is allowed only for loopback hosts such as localhost)", cfg.URL, host)
	}
	return u, nil
}

// checkBind: a service account is a DN with a password, or neither
// (anonymous binds).
func (cfg *LDAPConfig) checkBind(fail failFunc) error {
	if cfg.BindDN == "" {
		if cfg.BindPassword != "" {
			return fail("bind_dn", "required with bind_password")
		}
		return nil
	}
	if _, err := ldap.ParseDN(cfg.BindDN); err != nil {
		return fail("bind_dn", "%q: %v", cfg.BindDN, err)
	}
	if cfg.BindPassword == "" {
		return fail("bind_password", "required with bind_dn")
	}
	return nil
}

// checkSearch checks where and how users are searched for.
func (cfg *LDAPConfig) checkSearch(fail failFunc) error {
	if strings.TrimSpace(cfg.BaseDN) == "" {
		return fail("base_dn", "required")
	}
	if _, err := ldap.ParseDN(cfg.BaseDN); err != nil {
		return fail("base_dn", "%q: %v", cfg.BaseDN, err)
	}
	if cfg.UserFilter == "" {
		cfg.UserFilter = DefaultLDAPUserFilter
	}
	if !strings.Contains(cfg.UserFilter, "{input}") {
		return fail("user_filter", "%q does not contain {input}", cfg.UserFilter)
	}
	if _, err := ldap.CompileFilter(userFilter(cfg.UserFilter, "sample")); err != nil {
		return fail("user_filter", "%q: %v", cfg.UserFilter, err)
	}
	return nil
}

// checkAttributes fills in the default attribute names and checks that
// every name is one.
func (cfg *LDAPConfig) checkAttributes(fail failFunc) error {
	attrFields := []struct {
		field string
		value *string
		def   string
	}{
		{"username_attribute", &cfg.UsernameAttribute, DefaultLDAPUsernameAttribute},
		{"mail_attribute", &cfg.MailAttribute, DefaultLDAPMailAttribute},
		{"manager_attribute", &cfg.ManagerAttribute, DefaultLDAPManagerAttribute},
		{"name_attribute", &cfg.NameAttribute, DefaultLDAPNameAttribute},
		{"department_attribute", &cfg.DepartmentAttribute, DefaultLDAPDepartmentAttribute},
	}
	for _, f := range attrFields {
		if *f.value == "" {
			*f.value = f.def
		}
		if !attributeName.MatchString(*f.value) {
			return fail(f.field, "%q is not an attribute name", *f.value)
		}
	}
	cfg.Attributes = append([]string(nil), cfg.Attributes...)
	for _, a := range cfg.Attributes {
		if !attributeName.MatchString(a) {
			return fail("attributes", "%q is not an attribute name", a)
		}
	}
	return nil
}

// checkLimits fills in the default timeout and pool size.
func (cfg *LDAPConfig) checkLimits(fail failFunc) error {
	switch {
	case cfg.Timeout < 0:
		return fail("timeout", "must not be negative, got %s", cfg.Timeout)
	case cfg.Timeout == 0:
		cfg.Timeout = DefaultLDAPTimeout
	}
	switch {
	case cfg.PoolSize < 0:
		return fail("pool_size", "must not be negative, got %d", cfg.PoolSize)
	case cfg.PoolSize == 0:
		cfg.PoolSize = DefaultLDAPPoolSize
	}
	return nil
}

// userFilter puts the escaped input into the configured filter. The input
// never reaches the filter unescaped: "*)(uid=*" is a literal string.
func userFilter(filter, input string) string {
	return strings.ReplaceAll(filter, "{input}", ldap.EscapeFilter(input))
}

// uniqueFold drops later duplicates of names that differ only in case, as
// LDAP attribute names do.
func uniqueFold(names []string) []string {
	out := make([]string, 0, len(names))
	for _, n := range names {
		dup := false
		for _, o := range out {
			if strings.EqualFold(n, o) {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, n)
		}
	}
	return out
}

// Name returns the directory's name.
func (d *LDAP) Name() string { return d.name }

// Close closes the pooled connections. Lookups after Close fail.
func (d *LDAP) Close() error {
	d.pool.close()
	return nil
}

// Lookup searches BaseDN with UserFilter for the one entry matching input
// and resolves its manager's email. Blank input, or input that is not
// UTF-8 and so cannot name an LDAP entry, is ErrNotFound without a query.
// A user without an email address is an error matching ErrNoEmail; two or
// more matching entries are an error too, since a login must be for one
// person.
func (d *LDAP) Lookup(ctx context.Context, input string) (*Identity, error) {
	input = strings.TrimSpace(input)
	if input == "" || !utf8.ValidString(input) {
		return nil, ErrNotFound
	}
	var (
		entry        *ldap.Entry
		managerEmail string
	)
	err := d.pool.do(ctx, d.cfg.Timeout, func(c *ldap.Conn, timeout time.Duration) error {
		var err error
		entry, err = d.searchUser(c, input, timeout)
		if err != nil || entry == nil {
			return err
		}
		managerEmail, err = d.managerEmail(c, entry, timeout)
		return err
	})
	if err != nil {
		return nil, err
	}
	if entry == nil {
		return nil, ErrNotFound
	}
	return d.identity(entry, managerEmail)
}

// ErrAmbiguous is what Lookup says when the filter matches several
// entries: a login must be for one person, so such input cannot sign in.
var ErrAmbiguous = errors.New("matches more than one entry")

// searchUser returns the matching entry, nil if there is none. Errors that
// the server answered are final; the pool retries broken connections.
func (d *LDAP) searchUser(c *ldap.Conn, input string, timeout time.Duration) (*ldap.Entry, error) {
	req := ldap.NewSearchRequest(d.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		2, timeLimit(timeout), false, userFilter(d.cfg.UserFilter, input), d.attrs, nil)
	res, err := c.Search(req)
	switch {
	case ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded):
		return nil, &answeredError{fmt.Errorf("directory %q: ldap: %q %w", d.name, input, ErrAmbiguous)}
	case ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject):
		// The base DN itself is missing: a configuration error, not an
		// unknown user.
		return nil, &answeredError{fmt.Errorf("directory %q: ldap: base_dn %q does not exist: %w", d.name, d.cfg.BaseDN, err)}
	case err != nil:
		return nil, fmt.Errorf("directory %q: ldap: searching for %q: %w", d.name, input, err)
	}
	switch len(res.Entries) {
	case 0:
		return nil, nil
	case 1:
		return res.Entries[0], nil
	default:
		return nil, &answeredError{fmt.Errorf("directory %q: ldap: %q %w", d.name, input, ErrAmbiguous)}
	}
}

// managerEmail reads the mail of the entry named by the user's manager
// attribute. A manager the server does not have, or one without mail, is
// logged and leaves the email empty: Manager Approval then has nobody to
// ask, which it reports, while User Approval still works.
func (d *LDAP) managerEmail(c *ldap.Conn, user *ldap.Entry, timeout time.Duration) (string, error) {
	dn := user.GetEqualFoldAttributeValue(d.cfg.ManagerAttribute)
	if dn == "" {
		return "", nil
	}
	req := ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		1, timeLimit(timeout), false, "(objectClass=*)", []string{d.cfg.MailAttribute}, nil)
	res, err := c.Search(req)
	if err != nil {
		if serverAnswered(err) {
			d.logger.Warn("ldap manager entry not readable",
				zap.String("directory", d.name), zap.String("user_dn", user.DN),
				zap.String("manager_dn", dn), zap.Error(err))
			return "", nil
		}
		return "", fmt.Errorf("directory %q: ldap: reading manager %q: %w", d.name, dn, err)
	}
	var mail string
	if len(res.Entries) == 1 {
		mail = strings.TrimSpace(res.Entries[0].GetEqualFoldAttributeValue(d.cfg.MailAttribute))
	}
	if mail == "" {
		d.logger.Warn("ldap manager has no mail",
			zap.String("directory", d.name), zap.String("user_dn", user.DN),
			zap.String("manager_dn", dn), zap.String("mail_attribute", d.cfg.MailAttribute))
	}
	return mail, nil
}

// identity turns a user entry into an Identity.
func (d *LDAP) identity(e *ldap.Entry, managerEmail string) (*Identity, error) {
	username := e.GetEqualFoldAttributeValue(d.cfg.UsernameAttribute)
	if username == "" {
		return nil, fmt.Errorf("directory %q: ldap: entry %q has no %s attribute", d.name, e.DN, d.cfg.UsernameAttribute)
	}
	email := strings.TrimSpace(e.GetEqualFoldAttributeValue(d.cfg.MailAttribute))
	if email == "" {
		return nil, &noEmailError{dir: d.name, user: username, attr: d.cfg.MailAttribute}
	}
	attrs := make(map[string][]string, len(d.cfg.Attributes)+5)
	for _, a := range d.cfg.Attributes {
		if v := e.GetEqualFoldAttributeValues(a); len(v) > 0 {
			attrs[a] = v
		}
	}
	if groups := e.GetEqualFoldAttributeValues("memberOf"); len(groups) > 0 {
		attrs["memberOf"] = groups
		attrs["group_name"] = groupNames(groups)
	}
	if v := e.GetEqualFoldAttributeValues(d.cfg.DepartmentAttribute); len(v) > 0 {
		attrs["department"] = v
	}
	attrs["username"] = []string{username}
	attrs["mail"] = []string{email}
	return &Identity{
		Username:     username,
		Name:         e.GetEqualFoldAttributeValue(d.cfg.NameAttribute),
		Email:        email,
		ManagerEmail: managerEmail,
		Attributes:   attrs,
		Directory:    d.name,
	}, nil
}

// groupNames returns the first RDN value of each DN, "executives" for
// cn=executives,ou=groups,dc=example,dc=com. DNs that do not parse are
// skipped.
func groupNames(dns []string) []string {
	names := make([]string, 0, len(dns))
	for _, s := range dns {
		dn, err := ldap.ParseDN(s)
		if err != nil || len(dn.RDNs) == 0 || len(dn.RDNs[0].Attributes) == 0 {
			continue
		}
		names = append(names, dn.RDNs[0].Attributes[0].Value)
	}
	return names
}

// timeLimit is the server-side search limit, in whole seconds, for a
// request that may take timeout.
func timeLimit(timeout time.Duration) int {
	return max(1, int(math.Ceil(timeout.Seconds())))
}

// Check binds as the service account and reads the base_dn entry itself,
// so an operator learns of a wrong password, an untrusted certificate or a
// misspelt base_dn before a user does. It asks for no attributes ("1.1",
// RFC 4511): the entry's existence is the answer.
func (d *LDAP) Check(ctx context.Context) error {
	return d.pool.do(ctx, d.cfg.Timeout, func(c *ldap.Conn, timeout time.Duration) error {
		req := ldap.NewSearchRequest(d.cfg.BaseDN, ldap.ScopeBaseObject, ldap.NeverDerefAliases,
			1, timeLimit(timeout), false, "(objectClass=*)", []string{"1.1"}, nil)
		_, err := c.Search(req)
		switch {
		case ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject):
			return &answeredError{fmt.Errorf("directory %q: ldap: base_dn %q does not exist: %w", d.name, d.cfg.BaseDN, err)}
		case err != nil:
			return fmt.Errorf("directory %q: ldap: reading base_dn %q: %w", d.name, d.cfg.BaseDN, err)
		}
		return nil
	})
}

// List returns the usernames of at most limit entries under base_dn that
// have the username attribute, sorted, for `caddy mailauth check` to look
// up one by one. The filter is a presence test built from the configured
// attribute name (checked by NewLDAP), never from user input, so no
// escaping is involved. Which entries come first is the server's choice.
func (d *LDAP) List(ctx context.Context, limit int) ([]string, error) {
	if limit <= 0 {
		return nil, nil
	}
	filter := "(" + d.cfg.UsernameAttribute + "=*)"
	var names []string
	err := d.pool.do(ctx, d.cfg.Timeout, func(c *ldap.Conn, timeout time.Duration) error {
		req := ldap.NewSearchRequest(d.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
			limit, timeLimit(timeout), false, filter, []string{d.cfg.UsernameAttribute}, nil)
		res, err := c.Search(req)
		switch {
		case ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded):
			// The first limit entries are what was asked for.
		case ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject):
			return &answeredError{fmt.Errorf("directory %q: ldap: base_dn %q does not exist: %w", d.name, d.cfg.BaseDN, err)}
		case err != nil:
			return fmt.Errorf("directory %q: ldap: listing users: %w", d.name, err)
		}
		names = names[:0]
		for _, e := range res.Entries {
			if n := e.GetEqualFoldAttributeValue(d.cfg.UsernameAttribute); n != "" && len(names) < limit {
				names = append(names, n)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	return names, nil
}

// answeredError wraps an error that came from a working connection with a
// definite answer, so the pool neither retries nor drops the connection.
type answeredError struct{ err error }

func (e *answeredError) Error() string { return e.err.Error() }
func (e *answeredError) Unwrap() error { return e.err }

// serverAnswered reports whether err is an LDAP result the server sent, as
// opposed to a broken or timed-out connection.
func serverAnswered(err error) bool {
	var ae *answeredError
	if errors.As(err, &ae) {
		return true
	}
	var le *ldap.Error
	return errors.As(err, &le) && le.ResultCode < ldap.ErrorNetwork
}

// Interface guards
var _ Directory = (*LDAP)(nil)
