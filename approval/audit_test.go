package approval

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mailauth/caddy-mailauth/mailer"
)

// loggedText renders everything an entry carries, every field included, as
// one string to search.
func loggedText(e observer.LoggedEntry) string {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range e.Context {
		f.AddTo(enc)
	}
	return fmt.Sprintf("%s %s %v", e.LoggerName, e.Message, enc.Fields)
}

func TestAuditNeverLogsTokensOrPendingSecrets(t *testing.T) {
	h := newHarness(t)
	var secrets []string
	keep := func(st *Started, token string) {
		_, secret := pendingParts(t, st.Pending)
		secrets = append(secrets, st.Pending, secret, token)
	}

	// A whole login, with every mistake a user or attacker can make.
	st, token := h.startKnown()
	keep(st, token)
	if _, err := h.svc.OpenLink(bg, token, "", testIP, testUA); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Complete(bg, st.Pending, testIP, nil); !errors.Is(err, ErrNotApproved) {
		t.Fatalf("early Complete = %v", err)
	}
	if _, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA); !errors.Is(err, ErrLinkInvalid) {
		t.Fatalf("second ConfirmLink = %v", err)
	}
	if _, err := h.svc.OpenLink(bg, token, "", testIP, testUA); !errors.Is(err, ErrLinkInvalid) {
		t.Fatalf("OpenLink of a used link = %v", err)
	}
	c, err := h.svc.Complete(bg, st.Pending, testIP, nil)
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, c.Cookie)
	h.svc.Logout(bg, &c.Session, testApp, testIP, testUA)

	// An expired login whose link is used late.
	late, lateToken := h.startKnown()
	keep(late, lateToken)
	h.clock.Advance(testLinkLife)
	if _, err := h.svc.ConfirmLink(bg, lateToken, "", testIP, testUA); err == nil {
		t.Fatal("late ConfirmLink succeeded")
	}
	if _, err := h.svc.Complete(bg, late.Pending, testIP, nil); !errors.Is(err, ErrLoginExpired) {
		t.Fatalf("late Complete = %v", err)
	}

	// An unknown user, and the outbox reporting on the mail that carries
	// the link.
	h.start("mallory@example.com")
	for _, m := range h.mail.Messages() {
		h.svc.MailEvent(mailer.Event{Kind: mailer.EventSent, Message: m, Server: "primary", Attempt: 1})
		h.svc.MailEvent(mailer.Event{Kind: mailer.EventRetry, Message: m, Server: "primary", Attempt: 2, Err: errors.New("451 try later")})
	}

	entries := h.logs.All()
	if len(entries) < 10 {
		t.Fatalf("only %d log entries for a whole session of events; the observer is not wired", len(entries))
	}
	rendered := false
	for _, e := range entries {
		text := loggedText(e)
		rendered = rendered || strings.Contains(text, st.Reference) && strings.Contains(text, testIP)
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("log entry %q carries a secret %.8s…: %s", e.Message, s, text)
			}
			if len(s) == 43 && strings.Contains(text, s[:16]) {
				t.Errorf("log entry %q carries a prefix of a secret: %s", e.Message, text)
			}
		}
	}
	if !rendered {
		t.Fatalf("no log entry shows the login's reference and client IP; loggedText does not render fields, so the scan proves nothing")
	}
	// The stored trail holds the same events: scan its raw records too.
	if err := h.svc.audit.trail.Sync(bg); err != nil {
		t.Fatal(err)
	}
	stored, err := h.store.ReadLog(bg, AuditLog, 0, 10_000)
	if err != nil || len(stored) < 10 {
		t.Fatalf("stored trail: %d records, %v", len(stored), err)
	}
	for _, rec := range stored {
		for _, s := range secrets {
			if strings.Contains(string(rec.Value), s) || len(s) == 43 && strings.Contains(string(rec.Value), s[:16]) {
				t.Errorf("stored audit record %d carries a secret %.8s…: %s", rec.Seq, s, rec.Value)
			}
		}
	}
	for _, ev := range []Event{EventLoginStarted, EventMailQueued, EventLinkOpened, EventApproved, EventLinkRejected, EventSessionIssued, EventLogout, EventUserUnknown, EventMailSent, EventMailRetry} {
		if h.countEvent(ev) == 0 {
			t.Errorf("no %q event was audited; the scan above did not cover it; events: %v", ev, h.auditEvents())
		}
	}
}

func TestAuditLineDescribesTheLogin(t *testing.T) {
	h := newHarness(t)
	st, _ := h.startKnown()
	found := false
	for _, e := range h.logs.FilterMessage(string(EventMailQueued)).All() {
		found = true
		f := e.ContextMap()
		want := map[string]string{
			"event":      string(EventMailQueued),
			"reference":  st.Reference,
			"user":       "alice",
			"profile":    testProfile,
			"site":       testApp,
			"client_ip":  testIP,
			"user_agent": testUA,
			"to":         aliceEmail,
		}
		for k, v := range want {
			if f[k] != v {
				t.Errorf("audit line %q has %s=%v, want %q", e.Message, k, f[k], v)
			}
		}
		if e.Level != zapcore.InfoLevel {
			t.Errorf("audit line %q is logged at %v, want info", e.Message, e.Level)
		}
	}
	if !found {
		t.Fatalf("no %q audit line; events: %v", EventMailQueued, h.auditEvents())
	}
}

func TestAuditNamesUnknownUserByWhatTheyTyped(t *testing.T) {
	h := newHarness(t)
	h.start("mallory@example.com")
	lines := h.logs.FilterMessage(string(EventUserUnknown)).All()
	if len(lines) != 1 {
		t.Fatalf("%d %q lines, want 1", len(lines), EventUserUnknown)
	}
	if u := lines[0].ContextMap()["user"]; u != "mallory@example.com" {
		t.Errorf("%q line names user %v, want the input %q", EventUserUnknown, u, "mallory@example.com")
	}
}

func TestAuditorWithNilLoggerDoesNotPanic(t *testing.T) {
	a := NewAuditor(nil)
	a.Record(EventLoginStarted, &Login{Username: "alice"}, Detail{Reason: "y"})
	a.Record(EventLinkRejected, nil, Detail{})
}

func TestAuditObserverSeesEventsWhenTheLoggerIsOff(t *testing.T) {
	a := NewAuditor(zap.NewNop())
	var got []string
	a.Observe(func(o Observation) {
		got = append(got, fmt.Sprintf("%s/%s/%s/%s", o.Event, o.Profile, o.Directory, o.Limit))
	})
	a.Record(EventLoginStarted, &Login{Profile: "daily", Username: "alice"}, Detail{})
	a.Record(EventRateLimited, &Login{Profile: "daily"}, Detail{Limit: "login_per_ip", ClientIP: "192.0.2.1"})
	a.Record(EventDirectoryError, nil, Detail{Directory: "staff", Err: errors.New("down")})
	want := "login_started/daily// rate_limited/daily//login_per_ip directory_error//staff/"
	if strings.Join(got, " ") != want {
		t.Errorf("observer saw %q, want %q: it must get every event, with its directory and limit, even when nothing is logged", strings.Join(got, " "), want)
	}
}

func TestAuditObserverCostsRecordNoAllocation(t *testing.T) {
	a := NewAuditor(zap.NewNop())
	a.Observe(func(Observation) {})
	l := &Login{Profile: "daily", Username: "alice"}
	allocs := testing.AllocsPerRun(100, func() {
		a.Record(EventRateLimited, l, Detail{Limit: "login_per_ip"})
	})
	if allocs != 0 {
		t.Errorf("Record with an observer and the logger off made %v allocations, want 0", allocs)
	}
}
