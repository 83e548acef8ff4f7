package directories

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/mailauth/caddy-mailauth/directory"
)

func init() {
	caddy.RegisterModule(LDAP{})
}

// LDAP is a directory of identities kept on an LDAP server (Active
// Directory, OpenLDAP, …).
type LDAP struct {
	// URL is the LDAP server, ldap://host[:port] or ldaps://host[:port].
	// Required. ldap:// to a host that is not loopback (localhost, a name
	// under .localhost, 127.0.0.0/8 or ::1) needs StartTLS, or the bind
	// password and lookups go in clear text.
	URL string `json:"url,omitempty"`
	// BindDN is the service account that searches. Default: empty, which
	// binds anonymously.
	BindDN string `json:"bind_dn,omitempty"`
	// BindPassword is BindDN's password; a placeholder such as
	// {env.LDAP_PASSWORD} expands at load. Required with BindDN.
	BindPassword string `json:"bind_password,omitempty"`
	// BaseDN is the subtree searched for users. Required.
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
	// Default: none.
	Attributes []string `json:"attributes,omitempty"`
	// StartTLS upgrades an ldap:// connection to TLS before binding.
	// Default: off.
	StartTLS bool `json:"start_tls,omitempty"`
	// TLSCA is a PEM file of CA certificates that the server's certificate
	// must chain to. Default: the system's roots. Verification cannot be
	// turned off.
	TLSCA string `json:"tls_ca,omitempty"`
	// Timeout bounds each connect and each request. Default: 5s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// PoolSize is how many connections may be open at once. Default: 4.
	PoolSize int `json:"pool_size,omitempty"`

	// bindPassword is BindPassword with its placeholders expanded.
	bindPassword string
	dir          *directory.LDAP
}

// CaddyModule returns the Caddy module information.
func (LDAP) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "mailauth.directories.ldap",
		New: func() caddy.Module { return new(LDAP) },
	}
}

// Provision expands the placeholders of the bind password.
func (l *LDAP) Provision(caddy.Context) error {
	l.bindPassword = caddy.NewReplacer().ReplaceKnown(l.BindPassword, "")
	return nil
}

// Directory checks the configuration and builds the directory; the
// connection pool opens on the first lookup.
func (l *LDAP) Directory(name string, env Env) (directory.Directory, error) {
	attrs := l.Attributes
	for _, extra := range env.Attributes {
		if !slices.ContainsFunc(attrs, func(s string) bool { return strings.EqualFold(s, extra) }) {
			attrs = append(slices.Clone(attrs), extra)
		}
	}
	cfg := directory.LDAPConfig{
		URL:                 l.URL,
		BindDN:              l.BindDN,
		BindPassword:        l.bindPassword,
		BaseDN:              l.BaseDN,
		UserFilter:          l.UserFilter,
		UsernameAttribute:   l.UsernameAttribute,
		MailAttribute:       l.MailAttribute,
		ManagerAttribute:    l.ManagerAttribute,
		NameAttribute:       l.NameAttribute,
		DepartmentAttribute: l.DepartmentAttribute,
		Attributes:          attrs,
		StartTLS:            l.StartTLS,
		Timeout:             time.Duration(l.Timeout),
		PoolSize:            l.PoolSize,
	}
	if l.TLSCA != "" {
		pem, err := os.ReadFile(l.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("directory %q: tls_ca: %w", name, err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("directory %q: tls_ca: %s holds no PEM certificate", name, l.TLSCA)
		}
	}
	d, err := directory.NewLDAP(name, cfg, env.Logger)
	if err != nil {
		return nil, err
	}
	l.dir = d
	return d, nil
}

// Check binds as the service account and reads base_dn, so that an
// operator hears of a wrong password or base_dn before a user does.
func (l *LDAP) Check(ctx context.Context) (string, error) {
	if err := l.dir.Check(ctx); err != nil {
		return "", err
	}
	return "bound and read base_dn " + l.BaseDN, nil
}

// List returns the usernames of at most limit entries under base_dn.
func (l *LDAP) List(ctx context.Context, limit int) ([]string, error) {
	return l.dir.List(ctx, limit)
}

// Cleanup closes the connections to the server.
func (l *LDAP) Cleanup() error {
	if l.dir == nil {
		return nil
	}
	return l.dir.Close()
}

// Interface guards
var (
	_ Provider           = (*LDAP)(nil)
	_ caddy.Provisioner  = (*LDAP)(nil)
	_ caddy.CleanerUpper = (*LDAP)(nil)
)
