package mailer

import (
	"context"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/store"
)

func TestOutboxSendsQueuedSignInLinksBeforeOlderNotices(t *testing.T) {
	db, err := store.OpenBadger(store.BadgerOptions{InMemory: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	sender := &fakeSender{}
	o := NewOutbox(db, sender, zap.NewNop(), nil)
	o.batch = 1 // one at a time, so the order of sends is the order of claims
	o.poll = 5 * time.Millisecond
	ctx := context.Background()
	msg := func(id string, notice bool) *Message {
		return &Message{ID: id, Servers: []string{"primary"}, To: id + "@example.com", Subject: id,
			ExpiresAt: time.Now().Add(time.Hour), Notice: notice}
	}
	// Queued first, so first-in-first-out alone would send them first.
	for _, m := range []*Message{msg("notice1", true), msg("notice2", true), msg("link1", false), msg("link2", false)} {
		if err := o.Enqueue(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	run(t, o)
	waitFor(t, "all four mails to be sent", func() bool { return len(sender.calls()) == 4 })
	var order []string
	for _, m := range sender.calls() {
		order = append(order, m.ID)
	}
	if want := []string{"link1", "link2", "notice1", "notice2"}; !slices.Equal(order, want) {
		t.Errorf("mails went out as %v; want %v: sign-in links before notices, each in queue order", order, want)
	}
}
