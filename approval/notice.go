package approval

import (
	"context"
	"io"
	"time"

	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/approval/mailtemplate"
	"github.com/mailauth/caddy-mailauth/mailer"
)

// Failed-login notices are grouped per manager and user: within
// noticeWindow of a notice, further failures are only counted, and the next
// notice says how many there were. A manager gets one mail, not a storm.
const (
	noticeWindow = 15 * time.Minute
	noticeMemory = 24 * time.Hour
)

type noticeRecord struct {
	LastSent   time.Time `json:"last_sent"`
	Suppressed int       `json:"suppressed"`
	// Message and Repeats identify the notice last let through, so that
	// its retries are neither counted nor suppressed.
	Message string `json:"message,omitempty"`
	Repeats int    `json:"repeats,omitempty"`
}

// How a failed login ended, as a failed-login notice says it. Each is a
// catalogue key under "outcome.", so the notice words it in its language.
const (
	OutcomeDenied      = "denied"
	OutcomeExpired     = "expired"
	OutcomeRateLimited = "rate_limited"
	OutcomeCodeLocked  = "code_locked"
	OutcomeNotMe       = "not_me"
)

// notices is the component that tells managers of failed logins: at once
// for a deny or a lockout, scheduled for an expiry, grouped per manager and
// user so that a storm of failures is one mail. It needs the profiles (who
// asked for notices), its templates, the store's records (KV) for the
// grouping and the mail queue.
//
// The Service embeds it; BeforeSend, which sends a scheduled notice only
// for a login that did expire, is the Service's, as it reads the login.
type notices struct {
	profiles  map[string]*Profile
	templates *mailtemplate.Templates
	kv        KV
	mail      MailQueue
	audit     *Auditor
	log       *zap.Logger
	now       func() time.Time
	rand      io.Reader
	// language and brand word and mark every notice: they go to managers,
	// in the deployment's language (see Config.DefaultLanguage).
	language string
	brand    mailtemplate.Brand
}

// notifyFailed tells the user's manager at once that a login failed (one
// of the Outcome constants), when the login's profile asks for it with
// notify_failed_login.
func (s *notices) notifyFailed(ctx context.Context, l *Login, outcome string) {
	if !s.wantsNotice(l) {
		return
	}
	msg, err := s.renderNotice(l, outcome, 0)
	if err != nil {
		s.log.Error("rendering a failed-login notice", zap.String("reference", l.Reference), zap.Error(err))
		return
	}
	send, repeats, err := s.groupNotice(ctx, l, msg.ID)
	if err != nil {
		s.log.Error("grouping a failed-login notice", zap.String("reference", l.Reference), zap.Error(err))
		return
	}
	if !send {
		s.audit.Record(EventNoticeQueued, l, Detail{Outcome: outcome, Grouped: true})
		return
	}
	if repeats > 0 {
		if msg, err = s.renderNotice(l, outcome, repeats); err != nil {
			return
		}
	}
	if err := s.mail.Enqueue(ctx, msg); err != nil {
		s.audit.Record(EventMailFailed, l, Detail{Reason: "outbox", Err: err})
		return
	}
	s.audit.Record(EventNoticeQueued, l, Detail{Outcome: outcome, To: l.ManagerEmail, Repeats: Some(repeats)})
}

// scheduleExpiryNotice queues the notice for a login that may expire
// undecided. It waits in the outbox until the login's expiry; the outbox's
// BeforeSend hook then sends it only if nobody decided, so expiry needs no
// sweeper and survives restarts.
func (s *notices) scheduleExpiryNotice(ctx context.Context, l *Login) {
	if !s.wantsNotice(l) {
		return
	}
	msg, err := s.renderNotice(l, OutcomeExpired, 0)
	if err != nil {
		s.log.Error("rendering a failed-login notice", zap.String("reference", l.Reference), zap.Error(err))
		return
	}
	msg.NotBefore, msg.Tag = l.ExpiresAt, scheduleTag(purposeExpiryNotice, l.ID)
	if err := s.mail.Enqueue(ctx, msg); err != nil {
		s.audit.Record(EventMailFailed, l, Detail{Reason: "outbox", Err: err})
	}
}

func (s *notices) wantsNotice(l *Login) bool {
	p := s.profiles[l.Profile]
	return p != nil && p.NotifyFailedLogin && l.ManagerEmail != ""
}

// groupNotice decides whether the notice msgID goes out now and how many
// grouped failures it reports. A retry of the same notice is let through
// without being counted again.
func (s *notices) groupNotice(ctx context.Context, l *Login, msgID string) (send bool, repeats int, err error) {
	now := s.now()
	id := hashSecret(l.ManagerEmail + "\x00" + l.Username)
	err = noticeGroups.update(ctx, s.kv, id, noticeMemory, func(r *noticeRecord, found bool) error {
		switch {
		case found && r.Message == msgID:
			send, repeats = true, r.Repeats
		case found && now.Sub(r.LastSent) < noticeWindow:
			send = false
			r.Suppressed++
		default:
			send, repeats = true, r.Suppressed
			*r = noticeRecord{LastSent: now, Message: msgID, Repeats: repeats}
		}
		return nil
	})
	return send, repeats, err
}

func (s *notices) renderNotice(l *Login, outcome string, repeats int) (*mailer.Message, error) {
	p := s.profiles[l.Profile]
	msg, err := compose(s.rand, s.templates, mailtemplate.Data{
		User:        mailtemplate.User{Name: l.Name, Username: l.Username, Email: l.Email},
		App:         l.App,
		ClientIP:    l.ClientIP,
		Browser:     DescribeBrowser(l.UserAgent),
		RequestedAt: l.CreatedAt,
		ExpiresAt:   l.ExpiresAt,
		Reference:   l.Reference,
		Outcome:     outcome,
		Repeats:     repeats,
		// A notice goes to the manager: the deployment's language (see
		// Config.DefaultLanguage).
		Language: s.language,
		Brand:    s.brand,
	}, l.ManagerEmail, p.MailServers)
	if err != nil {
		return nil, err
	}
	// A notice carries no link, so it stays worth sending for a day.
	msg.ExpiresAt = maxTime(s.now(), l.ExpiresAt).Add(noticeMemory)
	// Nobody waits on a notice; in a burst the sign-in links go first.
	msg.Notice = true
	return msg, nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
