package directories

import (
	"context"
	"fmt"

	"github.com/caddyserver/caddy/v2"

	"github.com/mailauth/caddy-mailauth/directory"
)

func init() {
	caddy.RegisterModule(Local{})
}

// Local is a directory of users listed in the config.
type Local struct {
	// Users are the directory's users. Default: none.
	Users []*LocalUser `json:"users,omitempty"`
}

// LocalUser is one user of a local directory.
type LocalUser struct {
	// Username is the account name; users may log in with it. Required.
	Username string `json:"username,omitempty"`
	// Name is the display name shown in mail and pages. Default: none.
	Name string `json:"name,omitempty"`
	// Email is where the user's sign-in mail goes; users may also log in
	// with it. Required.
	Email string `json:"email,omitempty"`
	// Sponsor is the email of the person who approves this user's logins
	// under a manager profile. Default: none.
	Sponsor string `json:"sponsor,omitempty"`
	// Attributes are values that policies can match, such as
	// {"department": ["IT"]}. Default: none.
	Attributes map[string][]string `json:"attributes,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Local) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "mailauth.directories.local",
		New: func() caddy.Module { return new(Local) },
	}
}

// Directory checks the users and indexes them.
func (l *Local) Directory(name string, _ Env) (directory.Directory, error) {
	users := make([]directory.LocalUser, 0, len(l.Users))
	for _, u := range l.Users {
		if u == nil {
			return nil, fmt.Errorf("directory %q: a user is empty", name)
		}
		users = append(users, directory.LocalUser{Username: u.Username, Name: u.Name, Email: u.Email, Sponsor: u.Sponsor, Attributes: u.Attributes})
	}
	return directory.NewLocal(name, users)
}

// Check has nothing to connect to: the users are in the config.
func (l *Local) Check(context.Context) (string, error) {
	return fmt.Sprintf("%d user(s) in the config, nothing to connect to", len(l.Users)), nil
}

// List returns every user, whatever the limit: they are in the config
// already, and none costs a query.
func (l *Local) List(context.Context, int) ([]string, error) {
	names := make([]string, 0, len(l.Users))
	for _, u := range l.Users {
		names = append(names, u.Username)
	}
	return names, nil
}

// Sponsored reports that a user's approver is the sponsor the config
// names for them, not a manager entry in a directory server.
func (Local) Sponsored() bool { return true }

// Interface guards
var _ Provider = (*Local)(nil)
