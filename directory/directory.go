// Package directory finds the identity behind what a user typed on the login
// form. A Directory is one source of identities (local users in the config,
// or an LDAP server); a profile tries its directories in order.
package directory

import (
	"context"
	"errors"
)

// ErrNotFound means the directory does not know the input. It is the only
// error that lets a lookup move on to the next directory without being
// reported as a failure.
var ErrNotFound = errors.New("directory: user not found")

// Identity is who a login is for.
type Identity struct {
	// Username is the directory's account name.
	Username string
	// Name is the person's display name; it may be empty.
	Name string
	// Email is where User Approval mail goes.
	Email string
	// ManagerEmail is where Manager Approval mail goes; it may be empty.
	ManagerEmail string
	// Attributes holds what policies can match on, keyed by attribute name
	// as configured (memberOf, department, ...). Values may repeat keys.
	Attributes map[string][]string
	// Directory is the name of the directory that returned the identity.
	Directory string
}

// Directory is one source of identities.
type Directory interface {
	// Name is the directory's configured name.
	Name() string
	// Lookup finds the one identity whose username or email equals input.
	// It returns ErrNotFound when there is none; any other error means the
	// directory could not answer.
	Lookup(ctx context.Context, input string) (*Identity, error)
}

// Lookup tries dirs in order and returns the first identity found. A
// directory that cannot answer ends the search with its error (failed,
// when not nil, hears of it, so the caller can audit the outage): a
// directory further down may know a namesake, a different person, and an
// outage must not hand them the login. When no directory knows the input,
// Lookup returns ErrNotFound. A directory that found the user without an
// email address (ErrNoEmail) ends the search too, so a namesake elsewhere
// never gets their mail.
func Lookup(ctx context.Context, dirs []Directory, input string, failed func(Directory, error)) (*Identity, error) {
	for _, d := range dirs {
		id, err := d.Lookup(ctx, input)
		if err == nil {
			return id, nil
		}
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if !errors.Is(err, ErrNoEmail) && failed != nil {
			failed(d, err)
		}
		// Directory errors name their directory already.
		return nil, err
	}
	return nil, ErrNotFound
}
