package approval

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/store"
)

// sessions is the component that owns what outlives a login: checking and
// refreshing session cookies, revocation (kept in memory from the store
// and announced to every instance), the running grants of manager
// approvals, and the operator's listing of sessions. It needs of the
// store only its records (KV) and announcements (Notifier), and nothing
// of logins, links or mail, which is what lets the authenticated path
// stay free of store I/O: only the background refresh reads the store.
//
// The Service embeds it, so its exported methods are the Service's.
type sessions struct {
	codec    *SessionCodec
	revoked  *Revocations
	kv       KV
	notifier store.Notifier
	audit    *Auditor
	log      *zap.Logger
	now      func() time.Time
	// lifetime bounds a session; idle ends one unused for that long
	// (zero: only lifetime applies).
	lifetime, idle time.Duration
	// ctx ends the background work (revocation refresh, grant sweep),
	// which background counts.
	ctx        context.Context
	background *sync.WaitGroup
}

// start reads the revocations and starts the background work.
func (s *sessions) start() {
	s.startRevocations()
	s.background.Add(1)
	go s.sweepGrants()
}
