package approval

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"
)

// Sessions: handing an approved login's session to its browser, and
// checking, refreshing and ending sessions.

// Completed is a session handed to the browser that started the login.
type Completed struct {
	// Cookie is the signed session cookie value.
	Cookie string
	// Session is what the cookie holds.
	Session Session
	// ReturnURL is where the browser goes next.
	ReturnURL string
}

// ErrStepUpSession: a step-up was approved, but the browser collecting it
// no longer holds the session it was asked for (it signed out, or it is
// another browser).
var ErrStepUpSession = errors.New("approval: the step-up's session is not this browser's")

// Complete hands the session of an approved login to the browser holding
// its pending cookie, once: the login becomes completed. A sign-in gets a
// new session; a step-up adds its approval to current, the session it
// was asked for, which the browser must still hold.
func (s *Service) Complete(ctx context.Context, pending, clientIP string, current *Session) (*Completed, error) {
	l, err := s.pendingLogin(ctx, pending)
	if err != nil {
		return nil, err
	}
	if l.StepUpOf != "" && (current == nil || hex.EncodeToString(current.ID[:]) != l.StepUpOf) {
		return nil, ErrStepUpSession
	}
	now := s.now()
	err = s.updateLogin(ctx, l.ID, func(cur *Login) error {
		switch cur.EffectiveState(now) {
		case StateApproved:
			cur.State = StateCompleted
			return nil
		case StatePending:
			return ErrNotApproved
		case StateExpired:
			return ErrLoginExpired
		case StateDenied:
			return ErrDenied
		default:
			return ErrAlreadyDecided
		}
	})
	if err != nil {
		return nil, err
	}
	c := &Completed{ReturnURL: l.ReturnURL}
	if l.StepUpOf != "" {
		c.Session = *current
	} else {
		if _, err := io.ReadFull(s.rand, c.Session.ID[:]); err != nil {
			return nil, fmt.Errorf("approval: reading randomness: %w", err)
		}
		c.Session.IssuedAt = now.Unix()
		c.Session.ExpiresAt = now.Add(s.cfg.SessionLifetime).Unix()
		if idle := s.cfg.IdleTimeout; idle > 0 && idle < s.cfg.SessionLifetime {
			c.Session.ExpiresAt = now.Add(idle).Unix()
		}
	}
	sess := &c.Session
	sess.User, sess.Email, sess.Directory = l.Username, l.Email, l.Directory
	sess.Policies, sess.PolicyEpoch = l.Policies, s.policyEpoch
	sess.AddApproval(s.approvalOf(l, sess), now.Unix())
	c.Cookie, err = s.cfg.Codec.Encode(sess)
	if err != nil {
		return nil, err
	}
	d := Detail{Session: fmt.Sprintf("%x", sess.ID[:8]), SessionExpires: time.Unix(sess.ExpiresAt, 0), CollectorIP: clientIP}
	if l.StepUpOf != "" {
		d.StepUp = true
	} else {
		s.recordSession(ctx, l, sess, clientIP)
	}
	s.audit.Record(EventSessionIssued, l, d)
	return c, nil
}

// approvalOf is the approval an approved login gives its session: a
// manager's grant until its time, or the user's own approval for as long
// as the session may live.
func (s *Service) approvalOf(l *Login, sess *Session) Approval {
	a := Approval{Profile: l.Profile, Type: TypeUser, At: l.DecidedAt.Unix(), Until: sess.IssuedAt + int64(s.cfg.SessionLifetime/time.Second)}
	if l.Type == TypeManager {
		a.Type, a.Approver = TypeManager, l.Decider
		if !l.GrantUntil.IsZero() {
			a.Until = min(a.Until, l.GrantUntil.Unix())
		}
		a.Grant, _ = ParseGrantID(l.Grant)
	}
	return a
}

// VerifySession checks a session cookie value. It does no store I/O.
// A revoked session is refused from memory, and every session while the
// revocations have not been read (ErrRevocationsUnread).
func (s *sessions) VerifySession(value string, sess *Session) error {
	if err := s.codec.Decode(value, s.now(), sess); err != nil {
		return err
	}
	return s.revoked.check(sess)
}

// RefreshSession slides a session's idle deadline: once less than half of
// the idle timeout is left, it returns a new cookie that expires a full
// idle timeout from now, never past the session's absolute lifetime. It
// returns "" when no refresh is due, which is almost always, so the
// authenticated path rarely pays for an encode.
func (s *sessions) RefreshSession(sess *Session) string {
	idle := s.idle
	if idle <= 0 {
		return ""
	}
	now := s.now()
	hard := time.Unix(sess.IssuedAt, 0).Add(s.lifetime)
	left := time.Unix(sess.ExpiresAt, 0).Sub(now)
	if left > idle/2 || !hard.After(time.Unix(sess.ExpiresAt, 0)) {
		return ""
	}
	next := *sess
	next.ExpiresAt = minTime(now.Add(idle), hard).Unix()
	cookie, err := s.codec.Encode(&next)
	if err != nil {
		return ""
	}
	*sess = next
	return cookie
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// Logout ends a session everywhere: it is revoked in the store as well as
// cleared from the browser by the caller.
func (s *Service) Logout(ctx context.Context, sess *Session, site, clientIP, userAgent string) error {
	err := s.RevokeSession(ctx, sess)
	s.audit.Record(EventLogout, &Login{Username: sess.User, Profile: sess.Profile(), App: site, ClientIP: clientIP, UserAgent: truncate(userAgent, 512)}, Detail{Session: fmt.Sprintf("%x", sess.ID[:8])})
	return err
}
