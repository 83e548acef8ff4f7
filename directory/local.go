package directory

import (
	"context"
	"fmt"
	"net/mail"
	"strings"
)

// LocalUser is one user of a Local directory.
type LocalUser struct {
	Username   string
	Name       string
	Email      string
	Sponsor    string
	Attributes map[string][]string
}

// Local is a directory of users listed in the configuration. Lookups match
// the username or the email, ignoring case, as mail systems and LDAP do.
type Local struct {
	name  string
	byKey map[string]*Identity
}

// NewLocal checks users and indexes them. Two users may not share a
// username or an email, since a lookup must find at most one.
func NewLocal(name string, users []LocalUser) (*Local, error) {
	l := &Local{name: name, byKey: make(map[string]*Identity, 2*len(users))}
	for _, u := range users {
		if u.Username == "" {
			return nil, fmt.Errorf("directory %q: a user has no name", name)
		}
		if u.Email == "" {
			return nil, fmt.Errorf("directory %q: user %q has no email", name, u.Username)
		}
		if _, err := mail.ParseAddress(u.Email); err != nil {
			return nil, fmt.Errorf("directory %q: user %q: email %q: %v", name, u.Username, u.Email, err)
		}
		if u.Sponsor != "" {
			if _, err := mail.ParseAddress(u.Sponsor); err != nil {
				return nil, fmt.Errorf("directory %q: user %q: sponsor %q: %v", name, u.Username, u.Sponsor, err)
			}
		}
		attrs := make(map[string][]string, len(u.Attributes)+3)
		for k, v := range u.Attributes {
			attrs[k] = append([]string(nil), v...)
		}
		attrs["username"] = []string{u.Username}
		attrs["mail"] = []string{u.Email}
		id := &Identity{
			Username:     u.Username,
			Name:         u.Name,
			Email:        u.Email,
			ManagerEmail: u.Sponsor,
			Attributes:   attrs,
			Directory:    name,
		}
		for _, key := range []string{strings.ToLower(u.Username), strings.ToLower(u.Email)} {
			if other, dup := l.byKey[key]; dup && other != id {
				return nil, fmt.Errorf("directory %q: %q names both user %q and user %q", name, key, other.Username, u.Username)
			}
			l.byKey[key] = id
		}
	}
	return l, nil
}

// Name returns the directory's name.
func (l *Local) Name() string { return l.name }

// Lookup finds a user by username or email. The returned identity is a copy
// that the caller may change.
func (l *Local) Lookup(_ context.Context, input string) (*Identity, error) {
	id, ok := l.byKey[strings.ToLower(strings.TrimSpace(input))]
	if !ok {
		return nil, ErrNotFound
	}
	c := *id
	c.Attributes = make(map[string][]string, len(id.Attributes))
	for k, v := range id.Attributes {
		c.Attributes[k] = append([]string(nil), v...)
	}
	return &c, nil
}

// Interface guards
var _ Directory = (*Local)(nil)
