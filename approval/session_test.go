package approval

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var sessionNow = time.Date(2025, 3, 4, 10, 42, 0, 0, time.UTC)

func testSession() *Session {
	s := &Session{
		ID:        [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		User:      "alice",
		Email:     "alice@example.com",
		Directory: "corp",
		IssuedAt:  sessionNow.Unix(),
		ExpiresAt: sessionNow.Add(8 * time.Hour).Unix(),
	}
	s.AddApproval(Approval{Profile: "daily", Type: TypeUser, At: sessionNow.Unix(), Until: sessionNow.Add(8 * time.Hour).Unix()}, sessionNow.Unix())
	return s
}

// steppedUpSession is testSession with a manager's grant and policy
// memberships: the longest cookie a usual session carries.
func steppedUpSession() *Session {
	s := testSession()
	s.Policies, s.PolicyEpoch = policyBits([]int{1, 6}), 0xdeadbeef
	s.AddApproval(Approval{Profile: "sensitive", Type: TypeManager, Approver: "dave@example.com", At: sessionNow.Unix(), Until: sessionNow.Add(time.Hour).Unix(), Grant: GrantID{9, 8, 7, 6, 5, 4, 3, 2}}, sessionNow.Unix())
	return s
}

func mustCodec(t testing.TB, keys ...[]byte) *SessionCodec {
	t.Helper()
	c, err := NewSessionCodec(keys...)
	if err != nil {
		t.Fatalf("NewSessionCodec: %v", err)
	}
	return c
}

func mustEncode(t testing.TB, c *SessionCodec, s *Session) string {
	t.Helper()
	v, err := c.Encode(s)
	if err != nil {
		t.Fatalf("Encode(%+v): %v", s, err)
	}
	return v
}

// signRaw builds a cookie over an arbitrary payload with key, the way
// Encode does, so tests can reach the checks made after the signature.
func signRaw(key, payload []byte) string {
	enc := base64.RawURLEncoding.EncodeToString(payload)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(enc))
	return enc + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func keyID(key []byte) byte {
	sum := sha256.Sum256(key)
	return sum[0]
}

// rawPayload lays out a session payload by hand: the header with n
// approvals, then the fields, each with its length byte. Approvals are
// given as their raw bytes in fields.
func rawPayload(version, id byte, issued, expires int64, n byte, fields ...string) []byte {
	p := make([]byte, sessionHeaderLen)
	p[0], p[1] = version, id
	binary.BigEndian.PutUint64(p[2:], uint64(issued))
	binary.BigEndian.PutUint64(p[10:], uint64(expires))
	p[38] = n
	for _, f := range fields {
		p = append(p, byte(len(f)))
		p = append(p, f...)
	}
	return p
}

// rawApproval is a user approval's fixed part, to follow it with its
// profile and approver fields.
func rawApproval(at, until uint32) []byte {
	b := []byte{approvalUser}
	b = binary.BigEndian.AppendUint32(b, at)
	return binary.BigEndian.AppendUint32(b, until)
}

func TestSessionRoundTrip(t *testing.T) {
	c := mustCodec(t, testKey(1))
	want := testSession()
	v := mustEncode(t, c, want)
	var got Session
	if err := c.Decode(v, sessionNow, &got); err != nil {
		t.Fatalf("Decode of a fresh cookie: %v", err)
	}
	if got != *want {
		t.Errorf("Decode(Encode(s)) = %+v, want %+v", got, *want)
	}
}

func TestSessionRoundTripKeepsEmptyAndMaximalFields(t *testing.T) {
	c := mustCodec(t, testKey(1))
	long := strings.Repeat("x", maxSessionField)
	full := &Session{User: long, Email: long, Directory: long, Policies: long, ExpiresAt: sessionNow.Unix() + 1}
	for i := range MaxApprovals {
		full.AddApproval(Approval{Profile: long[:250] + strconv.Itoa(i), Type: TypeManager, Approver: long, At: 1, Until: math.MaxUint32, Grant: GrantID{byte(i)}}, 0)
	}
	one := &Session{User: "ünïcödé", Email: "a.b", Directory: "d", ExpiresAt: sessionNow.Unix() + 1}
	one.AddApproval(Approval{Profile: "p", Type: TypeUser}, 0)
	for _, s := range []*Session{
		{ExpiresAt: sessionNow.Unix() + 1},
		{User: long, Email: long, Directory: long, Policies: long, ExpiresAt: sessionNow.Unix() + 1},
		one,
		steppedUpSession(),
	} {
		v := mustEncode(t, c, s)
		if len(v) > maxSessionCookie {
			t.Errorf("a cookie with fields of %d bytes is %d bytes long, more than Decode accepts (%d)", len(s.User), len(v), maxSessionCookie)
		}
		var got Session
		if err := c.Decode(v, sessionNow, &got); err != nil {
			t.Errorf("Decode of session with fields %q/%q/%q: %v", s.User, s.Email, s.Directory, err)
			continue
		}
		if got != *s {
			t.Errorf("round trip changed the session: got %+v, want %+v", got, *s)
		}
	}
}

func TestSessionEncodeIsDeterministic(t *testing.T) {
	c := mustCodec(t, testKey(1))
	if a, b := mustEncode(t, c, testSession()), mustEncode(t, c, testSession()); a != b {
		t.Errorf("encoding one session twice gave %q and %q", a, b)
	}
}

func TestSessionCookieIsCookieSafe(t *testing.T) {
	v := mustEncode(t, mustCodec(t, testKey(1)), testSession())
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			t.Fatalf("cookie %q holds %q at %d, which needs quoting in a cookie", v, c, i)
		}
	}
}

func TestSessionTamperingWithAnyByteIsInvalid(t *testing.T) {
	c := mustCodec(t, testKey(1))
	v := mustEncode(t, c, testSession())
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \n\x00\xff"
	for i := 0; i < len(v); i++ {
		for j := 0; j < len(alphabet); j++ {
			if alphabet[j] == v[i] {
				continue
			}
			tampered := v[:i] + string(alphabet[j]) + v[i+1:]
			var s Session
			if err := c.Decode(tampered, sessionNow, &s); !errors.Is(err, ErrSessionInvalid) {
				part := "payload"
				if i > strings.IndexByte(v, '.') {
					part = "signature"
				}
				t.Fatalf("changing %s byte %d from %q to %q: Decode returned %v, want ErrSessionInvalid", part, i, v[i], alphabet[j], err)
			}
		}
	}
}

func TestSessionTamperedFieldsAreInvalidEvenWhenReencodedCleanly(t *testing.T) {
	c := mustCodec(t, testKey(1))
	v := mustEncode(t, c, testSession())
	enc, sig, _ := strings.Cut(v, ".")
	p, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		t.Fatal(err)
	}
	// Turn "alice" into "admin" and push the expiry out a year, keeping the
	// old signature.
	copy(p[sessionHeaderLen+1:], "admin")
	binary.BigEndian.PutUint64(p[10:], uint64(sessionNow.AddDate(1, 0, 0).Unix()))
	forged := base64.RawURLEncoding.EncodeToString(p) + "." + sig
	var s Session
	if err := c.Decode(forged, sessionNow, &s); !errors.Is(err, ErrSessionInvalid) {
		t.Errorf("a payload rewritten to another user under the old signature: Decode returned %v, want ErrSessionInvalid", err)
	}
}

func TestSessionExpiredIsExpired(t *testing.T) {
	c := mustCodec(t, testKey(1))
	s := testSession()
	v := mustEncode(t, c, s)
	exp := time.Unix(s.ExpiresAt, 0)
	var got Session
	if err := c.Decode(v, exp.Add(-time.Second), &got); err != nil {
		t.Errorf("one second before expiry: Decode returned %v, want success", err)
	}
	if err := c.Decode(v, exp, &got); !errors.Is(err, ErrSessionExpired) {
		t.Errorf("at the expiry second: Decode returned %v, want ErrSessionExpired", err)
	}
	if err := c.Decode(v, exp.Add(24*time.Hour), &got); !errors.Is(err, ErrSessionExpired) {
		t.Errorf("a day after expiry: Decode returned %v, want ErrSessionExpired", err)
	}
}

func TestSessionExpiredAndTamperedIsInvalidNotExpired(t *testing.T) {
	c := mustCodec(t, testKey(1))
	v := mustEncode(t, c, testSession())
	tampered := v[:len(v)-2] + flip(v[len(v)-2]) + v[len(v)-1:]
	var s Session
	if err := c.Decode(tampered, sessionNow.AddDate(1, 0, 0), &s); !errors.Is(err, ErrSessionInvalid) {
		t.Errorf("a tampered cookie past its expiry: Decode returned %v, want ErrSessionInvalid (the signature is checked first)", err)
	}
}

// flip returns a different base64url character than c.
func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

func TestSessionSignedByUnknownKeyIsInvalid(t *testing.T) {
	v := mustEncode(t, mustCodec(t, testKey(2)), testSession())
	c := mustCodec(t, testKey(1))
	var s Session
	if err := c.Decode(v, sessionNow, &s); !errors.Is(err, ErrSessionInvalid) {
		t.Errorf("a cookie signed by a key the codec does not have: Decode returned %v, want ErrSessionInvalid", err)
	}
}

func TestSessionSignedByKeyWithSameIDButDifferentSecretIsInvalid(t *testing.T) {
	// Key ids are one byte, so some other key shares an id with ours; a
	// matching id must not stand in for the key.
	ours := testKey(1)
	var impostor []byte
	for n := uint32(0); impostor == nil; n++ {
		k := make([]byte, SessionKeySize)
		binary.BigEndian.PutUint32(k, n)
		if keyID(k) == keyID(ours) && string(k) != string(ours) {
			impostor = k
		}
	}
	v := mustEncode(t, mustCodec(t, impostor), testSession())
	var s Session
	if err := mustCodec(t, ours).Decode(v, sessionNow, &s); !errors.Is(err, ErrSessionInvalid) {
		t.Errorf("a cookie signed by another key with the same id: Decode returned %v, want ErrSessionInvalid", err)
	}
}

func TestSessionKeyRotation(t *testing.T) {
	oldKey, newKey := testKey(1), testKey(2)
	oldCookie := mustEncode(t, mustCodec(t, oldKey), testSession())
	rotated := mustCodec(t, newKey, oldKey)
	var s Session
	if err := rotated.Decode(oldCookie, sessionNow, &s); err != nil {
		t.Errorf("after rotation, a cookie signed by the old key: Decode returned %v, want success", err)
	}
	if s.User != "alice" {
		t.Errorf("after rotation, the old cookie decodes to user %q, want alice", s.User)
	}

	fresh := mustEncode(t, rotated, testSession())
	if err := mustCodec(t, newKey).Decode(fresh, sessionNow, &s); err != nil {
		t.Errorf("a cookie made after rotation does not verify with the new key alone (%v): it must be signed by the first key", err)
	}
	if err := mustCodec(t, oldKey).Decode(fresh, sessionNow, &s); !errors.Is(err, ErrSessionInvalid) {
		t.Errorf("a cookie made after rotation verifies with the old key alone (%v): it must be signed by the new key", err)
	}
	if err := mustCodec(t, newKey).Decode(oldCookie, sessionNow, &s); !errors.Is(err, ErrSessionInvalid) {
		t.Errorf("once the old key is dropped, its cookies still verify (%v)", err)
	}
}

func TestNewSessionCodecRefusesBadKeys(t *testing.T) {
	tests := []struct {
		name string
		keys [][]byte
	}{
		{"no key", nil},
		{"short key", [][]byte{make([]byte, SessionKeySize-1)}},
		{"long key", [][]byte{make([]byte, SessionKeySize+1)}},
		{"empty key", [][]byte{{}}},
		{"second key short", [][]byte{testKey(1), testKey(2)[:16]}},
		{"same key twice", [][]byte{testKey(1), testKey(1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if c, err := NewSessionCodec(tt.keys...); err == nil {
				t.Errorf("NewSessionCodec accepted %d keys (%v) and returned %v, want an error", len(tt.keys), tt.keys, c)
			}
		})
	}
}

func TestNewSessionCodecCopiesItsKeys(t *testing.T) {
	k := testKey(1)
	c := mustCodec(t, k)
	v := mustEncode(t, c, testSession())
	for i := range k {
		k[i] = 0
	}
	var s Session
	if err := c.Decode(v, sessionNow, &s); err != nil {
		t.Errorf("after the caller zeroed its key slice, Decode returned %v: the codec must keep its own copy", err)
	}
}

func TestSessionEncodeRefusesTooLongFields(t *testing.T) {
	c := mustCodec(t, testKey(1))
	long := strings.Repeat("x", maxSessionField+1)
	withApproval := func(a Approval) *Session {
		s := &Session{}
		s.AddApproval(a, 0)
		return s
	}
	for name, s := range map[string]*Session{
		"user":           {User: long},
		"email":          {Email: long},
		"directory":      {Directory: long},
		"policies":       {Policies: long},
		"profile":        withApproval(Approval{Profile: long, Type: TypeUser}),
		"approver":       withApproval(Approval{Profile: "p", Type: TypeManager, Approver: long}),
		"approval type":  withApproval(Approval{Profile: "p"}),
		"time past 2106": withApproval(Approval{Profile: "p", Type: TypeUser, Until: math.MaxUint32 + 1}),
	} {
		if v, err := c.Encode(s); err == nil {
			t.Errorf("Encode with a %s of %d bytes returned %q and no error; a length byte cannot hold it", name, len(long), v)
		}
	}
}

func TestSessionDecodeRefusesMalformedInput(t *testing.T) {
	c := mustCodec(t, testKey(1))
	v := mustEncode(t, c, testSession())
	dot := strings.IndexByte(v, '.')
	tests := map[string]string{
		"empty":                  "",
		"dot":                    ".",
		"two dots":               "..",
		"no dot":                 strings.Replace(v, ".", "", 1),
		"payload only":           v[:dot],
		"payload and dot":        v[:dot+1],
		"signature only":         v[dot:],
		"extra dot":              v + ".",
		"trailing data":          v + "A",
		"padded signature":       v + "=",
		"short payload":          v[:45] + v[dot:],
		"oversized":              strings.Repeat("A", maxSessionCookie) + v[dot:],
		"garbage":                "not a cookie at all",
		"NUL bytes":              strings.Repeat("\x00", len(v)),
		"invalid UTF-8":          strings.Repeat("\xff", len(v)),
		"header with bad base64": "!!!!" + v[4:],
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			var s Session
			if err := c.Decode(in, sessionNow, &s); !errors.Is(err, ErrSessionInvalid) {
				t.Errorf("Decode(%q) = %v, want ErrSessionInvalid", in, err)
			}
		})
	}
}

func TestSessionDecodeRefusesEveryTruncation(t *testing.T) {
	c := mustCodec(t, testKey(1))
	v := mustEncode(t, c, testSession())
	for n := 0; n < len(v); n++ {
		var s Session
		if err := c.Decode(v[:n], sessionNow, &s); !errors.Is(err, ErrSessionInvalid) {
			t.Errorf("Decode of the first %d of %d bytes = %v, want ErrSessionInvalid", n, len(v), err)
		}
	}
}

func TestSessionSignedButMalformedPayloadIsInvalid(t *testing.T) {
	key := testKey(1)
	c := mustCodec(t, key)
	id := keyID(key)
	exp := sessionNow.Add(time.Hour).Unix()
	ap := string(rawApproval(1, 2))
	// A well-formed payload: four strings, then one user approval of
	// profile "p" by nobody (its fixed part, then two length-prefixed
	// strings, written here without the fixed part's length byte).
	good := func() []byte {
		p := rawPayload(sessionVersion, id, 0, exp, 1, "alice", "a@b", "corp", "")
		p = append(p, ap...)
		return append(p, 1, 'p', 0)
	}
	long := rawPayload(sessionVersion, id, 0, exp, 0, "alice", "a@b", "corp", "")
	long[sessionHeaderLen] = 200 // user length runs past the end
	badType := good()
	badType[len(badType)-3-len(ap)] = 'x'
	tests := map[string][]byte{
		"header only":             rawPayload(sessionVersion, id, 0, exp, 0),
		"three strings":           rawPayload(sessionVersion, id, 0, exp, 0, "alice", "a@b", "corp"),
		"five strings":            rawPayload(sessionVersion, id, 0, exp, 0, "alice", "a@b", "corp", "", "x"),
		"length past end":         long,
		"trailing byte":           append(good(), 0),
		"approval missing":        rawPayload(sessionVersion, id, 0, exp, 1, "alice", "a@b", "corp", ""),
		"approval cut short":      good()[:len(good())-1],
		"unknown approval type":   badType,
		"too many approvals":      rawPayload(sessionVersion, id, 0, exp, MaxApprovals+1, "alice", "a@b", "corp", ""),
		"future version":          rawPayload(sessionVersion+1, id, 0, exp, 0, "alice", "a@b", "corp", ""),
		"first version":           rawPayload(1, id, 0, exp, 0, "alice", "a@b", "corp", ""),
		"version zero":            rawPayload(0, id, 0, exp, 0, "alice", "a@b", "corp", ""),
		"shorter than a header":   rawPayload(sessionVersion, id, 0, exp, 0)[:sessionHeaderLen-4],
		"manager without a grant": append(append(rawPayload(sessionVersion, id, 0, exp, 1, "alice", "a@b", "corp", ""), approvalManager, 0, 0, 0, 1, 0, 0, 0, 2), 1, 'p', 0),
	}
	for name, p := range tests {
		t.Run(name, func(t *testing.T) {
			var s Session
			if err := c.Decode(signRaw(key, p), sessionNow, &s); !errors.Is(err, ErrSessionInvalid) {
				t.Errorf("Decode of a correctly signed payload with %s = %v, want ErrSessionInvalid", name, err)
			}
		})
	}
	// The hand-built layout is the real one: the well-formed payload
	// decodes.
	var s Session
	if err := c.Decode(signRaw(key, good()), sessionNow, &s); err != nil {
		t.Fatalf("Decode of a hand-built well-formed payload = %v; the test's layout does not match the codec's", err)
	}
	if s.User != "alice" || s.Email != "a@b" || s.Directory != "corp" || s.ExpiresAt != exp || len(s.Approvals()) != 1 || s.Approvals()[0] != (Approval{Profile: "p", Type: TypeUser, At: 1, Until: 2}) {
		t.Errorf("hand-built payload decoded to %+v", s)
	}
}

func TestSessionDecodeOfAShorterSessionClearsOlderApprovals(t *testing.T) {
	c := mustCodec(t, testKey(1))
	var s Session
	if err := c.Decode(mustEncode(t, c, steppedUpSession()), sessionNow, &s); err != nil {
		t.Fatal(err)
	}
	if err := c.Decode(mustEncode(t, c, testSession()), sessionNow, &s); err != nil {
		t.Fatal(err)
	}
	if s != *testSession() {
		t.Errorf("decoding a one-approval cookie into a session that held two left %+v", s)
	}
}

func TestAddApprovalReplacesTheSameProfileThenTheFirstToEnd(t *testing.T) {
	s := testSession()
	s.AddApproval(Approval{Profile: "daily", Type: TypeUser, Until: 99}, 0)
	if got := s.Approvals(); len(got) != 1 || got[0].Until != 99 {
		t.Fatalf("a second approval of the same profile should replace the first, got %+v", got)
	}
	for i := range MaxApprovals - 1 {
		s.AddApproval(Approval{Profile: "p" + strconv.Itoa(i), Type: TypeUser, Until: int64(200 + i)}, 0)
	}
	s.AddApproval(Approval{Profile: "new", Type: TypeUser, Until: 500}, 0)
	got := s.Approvals()
	if len(got) != MaxApprovals || got[0].Profile != "new" {
		t.Fatalf("a full session should drop the approval that ends first (daily, until 99) for the new one, got %+v", got)
	}
	// At 300 every approval but "new" (until 500) has expired: one of
	// those makes room, never the live one.
	s.AddApproval(Approval{Profile: "newer", Type: TypeUser, Until: 600}, 300)
	held := map[string]bool{}
	for _, a := range s.Approvals() {
		held[a.Profile] = true
	}
	if !held["new"] || !held["newer"] {
		t.Fatalf("at 300, an expired approval should make room rather than the live one; holding %v", held)
	}
}

func TestSessionPolicyBitsSayWhichPoliciesMatched(t *testing.T) {
	s := &Session{Policies: policyBits([]int{1, 6, 12})}
	if s.Policies != "128" {
		t.Errorf("policies 1, 6 and 12 are written %q, want \"128\" (bits 0, 5 and 11 in hex nibbles)", s.Policies)
	}
	for i := range 20 {
		want := i == 1 || i == 6 || i == 12
		if got := s.hasPolicy(&Policy{index: i}); got != want {
			t.Errorf("policy %d: hasPolicy = %v, want %v", i, got, want)
		}
	}
	if (&Session{Policies: "zz"}).hasPolicy(&Policy{index: 1}) {
		t.Error("a malformed bit set matched a policy")
	}
	if policyBits(nil) != "" {
		t.Errorf("no policy is written %q, want empty", policyBits(nil))
	}
}

func TestSessionCodecIsSafeForConcurrentUse(t *testing.T) {
	c := mustCodec(t, testKey(1), testKey(2))
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			for i := range 200 {
				want := testSession()
				want.User = strings.Repeat("u", (g+i)%40)
				v, err := c.Encode(want)
				if err != nil {
					errs <- err
					return
				}
				var got Session
				if err := c.Decode(v, sessionNow, &got); err != nil {
					errs <- err
					return
				}
				if got != *want {
					errs <- errors.New("decoded " + got.User + ", encoded " + want.User)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent encode/decode: %v", err)
	}
}

func FuzzSessionDecode(f *testing.F) {
	key := testKey(1)
	c := mustCodec(f, key)
	v := mustEncode(f, c, testSession())
	dot := strings.IndexByte(v, '.')
	f.Add(v)
	f.Add("")
	f.Add(".")
	f.Add(v[:dot])
	f.Add(v[:dot+1])
	f.Add(v[:len(v)-1])
	f.Add(v[:10] + v[dot:])
	f.Add(v + "=")
	f.Add(strings.Repeat("A", 46) + "." + strings.Repeat("A", 43))
	f.Add(mustEncode(f, c, steppedUpSession()))
	f.Add(signRaw(key, rawPayload(sessionVersion, keyID(key), 0, 1<<40, 0)))
	f.Add(signRaw(key, rawPayload(sessionVersion, keyID(key), 0, 1<<40, 0, "a", "b", "c", "d")))
	f.Add(signRaw(key, rawPayload(sessionVersion, keyID(key), 0, 1, 0, "a", "b", "c", "d")))
	f.Add(mustEncode(f, c, &Session{User: strings.Repeat("x", maxSessionField), ExpiresAt: 1 << 40}))
	f.Fuzz(func(t *testing.T, value string) {
		var s Session
		err := c.Decode(value, sessionNow, &s)
		switch {
		case err == nil:
			// Only the codec's own output verifies, so re-encoding what was
			// decoded must give back the very same cookie.
			again, err := c.Encode(&s)
			if err != nil {
				t.Fatalf("Decode accepted %q but Encode refuses its session %+v: %v", value, s, err)
			}
			if again != value {
				t.Fatalf("Decode accepted %q, which is not the codec's encoding %q of the same session", value, again)
			}
		case errors.Is(err, ErrSessionInvalid), errors.Is(err, ErrSessionExpired):
		default:
			t.Fatalf("Decode(%q) returned %v, want nil, ErrSessionInvalid or ErrSessionExpired", value, err)
		}
	})
}

// BenchmarkSessionDecode verifies a cookie in full, as for the first
// request that carries it.
func BenchmarkSessionDecode(b *testing.B) {
	c := mustCodec(b, testKey(1), testKey(2))
	v := mustEncode(b, c, testSession())
	var s Session
	b.ReportAllocs()
	for b.Loop() {
		if err := c.decode(v, sessionNow, &s); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSessionDecodeCached is Decode of a cookie that verified
// before: every request of a session but its first.
func BenchmarkSessionDecodeCached(b *testing.B) {
	c := mustCodec(b, testKey(1), testKey(2))
	v := mustEncode(b, c, testSession())
	var s Session
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Decode(v, sessionNow, &s); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSessionDecodeSteppedUp decodes a session with a manager's
// grant and policy memberships besides the user's own approval.
func BenchmarkSessionDecodeSteppedUp(b *testing.B) {
	c := mustCodec(b, testKey(1), testKey(2))
	v := mustEncode(b, c, steppedUpSession())
	var s Session
	b.ReportAllocs()
	for b.Loop() {
		if err := c.decode(v, sessionNow, &s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSessionEncode(b *testing.B) {
	c := mustCodec(b, testKey(1), testKey(2))
	s := testSession()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Encode(s); err != nil {
			b.Fatal(err)
		}
	}
}

func TestTheVerifiedCookieCacheMatchesWholeValuesOnly(t *testing.T) {
	c := mustCodec(t, testKey(1))
	v := mustEncode(t, c, testSession())
	var s Session
	if err := c.Decode(v, sessionNow, &s); err != nil {
		t.Fatal(err)
	}
	// The genuine cookie is now cached; any other value, even one that
	// shares its signature or its payload, is verified afresh and fails.
	dot := strings.IndexByte(v, '.')
	for name, other := range map[string]string{
		"payload changed":  v[:5] + flip(v[5]) + v[6:],
		"signature only":   v[dot:],
		"prefix":           v[:len(v)-1],
		"trailing garbage": v + "A",
	} {
		if err := c.Decode(other, sessionNow, &s); !errors.Is(err, ErrSessionInvalid) {
			t.Errorf("%s after the genuine cookie was cached: Decode = %v, want ErrSessionInvalid", name, err)
		}
	}
	// A cached session still expires.
	if err := c.Decode(v, time.Unix(testSession().ExpiresAt, 0), &s); !errors.Is(err, ErrSessionExpired) {
		t.Errorf("a cached session at its expiry: %v, want ErrSessionExpired", err)
	}
	// Another codec (a reload, a rotation) has a cache of its own: a key
	// it lacks does not verify there, whatever the first one saw.
	if err := mustCodec(t, testKey(2)).Decode(v, sessionNow, &s); !errors.Is(err, ErrSessionInvalid) {
		t.Errorf("a cookie cached by one codec verified with another's keys: %v", err)
	}
}

func TestTheVerifiedCookieCacheStaysBounded(t *testing.T) {
	c := mustCodec(t, testKey(1))
	var s Session
	for i := range sessionCacheShards*sessionCacheShardSize + 1000 {
		sess := testSession()
		sess.User = strconv.Itoa(i)
		if err := c.Decode(mustEncode(t, c, sess), sessionNow, &s); err != nil || s.User != sess.User {
			t.Fatalf("cookie %d decoded to %q, %v", i, s.User, err)
		}
	}
	n := 0
	for i := range c.cache.shards {
		n += len(c.cache.shards[i].m)
	}
	if n > sessionCacheShards*sessionCacheShardSize {
		t.Errorf("the cache holds %d cookies, more than its %d", n, sessionCacheShards*sessionCacheShardSize)
	}
}
