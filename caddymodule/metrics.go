package caddymodule

import (
	"context"
	"errors"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailauth/caddy-mailauth/approval"
	"github.com/mailauth/caddy-mailauth/directory"
	"github.com/mailauth/caddy-mailauth/mailer"
)

// noLabel stands for a label value that is empty or not in the
// configuration: labels take a fixed set of values only, so anything else
// (a name from an older config, say) is folded into it.
const noLabel = "none"

// Fixed label values that do not come from the configuration.
var (
	loginOutcomes  = []string{"approved", "denied", "completed"}
	mailOutcomes   = []string{"sent", "failed", "retry", "abandoned", "deferred"}
	lookupOutcomes = []string{"found", "not_found", "error"}
	limitNames     = []string{"login_per_ip", "login_per_identity", "redeem_per_ip", "mails_per_manager", "open_per_ip", "code_failures_per_identity"}
	profileTypes   = []string{string(approval.TypeUser), string(approval.TypeManager)}
)

// outboxDepthTimeout bounds the store read behind each scrape of
// caddy_mailauth_outbox_depth, so a slow store cannot hang the scrape.
const outboxDepthTimeout = time.Second

// metrics holds the collectors. They are made once per process and
// registered on each config's registry: counters then keep counting across
// config reloads, as Prometheus expects, and a second registration of the
// same collector on one registry is harmless.
var metrics = struct {
	once           sync.Once
	loginsStarted  *prometheus.CounterVec
	loginsFinished *prometheus.CounterVec
	approval       *prometheus.HistogramVec
	mails          *prometheus.CounterVec
	smtpAttempt    *prometheus.HistogramVec
	smtpDials      *prometheus.CounterVec
	directoryErrs  *prometheus.CounterVec
	lookups        *prometheus.CounterVec
	rateLimited    *prometheus.CounterVec
	auditDropped   prometheus.Counter
}{}

// initMetrics makes the collectors, once per process.
func initMetrics() {
	const ns, sub = "caddy", "mailauth"
	metrics.once.Do(func() {
		metrics.loginsStarted = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "logins_started_total",
			Help: "Logins started, by the site's default profile.",
		}, []string{"profile"})
		metrics.loginsFinished = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "logins_finished_total",
			Help: "Logins approved or denied, and sessions issued (completed), by profile.",
		}, []string{"profile", "outcome"})
		metrics.approval = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "approval_seconds",
			Help:    "Time from the start of a login to its approval or denial, by profile type.",
			Buckets: []float64{5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200},
		}, []string{"type"})
		metrics.mails = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "mails_total",
			Help: "Outbox delivery outcomes, by mail server.",
		}, []string{"server", "outcome"})
		metrics.smtpAttempt = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "smtp_attempt_seconds",
			Help:    "Wall time of SMTP delivery attempts, by the mail server that answered last.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"server"})
		metrics.smtpDials = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "smtp_connections_total",
			Help: "SMTP connections opened, by mail server; each carries many messages, so a rate near mails_total means sessions are not being reused.",
		}, []string{"server"})
		metrics.directoryErrs = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "directory_errors_total",
			Help: "Directory lookups that failed or returned unusable data, by directory.",
		}, []string{"directory"})
		metrics.lookups = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "directory_lookups_total",
			Help: "Lookups asked of each directory, by directory and outcome (found, not_found, error).",
		}, []string{"directory", "outcome"})
		metrics.rateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "rate_limited_total",
			Help: "Requests refused by a rate limit, by limit.",
		}, []string{"limit"})
		metrics.auditDropped = prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "audit_dropped_total",
			Help: "Audit records not stored because the audit queue was full (the store was failing or too slow); their mailauth.audit log lines were still written.",
		})
	})
}

// appMetrics feeds the collectors from one App's audit and mail events. It
// knows that App's profile, mail server and directory names and folds any
// other value into noLabel.
type appMetrics struct {
	profiles, servers, directories map[string]bool
}

// newAppMetrics registers the collectors on reg, plus an outbox depth gauge
// that calls depth at each scrape, and returns the feeder for an App with
// these profile, server and directory names. A nil reg (a caddy.Context not
// made by Caddy, as in tools that provision the app themselves) registers
// nothing; the counters still count.
func newAppMetrics(reg *prometheus.Registry, profiles, servers, directories []string, depth func(context.Context) (int, error), oldest func() time.Duration) (*appMetrics, error) {
	initMetrics()
	if reg != nil {
		if err := register(reg, depth, oldest); err != nil {
			return nil, err
		}
	}
	m := &appMetrics{profiles: set(profiles), servers: set(servers), directories: set(directories)}
	// Create every series up front so dashboards and alerts see zeros
	// rather than no data.
	for _, p := range profiles {
		metrics.loginsStarted.WithLabelValues(p)
		for _, o := range loginOutcomes {
			metrics.loginsFinished.WithLabelValues(p, o)
		}
	}
	for _, s := range servers {
		for _, o := range mailOutcomes {
			metrics.mails.WithLabelValues(s, o)
		}
		metrics.smtpDials.WithLabelValues(s)
	}
	for _, d := range directories {
		metrics.directoryErrs.WithLabelValues(d)
		for _, o := range lookupOutcomes {
			metrics.lookups.WithLabelValues(d, o)
		}
	}
	for _, l := range limitNames {
		metrics.rateLimited.WithLabelValues(l)
	}
	return m, nil
}

// register puts the shared collectors and new outbox gauges on reg.
func register(reg *prometheus.Registry, depth func(context.Context) (int, error), oldest func() time.Duration) error {
	for _, c := range []prometheus.Collector{metrics.loginsStarted, metrics.loginsFinished, metrics.approval,
		metrics.mails, metrics.smtpAttempt, metrics.smtpDials, metrics.directoryErrs, metrics.lookups, metrics.rateLimited, metrics.auditDropped} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) || are.ExistingCollector != c {
				return err
			}
		}
	}
	// The gauges read this App's store and outbox, so they are made per
	// App. Each config has its own registry; should one App be provisioned
	// twice on the same registry, the newer gauges replace the older.
	depthGauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "mailauth", Name: "outbox_depth",
		Help: "Messages in the outbox, waiting or being delivered.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), outboxDepthTimeout)
		defer cancel()
		n, err := depth(ctx)
		if err != nil {
			return math.NaN()
		}
		return float64(n)
	})
	oldestGauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "mailauth", Name: "outbox_oldest_failing_seconds",
		Help: "Age of the oldest queued message whose last delivery attempt (on this instance) failed; 0 when none.",
	}, func() float64 { return oldest().Seconds() })
	for _, g := range []prometheus.Collector{depthGauge, oldestGauge} {
		if err := reg.Register(g); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return err
			}
			reg.Unregister(are.ExistingCollector)
			if err := reg.Register(g); err != nil {
				return err
			}
		}
	}
	return nil
}

// countedDirectory counts the lookups asked of a directory by outcome.
// It wraps the directories the login path uses; the commands keep the
// bare ones, which they check with methods this wrapper does not have.
type countedDirectory struct {
	directory.Directory
	found, notFound, failed prometheus.Counter
}

func (m *appMetrics) counted(d directory.Directory) directory.Directory {
	name := d.Name()
	if !m.directories[name] {
		name = noLabel
	}
	return &countedDirectory{Directory: d,
		found:    metrics.lookups.WithLabelValues(name, "found"),
		notFound: metrics.lookups.WithLabelValues(name, "not_found"),
		failed:   metrics.lookups.WithLabelValues(name, "error"),
	}
}

// Lookup implements directory.Directory.
func (c *countedDirectory) Lookup(ctx context.Context, input string) (*directory.Identity, error) {
	id, err := c.Directory.Lookup(ctx, input)
	switch {
	case err == nil:
		c.found.Inc()
	case errors.Is(err, directory.ErrNotFound):
		c.notFound.Inc()
	default:
		c.failed.Inc()
	}
	return id, err
}

// audit counts one audit event; it is the approval.Auditor's observer.
func (m *appMetrics) audit(o approval.Observation) {
	switch o.Event {
	case approval.EventLoginStarted:
		metrics.loginsStarted.WithLabelValues(m.profile(o.Profile)).Inc()
	case approval.EventApproved, approval.EventDenied:
		metrics.loginsFinished.WithLabelValues(m.profile(o.Profile), string(o.Event)).Inc()
		if !o.CreatedAt.IsZero() {
			// DecidedAt is unset on the code path's copy of the login; the
			// event is recorded right after the decision, so now is close.
			at := o.DecidedAt
			if at.IsZero() {
				at = time.Now()
			}
			metrics.approval.WithLabelValues(oneOf(string(o.Type), profileTypes)).Observe(at.Sub(o.CreatedAt).Seconds())
		}
	case approval.EventSessionIssued:
		metrics.loginsFinished.WithLabelValues(m.profile(o.Profile), "completed").Inc()
	case approval.EventDirectoryError:
		d := o.Directory
		if !m.directories[d] {
			d = noLabel
		}
		metrics.directoryErrs.WithLabelValues(d).Inc()
	case approval.EventRateLimited:
		metrics.rateLimited.WithLabelValues(oneOf(o.Limit, limitNames)).Inc()
	}
}

// auditDropped counts one audit record the trail dropped from the store;
// it is the approval.AuditTrail's OnDrop.
func (m *appMetrics) auditDropped() { metrics.auditDropped.Inc() }

// dialed counts one SMTP connection opened; it is the mailer.SMTP's OnDial.
func (m *appMetrics) dialed(server string) {
	if !m.servers[server] {
		server = noLabel
	}
	metrics.smtpDials.WithLabelValues(server).Inc()
}

// mail counts one outbox event and times its SMTP attempt.
func (m *appMetrics) mail(ev mailer.Event) {
	outcome := oneOf(string(ev.Kind), mailOutcomes)
	if outcome == noLabel {
		return // skipped: nothing was attempted or lost
	}
	server := ev.Server
	if !m.servers[server] {
		server = noLabel
	}
	metrics.mails.WithLabelValues(server, outcome).Inc()
	if ev.Duration > 0 {
		metrics.smtpAttempt.WithLabelValues(server).Observe(ev.Duration.Seconds())
	}
}

func (m *appMetrics) profile(name string) string {
	if !m.profiles[name] {
		return noLabel
	}
	return name
}

// oneOf returns v if it is one of allowed, noLabel otherwise.
func oneOf(v string, allowed []string) string {
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	return noLabel
}

func set(names []string) map[string]bool {
	out := make(map[string]bool, len(names))
	for _, n := range names {
		out[n] = true
	}
	return out
}

// sortedKeys lists a configuration map's names, for label values.
func sortedKeys[T any](m map[string]T) []string {
	return slices.Sorted(maps.Keys(m))
}
