package approval

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/approval/mailtemplate"
)

// A manager's approval is a time-boxed grant: the manager picks how long
// it lasts when approving, the clock starts at the approval, and the grant
// ends at its time even if the session lives on. The session cookie
// carries the grant (see Approval); the store keeps a record of it so the
// approver and operators can list running grants and end one, which goes
// through the revocation set every instance holds in memory.

// Errors of grants.
var (
	// ErrGrantNotFound: no running grant has that id (for that approver).
	ErrGrantNotFound = errors.New("approval: grant not found")
	// ErrBadDuration: the duration posted is not one the profile offers.
	ErrBadDuration = errors.New("approval: not a grant duration this approval offers")
)

// GrantDuration is one duration a manager can choose when approving.
type GrantDuration struct {
	// For is how long the grant lasts; zero when EndOfDay.
	For time.Duration
	// EndOfDay ends the grant at the next midnight, local time.
	EndOfDay bool
}

// EndOfDayKey is how "until end of day" is written in configuration and
// forms.
const EndOfDayKey = "end_of_day"

// DefaultGrantDurations are offered when a profile names none.
var DefaultGrantDurations = []GrantDuration{{For: time.Hour}, {For: 8 * time.Hour}, {EndOfDay: true}}

// ParseGrantDuration reads a duration as configuration writes it: a Go
// duration such as "1h" or "90m", or "end_of_day".
func ParseGrantDuration(s string) (GrantDuration, error) {
	if s == EndOfDayKey {
		return GrantDuration{EndOfDay: true}, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return GrantDuration{}, fmt.Errorf("%q is not a positive duration (such as 1h or 90m) or %s", s, EndOfDayKey)
	}
	return GrantDuration{For: d}, nil
}

// Key is how a form names the duration.
func (g GrantDuration) Key() string {
	if g.EndOfDay {
		return EndOfDayKey
	}
	return shortDuration(g.For)
}

// Label words the duration for pages and mail.
func (g GrantDuration) Label() string {
	if g.EndOfDay {
		return "until end of day"
	}
	return mailtemplate.HumanDuration(g.For)
}

// until is when a grant of this duration given at from ends, at most
// limit later.
func (g GrantDuration) until(from time.Time, limit time.Duration) time.Time {
	end := from.Add(g.For)
	if g.EndOfDay {
		local := from.In(time.Local)
		end = time.Date(local.Year(), local.Month(), local.Day()+1, 0, 0, 0, 0, time.Local)
	}
	if limit > 0 && end.After(from.Add(limit)) {
		end = from.Add(limit)
	}
	return end
}

// shortDuration writes d as "1h", "90m" or "1h30m": what a person types.
func shortDuration(d time.Duration) string {
	var b strings.Builder
	if h := d / time.Hour; h > 0 {
		b.WriteString(strconv.FormatInt(int64(h), 10) + "h")
		d -= h * time.Hour
	}
	if m := d / time.Minute; m > 0 {
		b.WriteString(strconv.FormatInt(int64(m), 10) + "m")
		d -= m * time.Minute
	}
	if s := d / time.Second; s > 0 || b.Len() == 0 {
		b.WriteString(strconv.FormatInt(int64(s), 10) + "s")
	}
	return b.String()
}

// GrantChoice is a duration as the approval page offers it.
type GrantChoice struct {
	Key, Label string
	// Until is when the grant would end if approved now.
	Until time.Time
}

// grantTerms are the durations p offers, the default first, and the cap
// on them: the profile's own, else DefaultGrantDurations up to the session
// lifetime (configured durations above the cap are refused at load).
func (s *Service) grantTerms(p *Profile) ([]GrantDuration, time.Duration) {
	limit := s.cfg.SessionLifetime
	if p.GrantMax > 0 && p.GrantMax < limit {
		limit = p.GrantMax
	}
	if len(p.GrantDurations) > 0 {
		return p.GrantDurations, limit
	}
	out := make([]GrantDuration, 0, len(DefaultGrantDurations))
	for _, g := range DefaultGrantDurations {
		if g.EndOfDay || g.For <= limit {
			out = append(out, g)
		}
	}
	return out, limit
}

// grantChoices are the durations p offers, each with when it would end
// if approved at now.
func (s *Service) grantChoices(p *Profile, now time.Time) []GrantChoice {
	durations, limit := s.grantTerms(p)
	out := make([]GrantChoice, 0, len(durations))
	for _, g := range durations {
		out = append(out, GrantChoice{Key: g.Key(), Label: g.Label(), Until: g.until(now, limit)})
	}
	return out
}

// grantDuration finds the duration a form posted among durations; "" is
// the first, the default.
func grantDuration(durations []GrantDuration, key string) (GrantDuration, error) {
	if key == "" {
		return durations[0], nil
	}
	for _, g := range durations {
		if g.Key() == key {
			return g, nil
		}
	}
	return GrantDuration{}, ErrBadDuration
}

// grantKeep is how long a grant's record outlives the grant, so that the
// sweep finds it and audits its end even after an outage.
const grantKeep = 24 * time.Hour

// GrantInfo is a running grant, as the grants page and the admin API
// list it.
type GrantInfo struct {
	// ID names the grant, as DELETE /mailauth/grants/{id} takes it.
	ID string `json:"id"`
	// User, Email and Directory are who was granted access.
	User      string `json:"user"`
	Name      string `json:"name,omitempty"`
	Email     string `json:"email,omitempty"`
	Directory string `json:"directory,omitempty"`
	// Profile is the profile that ran the approval; App and Route what
	// the user asked to open.
	Profile string `json:"profile"`
	App     string `json:"app,omitempty"`
	Route   string `json:"route,omitempty"`
	// Reason is the user's justification, if they gave one.
	Reason string `json:"reason,omitempty"`
	// Approver is who approved.
	Approver string `json:"approver"`
	// Duration is the duration the approver chose, in words.
	Duration string `json:"duration"`
	// DurationKey is the same as its GrantDuration key ("8h",
	// "end_of_day"), for pages that word it in their own language.
	DurationKey string `json:"duration_key,omitempty"`
	// Since and Until bound the grant.
	Since time.Time `json:"since"`
	Until time.Time `json:"until"`
	// Reference is the support reference of the request.
	Reference string `json:"reference,omitempty"`
	ClientIP  string `json:"client_ip,omitempty"`
}

// putGrant records the grant of an approved login.
func (s *sessions) putGrant(ctx context.Context, l *Login) error {
	info := GrantInfo{
		ID: l.Grant, User: l.Username, Name: l.Name, Email: l.Email, Directory: l.Directory,
		Profile: l.Profile, App: l.App, Route: l.ReturnURL, Reason: l.Reason, Approver: l.Decider,
		Duration: l.GrantLabel, DurationKey: l.GrantKey, Since: l.DecidedAt.UTC(), Until: l.GrantUntil.UTC(),
		Reference: l.Reference, ClientIP: l.ClientIP,
	}
	return grantInfos.put(ctx, s.kv, info.ID, &info, l.GrantUntil.Sub(s.now())+grantKeep)
}

// ListGrants returns the running grants, oldest first: those approved by
// approver when it is set, of user when that is set.
func (s *sessions) ListGrants(ctx context.Context, approver, user string) ([]GrantInfo, error) {
	now := s.now()
	revoked := s.revoked.load()
	out := []GrantInfo{}
	err := s.scanGrants(ctx, func(g *GrantInfo) {
		id, ok := ParseGrantID(g.ID)
		if !ok || !g.Until.After(now) || revoked.grantEnded(id) {
			return
		}
		if approver != "" && !sameAddress(g.Approver, approver) || user != "" && g.User != user {
			return
		}
		out = append(out, *g)
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b GrantInfo) int { return a.Since.Compare(b.Since) })
	return out, nil
}

func (s *sessions) scanGrants(ctx context.Context, f func(*GrantInfo)) error {
	return grantInfos.scan(ctx, s.kv, func(g *GrantInfo) bool {
		f(g)
		return true
	}, skipCorrupt(s.log, "listing grants"))
}

// EndGrant ends a running grant everywhere, on the word of by (the
// approver on the grants page, or an operator). With approver set, only a
// grant that approver gave can be ended; any other id is not found, so the
// page reveals nothing of others' grants.
func (s *sessions) EndGrant(ctx context.Context, id, approver, by string) (*GrantInfo, error) {
	gid, ok := ParseGrantID(strings.ToLower(id))
	if !ok {
		return nil, ErrGrantNotFound
	}
	g, err := grantInfos.get(ctx, s.kv, gid.String())
	if err != nil {
		return nil, err
	}
	now := s.now()
	if approver != "" && !sameAddress(g.Approver, approver) || !g.Until.After(now) || s.revoked.load().grantEnded(gid) {
		return nil, ErrGrantNotFound
	}
	until := g.Until.Unix()
	if err := s.updateRevocations(ctx, func(r *revocations) { r.Grants[gid.String()] = until }); err != nil {
		return nil, err
	}
	s.audit.Record(EventGrantEnded, grantLogin(g), Detail{Grant: g.ID, By: by, Approver: g.Approver, Until: g.Until})
	return g, nil
}

// SweepGrants audits the end of every grant whose time has passed and
// drops its record. Each record is taken, so of several instances that
// sweep at once exactly one audits it.
func (s *sessions) SweepGrants(ctx context.Context) error {
	now := s.now()
	var due []GrantInfo
	if err := s.scanGrants(ctx, func(g *GrantInfo) {
		if !g.Until.After(now) {
			due = append(due, *g)
		}
	}); err != nil {
		return err
	}
	for _, g := range due {
		if _, _, err := grantInfos.take(ctx, s.kv, g.ID); err != nil {
			if errors.Is(err, ErrGrantNotFound) || errors.Is(err, errCorrupt) {
				continue
			}
			return err
		}
		d := Detail{Grant: g.ID, Approver: g.Approver, Until: g.Until}
		if gid, ok := ParseGrantID(g.ID); ok && s.revoked.load().grantEnded(gid) {
			d.EndedEarly = true
		}
		s.audit.Record(EventGrantExpired, grantLogin(&g), d)
	}
	return nil
}

// GrantSweep is how often SweepGrants runs.
const GrantSweep = 30 * time.Second

func (s *sessions) sweepGrants() {
	defer s.background.Done()
	t := time.NewTicker(GrantSweep)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(s.ctx, 20*time.Second)
		if err := s.SweepGrants(ctx); err != nil {
			s.log.Warn("sweeping ended grants", zap.Error(err))
		}
		cancel()
	}
}

// grantLogin is the audit subject of a grant.
func grantLogin(g *GrantInfo) *Login {
	return &Login{Reference: g.Reference, Username: g.User, Profile: g.Profile, App: g.App, ClientIP: g.ClientIP, Type: TypeManager}
}
