package approval

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/store"
)

// Errors of number matching and one-time codes.
var (
	// ErrWrongMatch: the person who opened the link picked a number other
	// than the one the waiting browser shows. The link is spent.
	ErrWrongMatch = errors.New("approval: the number picked does not match")
	// ErrWrongCode: the one-time code typed on the waiting page is wrong.
	ErrWrongCode = errors.New("approval: wrong code")
	// ErrCodeLocked: too many wrong codes; the login is dead.
	ErrCodeLocked = errors.New("approval: too many wrong codes")
)

// Number matching: the waiting browser shows a two-digit number and the
// link's landing page asks to pick it from three. Whoever opens a link for
// a login they did not start cannot know it, so a blind click approves
// nothing.

// newMatchCode returns a number from 10 to 99.
func newMatchCode(r io.Reader) (string, error) {
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("approval: reading randomness: %w", err)
	}
	return strconv.Itoa(10 + int(binary.BigEndian.Uint64(b[:])%90)), nil
}

// matchChoices returns the code and two decoys in an order derived from the
// token, so every GET of the landing page shows the same three choices
// without storing anything.
func matchChoices(code, token string) []string {
	seed := sha256.Sum256([]byte("mailauth-match-choices\x00" + token))
	choices := []string{code}
	for i := 0; len(choices) < 3; i++ {
		n := 10 + int(binary.BigEndian.Uint16(seed[2*i%30:]))%90
		d := strconv.Itoa(n)
		if !strings.Contains(strings.Join(choices, ","), d) {
			choices = append(choices, d)
		}
		if i > 64 { // cannot happen with 90 values, but never loop forever
			break
		}
	}
	pos := int(seed[31]) % len(choices)
	choices[0], choices[pos] = choices[pos], choices[0]
	return choices
}

func matches(picked, code string) bool {
	return len(picked) == len(code) && subtle.ConstantTimeCompare([]byte(picked), []byte(code)) == 1
}

// One-time codes: a user's mail also carries a six-digit code that can be
// typed into the waiting page, for mail clients that break or pre-open
// links and for people reading mail elsewhere. Only its HMAC is stored.

const (
	codePrefix   = "code/"
	codeDigits   = 6
	maxCodeTries = 5
)

type codeRecord struct {
	MAC   string `json:"mac"`
	Tries int    `json:"tries"`
}

func newOneTimeCode(r io.Reader) (string, error) {
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("approval: reading randomness: %w", err)
	}
	return fmt.Sprintf("%06d", binary.BigEndian.Uint64(b[:])%1_000_000), nil
}

// codeMAC binds a code to its login under a server key, so a copy of the
// store does not reveal codes by brute force over a million values.
func (s *Service) codeMAC(loginID, code string) string {
	m := hmac.New(sha256.New, s.cfg.CodeKey)
	m.Write([]byte(loginID + "\x00" + code))
	return hex.EncodeToString(m.Sum(nil))
}

// RedeemCode approves the login that the pending cookie names when code is
// the one mailed for it. Each wrong code counts; the fifth kills the login.
func (s *Service) RedeemCode(ctx context.Context, pending, code, clientIP string) error {
	if !s.limits.RedeemIP.Allow(ipKey(clientIP)) {
		s.audit.Record(EventRateLimited, nil, zap.String("limit", "redeem_per_ip"), zap.String("client_ip", clientIP))
		return ErrWrongCode
	}
	l, err := s.pendingLogin(ctx, pending)
	if err != nil {
		return err
	}
	code = strings.TrimSpace(code)
	if len(code) != codeDigits || strings.Trim(code, "0123456789") != "" {
		code = "" // malformed: counts as wrong, without a lookup by it
	}
	var ok, locked bool
	mac := s.codeMAC(l.ID, code)
	err = s.cfg.Store.Update(ctx, codePrefix+l.ID, 0, func(cur []byte, found bool) ([]byte, error) {
		if !found {
			return nil, ErrLinkInvalid
		}
		var r codeRecord
		if err := json.Unmarshal(cur, &r); err != nil {
			return nil, err
		}
		if r.Tries >= maxCodeTries {
			locked = true
			return nil, ErrCodeLocked
		}
		ok = code != "" && hmac.Equal([]byte(r.MAC), []byte(mac))
		if ok {
			r.MAC = "" // single use
		} else {
			r.Tries++
			locked = r.Tries >= maxCodeTries
		}
		return json.Marshal(r)
	})
	switch {
	case errors.Is(err, ErrLinkInvalid), errors.Is(err, store.ErrNotFound):
		s.audit.Record(EventCodeTried, l, zap.Bool("ok", false), zap.String("reason", "no code for this login"))
		return ErrWrongCode
	case errors.Is(err, ErrCodeLocked):
		return ErrCodeLocked
	case err != nil:
		return err
	}
	s.audit.Record(EventCodeTried, l, zap.Bool("ok", ok), zap.String("code_ip", clientIP))
	if !ok {
		if locked {
			now := s.now()
			_ = s.updateLogin(ctx, l.ID, func(cur *Login) error {
				if cur.State == StatePending {
					cur.State, cur.DecidedAt, cur.Decider = StateDenied, now, "too many wrong codes"
				}
				return nil
			})
			s.audit.Record(EventDenied, l, zap.String("decider", "too many wrong codes"))
			return ErrCodeLocked
		}
		return ErrWrongCode
	}
	now := s.now()
	err = s.updateLogin(ctx, l.ID, func(cur *Login) error {
		switch cur.EffectiveState(now) {
		case StatePending:
			cur.State, cur.DecidedAt, cur.Decider = StateApproved, now, cur.Email
			return nil
		case StateExpired:
			return ErrLoginExpired
		}
		return ErrAlreadyDecided
	})
	if err != nil {
		return err
	}
	s.audit.Record(EventApproved, l, zap.String("decider", l.Email), zap.String("by", "code"), zap.String("decider_ip", clientIP))
	return nil
}

// newCode makes the login's one-time code and the store entry that keeps
// its HMAC until the link expires.
func (s *Service) newCode(l *Login, ttl time.Duration) (string, store.Entry, error) {
	code, err := newOneTimeCode(s.rand)
	if err != nil {
		return "", store.Entry{}, err
	}
	rec, _ := json.Marshal(codeRecord{MAC: s.codeMAC(l.ID, code)})
	return code, store.Entry{Key: codePrefix + l.ID, Value: rec, TTL: ttl}, nil
}
