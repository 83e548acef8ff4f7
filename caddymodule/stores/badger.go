package stores

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/store"
)

func init() {
	caddy.RegisterModule(Badger{})
}

// Badger keeps the state in an embedded Badger database, for one Caddy
// process.
type Badger struct {
	// Path is Badger's directory. Default: "mailauth" under Caddy's data
	// directory. Only one Caddy process may use a directory at a time.
	Path string `json:"path,omitempty"`

	// id is the store's key in the pool while this module holds it.
	id string
}

// CaddyModule returns the Caddy module information.
func (Badger) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "mailauth.stores.badger",
		New: func() caddy.Module { return new(Badger) },
	}
}

// Open opens the database, or shares the one a config before this one
// opened.
func (b *Badger) Open(logger *zap.Logger) (store.Store, error) {
	dir := b.Path
	if dir == "" {
		dir = filepath.Join(caddy.AppDataDir(), "mailauth")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("mailauth: store: path: %w", err)
	}
	id := "badger:" + dir
	val, _, err := pool.LoadOrNew(id, func() (caddy.Destructor, error) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		s, err := store.OpenBadger(store.BadgerOptions{Dir: dir}, logger)
		if err != nil {
			return nil, err
		}
		return pooled{s}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("mailauth: store: opening %s: %w", dir, err)
	}
	b.id = id
	return val.(pooled).Store, nil
}

// Cleanup lets go of the database; the last config using it closes it.
func (b *Badger) Cleanup() error { return release(&b.id) }

// Interface guards
var (
	_ Provider           = (*Badger)(nil)
	_ caddy.CleanerUpper = (*Badger)(nil)
)
