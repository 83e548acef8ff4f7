package approval

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
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
	// ErrCodesPaused: too many wrong codes for this identity across its
	// logins lately (RateLimits.CodeFailuresPerIdentity), so codes are
	// refused for it for a while; its links still work.
	ErrCodesPaused = errors.New("approval: codes paused for this identity")
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
//
// A code is typed on the waiting page, the screen that asked, so number
// matching, which binds a link opened elsewhere to that screen, adds
// nothing to it: a phisher who started the login sees the number there and
// only needs the user to read out the code. Against that the mail warns,
// and code_fallback off (Profile.NoCodeFallback) mails no code at all.
//
// Wrong tries are counted on a record of their own, which every login gets
// on its first try whether its user exists or not, has a code or not (a
// manager profile, an unknown name): each login locks after maxCodeTries
// wrong codes the same way, with the same store work, so neither the
// answers nor their timing tell who has an account or which profile.

const (
	codeDigits   = 6
	maxCodeTries = 5
)

// codeRecord holds a login's code, written with its link tokens.
type codeRecord struct {
	MAC string `json:"mac"`
}

// codeTries counts the tries made on one login.
type codeTries struct {
	Tries int `json:"tries"`
}

// codeLockedBy is the decider recorded on a login locked by wrong codes.
const codeLockedBy = "too many wrong codes"

var (
	errNoCode    = errors.New("approval: no such code")
	errTriesDone = errors.New("approval: no tries left")
)

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
// the one mailed for it. Each wrong code counts; the fifth kills the login,
// and past the identity's budget of wrong codes across logins every code
// is refused with ErrCodesPaused.
func (s *Service) RedeemCode(ctx context.Context, pending, code, clientIP string) error {
	if !s.redeemAllowed(clientIP) {
		return ErrWrongCode
	}
	l, err := s.pendingLogin(ctx, pending)
	if err != nil {
		return err
	}
	// A code pasted from the mail may carry the spaces or dashes a mail
	// client or the reader put between its digits ("398 036").
	code = strings.Map(func(r rune) rune {
		if r == ' ' || r == '-' || r == '\u00a0' || r == '\t' {
			return -1
		}
		return r
	}, code)
	if len(code) != codeDigits || strings.Trim(code, "0123456789") != "" {
		code = "" // malformed: counts as wrong, without a lookup by it
	}
	// Tries are counted before the code is compared, against the login
	// and against the identity's budget across logins, so that concurrent
	// guesses cannot all slip in under either limit; a try that turns out
	// right, or is never compared, is given back.
	budget := strings.ToLower(l.Input)
	if !s.limits.CodeFailures.Allow(budget) {
		s.audit.Record(EventRateLimited, l, Detail{Limit: "code_failures_per_identity", CodeIP: clientIP})
		return ErrCodesPaused
	}
	tries, err := s.countCodeTry(ctx, l)
	if err != nil {
		s.limits.CodeFailures.Refund(budget)
		if errors.Is(err, errTriesDone) {
			if l.State == StatePending {
				// Locked, but the lockout's write failed: apply it again.
				s.lockCodes(ctx, l)
			}
			return ErrCodeLocked
		}
		return err
	}
	mac := s.codeMAC(l.ID, code)
	ok, err := s.takeCode(ctx, l.ID, code, mac)
	if err != nil {
		s.limits.CodeFailures.Refund(budget)
		s.uncountCodeTry(ctx, l)
		return err
	}
	s.audit.Record(EventCodeTried, l, Detail{OK: Some(ok), CodeIP: clientIP})
	if !ok {
		if tries >= maxCodeTries {
			s.lockCodes(ctx, l)
			return ErrCodeLocked
		}
		return ErrWrongCode
	}
	s.limits.CodeFailures.Refund(budget)
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
		if redeemFailed(err) {
			s.restoreCode(ctx, l, mac)
		}
		return err
	}
	s.audit.Record(EventApproved, l, Detail{Decider: l.Email, By: "code", DeciderIP: clientIP})
	return nil
}

// countCodeTry counts one try on l and returns how many there have been,
// or errTriesDone when none was left. The record is made on the first try
// and kept as long as the login can be.
func (s *Service) countCodeTry(ctx context.Context, l *Login) (int, error) {
	ttl := max(l.CreatedAt.Add(s.longestLink()+loginGrace).Sub(s.now()), time.Second)
	var n int
	err := codeTryCounts.update(ctx, s.kv, l.ID, ttl, func(r *codeTries, _ bool) error {
		if r.Tries >= maxCodeTries {
			return errTriesDone
		}
		r.Tries++
		n = r.Tries
		return nil
	})
	return n, err
}

// takeCode uses up the code of login id if it is code (mac is its HMAC)
// and reports whether it was. A login without a code (no such user, a
// manager profile, code_fallback off) costs the same single update as a
// wrong code.
func (s *Service) takeCode(ctx context.Context, id, code, mac string) (bool, error) {
	err := codes.update(ctx, s.kv, id, 0, func(r *codeRecord, found bool) error {
		if !found || code == "" || r.MAC == "" || !hmac.Equal([]byte(r.MAC), []byte(mac)) {
			return errNoCode
		}
		r.MAC = "" // single use
		return nil
	})
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, errNoCode), errors.Is(err, store.ErrNotFound):
		return false, nil
	}
	return false, err
}

// lockCodes ends a login whose tries are used up: it is denied, as an
// approver's deny would, and the manager gets the failed-login notice if
// the profile asks for one. The notice goes out in the background, so
// that the answer takes as long for a user who has a manager (or exists)
// as for one who has not.
func (s *Service) lockCodes(ctx context.Context, l *Login) {
	now := s.now()
	var locked Login
	err := s.updateLogin(ctx, l.ID, func(cur *Login) error {
		if cur.State != StatePending {
			return ErrAlreadyDecided
		}
		cur.State, cur.DecidedAt, cur.Decider, cur.Ended = StateDenied, now, codeLockedBy, EndedCodeLocked
		locked = *cur
		return nil
	})
	if err != nil {
		if !errors.Is(err, ErrAlreadyDecided) {
			s.cfg.Logger.Error("locking a login after wrong codes", zap.String("reference", l.Reference), zap.Error(err))
		}
		return
	}
	s.audit.Record(EventDenied, &locked, Detail{Decider: codeLockedBy})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.LookupTimeout)
		defer cancel()
		s.notifyFailed(ctx, &locked, OutcomeCodeLocked)
	}()
}

// keepCodeLockout runs once dispatch has written l with its user filled
// in. That write is blind, so it undoes a lockout that came while the
// directory was being asked; the lockout is read back after it and
// applied again. (A lockout after this read finds the written login.)
func (s *Service) keepCodeLockout(ctx context.Context, l *Login) {
	r, err := codeTryCounts.get(ctx, s.kv, l.ID)
	if err != nil || r.Tries < maxCodeTries {
		return // no try yet, or the store failed: then so did the write
	}
	s.lockCodes(ctx, l)
}

// longestLink is the longest link lifetime of any profile.
func (s *Service) longestLink() time.Duration {
	var d time.Duration
	for _, p := range s.cfg.Profiles {
		d = max(d, p.LinkExpiration)
	}
	return d
}

// newCode makes the login's one-time code and the store entry that keeps
// its HMAC until the link expires.
func (s *Service) newCode(l *Login, ttl time.Duration) (string, store.Entry, error) {
	code, err := newOneTimeCode(s.rand)
	if err != nil {
		return "", store.Entry{}, err
	}
	entry, err := codes.entry(l.ID, &codeRecord{MAC: s.codeMAC(l.ID, code)}, ttl)
	return code, entry, err
}
