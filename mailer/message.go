// Package mailer delivers the mail that logins depend on: it keeps
// rendered messages in a persistent outbox and sends them through SMTP
// servers with go-mail. The HTTP side only queues; it never waits
// on a mail server.
package mailer

import (
	"encoding/json"
	"time"

	"go.uber.org/zap/zapcore"
)

// Message is one mail in the outbox. It is stored as JSON, so its fields
// must stay backward compatible with messages queued by an older version.
type Message struct {
	// ID is unique per message; it also becomes the Message-ID's local part.
	ID string `json:"id"`
	// Servers names the mail servers to use, in order of preference.
	Servers []string `json:"servers"`
	// To is the recipient's address.
	To string `json:"to"`
	// Subject, Text and HTML are the rendered mail.
	Subject string `json:"subject"`
	Text    string `json:"text"`
	HTML    string `json:"html"`
	// ExpiresAt is when the link in the mail stops working. A message still
	// unsent by then is abandoned: a late link is worse than none.
	ExpiresAt time.Time `json:"expires_at"`
	// Reference is the login's support reference, carried for the audit log.
	Reference string `json:"reference"`
	// NotBefore, when set, holds the message back until then: an
	// escalation, or a notice that a request expired.
	NotBefore time.Time `json:"not_before,omitzero"`
	// Tag is the sender's own label for the message, handed back to the
	// outbox's BeforeSend hook, which decides at send time whether a
	// scheduled message still matters (an escalation after the manager
	// decided does not). The outbox does not read it; a message without
	// one is sent without asking.
	Tag string `json:"tag,omitempty"`
	// Notice marks mail that informs rather than lets someone in (a
	// failed-login notice): in a burst, the outbox sends every due sign-in
	// link and approval request before it. Default: false, which is also
	// what messages queued by older versions read as.
	Notice bool `json:"notice,omitempty"`
}

// UnmarshalJSON reads messages as queued by any version. Those queued
// before Tag carried the login and the purpose in fields of their own;
// they read as the tag their sender now writes for them ("purpose/login"),
// so that an escalation queued before an upgrade is still checked when it
// comes due after it.
func (m *Message) UnmarshalJSON(b []byte) error {
	type fields Message // without this method, so no recursion
	var v struct {
		fields
		LoginID string `json:"login_id"`
		Purpose string `json:"purpose"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*m = Message(v.fields)
	if m.Tag == "" && v.Purpose != "" {
		m.Tag = v.Purpose + "/" + v.LoginID
	}
	return nil
}

// MarshalLogObject logs a message by its envelope only. Text and HTML hold
// the sign-in link, which must never reach a log.
func (m *Message) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("id", m.ID)
	enc.AddString("to", m.To)
	enc.AddString("reference", m.Reference)
	if !m.ExpiresAt.IsZero() {
		enc.AddTime("expires_at", m.ExpiresAt)
	}
	return enc.AddArray("servers", zapcore.ArrayMarshalerFunc(func(arr zapcore.ArrayEncoder) error {
		for _, s := range m.Servers {
			arr.AppendString(s)
		}
		return nil
	}))
}
