package approval

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/store"
)

// SharedLimiter applies a Limit across every instance that shares a store,
// so that N instances behind a load balancer do not grant N times each
// limit. It counts events in fixed windows of the limit's length and
// estimates the rolling count as the current window's plus the previous
// one's, weighted by how much of it still overlaps the rolling window (the
// sliding-window counter). It may let a few events more through at a window
// edge than an exact count would, never many.
//
// Each Allow costs a store read and a compare-and-swap. Keys are hashed, so
// the store holds no client address or identity in the clear.
type SharedLimiter struct {
	limit  Limit
	store  store.Store
	name   string
	now    func() time.Time
	logger *zap.Logger
}

// sharedLimitTimeout bounds the store work of one Allow.
const sharedLimitTimeout = 2 * time.Second

var errOverLimit = errors.New("approval: over the limit")

// NewSharedLimiter returns a limiter for l whose counts live in st under
// the given name. now nil means time.Now.
func NewSharedLimiter(l Limit, st store.Store, name string, now func() time.Time, logger *zap.Logger) *SharedLimiter {
	if now == nil {
		now = time.Now
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	return &SharedLimiter{limit: l, store: st, name: name, now: now, logger: logger}
}

// Limit returns the limit that l applies.
func (l *SharedLimiter) Limit() Limit { return l.limit }

// Allow implements RateLimiter. When the store fails, the event is
// allowed and a warning logged: whatever the caller does next goes to the
// same store, and fails closed there.
func (l *SharedLimiter) Allow(key string) bool {
	if l.limit.Unlimited() {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), sharedLimitTimeout)
	defer cancel()
	base, window, overlap := l.slot(key)
	prev, err := l.count(ctx, base, window-1)
	if err != nil {
		l.logger.Warn("reading a shared rate limit; allowing", zap.String("limit", l.name), zap.Error(err))
		return true
	}
	// Each window's counter lives two windows: long enough to be the
	// next one's previous.
	err = l.store.Update(ctx, base+strconv.FormatInt(window, 10), 2*l.limit.Per, func(cur []byte, found bool) ([]byte, error) {
		n := 0
		if found && len(cur) == 8 {
			n = int(binary.BigEndian.Uint64(cur))
		}
		if float64(prev)*overlap+float64(n) >= float64(l.limit.Events) {
			return nil, errOverLimit
		}
		return binary.BigEndian.AppendUint64(nil, uint64(n+1)), nil
	})
	switch {
	case err == nil:
		return true
	case errors.Is(err, errOverLimit):
		return false
	}
	l.logger.Warn("counting a shared rate limit; allowing", zap.String("limit", l.name), zap.Error(err))
	return true
}

// RetryAfter implements RateLimiter: the time until the sliding-window
// estimate drops below the limit if no event is counted meanwhile. When
// the store fails it returns zero, as Allow then allows.
func (l *SharedLimiter) RetryAfter(key string) time.Duration {
	if l.limit.Unlimited() {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), sharedLimitTimeout)
	defer cancel()
	base, window, overlap := l.slot(key)
	prev, err := l.count(ctx, base, window-1)
	if err != nil {
		return 0
	}
	cur, err := l.count(ctx, base, window)
	if err != nil {
		return 0
	}
	events, per := float64(l.limit.Events), float64(l.limit.Per)
	if float64(prev)*overlap+float64(cur) < events {
		return 0
	}
	if cur < l.limit.Events {
		// Within this window, once enough of the previous one has slid
		// out: prev·(1-f) < events-cur.
		need := 1 - (events-float64(cur))/float64(prev)
		return time.Duration((need - (1 - overlap)) * per)
	}
	// Only in the next window, where this one is the previous: the wait
	// is the rest of this window and the share of the next one after
	// which cur·(1-g) < events.
	return time.Duration(overlap*per + (1-events/float64(cur))*per)
}

// slot returns the common prefix of key's counters, the number of the
// current window and how much of the previous window the rolling window
// still covers.
func (l *SharedLimiter) slot(key string) (base string, window int64, overlap float64) {
	now := l.now().UnixNano()
	per := int64(l.limit.Per)
	return l.base(key), now / per, 1 - float64(now%per)/float64(per)
}

// count reads the counter of one window; a missing one is zero.
func (l *SharedLimiter) count(ctx context.Context, base string, window int64) (int, error) {
	raw, err := l.store.Get(ctx, base+strconv.FormatInt(window, 10))
	switch {
	case err == nil && len(raw) == 8:
		return int(binary.BigEndian.Uint64(raw)), nil
	case err == nil, errors.Is(err, store.ErrNotFound):
		return 0, nil
	}
	return 0, err
}

// base is the prefix of key's counters.
func (l *SharedLimiter) base(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "ratelimit/" + l.name + "/" + hex.EncodeToString(sum[:16]) + "/"
}

// Refund implements RefundableLimiter: it takes one event off the current
// window's count, or off the previous window's when the event was counted
// before the window turned. A store failure loses the refund, which only
// errs on the strict side.
func (l *SharedLimiter) Refund(key string) {
	if l.limit.Unlimited() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), sharedLimitTimeout)
	defer cancel()
	window := l.now().UnixNano() / int64(l.limit.Per)
	base := l.base(key)
	for _, w := range []int64{window, window - 1} {
		err := l.store.Update(ctx, base+strconv.FormatInt(w, 10), 2*l.limit.Per, func(cur []byte, found bool) ([]byte, error) {
			if !found || len(cur) != 8 || binary.BigEndian.Uint64(cur) == 0 {
				return nil, errNothingCounted
			}
			return binary.BigEndian.AppendUint64(nil, binary.BigEndian.Uint64(cur)-1), nil
		})
		if err == nil {
			return
		}
		if !errors.Is(err, errNothingCounted) {
			l.logger.Warn("refunding a shared rate limit", zap.String("limit", l.name), zap.Error(err))
			return
		}
	}
}

var errNothingCounted = errors.New("approval: nothing counted in this window")

// NewSharedRateLimiters returns limiters for r whose counts live in st.
func NewSharedRateLimiters(r RateLimits, st store.Store, now func() time.Time, logger *zap.Logger) *RateLimiters {
	return &RateLimiters{
		LoginIP:       NewSharedLimiter(r.LoginPerIP, st, "login_per_ip", now, logger),
		LoginIdentity: NewSharedLimiter(r.LoginPerIdentity, st, "login_per_identity", now, logger),
		RedeemIP:      NewSharedLimiter(r.RedeemPerIP, st, "redeem_per_ip", now, logger),
		Manager:       NewSharedLimiter(r.MailsPerManager, st, "mails_per_manager", now, logger),
		OpenIP:        NewSharedLimiter(r.OpenPerIP, st, "open_per_ip", now, logger),
		CodeFailures:  NewSharedLimiter(r.CodeFailuresPerIdentity, st, "code_failures_per_identity", now, logger),
	}
}
