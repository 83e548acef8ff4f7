package approval

import (
	"context"
	"encoding/json"
	"time"

	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/mailer"
)

// Failed-login notices are grouped per manager and user: within
// noticeWindow of a notice, further failures are only counted, and the next
// notice says how many there were. A manager gets one mail, not a storm.
const (
	noticeWindow = 15 * time.Minute
	noticeMemory = 24 * time.Hour
	noticePrefix = "notice/"
)

type noticeRecord struct {
	LastSent   time.Time `json:"last_sent"`
	Suppressed int       `json:"suppressed"`
}

// notifyFailed tells the user's manager that a login failed (outcome:
// "denied", "expired", "rate limited"), when the login's profile asks for
// it with notify_failed_login.
func (s *Service) notifyFailed(ctx context.Context, l *Login, outcome string) {
	p := s.cfg.Profiles[l.Profile]
	if p == nil || !p.NotifyFailedLogin || l.ManagerEmail == "" {
		return
	}
	now := s.now()
	send, repeats := false, 0
	key := noticePrefix + hashSecret(l.ManagerEmail+"\x00"+l.Username)
	err := s.cfg.Store.Update(ctx, key, noticeMemory, func(cur []byte, found bool) ([]byte, error) {
		var r noticeRecord
		if found {
			_ = json.Unmarshal(cur, &r)
		}
		if found && now.Sub(r.LastSent) < noticeWindow {
			send = false
			r.Suppressed++
		} else {
			send, repeats = true, r.Suppressed
			r = noticeRecord{LastSent: now}
		}
		return json.Marshal(r)
	})
	if err != nil {
		s.cfg.Logger.Error("grouping a failed-login notice", zap.String("reference", l.Reference), zap.Error(err))
		return
	}
	if !send {
		s.audit.Record(EventNoticeQueued, l, zap.String("outcome", outcome), zap.Bool("grouped", true))
		return
	}
	subject, text, html, err := s.notice.Render(mailer.TemplateData{
		User:        mailer.TemplateUser{Name: l.Name, Username: l.Username, Email: l.Email},
		App:         l.App,
		ClientIP:    l.ClientIP,
		Browser:     DescribeBrowser(l.UserAgent),
		RequestedAt: l.CreatedAt,
		ExpiresAt:   l.ExpiresAt,
		Reference:   l.Reference,
		Outcome:     outcome,
		Repeats:     repeats,
	})
	if err != nil {
		s.cfg.Logger.Error("rendering a failed-login notice", zap.String("reference", l.Reference), zap.Error(err))
		return
	}
	id, err := newSecret(s.rand, 16)
	if err != nil {
		return
	}
	msg := &mailer.Message{
		ID:      id,
		Servers: p.MailServers,
		To:      l.ManagerEmail,
		Subject: subject,
		Text:    text,
		HTML:    html,
		// A notice carries no link, so it stays worth sending for a day.
		ExpiresAt: now.Add(noticeMemory),
		Reference: l.Reference,
	}
	if err := s.cfg.Mail.Enqueue(ctx, msg); err != nil {
		s.audit.Record(EventMailFailed, l, zap.String("reason", "outbox"), zap.Error(err))
		return
	}
	s.audit.Record(EventNoticeQueued, l, zap.String("outcome", outcome), zap.String("to", l.ManagerEmail), zap.Int("repeats", repeats))
}
