package directories

import (
	"fmt"
	"net/mail"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/mailauth/caddy-mailauth/internal/caddyfilearg"
)

// header reads `directory <name> <type>`, which the app has checked
// already, and returns the name, which every error names.
func header(d *caddyfile.Dispenser) (string, error) {
	d.Next() // directory
	if !d.NextArg() {
		return "", d.ArgErr()
	}
	name := d.Val()
	if !d.NextArg() {
		return "", d.ArgErr()
	}
	if d.NextArg() {
		return "", d.Errf("directory %q: unexpected %q", name, d.Val())
	}
	return name, nil
}

// UnmarshalCaddyfile reads
//
//	directory <name> ldap {
//		url ldap[s]://<host>[:<port>]
//		bind_dn <dn>
//		bind_password <password>
//		base_dn <dn>
//		user_filter <filter with {input}>
//		username_attribute <attribute>
//		mail_attribute <attribute>
//		manager_attribute <attribute>
//		name_attribute <attribute>
//		department_attribute <attribute>
//		attributes <attribute...>
//		start_tls
//		tls_ca <pem file>
//		timeout <duration>
//		pool_size <n>
//	}
func (l *LDAP) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	name, err := header(d)
	if err != nil {
		return err
	}
	nesting := d.Nesting()
	fields := map[string]bool{}
	for d.NextBlock(nesting) {
		f := d.Val()
		if fields[f] {
			return d.Errf("directory %q: %s: set twice", name, f)
		}
		fields[f] = true
		switch f {
		case "start_tls":
			if d.NextArg() {
				return d.Errf("directory %q: start_tls: takes no value", name)
			}
			l.StartTLS = true
			continue
		case "attributes":
			l.Attributes = d.RemainingArgs()
			if len(l.Attributes) == 0 {
				return d.Errf("directory %q: attributes: name at least one", name)
			}
			continue
		case "timeout":
			dur, err := caddyfilearg.Duration(d, fmt.Sprintf("directory %q: timeout", name))
			if err != nil {
				return err
			}
			l.Timeout = dur
			continue
		}
		if !d.NextArg() || d.CountRemainingArgs() > 0 {
			return d.Errf("directory %q: %s: want one value", name, f)
		}
		v := d.Val()
		switch f {
		case "url":
			if !strings.HasPrefix(v, "ldap://") && !strings.HasPrefix(v, "ldaps://") {
				return d.Errf("directory %q: url: %q must start with ldap:// or ldaps://", name, v)
			}
			l.URL = v
		case "bind_dn":
			l.BindDN = v
		case "bind_password":
			l.BindPassword = v
		case "base_dn":
			l.BaseDN = v
		case "user_filter":
			if !strings.Contains(v, "{input}") {
				return d.Errf("directory %q: user_filter: %q must contain {input}", name, v)
			}
			l.UserFilter = v
		case "username_attribute":
			l.UsernameAttribute = v
		case "mail_attribute":
			l.MailAttribute = v
		case "manager_attribute":
			l.ManagerAttribute = v
		case "name_attribute":
			l.NameAttribute = v
		case "department_attribute":
			l.DepartmentAttribute = v
		case "tls_ca":
			l.TLSCA = v
		case "pool_size":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 64 {
				return d.Errf("directory %q: pool_size: %q is not a number from 1 to 64", name, v)
			}
			l.PoolSize = n
		default:
			return d.Errf("directory %q: unknown option %q", name, f)
		}
	}
	for _, f := range []string{"url", "base_dn"} {
		if !fields[f] {
			return d.Errf("directory %q: %s: required", name, f)
		}
	}
	return nil
}

// UnmarshalCaddyfile reads
//
//	directory <name> local {
//		user <username> {
//			name <display name>
//			email <address>
//			sponsor <address>
//			attr <key> <value...>
//		}
//	}
func (l *Local) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	dirName, err := header(d)
	if err != nil {
		return err
	}
	nesting := d.Nesting()
	users := map[string]bool{}
	for d.NextBlock(nesting) {
		if d.Val() != "user" {
			return d.Errf("directory %q: unknown option %q (user)", dirName, d.Val())
		}
		if !d.NextArg() || d.CountRemainingArgs() > 0 {
			return d.Errf("directory %q: user: want one username", dirName)
		}
		u := &LocalUser{Username: d.Val()}
		if users[u.Username] {
			return d.Errf("directory %q: user %q: defined twice", dirName, u.Username)
		}
		users[u.Username] = true
		un := d.Nesting()
		fields := map[string]bool{}
		for d.NextBlock(un) {
			f := d.Val()
			if f != "attr" && fields[f] {
				return d.Errf("directory %q: user %q: %s: set twice", dirName, u.Username, f)
			}
			fields[f] = true
			switch f {
			case "name", "email", "sponsor":
				if !d.NextArg() || d.CountRemainingArgs() > 0 {
					return d.Errf("directory %q: user %q: %s: want one value", dirName, u.Username, f)
				}
				v := d.Val()
				if f != "name" && !validAddress(v) {
					return d.Errf("directory %q: user %q: %s: %q is not a mail address", dirName, u.Username, f, v)
				}
				switch f {
				case "name":
					u.Name = v
				case "email":
					u.Email = v
				case "sponsor":
					u.Sponsor = v
				}
			case "attr":
				args := d.RemainingArgs()
				if len(args) < 2 {
					return d.Errf("directory %q: user %q: attr: want a key and at least one value", dirName, u.Username)
				}
				if u.Attributes == nil {
					u.Attributes = map[string][]string{}
				}
				u.Attributes[args[0]] = append(u.Attributes[args[0]], args[1:]...)
			default:
				return d.Errf("directory %q: user %q: unknown option %q", dirName, u.Username, f)
			}
		}
		if u.Email == "" {
			return d.Errf("directory %q: user %q: email: required", dirName, u.Username)
		}
		l.Users = append(l.Users, u)
	}
	return nil
}

// validAddress reports whether s parses as a mail address.
func validAddress(s string) bool {
	_, err := mail.ParseAddress(s)
	return err == nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*LDAP)(nil)
	_ caddyfile.Unmarshaler = (*Local)(nil)
)
