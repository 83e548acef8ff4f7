package approval

import (
	"context"
	"errors"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/directory"
	"github.com/mailauth/caddy-mailauth/locale"
)

// Starting again, sending again and "This wasn't me": the ways a login
// ends other than by an approver, each leaving both the waiting page and
// the link's landing page able to say what happened and what to do next.

// NoneOfThese is the match value of the landing page's "None of these"
// choice: the opener sees no number that the screen that asked shows.
// It approves nothing, as any wrong number.
const NoneOfThese = "none"

// ResendCooldown is how long after a login starts its waiting page may
// send the mail again. Sending again starts a new login, so it is also
// counted by the limits of a login start (login_per_ip, and
// login_per_identity in the background).
const ResendCooldown = 60 * time.Second

// ResendTooSoonError refuses a send-again within ResendCooldown of the
// login's start. It depends on the login's age alone, never on its user.
type ResendTooSoonError struct {
	// Wait is how long until sending again is allowed.
	Wait time.Duration
}

func (e *ResendTooSoonError) Error() string {
	return "approval: sent again too soon; wait " + e.Wait.Round(time.Second).String()
}

// ErrNotResendable: the login cannot be sent again from its waiting page
// (a step-up, which its own page asks for, or one no longer pending).
var ErrNotResendable = errors.New("approval: this login cannot be sent again")

// ResendIn is how long the waiting page of a login created at created
// must wait before it may send again.
func (s *Service) ResendIn(created time.Time) time.Duration {
	return max(0, created.Add(ResendCooldown).Sub(s.now()))
}

// endLogin ends the pending login id as denied, with why (an Ended
// constant) and who; it reports the login as ended and whether it was
// still pending, so that only the request that ended it audits it.
func (s *Service) endLogin(ctx context.Context, id, decider, why string) (*Login, bool) {
	now := s.now()
	var ended Login
	err := s.updateLogin(ctx, id, func(cur *Login) error {
		if cur.EffectiveState(now) != StatePending {
			return ErrAlreadyDecided
		}
		cur.State, cur.DecidedAt, cur.Decider, cur.Ended = StateDenied, now, decider, why
		ended = *cur
		return nil
	})
	if err != nil {
		if !errors.Is(err, ErrAlreadyDecided) && !errors.Is(err, ErrLoginNotFound) {
			s.cfg.Logger.Error("ending a login", zap.String("reason", why), zap.Error(err))
		}
		return nil, false
	}
	return &ended, true
}

// Replace ends the pending login that the pending cookie names, because
// its browser starts a new one: the older mail's link then says it was
// replaced instead of asking for a number no screen shows. It costs the
// same store work whether or not the login's user exists.
func (s *Service) Replace(ctx context.Context, pending string) {
	l, err := s.pendingLogin(ctx, pending)
	if err != nil || l.StepUpOf != "" {
		return
	}
	if ended, ok := s.endLogin(ctx, l.ID, "replaced by a new sign-in", EndedReplaced); ok {
		s.audit.Record(EventReplaced, ended, Detail{})
	}
}

// Resend starts the login again for the same input and return path, from
// the waiting page of the login that the pending cookie names, and
// replaces that one. It is a login start like any other: the same limits
// count it, the same answer and timing whether or not the user exists.
func (s *Service) Resend(ctx context.Context, req StartRequest, pending string) (*Started, error) {
	l, err := s.pendingLogin(ctx, pending)
	if err != nil {
		return nil, err
	}
	if l.StepUpOf != "" || l.State != StatePending {
		return nil, ErrNotResendable
	}
	if wait := s.ResendIn(l.CreatedAt); wait > 0 {
		return nil, &ResendTooSoonError{Wait: wait}
	}
	req.Input, req.ReturnURL = l.Input, l.ReturnURL
	started, err := s.Start(ctx, req)
	if err != nil {
		return nil, err
	}
	s.Replace(ctx, pending)
	return started, nil
}

// NotMeRequest is the POST of "This wasn't me" on a user's own link page.
type NotMeRequest struct {
	// Token is the link's token.
	Token string
	// ClientIP and UserAgent describe who said so.
	ClientIP, UserAgent string
}

// NotMe denies the login that a user's own link would confirm, because
// its user says they did not ask: the token is spent, the waiting page
// shows the sign-in stopped, the audit says "not me", and the manager
// gets the failed-login notice where the profile asks for one. Like
// Confirm it takes the token, so it works once.
func (s *Service) NotMe(ctx context.Context, req NotMeRequest) (*LinkView, error) {
	if !validSecret(req.Token) {
		return nil, ErrLinkInvalid
	}
	if !s.redeemAllowed(req.ClientIP) {
		return nil, ErrLinkInvalid
	}
	rec, err := s.linkRecord(ctx, req.Token)
	if err != nil {
		return nil, err
	}
	l, err := s.getLogin(ctx, rec.LoginID)
	if errors.Is(err, ErrLoginNotFound) {
		return nil, ErrLinkInvalid
	}
	if err != nil {
		return nil, err
	}
	if l.Type == TypeManager || rec.Action != actionApprove {
		// An approver has Deny for this.
		return nil, ErrLinkInvalid
	}
	if _, err := s.kv.Take(ctx, links.key(hashSecret(req.Token))); err != nil {
		return nil, ErrLinkInvalid
	}
	decider := rec.Recipient
	if decider == "" {
		decider = l.Email
	}
	ended, ok := s.endLogin(ctx, l.ID, decider, EndedNotMe)
	if !ok {
		cur, err := s.getLogin(ctx, l.ID)
		if err != nil {
			return nil, ErrLinkInvalid
		}
		return s.linkView(cur, rec), ErrAlreadyDecided
	}
	s.audit.Record(EventDenied, ended, Detail{Decider: decider, Reason: "not me", DeciderIP: req.ClientIP, DeciderUserAgent: truncate(req.UserAgent, 512)})
	s.notifyFailed(ctx, ended, OutcomeNotMe)
	return s.linkView(ended, rec), nil
}

// languageOf is the user's own language from the directory, as a
// shipped catalogue's tag, or "" when the entry names none of them.
func (s *Service) languageOf(id *directory.Identity) string {
	attr := s.cfg.LanguageAttribute
	if attr == "" || id == nil {
		return ""
	}
	for k, vs := range id.Attributes {
		if !strings.EqualFold(k, attr) {
			continue
		}
		for _, v := range vs {
			if tag := locale.Normalize(v); tag != "" {
				return tag
			}
		}
	}
	return ""
}
