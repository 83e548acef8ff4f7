package approval

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// Session errors. Callers treat both as "no session"; they are distinct for
// tests and logs.
var (
	ErrSessionInvalid = errors.New("approval: session cookie invalid")
	ErrSessionExpired = errors.New("approval: session expired")
)

// SessionKeySize is the length of a session signing key.
const SessionKeySize = 32

// Session is what a session cookie proves.
type Session struct {
	// ID identifies the session for revocation and audit.
	ID [16]byte
	// User is the username, Email the address the login was approved for.
	User, Email string
	// Profile is the name of the profile that approved the login.
	Profile string
	// IssuedAt and ExpiresAt are Unix seconds.
	IssuedAt, ExpiresAt int64
}

// The cookie is base64url(payload) "." base64url(HMAC-SHA256(key, first
// part)). The payload is a fixed header followed by length-prefixed strings:
//
//	version(1) keyID(1) issued(8) expires(8) id(16) len(1) user len(1) email len(1) profile
//
// A binary layout rather than JSON keeps the cookie short and lets the
// authenticated path decode it without allocating, since it runs on every
// request to the protected app.
const (
	sessionVersion   = 1
	sessionHeaderLen = 1 + 1 + 8 + 8 + 16
	maxSessionField  = 255
	maxSessionCookie = 2048
)

// SessionCodec signs and verifies session cookies. The first key signs; all
// keys verify, so a key can be rotated out without logging everybody off.
type SessionCodec struct {
	keys []*sessionKey
}

type sessionKey struct {
	id   byte
	pool sync.Pool // of *macState
}

// macState is pooled so that verifying a cookie allocates neither an HMAC
// nor the buffers it writes into.
type macState struct {
	mac     hash.Hash
	sum     [sha256.Size]byte
	payload [maxSessionCookie]byte
}

// NewSessionCodec builds a codec from one or more 32-byte keys, the signing
// key first. A key's id is derived from the key itself, so instances that
// share keys agree on ids without coordination.
func NewSessionCodec(keys ...[]byte) (*SessionCodec, error) {
	if len(keys) == 0 {
		return nil, errors.New("approval: no session key")
	}
	c := &SessionCodec{}
	seen := map[byte]bool{}
	for i, k := range keys {
		if len(k) != SessionKeySize {
			return nil, fmt.Errorf("approval: session key %d has %d bytes, want %d", i, len(k), SessionKeySize)
		}
		id := sha256.Sum256(k)
		if seen[id[0]] {
			return nil, fmt.Errorf("approval: session key %d has the same id as an earlier key; generate a new one", i)
		}
		seen[id[0]] = true
		key := append([]byte(nil), k...)
		sk := &sessionKey{id: id[0]}
		sk.pool.New = func() any { return &macState{mac: hmac.New(sha256.New, key)} }
		c.keys = append(c.keys, sk)
	}
	return c, nil
}

// Encode signs s with the current key and returns the cookie value.
func (c *SessionCodec) Encode(s *Session) (string, error) {
	for _, f := range []string{s.User, s.Email, s.Profile} {
		if len(f) > maxSessionField {
			return "", fmt.Errorf("approval: session field of %d bytes is too long", len(f))
		}
	}
	k := c.keys[0]
	p := make([]byte, sessionHeaderLen, sessionHeaderLen+3+len(s.User)+len(s.Email)+len(s.Profile))
	p[0] = sessionVersion
	p[1] = k.id
	binary.BigEndian.PutUint64(p[2:], uint64(s.IssuedAt))
	binary.BigEndian.PutUint64(p[10:], uint64(s.ExpiresAt))
	copy(p[18:34], s.ID[:])
	for _, f := range []string{s.User, s.Email, s.Profile} {
		p = append(p, byte(len(f)))
		p = append(p, f...)
	}
	enc := base64.RawURLEncoding.EncodeToString(p)
	m := k.pool.Get().(*macState)
	defer k.pool.Put(m)
	m.mac.Reset()
	m.mac.Write([]byte(enc))
	return enc + "." + base64.RawURLEncoding.EncodeToString(m.mac.Sum(m.sum[:0])), nil
}

// Decode verifies a cookie value and fills s. It returns ErrSessionInvalid
// for anything not signed by one of the codec's keys and ErrSessionExpired
// for a genuine session past its expiry. On success it allocates once, for
// the string fields.
func (c *SessionCodec) Decode(value string, now time.Time, s *Session) error {
	if len(value) > maxSessionCookie {
		return ErrSessionInvalid
	}
	dot := strings.IndexByte(value, '.')
	if dot < 0 {
		return ErrSessionInvalid
	}
	enc, sig := value[:dot], value[dot+1:]
	if base64.RawURLEncoding.DecodedLen(len(sig)) != sha256.Size || len(enc) < base64.RawURLEncoding.EncodedLen(sessionHeaderLen) {
		return ErrSessionInvalid
	}
	// The key id is the second payload byte; decoding the first block of
	// four characters yields it without decoding the rest.
	var head [3]byte
	if _, err := base64.RawURLEncoding.Decode(head[:], bytesOf(enc[:4])); err != nil {
		return ErrSessionInvalid
	}
	var k *sessionKey
	for _, cand := range c.keys {
		if cand.id == head[1] {
			k = cand
			break
		}
	}
	if k == nil || head[0] != sessionVersion {
		return ErrSessionInvalid
	}
	m := k.pool.Get().(*macState)
	defer k.pool.Put(m)
	m.mac.Reset()
	m.mac.Write(bytesOf(enc))
	want := m.mac.Sum(m.sum[:0])
	var got [sha256.Size]byte
	if n, err := strictBase64.Decode(got[:], bytesOf(sig)); err != nil || n != sha256.Size {
		return ErrSessionInvalid
	}
	if !hmac.Equal(want, got[:]) {
		return ErrSessionInvalid
	}
	n, err := base64.RawURLEncoding.Decode(m.payload[:], bytesOf(enc))
	if err != nil {
		return ErrSessionInvalid
	}
	p := m.payload[:n]
	expires := int64(binary.BigEndian.Uint64(p[10:]))
	if now.Unix() >= expires {
		return ErrSessionExpired
	}
	// Validate the three length-prefixed fields before allocating.
	rest := p[sessionHeaderLen:]
	var lens [3]int
	off := 0
	for i := range lens {
		if off >= len(rest) {
			return ErrSessionInvalid
		}
		lens[i] = int(rest[off])
		off += 1 + lens[i]
		if off > len(rest) {
			return ErrSessionInvalid
		}
	}
	if off != len(rest) {
		return ErrSessionInvalid
	}
	// One string holds all three fields; the fields are substrings of it.
	all := string(rest)
	s.User = all[1 : 1+lens[0]]
	s.Email = all[2+lens[0] : 2+lens[0]+lens[1]]
	s.Profile = all[3+lens[0]+lens[1]:]
	s.IssuedAt = int64(binary.BigEndian.Uint64(p[2:]))
	s.ExpiresAt = expires
	copy(s.ID[:], p[18:34])
	return nil
}

// strictBase64 decodes signatures. The last of a signature's 43 characters
// carries two unused bits, which the lenient decoder ignores, so without
// Strict every signature would have four spellings that all verify.
var strictBase64 = base64.RawURLEncoding.Strict()

// bytesOf views a string as bytes without copying. Only for read-only use:
// the hash and base64 decoders read their input and keep no reference.
func bytesOf(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
