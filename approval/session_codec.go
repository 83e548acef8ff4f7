package approval

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"math"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// The cookie is base64url(payload) "." base64url(HMAC-SHA256(key, first
// part)). The payload is a fixed header, four length-prefixed strings and
// the approvals:
//
//	version(1) keyID(1) issued(8) expires(8) id(16) epoch(4) n(1)
//	len(1) user len(1) email len(1) directory len(1) policies
//	n × { type(1) at(4) until(4) [grant(8) if type manager] len(1) profile len(1) approver }
//
// A binary layout rather than JSON keeps the cookie short, and so the HMAC
// over it cheap, and lets the authenticated path decode it without
// allocating, since it runs on every request to the protected app.
// Approval times are unsigned 32-bit Unix seconds (good until 2106).
const (
	sessionVersion   = 2
	sessionHeaderLen = 1 + 1 + 8 + 8 + 16 + 4 + 1
	maxSessionField  = 255
	maxSessionCookie = 2048
	approvalFixedLen = 1 + 4 + 4
)

// Approval types as one byte in the cookie.
const (
	approvalUser    = 'u'
	approvalManager = 'm'
)

// SessionCodec signs and verifies session cookies. The first key signs; all
// keys verify, so a key can be rotated out without logging everybody off.
type SessionCodec struct {
	keys  []*sessionKey
	cache *sessionCache
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
	c := &SessionCodec{cache: &sessionCache{}}
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
	strs := [...]string{s.User, s.Email, s.Directory, s.Policies}
	size := sessionHeaderLen + len(strs)
	for _, f := range strs {
		if len(f) > maxSessionField {
			return "", fmt.Errorf("approval: session field of %d bytes is too long", len(f))
		}
		size += len(f)
	}
	for _, a := range s.Approvals() {
		if len(a.Profile) > maxSessionField || len(a.Approver) > maxSessionField {
			return "", fmt.Errorf("approval: approval field of %d bytes is too long", max(len(a.Profile), len(a.Approver)))
		}
		if a.At < 0 || a.Until < 0 || a.At > math.MaxUint32 || a.Until > math.MaxUint32 {
			return "", errors.New("approval: approval time out of range")
		}
		if a.Type != TypeUser && a.Type != TypeManager {
			return "", fmt.Errorf("approval: approval type %q", a.Type)
		}
		size += approvalFixedLen + 2 + len(a.Profile) + len(a.Approver) + len(a.Grant)
	}
	k := c.keys[0]
	p := make([]byte, sessionHeaderLen, size)
	p[0] = sessionVersion
	p[1] = k.id
	binary.BigEndian.PutUint64(p[2:], uint64(s.IssuedAt))
	binary.BigEndian.PutUint64(p[10:], uint64(s.ExpiresAt))
	copy(p[18:34], s.ID[:])
	binary.BigEndian.PutUint32(p[34:], s.PolicyEpoch)
	p[38] = s.n
	for _, f := range strs {
		p = append(p, byte(len(f)))
		p = append(p, f...)
	}
	for _, a := range s.Approvals() {
		t := byte(approvalUser)
		if a.Type == TypeManager {
			t = approvalManager
		}
		p = append(p, t)
		p = binary.BigEndian.AppendUint32(p, uint32(a.At))
		p = binary.BigEndian.AppendUint32(p, uint32(a.Until))
		if t == approvalManager {
			p = append(p, a.Grant[:]...)
		}
		p = append(p, byte(len(a.Profile)))
		p = append(p, a.Profile...)
		p = append(p, byte(len(a.Approver)))
		p = append(p, a.Approver...)
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
// for a genuine session past its expiry. A value that verified before is
// answered from the codec's cache without allocating (see session_cache.go).
func (c *SessionCodec) Decode(value string, now time.Time, s *Session) error {
	v, err := c.verify(value, now)
	if err != nil {
		return err
	}
	*s = v.session
	return nil
}

// decode verifies value in full and fills s. On success it allocates once,
// for the string fields.
func (c *SessionCodec) decode(value string, now time.Time, s *Session) error {
	k, enc, sig, ok := c.split(value)
	if !ok {
		return ErrSessionInvalid
	}
	m := k.pool.Get().(*macState)
	defer k.pool.Put(m)
	p, ok := m.open(enc, sig)
	if !ok {
		return ErrSessionInvalid
	}
	expires := int64(binary.BigEndian.Uint64(p[10:]))
	if now.Unix() >= expires {
		return ErrSessionExpired
	}
	rest := p[sessionHeaderLen:]
	var lay sessionLayout
	if !lay.walk(rest, int(p[38])) {
		return ErrSessionInvalid
	}
	lay.fill(s, string(rest))
	s.IssuedAt = int64(binary.BigEndian.Uint64(p[2:]))
	s.ExpiresAt = expires
	copy(s.ID[:], p[18:34])
	s.PolicyEpoch = binary.BigEndian.Uint32(p[34:])
	return nil
}

// split cuts a cookie value into its payload and signature and finds the
// key that signed it, reading only the payload's first block, so that a
// value of the wrong shape or key costs no MAC.
func (c *SessionCodec) split(value string) (k *sessionKey, enc, sig string, ok bool) {
	if len(value) > maxSessionCookie {
		return nil, "", "", false
	}
	dot := strings.IndexByte(value, '.')
	if dot < 0 {
		return nil, "", "", false
	}
	enc, sig = value[:dot], value[dot+1:]
	if base64.RawURLEncoding.DecodedLen(len(sig)) != sha256.Size || len(enc) < base64.RawURLEncoding.EncodedLen(sessionHeaderLen) {
		return nil, "", "", false
	}
	// The key id is the second payload byte; decoding the first block of
	// four characters yields it without decoding the rest.
	var head [3]byte
	if _, err := base64.RawURLEncoding.Decode(head[:], bytesOf(enc[:4])); err != nil || head[0] != sessionVersion {
		return nil, "", "", false
	}
	for _, cand := range c.keys {
		if cand.id == head[1] {
			return cand, enc, sig, true
		}
	}
	return nil, "", "", false
}

// open checks sig over enc and decodes the payload into m's buffer, which
// the result shares.
func (m *macState) open(enc, sig string) ([]byte, bool) {
	m.mac.Reset()
	m.mac.Write(bytesOf(enc))
	want := m.mac.Sum(m.sum[:0])
	var got [sha256.Size]byte
	if n, err := strictBase64.Decode(got[:], bytesOf(sig)); err != nil || n != sha256.Size || !hmac.Equal(want, got[:]) {
		return nil, false
	}
	n, err := base64.RawURLEncoding.Decode(m.payload[:], bytesOf(enc))
	if err != nil {
		return nil, false
	}
	return m.payload[:n], true
}

// sessionLayout is where the variable part of a payload puts its fields:
// the ends of the four strings (user, email, directory, policies) and the
// start of each approval, as offsets into the part after the header.
type sessionLayout struct {
	strEnd [4]int
	apOff  [MaxApprovals]int
	count  int
}

// walk checks that rest holds exactly the four strings and count
// approvals, and records where they are, before anything is allocated.
func (lay *sessionLayout) walk(rest []byte, count int) bool {
	if count > MaxApprovals {
		return false
	}
	lay.count = count
	off := 0
	for i := range lay.strEnd {
		if off = skipField(rest, off); off < 0 {
			return false
		}
		lay.strEnd[i] = off
	}
	for i := range count {
		lay.apOff[i] = off
		if off+approvalFixedLen > len(rest) {
			return false
		}
		switch rest[off] {
		case approvalUser:
			off += approvalFixedLen
		case approvalManager:
			off += approvalFixedLen + len(GrantID{})
		default:
			return false
		}
		for range 2 { // profile, approver
			if off = skipField(rest, off); off < 0 {
				return false
			}
		}
	}
	return off == len(rest)
}

// skipField returns the end of the length-prefixed field at off in b, or
// -1 when it does not fit.
func skipField(b []byte, off int) int {
	if off >= len(b) {
		return -1
	}
	off += 1 + int(b[off])
	if off > len(b) {
		return -1
	}
	return off
}

// fill sets s's strings and approvals from all (the payload after the
// header, as one string, so every field is a substring of one allocation).
func (lay *sessionLayout) fill(s *Session, all string) {
	start := 0
	for i, end := range lay.strEnd {
		v := all[start+1 : end]
		switch i {
		case 0:
			s.User = v
		case 1:
			s.Email = v
		case 2:
			s.Directory = v
		case 3:
			s.Policies = v
		}
		start = end
	}
	for i := range lay.count {
		o := lay.apOff[i]
		a := &s.approvals[i]
		a.Type = TypeUser
		if all[o] == approvalManager {
			a.Type = TypeManager
		}
		a.At = int64(binary.BigEndian.Uint32(bytesOf(all[o+1:])))
		a.Until = int64(binary.BigEndian.Uint32(bytesOf(all[o+5:])))
		o += approvalFixedLen
		a.Grant = GrantID{}
		if a.Type == TypeManager {
			copy(a.Grant[:], all[o:])
			o += len(a.Grant)
		}
		l := int(all[o])
		a.Profile = all[o+1 : o+1+l]
		o += 1 + l
		l = int(all[o])
		a.Approver = all[o+1 : o+1+l]
	}
	for i := lay.count; i < int(s.n); i++ {
		s.approvals[i] = Approval{}
	}
	s.n = uint8(lay.count)
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
