package caddymodule

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/mailauth/caddy-mailauth/approval"
	"github.com/mailauth/caddy-mailauth/directory"
	"github.com/mailauth/caddy-mailauth/mailer"
)

// The collectors are process-wide, so these tests compare before and after
// rather than expect absolute values.

func newTestMetrics(t *testing.T, reg *prometheus.Registry, depth func(context.Context) (int, error)) *appMetrics {
	t.Helper()
	if depth == nil {
		depth = func(context.Context) (int, error) { return 0, nil }
	}
	m, err := newAppMetrics(reg, []string{"daily", "boss"}, []string{"local"}, []string{"staff"}, depth, func() time.Duration { return 0 })
	if err != nil {
		t.Fatalf("newAppMetrics: %v", err)
	}
	return m
}

func TestMetricsCountAuditEvents(t *testing.T) {
	m := newTestMetrics(t, prometheus.NewPedanticRegistry(), nil)
	started := value(t, metrics.loginsStarted.WithLabelValues("daily"))
	approved := value(t, metrics.loginsFinished.WithLabelValues("daily", "approved"))
	denied := value(t, metrics.loginsFinished.WithLabelValues("boss", "denied"))
	completed := value(t, metrics.loginsFinished.WithLabelValues("daily", "completed"))
	dirErrs := value(t, metrics.directoryErrs.WithLabelValues("staff"))
	limited := value(t, metrics.rateLimited.WithLabelValues("login_per_ip"))
	approvals := histogramCount(t, metrics.approval, "user")

	created := time.Now().Add(-time.Minute)
	m.audit(approval.Observation{Event: approval.EventLoginStarted, Profile: "daily"})
	m.audit(approval.Observation{Event: approval.EventApproved, Profile: "daily", Type: approval.TypeUser, CreatedAt: created, DecidedAt: created.Add(30 * time.Second)})
	m.audit(approval.Observation{Event: approval.EventDenied, Profile: "boss", Type: approval.TypeManager, CreatedAt: created})
	m.audit(approval.Observation{Event: approval.EventSessionIssued, Profile: "daily"})
	m.audit(approval.Observation{Event: approval.EventDirectoryError, Directory: "staff"})
	m.audit(approval.Observation{Event: approval.EventRateLimited, Limit: "login_per_ip"})

	for _, c := range []struct {
		name        string
		before, now float64
	}{
		{"logins_started{daily}", started, value(t, metrics.loginsStarted.WithLabelValues("daily"))},
		{"logins_finished{daily,approved}", approved, value(t, metrics.loginsFinished.WithLabelValues("daily", "approved"))},
		{"logins_finished{boss,denied}", denied, value(t, metrics.loginsFinished.WithLabelValues("boss", "denied"))},
		{"logins_finished{daily,completed}", completed, value(t, metrics.loginsFinished.WithLabelValues("daily", "completed"))},
		{"directory_errors{staff}", dirErrs, value(t, metrics.directoryErrs.WithLabelValues("staff"))},
		{"rate_limited{login_per_ip}", limited, value(t, metrics.rateLimited.WithLabelValues("login_per_ip"))},
		{"approval_seconds_count{user}", approvals, histogramCount(t, metrics.approval, "user")},
	} {
		if c.now-c.before != 1 {
			t.Errorf("%s moved by %v, want 1", c.name, c.now-c.before)
		}
	}
}

func TestMetricsCountMailEventsAndAttemptTime(t *testing.T) {
	m := newTestMetrics(t, prometheus.NewPedanticRegistry(), nil)
	sent := value(t, metrics.mails.WithLabelValues("local", "sent"))
	retry := value(t, metrics.mails.WithLabelValues("none", "retry"))
	attempts := histogramCount(t, metrics.smtpAttempt, "local")

	m.mail(mailer.Event{Kind: mailer.EventSent, Server: "local", Duration: 40 * time.Millisecond})
	// A BeforeSend error retries without reaching a server or timing one.
	m.mail(mailer.Event{Kind: mailer.EventRetry})
	m.mail(mailer.Event{Kind: mailer.EventSkipped, Server: "local"})

	if d := value(t, metrics.mails.WithLabelValues("local", "sent")) - sent; d != 1 {
		t.Errorf("mails_total{local,sent} moved by %v, want 1", d)
	}
	if d := value(t, metrics.mails.WithLabelValues("none", "retry")) - retry; d != 1 {
		t.Errorf("mails_total{none,retry} moved by %v, want 1: a retry with no server is labelled none", d)
	}
	if d := histogramCount(t, metrics.smtpAttempt, "local") - attempts; d != 1 {
		t.Errorf("smtp_attempt_seconds_count{local} moved by %v, want 1 (the sent attempt only)", d)
	}
}

func TestMetricsLabelsStayWithinFixedSets(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := newTestMetrics(t, reg, nil)
	// Values an attacker or an old config could inject must not become
	// label values.
	m.audit(approval.Observation{Event: approval.EventLoginStarted, Profile: "alice@example.test"})
	m.audit(approval.Observation{Event: approval.EventApproved, Profile: "gone", Type: "weird", CreatedAt: time.Now()})
	m.audit(approval.Observation{Event: approval.EventDirectoryError, Directory: "ldap://evil"})
	m.audit(approval.Observation{Event: approval.EventRateLimited, Limit: "client 192.0.2.1"})
	m.mail(mailer.Event{Kind: mailer.EventFailed, Server: "smtp.attacker.test"})
	m.mail(mailer.Event{Kind: "bogus", Server: "local"})
	// A directory the configuration does not name is counted as none.
	m.counted(stubDirectory("ldap://evil")).Lookup(t.Context(), "alice")

	// outcome, type and limit have fixed lists. profile, server and
	// directory take configured names, and other tests in this process
	// configure other names on the same process-wide collectors, so for
	// those the injected values are what must be absent.
	fixed := map[string][]string{
		"outcome": slices.Concat(loginOutcomes, mailOutcomes, lookupOutcomes),
		"type":    append(slices.Clone(profileTypes), noLabel),
		"limit":   append(slices.Clone(limitNames), noLabel),
	}
	injected := []string{"alice@example.test", "alice", "192.0.2.1", "gone", "weird", "ldap://evil", "client 192.0.2.1", "smtp.attacker.test", "bogus"}
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gathering: %v", err)
	}
	seen := 0
	for _, f := range families {
		for _, mt := range f.GetMetric() {
			for _, lp := range mt.GetLabel() {
				seen++
				name, v := lp.GetName(), lp.GetValue()
				if allowed, ok := fixed[name]; ok && !slices.Contains(allowed, v) {
					t.Errorf("%s has label %s=%q, outside its fixed set %v", f.GetName(), name, v, allowed)
				}
				if slices.Contains(injected, v) {
					t.Errorf("%s has label %s=%q, a value from an event rather than the configuration", f.GetName(), name, v)
				}
			}
		}
	}
	if seen == 0 {
		t.Fatal("the registry gathered no labelled series: the collectors were not registered")
	}
}

func TestMetricsRegisterTwiceOnOneRegistry(t *testing.T) {
	// A config is provisioned on a fresh registry, but nothing should break
	// if an App is provisioned twice on the same one.
	reg := prometheus.NewPedanticRegistry()
	newTestMetrics(t, reg, func(context.Context) (int, error) { return 1, nil })
	newTestMetrics(t, reg, func(context.Context) (int, error) { return 7, nil })
	if n := gaugeValue(t, reg, "caddy_mailauth_outbox_depth"); n != 7 {
		t.Errorf("outbox_depth = %v, want 7 from the newer App's store", n)
	}
}

func TestMetricsOutboxDepthIsNaNWhenTheStoreFails(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	newTestMetrics(t, reg, func(context.Context) (int, error) { return 0, errors.New("store closed") })
	if n := gaugeValue(t, reg, "caddy_mailauth_outbox_depth"); !math.IsNaN(n) {
		t.Errorf("outbox_depth = %v, want NaN: an unknown depth must not read as an empty outbox", n)
	}
}

// value reads one counter series.
func value(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// histogramCount reads the observation count of h's series for label.
func histogramCount(t *testing.T, h *prometheus.HistogramVec, label string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(h)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, mt := range f.GetMetric() {
			if mt.GetLabel()[0].GetValue() == label {
				return float64(mt.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

// gaugeValue reads the single series of the gauge family name in reg.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("%s not gathered", name)
	return 0
}

// stubDirectory is a directory of the given name that knows nobody.
type stubDirectory string

func (d stubDirectory) Name() string { return string(d) }

func (d stubDirectory) Lookup(context.Context, string) (*directory.Identity, error) {
	return nil, directory.ErrNotFound
}

func TestMetricsCountLookupsByOutcome(t *testing.T) {
	m := newTestMetrics(t, prometheus.NewPedanticRegistry(), nil)
	notFound := value(t, metrics.lookups.WithLabelValues("staff", "not_found"))
	m.counted(stubDirectory("staff")).Lookup(t.Context(), "nobody")
	if got := value(t, metrics.lookups.WithLabelValues("staff", "not_found")); got != notFound+1 {
		t.Errorf("not_found lookups of staff went from %v to %v; want one more", notFound, got)
	}
}

func TestMetricsCountAuditRecordsDroppedFromAFullQueue(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := newTestMetrics(t, reg, nil)
	before := value(t, metrics.auditDropped)
	m.auditDropped()
	m.auditDropped()
	if d := value(t, metrics.auditDropped) - before; d != 2 {
		t.Errorf("audit_dropped_total moved by %v for 2 drops, want 2", d)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "caddy_mailauth_audit_dropped_total" {
			if l := f.GetMetric()[0].GetLabel(); len(l) != 0 {
				t.Errorf("audit_dropped_total has labels %v, want none", l)
			}
			return
		}
	}
	t.Error("caddy_mailauth_audit_dropped_total is not registered")
}
