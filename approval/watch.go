package approval

import (
	"context"
	"strings"
	"time"
)

// WatchChange is Watch for a long poll: while the login is still in the
// state known, it waits until the state changes, the site's expiry for it
// passes (never the link's own, which would tell the profile), or ctx
// ends, and then answers with the state as it is. Changes reach it through
// the store's Notifier, from any instance sharing the store, so a waiting
// browser asks once per change (or per timeout) rather than every second.
func (s *Service) WatchChange(ctx context.Context, site *Site, pending string, known State) (*LoginView, error) {
	id, _, _ := strings.Cut(pending, ".")
	changed := make(chan struct{}, 1)
	// Subscribe before reading, so a change between the read and the
	// wait is not missed.
	cancel := s.notifier.Subscribe(logins.key(id), func([]byte) {
		select {
		case changed <- struct{}{}:
		default:
		}
	})
	defer cancel()
	v, err := s.Watch(ctx, site, pending)
	if err != nil || v.State != known {
		return v, err
	}
	var expiry <-chan time.Time
	if v.State == StatePending {
		t := time.NewTimer(v.ExpiresAt.Sub(s.now()))
		defer t.Stop()
		expiry = t.C
	}
	select {
	case <-changed:
	case <-expiry:
	case <-ctx.Done():
		return v, nil
	}
	return s.Watch(context.WithoutCancel(ctx), site, pending)
}
