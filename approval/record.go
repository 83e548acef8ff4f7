package approval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/mailauth/caddy-mailauth/store"
)

// Every record the core keeps in the store is one of the kinds below,
// under its key prefix. How long each lives is decided where it is
// written, by the rule next to its kind; nothing else in the core builds
// a key or decodes a stored value.
var (
	// logins: a Login by its id. Kept for the longest link lifetime any
	// profile could give it plus loginGrace, from its start (loginEntry).
	logins = recordKind[Login]{prefix: "login/", name: "login", notFound: ErrLoginNotFound}
	// links: a linkRecord under the hash of a link's token, for the
	// link's lifetime; taken when the link is used.
	links = recordKind[linkRecord]{prefix: "token/", name: "link", notFound: ErrLinkInvalid}
	// codes: a login's code (its HMAC) by login id, for the link's
	// lifetime; the MAC is cleared when the code is used.
	codes = recordKind[codeRecord]{prefix: "code/", name: "code"}
	// codeTryCounts: wrong codes tried on a login, by login id, for as
	// long as the login can live.
	codeTryCounts = recordKind[codeTries]{prefix: "codetries/", name: "code tries"}
	// noticeGroups: the grouping of failed-login notices, by the hash of
	// manager and user, for noticeMemory. A corrupt record reads as none:
	// it only groups notices, and failing would lose the notice.
	noticeGroups = recordKind[noticeRecord]{prefix: "notice/", name: "notice", lenient: true}
	// sessionInfos: what the operator listing shows of a session, by its
	// hex id, for the session lifetime. Checking a session never reads it.
	sessionInfos = recordKind[SessionInfo]{prefix: "session/", name: "session record", notFound: ErrSessionNotFound}
	// grantInfos: a running grant by its id, until it ends plus
	// grantKeep, so the sweep audits its end even after an outage.
	grantInfos = recordKind[GrantInfo]{prefix: "grant/", name: "grant record", notFound: ErrGrantNotFound}
	// revocationLists: the one record of revoked sessions, users and
	// grants, under the bare key "revocations", kept for good; entries
	// are pruned as what they revoke expires.
	revocationLists = recordKind[revocations]{prefix: "revocations", name: "revocations"}
)

// KV is the part of a store that records live in.
type KV interface {
	Put(ctx context.Context, key string, value []byte, ttl time.Duration) error
	PutMany(ctx context.Context, entries []store.Entry) error
	Get(ctx context.Context, key string) ([]byte, error)
	Take(ctx context.Context, key string) ([]byte, error)
	Update(ctx context.Context, key string, ttl time.Duration, fn func(current []byte, found bool) ([]byte, error)) error
	Scan(ctx context.Context, prefix string, fn func(key string, value []byte) bool) error
}

var _ KV = store.Store(nil)

// recordVersion is the first byte of every record the core writes, so
// that a later change of a record's shape can tell which shape it is
// reading and migrate it. Records written before there was a version are
// bare JSON objects: their first byte is '{', which no version will be.
const recordVersion byte = 1

// recordKind is one kind of record: where it lives and how it reads.
type recordKind[T any] struct {
	prefix string
	// name says what the record is in errors.
	name string
	// notFound is what a missing record is to callers (nil: store.ErrNotFound).
	notFound error
	// lenient reads a corrupt record as the zero record.
	lenient bool
}

func (k recordKind[T]) key(id string) string { return k.prefix + id }

// encode is the stored form of v: the version byte, then JSON.
func (k recordKind[T]) encode(v *T) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("approval: encoding a %s: %w", k.name, err)
	}
	out := make([]byte, 1+len(raw))
	out[0] = recordVersion
	copy(out[1:], raw)
	return out, nil
}

// decode reads a stored record of either version. A record that does not
// read is corrupt, and says which one it is.
func (k recordKind[T]) decode(id string, raw []byte, v *T) error {
	body := raw
	switch {
	case len(raw) > 0 && raw[0] == recordVersion:
		body = raw[1:]
	case len(raw) > 0 && raw[0] == '{':
		// Unversioned: written before records had a version.
	default:
		return k.corrupt(id, errors.New("unknown record version"))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return k.corrupt(id, err)
	}
	return nil
}

// errCorrupt is in the chain of every error about a record that does not
// read, so that callers can answer it apart from a failing store.
var errCorrupt = errors.New("corrupt")

func (k recordKind[T]) corrupt(id string, err error) error {
	if id == "" {
		return fmt.Errorf("approval: the %s record is %w: %w", k.name, errCorrupt, err)
	}
	return fmt.Errorf("approval: %s %s is %w: %w", k.name, id, errCorrupt, err)
}

// missing maps the store's not-found to what callers expect.
func (k recordKind[T]) missing(err error) error {
	if k.notFound != nil && errors.Is(err, store.ErrNotFound) {
		return k.notFound
	}
	return err
}

// entry is v as one entry of a PutMany.
func (k recordKind[T]) entry(id string, v *T, ttl time.Duration) (store.Entry, error) {
	raw, err := k.encode(v)
	return store.Entry{Key: k.key(id), Value: raw, TTL: ttl}, err
}

func (k recordKind[T]) get(ctx context.Context, kv KV, id string) (*T, error) {
	raw, err := kv.Get(ctx, k.key(id))
	if err != nil {
		return nil, k.missing(err)
	}
	v := new(T)
	if err := k.decode(id, raw, v); err != nil {
		return nil, err
	}
	return v, nil
}

func (k recordKind[T]) put(ctx context.Context, kv KV, id string, v *T, ttl time.Duration) error {
	raw, err := k.encode(v)
	if err != nil {
		return err
	}
	return kv.Put(ctx, k.key(id), raw, ttl)
}

// take reads and deletes the record in one step, and returns its stored
// form as well, so that it can be given back as it was.
func (k recordKind[T]) take(ctx context.Context, kv KV, id string) (*T, []byte, error) {
	raw, err := kv.Take(ctx, k.key(id))
	if err != nil {
		return nil, nil, k.missing(err)
	}
	v := new(T)
	if err := k.decode(id, raw, v); err != nil {
		return nil, raw, err
	}
	return v, raw, nil
}

// update changes the record atomically: fn gets the current record (the
// zero record when found is false) and changes it in place; an error from
// fn writes nothing and is returned. A record created by update lives for
// ttl; an existing one keeps its expiry.
func (k recordKind[T]) update(ctx context.Context, kv KV, id string, ttl time.Duration, fn func(v *T, found bool) error) error {
	err := kv.Update(ctx, k.key(id), ttl, func(cur []byte, found bool) ([]byte, error) {
		v := new(T)
		if found {
			if err := k.decode(id, cur, v); err != nil {
				if !k.lenient {
					return nil, err
				}
				*v = *new(T)
			}
		}
		if err := fn(v, found); err != nil {
			return nil, err
		}
		return k.encode(v)
	})
	return k.missing(err)
}

// scan calls fn with every record of the kind until it returns false. A
// corrupt record is passed to bad, which may log it, and skipped.
func (k recordKind[T]) scan(ctx context.Context, kv KV, fn func(v *T) bool, bad func(key string, err error)) error {
	return kv.Scan(ctx, k.prefix, func(key string, raw []byte) bool {
		v := new(T)
		if err := k.decode(key[len(k.prefix):], raw, v); err != nil {
			bad(key, err)
			return true
		}
		return fn(v)
	})
}
