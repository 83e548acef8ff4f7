package approval

import (
	"context"
	"encoding/hex"
	"errors"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/store"
)

// Errors of checking a session against the revocations.
var (
	// ErrSessionRevoked: the session was ended by logout or an operator.
	ErrSessionRevoked = errors.New("approval: session revoked")
	// ErrRevocationsUnread: the service has not been able to read the
	// revocations yet, so it cannot tell a revoked session from another
	// and refuses them all.
	ErrRevocationsUnread = errors.New("approval: session revocations not read yet")
)

// Revocations are kept in one store key and in memory, so that checking a
// session on the authenticated path never touches the store. The instance
// that revokes applies the revocation at once and announces it on the
// store's notifier, on which every other instance sharing the store reads
// the key again (within milliseconds); each also reads it every
// RevocationRefresh, which bounds the delay when an announcement is lost.
//
// A service that cannot read them when it starts fails closed: until the
// first read succeeds (retried every RevocationRetry), VerifySession
// refuses every session with ErrRevocationsUnread and RevocationsRead
// says so, on which the sign-in pages answer 503. Accepting sessions
// meanwhile would let a revoked one in, for as long as the store is down,
// on exactly the instance that was restarted or reloaded to deal with the
// outage. Refusing them costs little: such a service can issue no session
// either, its cookies are not cleared, and it mostly never happens,
// because a process reloading its config hands the new service the list
// the old one kept (Config.Revocations), and a cold start cannot open a
// store it cannot reach.

// RevocationRefresh is how often revocations made elsewhere are read.
const RevocationRefresh = 10 * time.Second

// RevocationRetry is how often a service that has never read the
// revocations tries again.
const RevocationRetry = time.Second

// Revocations holds the revoked sessions that a service checks in memory;
// the zero value has read none. See Config.Revocations.
type Revocations struct{ set atomic.Pointer[revocationSet] }

func (r *Revocations) load() *revocationSet     { return r.set.Load() }
func (r *Revocations) store(set *revocationSet) { r.set.Store(set) }

// check is VerifySession's look at the revocations: no allocation, no
// store.
func (r *Revocations) check(sess *Session) error {
	set := r.set.Load()
	if set == nil {
		return ErrRevocationsUnread
	}
	if set.revoked(sess) {
		return ErrSessionRevoked
	}
	return nil
}

// RevocationsRead reports whether the service has read the revocations at
// least once (or was handed a list already read), and so can tell revoked
// sessions from valid ones. Until it has, sign-in should answer 503.
func (s *sessions) RevocationsRead() bool { return s.revoked.load() != nil }

// revocationsTopic announces a change of the revocations to every instance.
const revocationsTopic = "revocations"

// revocations is what the store key holds: revoked session ids (hex) with
// the time they would have expired anyway, and users whose sessions
// issued before a time are all revoked.
type revocations struct {
	Sessions map[string]int64 `json:"sessions,omitempty"`
	Users    map[string]int64 `json:"users,omitempty"`
	// Grants are ended grants (hex id) with the time they would have
	// ended anyway.
	Grants map[string]int64 `json:"grants,omitempty"`
}

// revocationSet is the in-memory form; map keys avoid allocation on the
// authenticated path.
type revocationSet struct {
	sessions map[[16]byte]struct{}
	users    map[string]int64
	grants   map[GrantID]struct{}
	// from is what the set was built from, kept to restore a store that
	// lost it.
	from revocations
}

// grantEnded reports whether the grant was ended before its time.
func (r *revocationSet) grantEnded(g GrantID) bool {
	if r == nil || len(r.grants) == 0 {
		return false
	}
	_, ok := r.grants[g]
	return ok
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
func (s *sessions) RevokeSession(ctx context.Context, sess *Session) error {
	id := hex.EncodeToString(sess.ID[:])
	until := time.Unix(sess.IssuedAt, 0).Add(s.lifetime).Unix()
	return s.updateRevocations(ctx, func(r *revocations) { r.Sessions[id] = max(r.Sessions[id], until) })
}

// RevokeUser ends every session of user issued until now.
func (s *sessions) RevokeUser(ctx context.Context, user string) error {
	now := s.now().Unix()
	err := s.updateRevocations(ctx, func(r *revocations) { r.Users[user] = now })
	if err == nil {
		s.audit.Record(EventRevoked, &Login{Username: user}, Detail{})
	}
	return err
}

func (s *sessions) updateRevocations(ctx context.Context, change func(*revocations)) error {
	now := s.now().Unix()
	horizon := now - int64(s.lifetime/time.Second)
	var next revocations
	err := revocationLists.update(ctx, s.kv, "", 0, func(cur *revocations, _ bool) error {
		if cur.Sessions == nil {
			cur.Sessions = map[string]int64{}
		}
		if cur.Users == nil {
			cur.Users = map[string]int64{}
		}
		if cur.Grants == nil {
			cur.Grants = map[string]int64{}
		}
		// Entries for sessions that have expired anyway are dropped, so
		// the list stays as small as the live sessions it refuses.
		for id, exp := range cur.Sessions {
			if exp < now {
				delete(cur.Sessions, id)
			}
		}
		for u, before := range cur.Users {
			if before < horizon {
				delete(cur.Users, u)
			}
		}
		for id, until := range cur.Grants {
			if until < now {
				delete(cur.Grants, id)
			}
		}
		change(cur)
		next = *cur
		return nil
	})
	if err != nil {
		return err
	}
	s.setRevocations(next)
	if err := s.notifier.Publish(ctx, revocationsTopic, nil); err != nil {
		s.log.Warn("announcing a revocation; other instances pick it up within the refresh", zap.Error(err))
	}
	return nil
}

func (r *revocations) empty() bool {
	return len(r.Sessions) == 0 && len(r.Users) == 0 && len(r.Grants) == 0
}

func (s *sessions) setRevocations(r revocations) {
	set := &revocationSet{sessions: make(map[[16]byte]struct{}, len(r.Sessions)), users: r.Users, grants: make(map[GrantID]struct{}, len(r.Grants)), from: r}
	for id := range r.Sessions {
		var k [16]byte
		if b, err := hex.DecodeString(id); err == nil && len(b) == 16 {
			copy(k[:], b)
			set.sessions[k] = struct{}{}
		}
	}
	for id := range r.Grants {
		if g, ok := ParseGrantID(id); ok {
			set.grants[g] = struct{}{}
		}
	}
	s.revoked.store(set)
}

// loadRevocations reads the store's revocations into memory.
func (s *sessions) loadRevocations(ctx context.Context) error {
	r, err := revocationLists.get(ctx, s.kv, "")
	if err != nil {
		if !isNotFound(err) {
			return err
		}
		cur := s.revoked.load()
		if cur == nil || cur.from.empty() {
			s.setRevocations(revocations{})
			return nil
		}
		// The store lost the key (a Redis restarted without persistence,
		// say), while this instance still knows what was revoked: write
		// it back rather than let revoked sessions work again.
		s.log.Warn("session revocations are missing from the store; restoring them from memory")
		return s.updateRevocations(ctx, func(r *revocations) {
			for id, exp := range cur.from.Sessions {
				r.Sessions[id] = exp
			}
			for u, before := range cur.from.Users {
				r.Users[u] = max(r.Users[u], before)
			}
			for id, until := range cur.from.Grants {
				r.Grants[id] = until
			}
		})
	}
	s.setRevocations(*r)
	return nil
}

// revocationReadTimeout bounds one read of the revocations.
const revocationReadTimeout = 5 * time.Second

// startRevocations reads the revocations and keeps them current. It
// subscribes to announcements before the first read, so that a revocation
// made meanwhile elsewhere is not missed.
func (s *sessions) startRevocations() {
	if s.revoked == nil {
		s.revoked = new(Revocations)
	}
	changed := make(chan struct{}, 1)
	unsubscribe := s.notifier.Subscribe(revocationsTopic, func([]byte) {
		select {
		case changed <- struct{}{}:
		default:
		}
	})
	ctx, cancel := context.WithTimeout(s.ctx, revocationReadTimeout)
	s.readRevocations(ctx)
	cancel()
	s.background.Add(1)
	go s.refreshRevocations(changed, unsubscribe)
}

// readRevocations is loadRevocations with its failure logged.
func (s *sessions) readRevocations(ctx context.Context) {
	err := s.loadRevocations(ctx)
	switch {
	case err == nil:
	case s.RevocationsRead():
		s.log.Warn("reading session revocations; keeping the ones read before", zap.Error(err))
	default:
		s.log.Error("reading session revocations; until they are read, sessions are refused and sign-in answers 503", zap.Error(err))
	}
}

// refreshRevocations keeps the in-memory revocations current until the
// service closes: at once when another instance announces a change, and
// every RevocationRefresh regardless (every RevocationRetry while none has
// been read).
func (s *sessions) refreshRevocations(changed <-chan struct{}, unsubscribe func()) {
	defer s.background.Done()
	defer unsubscribe()
	t := time.NewTimer(RevocationRefresh)
	defer t.Stop()
	for {
		if !s.RevocationsRead() {
			t.Reset(RevocationRetry)
		}
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		case <-changed:
		}
		ctx, cancel := context.WithTimeout(s.ctx, revocationReadTimeout)
		s.readRevocations(ctx)
		cancel()
		t.Reset(RevocationRefresh)
	}
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }
