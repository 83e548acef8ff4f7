package mailer

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/mailauth/caddy-mailauth/test/mailpit"
)

// outboxOn runs an outbox with a fake queue and clock on real SMTP s.
func outboxOn(t *testing.T, s *SMTP) (*Outbox, events, *fakeClock) {
	t.Helper()
	clock := newFakeClock()
	ev := make(events, 10)
	o := NewOutbox(newFakeQueue(clock), s, zaptest.NewLogger(t), ev.record)
	o.now = clock.Now
	run(t, o)
	return o, ev, clock
}

func TestEventsCarryTheServerAndItsReplyCode(t *testing.T) {
	mp := mailpit.Start(t)
	s := mustSMTP(t, map[string]ServerConfig{"relay": plainServer(mp)})
	o, ev, clock := outboxOn(t, s)
	enqueue := func(id, to string) {
		m := renderedMessage(t, id, to, "relay")
		m.ExpiresAt = clock.Now().Add(15 * time.Minute)
		if err := o.Enqueue(context.Background(), m); err != nil {
			t.Fatalf("Enqueue failed: %v", err)
		}
	}

	enqueue("m1", "judy@example.com")
	if e := ev.next(t); e.Kind != EventSent || e.Server != "relay" || e.Code != 250 {
		t.Errorf("sent event: kind %s server %q code %d, want sent via relay with 250", e.Kind, e.Server, e.Code)
	}

	mp.SetChaos(t, mailpit.Chaos{Recipient: mailpit.ChaosTrigger{ErrorCode: 451, Probability: 100}})
	enqueue("m2", "ken@example.com")
	if e := ev.next(t); e.Kind != EventRetry || e.Server != "relay" || e.Code != 451 {
		t.Errorf("retry event: kind %s server %q code %d (err %v), want retry naming relay with 451", e.Kind, e.Server, e.Code, e.Err)
	}

	mp.SetChaos(t, mailpit.Chaos{Recipient: mailpit.ChaosTrigger{ErrorCode: 550, Probability: 100}})
	enqueue("m3", "lena@example.com")
	for {
		e := ev.next(t)
		if e.Message.ID != "m3" {
			continue // m2's retries
		}
		if e.Kind != EventFailed || e.Server != "relay" || e.Code != 550 {
			t.Errorf("failed event: kind %s server %q code %d (err %v), want failed via relay with 550", e.Kind, e.Server, e.Code, e.Err)
		}
		break
	}
}

func TestRetryEventNamesTheLastServerTriedAndAnUnreachableOneHasNoCode(t *testing.T) {
	s := mustSMTP(t, map[string]ServerConfig{
		"a": {Host: "127.0.0.1", Port: closedPort(t), TLS: TLSNone, From: "a@example.com", Timeout: time.Second},
		"b": {Host: "127.0.0.1", Port: closedPort(t), TLS: TLSNone, From: "a@example.com", Timeout: time.Second},
	})
	o, ev, clock := outboxOn(t, s)
	m := renderedMessage(t, "m1", "mia@example.com", "a", "b")
	m.ExpiresAt = clock.Now().Add(15 * time.Minute)
	if err := o.Enqueue(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	e := ev.next(t)
	if e.Kind != EventRetry || e.Server != "b" || e.Code != 0 {
		t.Errorf("got %s via %q code %d, want a retry naming b, the last server tried, with no reply code", e.Kind, e.Server, e.Code)
	}
	if msg := e.Err.Error(); !strings.Contains(msg, "smtp a:") || !strings.Contains(msg, "smtp b:") {
		t.Errorf("the retry error does not name both servers tried: %v", e.Err)
	}
}
