package approval

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/store"
)

// ErrSessionRevoked: the session was ended by logout or an operator.
var ErrSessionRevoked = errors.New("approval: session revoked")

// Revocations are kept in one store key and in memory, so that checking a
// session on the authenticated path never touches the store. The instance
// that revokes applies the revocation at once and announces it on the
// store's notifier, on which every other instance sharing the store reads
// the key again (within milliseconds); each also reads it every
// RevocationRefresh, which bounds the delay when an announcement is lost.

// RevocationRefresh is how often revocations made elsewhere are read.
const RevocationRefresh = 10 * time.Second

const (
	revocationsKey   = "revocations"
	revocationsTopic = "revocations"
)

// revocations is what the store key holds: revoked session ids (hex) with
// the time they would have expired anyway, and users whose sessions
// issued before a time are all revoked.
type revocations struct {
	Sessions map[string]int64 `json:"sessions,omitempty"`
	Users    map[string]int64 `json:"users,omitempty"`
}

// revocationSet is the in-memory form; map keys avoid allocation on the
// authenticated path.
type revocationSet struct {
	sessions map[[16]byte]struct{}
	users    map[string]int64
	// from is what the set was built from, kept to restore a store that
	// lost it.
	from revocations
}

func (r *revocationSet) revoked(sess *Session) bool {
	if r == nil {
		return false
	}
	if _, ok := r.sessions[sess.ID]; ok {
		return true
	}
	before, ok := r.users[sess.User]
	return ok && sess.IssuedAt <= before
}

// RevokeSession ends one session everywhere. The entry lasts until the
// session's absolute expiry, not the idle deadline of the cookie presented:
// a copy refreshed since then (a stolen cookie in use) expires later, and
// must stay refused until no copy can be valid any more.
func (s *Service) RevokeSession(ctx context.Context, sess *Session) error {
	id := hex.EncodeToString(sess.ID[:])
	until := time.Unix(sess.IssuedAt, 0).Add(s.cfg.SessionLifetime).Unix()
	return s.updateRevocations(ctx, func(r *revocations) { r.Sessions[id] = max(r.Sessions[id], until) })
}

// RevokeUser ends every session of user issued until now.
func (s *Service) RevokeUser(ctx context.Context, user string) error {
	now := s.now().Unix()
	err := s.updateRevocations(ctx, func(r *revocations) { r.Users[user] = now })
	if err == nil {
		s.audit.Record(EventRevoked, &Login{Username: user})
	}
	return err
}

func (s *Service) updateRevocations(ctx context.Context, change func(*revocations)) error {
	now := s.now().Unix()
	horizon := now - int64(s.cfg.SessionLifetime/time.Second)
	var next revocations
	err := s.cfg.Store.Update(ctx, revocationsKey, 0, func(cur []byte, found bool) ([]byte, error) {
		next = revocations{Sessions: map[string]int64{}, Users: map[string]int64{}}
		if found {
			if err := json.Unmarshal(cur, &next); err != nil {
				return nil, fmt.Errorf("approval: revocations are corrupt: %w", err)
			}
			if next.Sessions == nil {
				next.Sessions = map[string]int64{}
			}
			if next.Users == nil {
				next.Users = map[string]int64{}
			}
		}
		// Entries for sessions that have expired anyway are dropped, so
		// the list stays as small as the live sessions it refuses.
		for id, exp := range next.Sessions {
			if exp < now {
				delete(next.Sessions, id)
			}
		}
		for u, before := range next.Users {
			if before < horizon {
				delete(next.Users, u)
			}
		}
		change(&next)
		return json.Marshal(next)
	})
	if err != nil {
		return err
	}
	s.setRevocations(next)
	if err := s.cfg.Store.Publish(ctx, revocationsTopic, nil); err != nil {
		s.cfg.Logger.Warn("announcing a revocation; other instances pick it up within the refresh", zap.Error(err))
	}
	return nil
}

func (r *revocations) empty() bool { return len(r.Sessions) == 0 && len(r.Users) == 0 }

func (s *Service) setRevocations(r revocations) {
	set := &revocationSet{sessions: make(map[[16]byte]struct{}, len(r.Sessions)), users: r.Users, from: r}
	for id := range r.Sessions {
		var k [16]byte
		if b, err := hex.DecodeString(id); err == nil && len(b) == 16 {
			copy(k[:], b)
			set.sessions[k] = struct{}{}
		}
	}
	s.revoked.Store(set)
}

// loadRevocations reads the store's revocations into memory.
func (s *Service) loadRevocations(ctx context.Context) error {
	raw, err := s.cfg.Store.Get(ctx, revocationsKey)
	if err != nil {
		if !isNotFound(err) {
			return err
		}
		cur := s.revoked.Load()
		if cur == nil || cur.from.empty() {
			s.setRevocations(revocations{})
			return nil
		}
		// The store lost the key (a Redis restarted without persistence,
		// say), while this instance still knows what was revoked: write
		// it back rather than let revoked sessions work again.
		s.cfg.Logger.Warn("session revocations are missing from the store; restoring them from memory")
		return s.updateRevocations(ctx, func(r *revocations) {
			for id, exp := range cur.from.Sessions {
				r.Sessions[id] = exp
			}
			for u, before := range cur.from.Users {
				r.Users[u] = max(r.Users[u], before)
			}
		})
	}
	var r revocations
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("approval: revocations are corrupt: %w", err)
	}
	s.setRevocations(r)
	return nil
}

// refreshRevocations keeps the in-memory revocations current until the
// service closes: at once when another instance announces a change, and
// every RevocationRefresh regardless.
func (s *Service) refreshRevocations() {
	defer s.background.Done()
	changed := make(chan struct{}, 1)
	cancel := s.cfg.Store.Subscribe(revocationsTopic, func([]byte) {
		select {
		case changed <- struct{}{}:
		default:
		}
	})
	defer cancel()
	t := time.NewTicker(RevocationRefresh)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		case <-changed:
		}
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		if err := s.loadRevocations(ctx); err != nil {
			s.cfg.Logger.Warn("reading session revocations", zap.Error(err))
		}
		cancel()
	}
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }
