package mailer

import (
	"context"
	"testing"
	"time"
)

func TestScheduledMessageWaitsForItsTimeThenSends(t *testing.T) {
	h := newHarness(t, &fakeSender{})
	run(t, h.o)
	m := h.message("later")
	m.NotBefore = h.clock.Now().Add(10 * time.Minute)
	h.enqueue(t, m)
	time.Sleep(50 * time.Millisecond)
	if n := len(h.sender.calls()); n != 0 {
		t.Fatalf("a message scheduled in 10 minutes was sent at once (%d calls)", n)
	}
	h.clock.Advance(10 * time.Minute)
	expectKind(t, h.ev.next(t), EventSent, 1)
}

func TestBeforeSendCanDropOrRewriteAScheduledMessage(t *testing.T) {
	h := newHarness(t, &fakeSender{})
	h.o.BeforeSend(func(_ context.Context, m *Message) (bool, error) {
		if m.Tag == "escalation" {
			return false, nil
		}
		m.Subject = "rewritten"
		return true, nil
	})
	run(t, h.o)
	esc := h.message("esc")
	esc.Tag = "escalation"
	h.enqueue(t, esc)
	expectKind(t, h.ev.next(t), EventSkipped, 0)
	notice := h.message("notice")
	notice.Tag = "notice"
	h.enqueue(t, notice)
	expectKind(t, h.ev.next(t), EventSent, 1)
	calls := h.sender.calls()
	if len(calls) != 1 || calls[0].ID != "notice" || calls[0].Subject != "rewritten" {
		t.Fatalf("only the notice, as rewritten by the hook, should be sent; got %+v", calls)
	}
	plain := h.message("plain")
	h.enqueue(t, plain)
	expectKind(t, h.ev.next(t), EventSent, 1)
	if got := h.sender.calls()[1].Subject; got != plain.Subject {
		t.Fatalf("a message without a tag must not pass through the hook; subject %q", got)
	}
}
