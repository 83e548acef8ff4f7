// Package directories holds the mailauth app's directory modules, the
// Caddy guest modules in the mailauth.directories namespace: "ldap" and
// "local". The directories themselves live in package directory, which
// knows nothing of Caddy.
//
// A third party adds a directory (say an HTTP or SCIM one) by registering
// a module with the ID mailauth.directories.<type> that implements
// Provider, and caddyfile.Unmarshaler for `directory <name> <type> { … }`
// in the global mailauth block. Nothing in caddy-mailauth needs to change:
// the app loads whatever module the "type" key of a directory names. A
// module may also implement the capabilities that `caddy mailauth check`
// asks for (see caddymodule's Checker and Lister).
package directories

import (
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/directory"
)

// Provider is a module in the mailauth.directories namespace.
//
// Caddy does not tell a guest module the key it was loaded under, so the
// directory is built after Provision, once the app knows its name.
type Provider interface {
	caddy.Module
	// Directory returns the directory the module configures, under the
	// name the config gives it. It does no network I/O: a directory
	// connects on its first lookup. Errors name the directory and the
	// field at fault: directory "corp": url: ….
	Directory(name string, env Env) (directory.Directory, error)
}

// Env is what the app tells every directory it builds.
type Env struct {
	// Attributes are identity attributes that the app needs beyond the
	// directory's own, such as the user's language; a directory that
	// fetches attributes should fetch these too.
	Attributes []string
	// Logger is the app's directory logger.
	Logger *zap.Logger
}
