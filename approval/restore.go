package approval

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
)

// A link token is taken, and a code used up, before the login they decide
// is changed: that is what makes each work once. When the change then
// fails on a store error, the page says "try again", so the token or code
// is given back. Giving back is safe against a concurrent redemption: it
// only recreates a key that is missing (nothing else ever writes it), and
// the decision itself is a compare-and-swap on the login, so a token given
// back after a change that did commit (its answer was lost) can only meet
// a decided login the second time.

// restoreTimeout bounds a give-back, which runs even when the request
// that needs it has been cancelled.
const restoreTimeout = 5 * time.Second

// redeemFailed reports whether err is the store failing, after which the
// token or code is given back, rather than an answer about the login.
func redeemFailed(err error) bool {
	return err != nil && !errors.Is(err, ErrLoginNotFound) && !errors.Is(err, ErrLoginExpired) && !errors.Is(err, ErrAlreadyDecided)
}

// restoreToken puts a taken link token back. l is its login when it was
// read; otherwise the token lives as long as the longest link could,
// which is harmless, since the login's own expiry is checked on use.
func (s *Service) restoreToken(ctx context.Context, token string, raw []byte, l *Login) {
	ttl := s.longestLink()
	if l != nil {
		ttl = l.ExpiresAt.Sub(s.now())
	}
	if ttl <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), restoreTimeout)
	defer cancel()
	err := s.kv.Update(ctx, links.key(hashSecret(token)), ttl, func(_ []byte, found bool) ([]byte, error) {
		if found {
			return nil, errKept
		}
		return raw, nil
	})
	if err != nil && !errors.Is(err, errKept) {
		s.cfg.Logger.Warn("giving back a link token after a store failure; the link is spent", zap.Error(err))
	}
}

// restoreCode gives back the code of l that takeCode used up (mac is its
// HMAC) and the try it counted.
func (s *Service) restoreCode(ctx context.Context, l *Login, mac string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), restoreTimeout)
	defer cancel()
	err := codes.update(ctx, s.kv, l.ID, 0, func(r *codeRecord, found bool) error {
		if !found || r.MAC != "" {
			return errKept
		}
		r.MAC = mac
		return nil
	})
	if err != nil && !errors.Is(err, errKept) {
		s.cfg.Logger.Warn("giving back a code after a store failure; the code is spent", zap.String("reference", l.Reference), zap.Error(err))
		return
	}
	s.uncountCodeTry(ctx, l)
}

// uncountCodeTry takes back a try that countCodeTry counted for an
// attempt that was never decided.
func (s *Service) uncountCodeTry(ctx context.Context, l *Login) {
	err := codeTryCounts.update(ctx, s.kv, l.ID, 0, func(r *codeTries, found bool) error {
		if !found || r.Tries == 0 {
			return errKept
		}
		r.Tries--
		return nil
	})
	if err != nil && !errors.Is(err, errKept) {
		s.cfg.Logger.Warn("taking back a code try after a store failure", zap.String("reference", l.Reference), zap.Error(err))
	}
}

// errKept ends an update that finds nothing to give back.
var errKept = errors.New("approval: nothing to give back")
