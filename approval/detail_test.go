package approval

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/mailauth/caddy-mailauth/store"
)

// detailCases pair a Detail with the zap fields that audit lines were
// built of before it, for the shapes of detail that events have.
var detailCases = []struct {
	name   string
	detail Detail
	fields []zap.Field
}{
	{"nothing", Detail{}, nil},
	{"code tried wrong", Detail{OK: Some(false), CodeIP: "192.0.2.1"},
		[]zap.Field{zap.Bool("ok", false), zap.String("code_ip", "192.0.2.1")}},
	{"first notice", Detail{Outcome: OutcomeDenied, To: "carol@example.com", Repeats: Some(0)},
		[]zap.Field{zap.String("outcome", OutcomeDenied), zap.String("to", "carol@example.com"), zap.Int("repeats", 0)}},
	{"mail retry", Detail{Server: "primary", Attempt: Some(2), Code: 451, To: "bob@example.com", MessageID: "m1", Err: errors.New("451 try later")},
		[]zap.Field{zap.String("server", "primary"), zap.Int("attempt", 2), zap.Int("code", 451), zap.String("to", "bob@example.com"), zap.String("message_id", "m1"), zap.Error(errors.New("451 try later"))}},
	{"match failed", Detail{Decider: "bob@example.com", DeciderIP: "192.0.2.2", NoneOfThese: Some(false)},
		[]zap.Field{zap.String("decider", "bob@example.com"), zap.String("decider_ip", "192.0.2.2"), zap.Bool("none_of_these", false)}},
	{"session issued", Detail{Session: "0123456789abcdef", SessionExpires: time.Unix(1_900_000_000, 0), CollectorIP: "192.0.2.1", StepUp: true},
		[]zap.Field{zap.String("session", "0123456789abcdef"), zap.Time("session_expires", time.Unix(1_900_000_000, 0)), zap.String("collector_ip", "192.0.2.1"), zap.Bool("step_up", true)}},
	{"decision refused", Detail{Reason: "already decided", Action: actionApprove, Decider: "bob@example.com", DeciderIP: "192.0.2.2", DecidedBy: "carol@example.com", State: string(StateDenied)},
		[]zap.Field{zap.String("reason", "already decided"), zap.String("action", actionApprove), zap.String("decider", "bob@example.com"), zap.String("decider_ip", "192.0.2.2"), zap.String("decided_by", "carol@example.com"), zap.String("state", string(StateDenied))}},
	{"flood summary", Detail{Limit: "open_per_ip", Clients: "many", Count: 7, Since: time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC), Summary: true},
		[]zap.Field{zap.String("limit", "open_per_ip"), zap.String("clients", "many"), zap.Int("count", 7), zap.Time("since", time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)), zap.Bool("summary", true)}},
	{"every field", Detail{
		Policy: "execs", Profile: "sensitive", Outcome: OutcomeExpired, Grouped: true, Limit: "login_per_ip", Clients: "many", ClientIP: "192.0.2.1",
		Server: "primary", Attempt: Some(1), Code: 250, To: "a@example.com", Repeats: Some(3), MessageID: "m2",
		NotBefore: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), Purpose: purposeEscalation, OK: Some(true), CodeIP: "192.0.2.3",
		Route: "/ledger", Directory: "staff", Session: "fedcba9876543210", SessionExpires: time.Date(2030, 1, 3, 0, 0, 0, 0, time.UTC), CollectorIP: "192.0.2.4", StepUp: true,
		Grant: "g1", Duration: "1 hour", Action: actionDeny, OpenerIP: "192.0.2.5", OpenerUserAgent: "ua/1", Decider: "bob@example.com", By: "code",
		Approver: "carol@example.com", Until: time.Date(2030, 1, 2, 4, 0, 0, 0, time.UTC), EndedEarly: true, Reason: "not me",
		DeciderIP: "192.0.2.6", DeciderUserAgent: "ua/2", NoneOfThese: Some(true), DecidedBy: "dave@example.com", State: string(StateApproved),
		Err: errors.New("down"), Count: 2, Since: time.Date(2030, 1, 2, 3, 0, 0, 0, time.UTC), Summary: true,
	}, []zap.Field{
		zap.String("policy", "execs"), zap.String("profile", "sensitive"), zap.String("outcome", OutcomeExpired), zap.Bool("grouped", true), zap.String("limit", "login_per_ip"), zap.String("clients", "many"), zap.String("client_ip", "192.0.2.1"),
		zap.String("server", "primary"), zap.Int("attempt", 1), zap.Int("code", 250), zap.String("to", "a@example.com"), zap.Int("repeats", 3), zap.String("message_id", "m2"),
		zap.Time("not_before", time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)), zap.String("purpose", purposeEscalation), zap.Bool("ok", true), zap.String("code_ip", "192.0.2.3"),
		zap.String("route", "/ledger"), zap.String("directory", "staff"), zap.String("session", "fedcba9876543210"), zap.Time("session_expires", time.Date(2030, 1, 3, 0, 0, 0, 0, time.UTC)), zap.String("collector_ip", "192.0.2.4"), zap.Bool("step_up", true),
		zap.String("grant", "g1"), zap.String("duration", "1 hour"), zap.String("action", actionDeny), zap.String("opener_ip", "192.0.2.5"), zap.String("opener_user_agent", "ua/1"), zap.String("decider", "bob@example.com"), zap.String("by", "code"),
		zap.String("approver", "carol@example.com"), zap.Time("until", time.Date(2030, 1, 2, 4, 0, 0, 0, time.UTC)), zap.Bool("ended_early", true), zap.String("reason", "not me"),
		zap.String("decider_ip", "192.0.2.6"), zap.String("decider_user_agent", "ua/2"), zap.Bool("none_of_these", true), zap.String("decided_by", "dave@example.com"), zap.String("state", string(StateApproved)),
		zap.Error(errors.New("down")), zap.Int("count", 2), zap.Time("since", time.Date(2030, 1, 2, 3, 0, 0, 0, time.UTC)), zap.Bool("summary", true),
	}},
}

// jsonLine encodes fields as the audit logger's JSON encoder does.
func jsonLine(t *testing.T, fields []zap.Field) []byte {
	t.Helper()
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	buf, err := enc.EncodeEntry(zapcore.Entry{Message: "m"}, fields)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(buf.Bytes())
}

func TestDetailLogsTheKeysTypesAndFormattingOfTheZapFieldsItReplaced(t *testing.T) {
	for _, c := range detailCases {
		t.Run(c.name, func(t *testing.T) {
			// The line, as operators and their log pipelines read it.
			got, want := jsonLine(t, []zap.Field{zap.Inline(c.detail)}), jsonLine(t, c.fields)
			var g, w map[string]any
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatalf("the line is not JSON: %v: %s", err, got)
			}
			if err := json.Unmarshal(want, &w); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(g, w) {
				t.Errorf("the line says\n%s\nwant\n%s", got, want)
			}
			// In memory, as the observer in tests and auditRecord see it:
			// the same Go types (int64, time.Time), not just the same JSON.
			gm, wm := zapcore.NewMapObjectEncoder(), zapcore.NewMapObjectEncoder()
			zap.Inline(c.detail).AddTo(gm)
			for _, f := range c.fields {
				f.AddTo(wm)
			}
			if !reflect.DeepEqual(gm.Fields, wm.Fields) {
				t.Errorf("the fields are %#v, want %#v", gm.Fields, wm.Fields)
			}
		})
	}
}

// oldAuditRecord is how auditRecord built a record from zap fields before
// Detail, kept to show that records are stored as they were.
func oldAuditRecord(now time.Time, ev Event, l *Login, extra []zap.Field) AuditRecord {
	r := AuditRecord{Time: now.UTC(), Event: ev}
	if l != nil {
		r.Reference, r.User, r.Profile, r.Site, r.ClientIP, r.UserAgent = l.Reference, l.Username, l.Profile, l.App, l.ClientIP, l.UserAgent
		if r.User == "" {
			r.User = l.Input
		}
	}
	if len(extra) > 0 {
		enc := zapcore.NewMapObjectEncoder()
		for _, f := range extra {
			f.AddTo(enc)
		}
		if ip, ok := enc.Fields["client_ip"].(string); ok && r.ClientIP == "" {
			r.ClientIP = ip
			delete(enc.Fields, "client_ip")
		}
		if len(enc.Fields) > 0 {
			r.Fields = enc.Fields
		}
	}
	return r
}

func TestStoredAuditRecordsAreEncodedAsBeforeDetail(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, l := range []*Login{nil, {Reference: "REF-1", Username: "alice", Profile: "daily", App: "app.example.com", ClientIP: "192.0.2.9", UserAgent: "ua"}} {
		for _, c := range detailCases {
			newRec, oldRec := auditRecord(now, EventRateLimited, l, &c.detail), oldAuditRecord(now, EventRateLimited, l, c.fields)
			newRec.Seq, oldRec.Seq, newRec.Prev, oldRec.Prev = 5, 5, "prev", "prev"
			got, err := encodeAuditRecord(&newRec)
			if err != nil {
				t.Fatal(err)
			}
			want, err := encodeAuditRecord(&oldRec)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s (login %v): stored as\n%s\nbefore Detail it was\n%s", c.name, l != nil, got, want)
			}
		}
	}
}

func TestATrailStoredFromZapFieldsVerifiesWithRecordsFromDetailsAfterIt(t *testing.T) {
	log := newMemLog()
	var old []AuditRecord
	for _, c := range detailCases {
		old = append(old, oldAuditRecord(time.Now(), EventDecisionRefused, nil, c.fields))
	}
	if err := log.Append(t.Context(), AuditLog, time.Hour, func(last *store.LogRecord) ([][]byte, error) {
		return chainRecords(last, old)
	}); err != nil {
		t.Fatal(err)
	}
	trail := NewAuditTrail(log, time.Hour, zap.NewNop())
	t.Cleanup(trail.Close)
	a := NewAuditor(nil)
	a.Persist(trail, nil)
	for _, c := range detailCases {
		a.Record(EventDecisionRefused, nil, c.detail)
	}
	if err := trail.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	rep := verify(t, log)
	if want := 2 * len(detailCases); rep.Records != want || len(rep.Problems) != 0 {
		t.Fatalf("report = %+v; want %d intact records, the older ones stored from zap fields", rep, want)
	}
}
