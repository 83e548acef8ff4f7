package approval

import (
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
)

// Auditor writes one structured line per event. It never takes a token,
// code or password: nothing it is given can carry one, since it reads only
// the named fields of a Login.
type Auditor struct {
	log *zap.Logger
}

// NewAuditor writes audit lines to log, which should be named
// "mailauth.audit" so operators can route it apart from diagnostics.
func NewAuditor(log *zap.Logger) *Auditor {
	if log == nil {
		log = zap.NewNop()
	}
	return &Auditor{log: log}
}

// Record writes ev for login l (which may be nil) with extra fields.
func (a *Auditor) Record(ev Event, l *Login, extra ...zap.Field) {
	ce := a.log.Check(zap.InfoLevel, string(ev))
	if ce == nil {
		return
	}
	fields := make([]zap.Field, 0, 8+len(extra))
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
	ce.Write(append(fields, extra...)...)
}
