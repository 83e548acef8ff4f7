// Package keyring holds the keys of one deployment: the session signing
// keys, configured or kept in the store, and the keys derived from them,
// each for one purpose. A key used for two purposes lets a weakness in one
// use become a forgery in the other, so the signing key itself only signs
// and everything else gets its own key from it (HKDF with its own label).
package keyring

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/approval"
	"github.com/mailauth/caddy-mailauth/mailer"
)

// StoredKeyName is where the generated signing key is kept, so cookies
// stay valid across restarts and reloads and every instance that shares
// the store signs with the same key.
const StoredKeyName = "keys/session"

// Keys are the keys of one deployment. Where there is one key per signing
// key, the first is the current one (it signs or seals) and the others
// only check or open what was made before a rotation.
type Keys struct {
	// Signing sign session cookies (the first) and check them (any).
	Signing [][]byte
	// Code is the key one-time codes are stored under (an HMAC), so a
	// copy of the store does not give the codes away.
	Code []byte
	// Form signs the tokens of the gateway's own forms (CSRF).
	Form []byte
	// Outbox seal queued mail at rest: one per signing key, so a rotation
	// does not strand mail queued before it.
	Outbox [][]byte
	// Checkpoint sign audit checkpoints: one per signing key, so a
	// checkpoint exported before a rotation still verifies while its key
	// is listed.
	Checkpoint [][]byte
}

// Derive makes the keys that the signing keys stand for.
func Derive(signing ...[]byte) (*Keys, error) {
	if len(signing) == 0 {
		return nil, errors.New("keyring: no signing key")
	}
	k := &Keys{Signing: signing}
	var err error
	if k.Code, err = hkdf.Key(sha256.New, signing[0], nil, "caddy-mailauth one-time codes", 32); err != nil {
		return nil, err
	}
	if k.Form, err = hkdf.Key(sha256.New, signing[0], nil, "caddy-mailauth form tokens", 32); err != nil {
		return nil, err
	}
	for _, s := range signing {
		ok, err := hkdf.Key(sha256.New, s, nil, "caddy-mailauth outbox", mailer.SealKeySize)
		if err != nil {
			return nil, err
		}
		ck, err := hkdf.Key(sha256.New, s, nil, "caddy-mailauth audit checkpoints", 32)
		if err != nil {
			return nil, err
		}
		k.Outbox, k.Checkpoint = append(k.Outbox, ok), append(k.Checkpoint, ck)
	}
	return k, nil
}

// Parse decodes configured signing keys: standard or URL-safe base64 of
// approval.SessionKeySize bytes each. The error names the key by its position.
func Parse(encoded []string) ([][]byte, error) {
	keys := make([][]byte, 0, len(encoded))
	for i, e := range encoded {
		raw := strings.TrimSpace(e)
		b, err := base64.StdEncoding.DecodeString(raw)
		if err != nil {
			b, err = base64.RawURLEncoding.DecodeString(strings.TrimRight(raw, "="))
		}
		if err != nil || len(b) != approval.SessionKeySize {
			return nil, fmt.Errorf("key %d is not %d bytes of base64 (make one with: head -c 32 /dev/urandom | base64)", i+1, approval.SessionKeySize)
		}
		keys = append(keys, b)
	}
	return keys, nil
}

// Updater is the part of a store the kept key lives in.
type Updater interface {
	Update(ctx context.Context, key string, ttl time.Duration, fn func(current []byte, found bool) ([]byte, error)) error
}

// LoadOrCreate returns the signing key kept in the store, making and
// keeping one first when there is none. Of several instances that start
// at once, all end up with the one key that was written first.
func LoadOrCreate(ctx context.Context, kv Updater) ([]byte, error) {
	var key []byte
	err := kv.Update(ctx, StoredKeyName, 0, func(cur []byte, found bool) ([]byte, error) {
		if found && len(cur) == approval.SessionKeySize {
			key = cur
			return cur, nil
		}
		key = make([]byte, approval.SessionKeySize)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		return key, nil
	})
	if err != nil {
		return nil, fmt.Errorf("loading the session key: %w", err)
	}
	return key, nil
}

// KeepInterval is how often Keep looks at the stored key.
const KeepInterval = 30 * time.Second

// Keep writes key back every interval if the store has lost it (a Redis
// restarted without persistence): otherwise the next instance to start
// would make a new key, and the sessions each signs would fail on the
// others. A different key in the store is only logged: an operator
// replaced it, and a restart picks it up. Keep returns when ctx ends.
func Keep(ctx context.Context, kv Updater, key []byte, interval time.Duration, log *zap.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := kv.Update(cctx, StoredKeyName, 0, func(cur []byte, found bool) ([]byte, error) {
			if !found {
				log.Warn("the session key is missing from the store; writing this instance's back")
				return key, nil
			}
			if !bytes.Equal(cur, key) {
				log.Error("the store holds a different session key than this instance signs with; restart or reload to use it")
			}
			return cur, nil
		})
		cancel()
		if err != nil && ctx.Err() == nil {
			log.Debug("checking the stored session key", zap.Error(err))
		}
	}
}
