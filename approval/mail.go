package approval

import (
	"io"
	"strings"

	"github.com/mailauth/caddy-mailauth/approval/mailtemplate"
	"github.com/mailauth/caddy-mailauth/mailer"
)

// link builds a landing-page link on the profile's server. A decision
// link also carries the other token of its pair, so the landing page can
// offer both buttons; each token still does only its own action.
func link(p *Profile, token, pair string) string {
	u := strings.TrimRight(p.Server, "/") + VerifyPath + "?token=" + token
	if pair != "" {
		u += "&pair=" + pair
	}
	return u
}

func (s *Service) renderApprovalMail(l *Login, p *Profile, recipient string, tokens map[string]string, escalatedFrom, code string) (*mailer.Message, error) {
	data := mailtemplate.Data{
		Link:        link(p, tokens[actionApprove], tokens[actionDeny]),
		User:        mailtemplate.User{Name: l.Name, Username: l.Username, Email: l.Email},
		App:         l.App,
		ClientIP:    l.ClientIP,
		Browser:     DescribeBrowser(l.UserAgent),
		RequestedAt: l.CreatedAt,
		ExpiresAt:   l.ExpiresAt,
		Reference:   l.Reference,
		Code:        code,
		Language:    s.cfg.DefaultLanguage,
		Brand:       s.cfg.Brand,
		StepUp:      l.StepUpOf != "",
		Route:       l.ReturnURL,
		Reason:      l.Reason,
	}
	if recipient == l.Email && l.Language != "" {
		// The user's own mail, in the user's own language. A mail to an
		// approver stays in the deployment's: the approver's language
		// would cost a second directory lookup, and the user's is theirs.
		data.Language = l.Language
	}
	if deny := tokens[actionDeny]; deny != "" {
		data.DenyLink = link(p, deny, tokens[actionApprove])
		data.Approver = recipient
		data.EscalatedFrom = escalatedFrom
	}
	msg, err := compose(s.rand, p.Templates, data, recipient, p.MailServers)
	if err != nil {
		return nil, err
	}
	msg.ExpiresAt = l.ExpiresAt
	return msg, nil
}

// compose renders data with tpl into a message to recipient through
// servers, under a fresh random id and data's reference.
func compose(rand io.Reader, tpl *mailtemplate.Templates, data mailtemplate.Data, recipient string, servers []string) (*mailer.Message, error) {
	subject, text, html, err := tpl.Render(data)
	if err != nil {
		return nil, err
	}
	id, err := newSecret(rand, 16)
	if err != nil {
		return nil, err
	}
	return &mailer.Message{
		ID: id, Servers: servers, To: recipient,
		Subject: subject, Text: text, HTML: html,
		Reference: data.Reference,
	}, nil
}

// MailEvent turns outbox events into audit lines. Wire it as the outbox's
// event callback.
func (s *Service) MailEvent(ev mailer.Event) {
	var kind Event
	switch ev.Kind {
	case mailer.EventSkipped:
		// A scheduled mail that no longer matters; BeforeSend, which
		// decided that, has nothing to report.
		return
	case mailer.EventDeferred:
		// Held back by the servers' rates in a burst: nothing was tried,
		// and one record per held mail would flood the trail. Metrics
		// count them; the server's backoff is logged once.
		return
	case mailer.EventSent:
		kind = EventMailSent
	case mailer.EventRetry:
		kind = EventMailRetry
	case mailer.EventAbandoned:
		kind = EventMailAbandoned
	default:
		kind = EventMailFailed
	}
	d := Detail{Server: ev.Server, Attempt: Some(ev.Attempt), Code: ev.Code, Err: ev.Err}
	var l *Login
	if ev.Message != nil {
		l = &Login{Reference: ev.Message.Reference}
		d.To, d.MessageID = ev.Message.To, ev.Message.ID
	}
	s.audit.Record(kind, l, d)
}
