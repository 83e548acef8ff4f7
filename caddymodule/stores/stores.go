// Package stores holds the mailauth app's store modules, the Caddy guest
// modules in the mailauth.stores namespace: "badger" (the default) and
// "redis". The stores themselves live in package store, which knows
// nothing of Caddy. A third party adds a backend by registering a module
// mailauth.stores.<backend> that implements Provider, and
// caddyfile.Unmarshaler for `store <backend> …`.
package stores

import (
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/store"
)

// Provider is a module in the mailauth.stores namespace.
type Provider interface {
	caddy.Module
	// Open returns the store, opened now or shared with the configs of
	// this process that use the same one: a reload provisions the new
	// config before it cleans up the old one, and a store such as Badger
	// refuses a second open. The same store must be the same value, which
	// the app keys what it shares per store by. Cleanup lets go of it.
	// Errors begin with "mailauth: store".
	Open(logger *zap.Logger) (store.Store, error)
}

// pool holds open stores across config reloads, by what tells one store
// from another.
var pool = caddy.NewUsagePool()

// pooled is an open store in the pool.
type pooled struct{ store.Store }

func (p pooled) Destruct() error { return p.Close() }

// release lets go of the store under id, which the last user closes.
func release(id *string) error {
	if *id == "" {
		return nil
	}
	_, err := pool.Delete(*id)
	*id = ""
	return err
}
