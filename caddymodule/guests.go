package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/mailauth/caddy-mailauth/approval"
	"github.com/mailauth/caddy-mailauth/caddymodule/directories"
	"github.com/mailauth/caddy-mailauth/caddymodule/stores"
	"github.com/mailauth/caddy-mailauth/directory"
)

// Namespaces of the app's guest modules, and the modules of each that
// caddy-mailauth ships, in the order errors list them.
const (
	directoriesNamespace = "mailauth.directories"
	storesNamespace      = "mailauth.stores"
)

var (
	shippedDirectories = []string{"local", "ldap"}
	shippedStores      = []string{"badger", "redis"}
)

// defaultStore is the store of a config that names none.
var defaultStore = json.RawMessage(`{"backend":"badger"}`)

// guestContext is the context the app loads its directory and store
// modules in. It is the app's own, not the config's, so that Cleanup
// releases the store after the audit trail has written its last records
// rather than in whatever order Caddy cleans up a config's modules. The
// CLI commands, which run without a Caddy config, get one too.
func (a *App) guestContext() caddy.Context {
	if a.endGuests == nil {
		parent := a.parent
		if parent.Context == nil {
			parent = caddy.Context{Context: context.Background()}
		}
		// Cancelling a context made by NewContext runs its parent's
		// OnCancel functions, which are the config's to run: the guests'
		// context hangs off one made for the purpose and never cancelled
		// (it ends with its parent).
		base, _ := caddy.NewContext(parent)
		a.guests, a.endGuests = caddy.NewContext(base)
	}
	return a.guests
}

// closeGuests cleans up the directory and store modules: directories
// close their connections and the store is let go of, which the last
// config using it closes.
func (a *App) closeGuests() error {
	if a.revocations != nil {
		_, _ = sharedRevocations.Delete(a.store)
		a.revocations = nil
	}
	if a.endGuests == nil {
		return nil
	}
	a.endGuests()
	a.endGuests = nil
	return nil
}

// directories loads the directory modules and builds their directories.
func (a *App) directories() (map[string]directory.Directory, error) {
	for name, raw := range a.Directories {
		if isNull(raw) {
			return nil, fmt.Errorf("mailauth: directory %q: empty", name)
		}
		kind, err := moduleName(raw, "type")
		if err != nil {
			return nil, fmt.Errorf("mailauth: directory %q: %w", name, err)
		}
		known := moduleTypes(directoriesNamespace, shippedDirectories)
		switch {
		case kind == "":
			return nil, fmt.Errorf("mailauth: directory %q: type is required (%s)", name, strings.Join(known, " or "))
		case !slices.Contains(known, kind):
			return nil, fmt.Errorf("mailauth: directory %q: type %q is not supported (%s)", name, kind, strings.Join(known, " or "))
		}
	}
	mods, err := a.guestContext().LoadModule(a, "Directories")
	if err != nil {
		return nil, fmt.Errorf("mailauth: directories: %w", err)
	}
	env := directories.Env{
		// Asked for with every lookup, so the user's mail can be in their
		// own language.
		Attributes: []string{a.languageAttribute()},
		Logger:     a.logger.Named("directory"),
	}
	loaded := mods.(map[string]any)
	a.dirModules = make(map[string]directories.Provider, len(loaded))
	out := make(map[string]directory.Directory, len(loaded))
	for name, m := range loaded {
		p, ok := m.(directories.Provider)
		if !ok {
			return nil, fmt.Errorf("mailauth: directory %q: module %s does not provide a directory", name, m.(caddy.Module).CaddyModule().ID)
		}
		d, err := p.Directory(name, env)
		if err != nil {
			return nil, fmt.Errorf("mailauth: %w", err)
		}
		a.dirModules[name], out[name] = p, d
	}
	return out, nil
}

// openStore loads the store module and opens the store, or shares the one
// an earlier config of this process opened.
func (a *App) openStore() error {
	if isNull(a.Store) {
		a.Store = defaultStore
	}
	backend, err := moduleName(a.Store, "backend")
	if err != nil {
		return fmt.Errorf("mailauth: store: %w", err)
	}
	if backend == "" {
		// The default backend may go unnamed, as it could before stores
		// were modules.
		var obj map[string]json.RawMessage
		_ = json.Unmarshal(a.Store, &obj)
		backend, obj["backend"] = "badger", json.RawMessage(`"badger"`)
		if a.Store, err = json.Marshal(obj); err != nil {
			return fmt.Errorf("mailauth: store: %w", err)
		}
	}
	if known := moduleTypes(storesNamespace, shippedStores); !slices.Contains(known, backend) {
		return fmt.Errorf("mailauth: store: backend %q is not supported (%s)", backend, strings.Join(known, ", "))
	}
	mod, err := a.guestContext().LoadModule(a, "Store")
	if err != nil {
		return fmt.Errorf("mailauth: store: %w", err)
	}
	p, ok := mod.(stores.Provider)
	if !ok {
		return fmt.Errorf("mailauth: store: module %s does not provide a store", mod.(caddy.Module).CaddyModule().ID)
	}
	s, err := p.Open(a.logger.Named("store"))
	if err != nil {
		return err
	}
	if sh, ok := p.(sharedStore); ok {
		a.sharedStore = sh.Shared()
	}
	val, _, _ := sharedRevocations.LoadOrNew(s, func() (caddy.Destructor, error) {
		return pooledRevocations{new(approval.Revocations)}, nil
	})
	a.store, a.revocations = s, val.(pooledRevocations).Revocations
	return nil
}

// sharedStore is a store module whose store other Caddy instances may use
// too, so that rate limits kept in it count for all of them.
type sharedStore interface {
	Shared() bool
}

// moduleName is the value of the key that names a guest module in its
// JSON object, "" when the key is missing.
func moduleName(raw json.RawMessage, key string) (string, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return "", err
	}
	var name string
	if v, ok := obj[key]; ok {
		if err := json.Unmarshal(v, &name); err != nil {
			return "", fmt.Errorf("%s: %w", key, err)
		}
	}
	return name, nil
}

// moduleTypes are the names of the modules registered in namespace: the
// shipped ones in their order, then any a third party added, sorted.
func moduleTypes(namespace string, shipped []string) []string {
	out := slices.Clone(shipped)
	var more []string
	for _, m := range caddy.GetModules(namespace) {
		if n := m.ID.Name(); !slices.Contains(out, n) {
			more = append(more, n)
		}
	}
	slices.Sort(more)
	return append(out, more...)
}

// isNull reports whether a module's raw config is missing or JSON null.
func isNull(raw json.RawMessage) bool {
	return len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}
