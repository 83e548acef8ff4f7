package approval

import (
	"time"

	"go.uber.org/zap"
)

// Event names an audited event. The names are stable: operators alert on
// them.
type Event string

// Audited events.
const (
	EventLoginStarted    Event = "login_started"
	EventUserUnknown     Event = "user_unknown"
	EventDirectoryError  Event = "directory_error"
	EventPolicyMatched   Event = "policy_matched"
	EventMailQueued      Event = "mail_queued"
	EventMailSent        Event = "mail_sent"
	EventMailRetry       Event = "mail_retry"
	EventMailFailed      Event = "mail_failed"
	EventMailAbandoned   Event = "mail_abandoned"
	EventLinkOpened      Event = "link_opened"
	EventLinkRejected    Event = "link_rejected"
	EventApproved        Event = "approved"
	EventDenied          Event = "denied"
	EventDecisionRefused Event = "decision_refused"
	EventNoticeQueued    Event = "notice_queued"
	EventEscalated       Event = "escalated"
	EventMatchFailed     Event = "match_failed"
	EventCodeTried       Event = "code_tried"
	EventRateLimited     Event = "rate_limited"
	EventRevoked         Event = "revoked"
	EventRefreshed       Event = "refreshed"
	EventSessionIssued   Event = "session_issued"
	EventLogout          Event = "logout"
	EventStepUpRequested Event = "stepup_requested"
	EventGrantIssued     Event = "grant_issued"
	EventGrantExpired    Event = "grant_expired"
	EventGrantEnded      Event = "grant_ended"
	EventNoApprover      Event = "no_approver"
	// EventReplaced: a pending login gave way to a new one started by the
	// same browser (start again, send again); its links stop working.
	EventReplaced Event = "replaced"
)

// allEvents are the events the Auditor writes.
var allEvents = []Event{
	EventLoginStarted,
	EventUserUnknown,
	EventDirectoryError,
	EventPolicyMatched,
	EventMailQueued,
	EventMailSent,
	EventMailRetry,
	EventMailFailed,
	EventMailAbandoned,
	EventLinkOpened,
	EventLinkRejected,
	EventApproved,
	EventDenied,
	EventDecisionRefused,
	EventNoticeQueued,
	EventEscalated,
	EventMatchFailed,
	EventCodeTried,
	EventRateLimited,
	EventRevoked,
	EventRefreshed,
	EventSessionIssued,
	EventLogout,
	EventStepUpRequested,
	EventGrantIssued,
	EventGrantExpired,
	EventGrantEnded,
	EventNoApprover,
	EventReplaced,
}

// Auditor writes one structured line per event. It never takes a token,
// code or password: nothing it is given can carry one, since it reads only
// the named fields of a Login and of a Detail.
//
// Events that anyone can cause as fast as they send requests (a rejected
// link, a refusal by a limit keyed on the client's address) are folded: at
// most one line and record per client address, event and minute, with a
// "count" of the events it stands for (see floodGate). The observer still
// sees every one of them.
type Auditor struct {
	log     *zap.Logger
	observe func(Observation)
	trail   *AuditTrail
	now     func() time.Time
	floods  floodGate
}

// Observation is what an observer of the Auditor learns of one event: the
// values metrics may use, and nothing that names a person, address or
// secret. It is passed by value so that Record allocates nothing for it.
type Observation struct {
	// Event is what happened.
	Event Event
	// Profile and Type are the login's profile and its type; Type is empty
	// until the user is found.
	Profile string
	Type    ProfileType
	// CreatedAt is when the login started; DecidedAt when it was approved
	// or denied, if the Login recorded says so. Zero when unknown.
	CreatedAt, DecidedAt time.Time
	// Directory is the event's Detail.Directory, if any.
	Directory string
	// Limit is the Detail.Limit of a rate_limited event.
	Limit string
}

// NewAuditor writes audit lines to log, which should be named
// "mailauth.audit" so operators can route it apart from diagnostics.
func NewAuditor(log *zap.Logger) *Auditor {
	if log == nil {
		log = zap.NewNop()
	}
	return &Auditor{log: log}
}

// Observe makes Record pass every event to f as well, for metrics. Call it
// before the Auditor is used: it is not safe to call concurrently with
// Record.
func (a *Auditor) Observe(f func(Observation)) {
	a.observe = f
}

// Persist makes Record keep every event in trail as well, stamped with
// now (nil: the real clock), which also times the folding of flood-prone
// events. Like Observe, call it before the Auditor is used.
func (a *Auditor) Persist(trail *AuditTrail, now func() time.Time) {
	if now == nil {
		now = time.Now
	}
	a.trail, a.now = trail, now
}

// Record writes ev for login l (which may be nil) with what d says of it.
func (a *Auditor) Record(ev Event, l *Login, d Detail) {
	// The observer runs before the level check so that metrics still count
	// when an operator turns the audit logger off.
	if a.observe != nil {
		a.observe(observation(ev, l, &d))
	}
	now := a.clock()
	for _, s := range a.floods.sweep(now) {
		sd := s.detail()
		a.write(now, s.key.ev, nil, &sd)
	}
	if k, ok := floodProne(ev, l, &d); ok {
		n := a.floods.admit(k, now)
		if n == 0 {
			return
		}
		d.Count = n
	}
	a.write(now, ev, l, &d)
}

func (a *Auditor) clock() time.Time {
	if a.now == nil {
		return time.Now()
	}
	return a.now()
}

// write stores and logs one event.
func (a *Auditor) write(now time.Time, ev Event, l *Login, d *Detail) {
	if a.trail != nil {
		a.trail.add(auditRecord(now, ev, l, d))
	}
	ce := a.log.Check(zap.InfoLevel, string(ev))
	if ce == nil {
		return
	}
	fields := make([]zap.Field, 0, 8)
	fields = append(fields, zap.String("event", string(ev)))
	if l != nil {
		user := l.Username
		if user == "" {
			user = l.Input
		}
		// Events about mail carry only a reference; empty fields are left
		// out rather than logged as "".
		for _, f := range [...]struct{ k, v string }{
			{"reference", l.Reference}, {"user", user}, {"profile", l.Profile},
			{"site", l.App}, {"client_ip", l.ClientIP}, {"user_agent", l.UserAgent},
		} {
			if f.v != "" {
				fields = append(fields, zap.String(f.k, f.v))
			}
		}
	}
	// zap.Inline boxes a copy of *d, on this path only, so that Record
	// allocates nothing for d when the line is not written.
	ce.Write(append(fields, zap.Inline(*d))...)
}

// observation picks out of an event what an observer may see.
func observation(ev Event, l *Login, d *Detail) Observation {
	o := Observation{Event: ev, Directory: d.Directory, Limit: d.Limit}
	if l != nil {
		o.Profile, o.Type, o.CreatedAt, o.DecidedAt = l.Profile, l.Type, l.CreatedAt, l.DecidedAt
	}
	return o
}
