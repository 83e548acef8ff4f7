package approval

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/store"
)

// What an operator can see and do, for the admin API. None of it is on a
// request path: listings scan the store.

// Errors of the operator calls.
var (
	// ErrSessionNotFound: no live session has that id.
	ErrSessionNotFound = errors.New("approval: session not found")
	// ErrBadSessionID: a session id is 32 hexadecimal digits.
	ErrBadSessionID = errors.New("approval: a session id is 32 hexadecimal digits")
)

// SessionInfo describes one issued session. It is kept in the store for
// listing only: checking a session never reads it.
type SessionInfo struct {
	// ID is the session's id in hex, as DELETE /mailauth/sessions/{id} takes it.
	ID        string `json:"id"`
	User      string `json:"user"`
	Email     string `json:"email,omitempty"`
	Directory string `json:"directory,omitempty"`
	Profile   string `json:"profile,omitempty"`
	Site      string `json:"site,omitempty"`
	Reference string `json:"reference,omitempty"`
	ClientIP  string `json:"client_ip,omitempty"`
	UserAgent string `json:"user_agent,omitempty"`
	// IssuedAt is when the session began; ExpiresAt when it ends at the
	// latest (an idle timeout may end it sooner).
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// recordSession keeps what ListSessions shows of a new session. A failure
// is logged, not returned: the session works without its listing, and
// RevokeUser still reaches it.
func (s *sessions) recordSession(ctx context.Context, l *Login, sess *Session, clientIP string) {
	info := SessionInfo{
		ID: hex.EncodeToString(sess.ID[:]), User: sess.User, Email: sess.Email, Directory: sess.Directory, Profile: sess.Profile(),
		Site: l.App, Reference: l.Reference, ClientIP: clientIP, UserAgent: l.UserAgent,
		IssuedAt:  time.Unix(sess.IssuedAt, 0).UTC(),
		ExpiresAt: time.Unix(sess.IssuedAt, 0).Add(s.lifetime).UTC(),
	}
	if err := sessionInfos.put(ctx, s.kv, info.ID, &info, s.lifetime); err != nil {
		s.log.Warn("recording a session for listing", zap.String("reference", l.Reference), zap.Error(err))
	}
}

// ListSessions returns the live sessions of user (every user when empty),
// oldest first. Revoked sessions are left out.
func (s *sessions) ListSessions(ctx context.Context, user string) ([]SessionInfo, error) {
	now := s.now()
	revoked := s.revoked.load()
	out := []SessionInfo{}
	err := sessionInfos.scan(ctx, s.kv, func(info *SessionInfo) bool {
		if user != "" && info.User != user || !info.ExpiresAt.After(now) {
			return true
		}
		if sess, ok := info.session(); ok && revoked.revoked(&sess) {
			return true
		}
		out = append(out, *info)
		return true
	}, skipCorrupt(s.log, "listing sessions"))
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b SessionInfo) int { return a.IssuedAt.Compare(b.IssuedAt) })
	return out, nil
}

// session is the part of a Session that revocation looks at.
func (info *SessionInfo) session() (Session, bool) {
	var sess Session
	b, err := hex.DecodeString(info.ID)
	if err != nil || len(b) != len(sess.ID) {
		return sess, false
	}
	copy(sess.ID[:], b)
	sess.User, sess.IssuedAt, sess.ExpiresAt = info.User, info.IssuedAt.Unix(), info.ExpiresAt.Unix()
	return sess, true
}

// RevokeSessionID ends the session with the given hex id everywhere, on an
// operator's word.
func (s *sessions) RevokeSessionID(ctx context.Context, id, operator string) (*SessionInfo, error) {
	id = strings.ToLower(id)
	if b, err := hex.DecodeString(id); err != nil || len(b) != 16 {
		return nil, ErrBadSessionID
	}
	info, err := sessionInfos.get(ctx, s.kv, id)
	if err != nil {
		return nil, err
	}
	sess, _ := info.session()
	if s.revoked.load().revoked(&sess) {
		return nil, ErrSessionNotFound
	}
	if err := s.RevokeSession(ctx, &sess); err != nil {
		return nil, err
	}
	s.audit.Record(EventRevoked, &Login{Username: info.User, Profile: info.Profile, App: info.Site, Reference: info.Reference}, Detail{Session: id[:16], By: operator})
	return info, nil
}

// LoginInfo describes a login for an operator.
type LoginInfo struct {
	Reference string `json:"reference"`
	// User is the username once found, else what was typed.
	User     string      `json:"user"`
	Profile  string      `json:"profile"`
	Type     ProfileType `json:"type,omitempty"`
	Site     string      `json:"site"`
	State    State       `json:"state"`
	ClientIP string      `json:"client_ip,omitempty"`
	// Age is how long ago the login started, in whole seconds.
	Age       int64     `json:"age_seconds"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Decider   string    `json:"decider,omitempty"`
}

func (s *Service) loginInfo(l *Login, now time.Time) LoginInfo {
	user := l.Username
	if user == "" {
		user = l.Input
	}
	return LoginInfo{
		Reference: l.Reference, User: user, Profile: l.Profile, Type: l.Type, Site: l.App,
		State: l.EffectiveState(now), ClientIP: l.ClientIP, Age: int64(now.Sub(l.CreatedAt) / time.Second),
		CreatedAt: l.CreatedAt, ExpiresAt: l.ExpiresAt, Decider: l.Decider,
	}
}

// ListLogins returns the logins still waiting for a decision, or, with
// all, every login the store still holds; oldest first.
func (s *Service) ListLogins(ctx context.Context, all bool) ([]LoginInfo, error) {
	now := s.now()
	out := []LoginInfo{}
	err := s.scanLogins(ctx, func(l *Login) bool {
		if all || l.EffectiveState(now) == StatePending {
			out = append(out, s.loginInfo(l, now))
		}
		return true
	})
	slices.SortFunc(out, func(a, b LoginInfo) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, err
}

func (s *Service) scanLogins(ctx context.Context, fn func(*Login) bool) error {
	return logins.scan(ctx, s.kv, fn, skipCorrupt(s.cfg.Logger, "listing logins"))
}

// skipCorrupt logs a record that an operator listing skips because it
// does not read: the listing goes on without it.
func skipCorrupt(log *zap.Logger, doing string) func(key string, err error) {
	return func(key string, err error) {
		log.Warn(doing+": skipping a corrupt record", zap.String("key", key), zap.Error(err))
	}
}

// DenyLogin stops a pending login on an operator's word, as if its
// approver had denied it: the waiting browser shows it denied, its links
// stop working, and the manager gets the failed-login notice if the
// profile asks for one.
func (s *Service) DenyLogin(ctx context.Context, reference, operator string) (*LoginInfo, error) {
	reference = strings.ToUpper(strings.TrimSpace(reference))
	var found *Login
	err := s.scanLogins(ctx, func(l *Login) bool {
		if l.Reference == reference {
			found = l
		}
		return found == nil
	})
	if err != nil {
		return nil, err
	}
	if found == nil {
		return nil, ErrLoginNotFound
	}
	now := s.now()
	decider := "operator"
	if operator != "" {
		decider = "operator " + operator
	}
	var prior State
	err = s.updateLogin(ctx, found.ID, func(cur *Login) error {
		prior = cur.EffectiveState(now)
		switch prior {
		case StatePending:
			cur.State, cur.DecidedAt, cur.Decider = StateDenied, now, decider
			return nil
		case StateExpired:
			return ErrLoginExpired
		default:
			return ErrAlreadyDecided
		}
	})
	if err != nil {
		return nil, err
	}
	found.State, found.DecidedAt, found.Decider = StateDenied, now, decider
	s.audit.Record(EventDenied, found, Detail{Decider: decider})
	s.notifyFailed(ctx, found, OutcomeDenied)
	info := s.loginInfo(found, now)
	return &info, nil
}

// AuditQuery selects stored audit records.
type AuditQuery struct {
	// Since leaves out records before it; the zero time means the start.
	Since time.Time
	// After leaves out records up to this sequence number: pass the Next
	// of a previous answer to page on.
	After uint64
	// User keeps the records about this user or decided by them.
	User string
	// Event keeps the records of this event.
	Event Event
	// Limit bounds the answer: 1 to MaxAuditLimit.
	Limit int
}

// MaxAuditLimit bounds one audit query's answer.
const MaxAuditLimit = 1000

// auditScanBound bounds the records one query reads, so that a rare filter
// over months of records cannot hold the store for long; Next lets the
// caller go on.
const auditScanBound = 100_000

// AuditPage is one answer of QueryAudit.
type AuditPage struct {
	Records []AuditRecord `json:"records"`
	// Next is the After of the following page; zero when the trail has
	// been read to its end.
	Next uint64 `json:"next,omitempty"`
}

// KnownEvent reports whether ev is one the Auditor writes.
func KnownEvent(ev Event) bool { return slices.Contains(allEvents, ev) }

// auditQueries is the operator's read of the stored audit trail, which
// needs of the store only its log.
type auditQueries struct {
	log   store.Log
	audit *Auditor
}

// QueryAudit reads the stored audit trail, oldest first. It waits for the
// records queued so far to be stored, so an operator sees the events that
// led up to the query.
func (s *auditQueries) QueryAudit(ctx context.Context, q AuditQuery) (*AuditPage, error) {
	if q.Limit <= 0 || q.Limit > MaxAuditLimit {
		return nil, fmt.Errorf("approval: audit limit must be 1 to %d", MaxAuditLimit)
	}
	if t := s.audit.trail; t != nil {
		if err := t.Sync(ctx); err != nil {
			return nil, err
		}
	}
	from := q.After + 1
	if q.After == 0 && !q.Since.IsZero() {
		var err error
		if from, err = s.firstAuditSince(ctx, q.Since); err != nil {
			return nil, err
		}
	}
	page := &AuditPage{Records: []AuditRecord{}}
	for read := 0; read < auditScanBound; {
		recs, err := s.log.ReadLog(ctx, AuditLog, from, 500)
		if err != nil {
			return nil, err
		}
		for _, rec := range recs {
			read++
			r, _, err := decodeAuditRecord(rec.Value)
			if err != nil {
				continue // VerifyAuditChain reports it
			}
			if matchesAudit(&r, &q) {
				page.Records = append(page.Records, r)
				if len(page.Records) == q.Limit {
					page.Next = rec.Seq
					return page, nil
				}
			}
			from = rec.Seq + 1
		}
		if len(recs) < 500 {
			return page, nil
		}
	}
	page.Next = from - 1
	return page, nil
}

func matchesAudit(r *AuditRecord, q *AuditQuery) bool {
	if r.Time.Before(q.Since) || q.Event != "" && r.Event != q.Event {
		return false
	}
	if q.User == "" || r.User == q.User {
		return true
	}
	d, _ := r.Fields["decider"].(string)
	return d == q.User
}

// firstAuditSince finds the first record at or after since by bisection:
// records are appended in time order, so their times only grow.
func (s *auditQueries) firstAuditSince(ctx context.Context, since time.Time) (uint64, error) {
	head, err := s.log.LastRecord(ctx, AuditLog)
	if errors.Is(err, store.ErrNotFound) {
		return 1, nil
	}
	if err != nil {
		return 0, err
	}
	lo, hi := uint64(1), head.Seq+1
	for lo < hi {
		mid := lo + (hi-lo)/2
		recs, err := s.log.ReadLog(ctx, AuditLog, mid, 1)
		if err != nil {
			return 0, err
		}
		if len(recs) == 0 {
			hi = mid
			continue
		}
		r, _, err := decodeAuditRecord(recs[0].Value)
		if err == nil && r.Time.Before(since) {
			lo = recs[0].Seq + 1
		} else {
			hi = mid
		}
	}
	return lo, nil
}
