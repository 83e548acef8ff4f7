package approval

import (
	"context"
	"errors"
	"net/mail"
	"slices"
	"strings"

	"github.com/mailauth/caddy-mailauth/directory"
	"github.com/mailauth/caddy-mailauth/mailer"
)

// Purposes of scheduled mail, which BeforeSend checks at send time.
const (
	purposeEscalation   = "escalation"
	purposeExpiryNotice = "expiry-notice"
)

// scheduleTag labels a scheduled mail for BeforeSend with what it is for
// and its login. (Messages queued before tags existed read as this tag;
// see mailer.Message.UnmarshalJSON.)
func scheduleTag(purpose, loginID string) string { return purpose + "/" + loginID }

// schedulePurpose is the purpose in m's tag, if it has one.
func schedulePurpose(m *mailer.Message) string {
	purpose, _, _ := strings.Cut(m.Tag, "/")
	return purpose
}

// approverChain says who decides a manager-approval login; see
// ApproverChain.
func (s *Service) approverChain(ctx context.Context, site *Site, p *Profile, l *Login) (now, later []string) {
	return ApproverChain(ctx, site.Directories, p, l.Email, l.ManagerEmail)
}

// ApproverChain says who decides a manager-approval request of requester,
// whose manager (or sponsor) is manager: now are asked at once, later
// when the request escalates. The requester is never among them: a
// request whose manager is the requester goes straight to the next in
// line (the manager's manager from dirs, else the profile's approvers),
// and when there is nobody else, now is empty and the request fails
// closed.
func ApproverChain(ctx context.Context, dirs []directory.Directory, p *Profile, requester, manager string) (now, later []string) {
	if !sameAddress(manager, requester) {
		return []string{manager}, escalationTargets(ctx, dirs, p, manager, requester)
	}
	return escalationTargets(ctx, dirs, p, manager, requester), nil
}

// escalationTargets says who hears of a request that the manager has not
// decided in time: the manager's own manager when the directory knows one,
// else the profile's approvers; never the manager or the requester
// themself.
func escalationTargets(ctx context.Context, dirs []directory.Directory, p *Profile, manager, requester string) []string {
	if mgr, err := directory.Lookup(ctx, dirs, manager, nil); err == nil && mgr.ManagerEmail != "" &&
		!sameAddress(mgr.ManagerEmail, manager) && !sameAddress(mgr.ManagerEmail, requester) {
		return []string{mgr.ManagerEmail}
	}
	return slices.DeleteFunc(slices.Clone(p.Approvers), func(a string) bool {
		return sameAddress(a, manager) || sameAddress(a, requester)
	})
}

// BeforeSend is the outbox hook for scheduled mail: an escalation goes out
// only while its request is still pending, and an expiry notice only for a
// request that expired undecided, grouped with the user's other failures.
func (s *Service) BeforeSend(ctx context.Context, m *mailer.Message) (bool, error) {
	purpose, id, ok := strings.Cut(m.Tag, "/")
	if !ok {
		return true, nil // not a tag of ours: nothing to check
	}
	l, err := s.getLogin(ctx, id)
	if errors.Is(err, ErrLoginNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	state := l.EffectiveState(s.now())
	switch purpose {
	case purposeEscalation:
		if state != StatePending {
			return false, nil
		}
		s.audit.Record(EventEscalated, l, Detail{To: m.To, MessageID: m.ID})
		return true, nil
	case purposeExpiryNotice:
		if state != StateExpired {
			return false, nil
		}
		send, repeats, err := s.groupNotice(ctx, l, m.ID)
		if err != nil || !send {
			if err == nil {
				s.audit.Record(EventNoticeQueued, l, Detail{Outcome: "expired", Grouped: true})
			}
			return false, err
		}
		if repeats > 0 {
			fresh, err := s.renderNotice(l, "expired", repeats)
			if err != nil {
				return false, err
			}
			m.Subject, m.Text, m.HTML = fresh.Subject, fresh.Text, fresh.HTML
		}
		s.audit.Record(EventNoticeQueued, l, Detail{Outcome: "expired", To: m.To, Repeats: Some(repeats)})
		return true, nil
	}
	return true, nil
}

// sameAddress compares mail addresses as mail systems do in practice:
// ignoring case, and reading "Name <addr>" forms for their address.
func sameAddress(a, b string) bool {
	return strings.EqualFold(bareAddress(a), bareAddress(b))
}

// bareAddress is the address part of a, trimmed.
func bareAddress(a string) string {
	a = strings.TrimSpace(a)
	if strings.ContainsAny(a, "<") {
		if addr, err := mail.ParseAddress(a); err == nil {
			return addr.Address
		}
	}
	return a
}
