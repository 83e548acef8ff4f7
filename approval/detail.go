package approval

import (
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Detail is what an audit event says beyond its login. Each field has one
// key in the audit line and in the stored record; a field left at its
// zero value is left out, so an event carries only the keys it sets.
//
// Typed fields rather than zap fields let the observer, the trail and the
// flood gate read what they need without looking keys up, and keep the
// audit from ever being handed a field that was not meant for it, such as
// a token.
type Detail struct {
	// Policy is the name of the policy that matched (policy_matched).
	Policy string
	// Profile is the profile the matched policy chose (policy_matched).
	// The line then has "profile" twice, the login's and this one; the
	// stored record keeps this one among its fields.
	Profile string
	// Outcome is why a failed-login notice was queued: one of the Outcome
	// constants.
	Outcome string
	// Grouped says that a notice was folded into one already sent to
	// the same manager rather than mailed.
	Grouped bool
	// Limit names the rate limit that refused a request, such as
	// "login_per_ip".
	Limit string
	// Clients is "many" in a flood summary that stands for the addresses
	// beyond those the flood gate tracks one by one.
	Clients string
	// ClientIP is the client's address for events with no login to carry
	// it. The stored record keeps it as the record's client_ip.
	ClientIP string
	// Server is the mail server an outbox event is about.
	Server string
	// Attempt counts the delivery attempts of a mail, this one included.
	Attempt Optional[int]
	// Code is the SMTP reply code of the mail server's last answer, when
	// it gave one.
	Code int
	// To is the address a mail or notice was sent to, or a login was
	// escalated to.
	To string
	// Repeats counts the failed logins a notice stands for besides its
	// own.
	Repeats Optional[int]
	// MessageID is the outbox's ID of a mail.
	MessageID string
	// NotBefore is when a mail queued for later is sent at the earliest.
	NotBefore time.Time
	// Purpose is why a mail queued for later is sent, such as
	// "escalation".
	Purpose string
	// OK says whether a code that was tried was the right one.
	OK Optional[bool]
	// CodeIP is the address a code was entered from.
	CodeIP string
	// Route is the return URL a step-up was asked for.
	Route string
	// Directory is the name of the directory an event is about.
	Directory string
	// Session is the start of a session's ID in hex: enough for an
	// operator to tell sessions apart, and all the audit needs of it.
	Session string
	// SessionExpires is when an issued session expires.
	SessionExpires time.Time
	// CollectorIP is the address that collected an issued session.
	CollectorIP string
	// StepUp says that an issued session is a step-up of another.
	StepUp bool
	// Grant is the ID of a standing grant.
	Grant string
	// Duration is a grant's duration as the approver was offered it,
	// such as "1 hour": a label, not a number.
	Duration string
	// Action is what a link is for: "approve" or "deny".
	Action string
	// OpenerIP is the address a link was opened from.
	OpenerIP string
	// OpenerUserAgent is the user agent that opened a link.
	OpenerUserAgent string
	// Decider is who approved or denied a login, or tried to.
	Decider string
	// By is how a login was approved (by "code"), or who ended a grant or
	// revoked a session.
	By string
	// Approver is who approved a grant.
	Approver string
	// Until is when a grant ends.
	Until time.Time
	// EndedEarly says that an expired grant had been ended before its
	// time.
	EndedEarly bool
	// Reason says in words why the event happened, such as "not me" or
	// "outbox".
	Reason string
	// DeciderIP is the address a decision came from.
	DeciderIP string
	// DeciderUserAgent is the user agent a decision came from.
	DeciderUserAgent string
	// NoneOfThese says that the decider answered a number match with
	// "none of these".
	NoneOfThese Optional[bool]
	// DecidedBy is who had decided a login before a decision that was
	// refused for it.
	DecidedBy string
	// State is what they had decided: the login's State.
	State string
	// Err is the error that caused the event; the line says its message
	// as zap.Error does.
	Err error
	// Count is how many events a folded record stands for (see
	// floodGate); the Auditor sets it.
	Count int
	// Since is when the window of a flood summary began.
	Since time.Time
	// Summary says that a record is a flood summary, written for events
	// folded earlier rather than for one that just happened.
	Summary bool
}

// Optional is a value that an event states even when it is zero: a wrong
// code is "ok": false, a first notice "repeats": 0. A plain Detail field
// at its zero value would leave its key out. The zero Optional says
// nothing.
type Optional[T any] struct {
	v   T
	set bool
}

// Some is an Optional that states v.
func Some[T any](v T) Optional[T] { return Optional[T]{v: v, set: true} }

// Get returns the value and whether there is one.
func (o Optional[T]) Get() (T, bool) { return o.v, o.set }

// MarshalLogObject writes the fields that are set, in the order they are
// declared, each as the zap field that audit lines used to be built of,
// so that lines and stored records keep their keys, types and formatting.
// It has a value receiver so that zap.Inline can take a copy, leaving the
// caller's Detail on its stack.
func (d Detail) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	str := func(k, v string) {
		if v != "" {
			enc.AddString(k, v)
		}
	}
	flag := func(k string, v bool) {
		if v {
			enc.AddBool(k, true)
		}
	}
	num := func(k string, v int) {
		if v != 0 {
			enc.AddInt64(k, int64(v))
		}
	}
	// zap.Time, not enc.AddTime: it encodes a time as it did, including
	// one beyond what Unix nanoseconds can hold.
	at := func(k string, v time.Time) {
		if !v.IsZero() {
			zap.Time(k, v).AddTo(enc)
		}
	}
	str("policy", d.Policy)
	str("profile", d.Profile)
	str("outcome", d.Outcome)
	flag("grouped", d.Grouped)
	str("limit", d.Limit)
	str("clients", d.Clients)
	str("client_ip", d.ClientIP)
	str("server", d.Server)
	if v, ok := d.Attempt.Get(); ok {
		enc.AddInt64("attempt", int64(v))
	}
	num("code", d.Code)
	str("to", d.To)
	if v, ok := d.Repeats.Get(); ok {
		enc.AddInt64("repeats", int64(v))
	}
	str("message_id", d.MessageID)
	at("not_before", d.NotBefore)
	str("purpose", d.Purpose)
	if v, ok := d.OK.Get(); ok {
		enc.AddBool("ok", v)
	}
	str("code_ip", d.CodeIP)
	str("route", d.Route)
	str("directory", d.Directory)
	str("session", d.Session)
	at("session_expires", d.SessionExpires)
	str("collector_ip", d.CollectorIP)
	flag("step_up", d.StepUp)
	str("grant", d.Grant)
	str("duration", d.Duration)
	str("action", d.Action)
	str("opener_ip", d.OpenerIP)
	str("opener_user_agent", d.OpenerUserAgent)
	str("decider", d.Decider)
	str("by", d.By)
	str("approver", d.Approver)
	at("until", d.Until)
	flag("ended_early", d.EndedEarly)
	str("reason", d.Reason)
	str("decider_ip", d.DeciderIP)
	str("decider_user_agent", d.DeciderUserAgent)
	if v, ok := d.NoneOfThese.Get(); ok {
		enc.AddBool("none_of_these", v)
	}
	str("decided_by", d.DecidedBy)
	str("state", d.State)
	if d.Err != nil {
		// zap.Error, for the same keys: "error", and "errorVerbose" for
		// an error that formats itself with more.
		zap.Error(d.Err).AddTo(enc)
	}
	num("count", d.Count)
	at("since", d.Since)
	flag("summary", d.Summary)
	return nil
}

// Interface guards
var _ zapcore.ObjectMarshaler = Detail{}
