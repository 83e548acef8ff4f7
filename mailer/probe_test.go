package mailer

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mailauth/caddy-mailauth/test/mailpit"
)

// probe runs Probe and returns the steps it reported, in order.
func probe(t *testing.T, cfg ServerConfig, to string) ([]ProbeStep, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var steps []ProbeStep
	err := Probe(ctx, cfg, to, func(s ProbeStep) { steps = append(steps, s) })
	return steps, err
}

func stepNames(steps []ProbeStep) string {
	var names []string
	for _, s := range steps {
		n := s.Name
		if !s.OK {
			n += "!"
		}
		names = append(names, n)
	}
	return strings.Join(names, ",")
}

func TestProbeOverSTARTTLSReportsEveryStepAndSendsOneMail(t *testing.T) {
	certs := mailpit.NewCertificates(t)
	mp := mailpit.Start(t, append(certs.TLSArgs(), "--smtp-require-starttls")...)
	cfg := plainServer(mp)
	cfg.Name, cfg.Host, cfg.TLS, cfg.RootCAs = "relay", "localhost", TLSStartTLS, certs.Pool
	cfg.Username, cfg.Password, cfg.Auth, cfg.HELO = "gateway", "s3cret", AuthLogin, "gw.example.com"

	steps, err := probe(t, cfg, "nina@example.com")
	if err != nil {
		t.Fatalf("Probe failed: %v (steps %+v)", err, steps)
	}
	if got := stepNames(steps); got != "connect,hello,tls,auth,send" {
		t.Fatalf("steps %s, want connect,hello,tls,auth,send", got)
	}
	if d := steps[2].Detail; !strings.Contains(d, "STARTTLS, TLS 1.") || !strings.Contains(d, "mailauth test CA") {
		t.Errorf("the tls step %q does not give the TLS version and the verified issuer", d)
	}
	if d := steps[3].Detail; !strings.Contains(d, "gateway with login") {
		t.Errorf("the auth step %q does not give the user and mechanism", d)
	}
	if s := steps[4]; s.Code != 250 || !strings.HasPrefix(s.Detail, "accepted: 250 ") {
		t.Errorf("the send step %+v does not give the server's 250 reply", s)
	}
	for _, s := range steps {
		if strings.Contains(s.Detail, "s3cret") {
			t.Errorf("step %s reveals the password: %q", s.Name, s.Detail)
		}
	}
	got := mp.WaitForMessage(t, "nina@example.com", arrival)
	if got.Username != "gateway" || got.Header("Auto-Submitted") != "auto-generated" {
		t.Errorf("test mail arrived as user %q with Auto-Submitted %q, want gateway and auto-generated", got.Username, got.Header("Auto-Submitted"))
	}
}

func TestProbeOverImplicitTLSReportsTLSBeforeHello(t *testing.T) {
	certs := mailpit.NewCertificates(t)
	mp := mailpit.Start(t, append(certs.TLSArgs(), "--smtp-require-tls")...)
	cfg := plainServer(mp)
	cfg.Name, cfg.TLS, cfg.RootCAs = "relay", TLSImplicit, certs.Pool

	steps, err := probe(t, cfg, "omar@example.com")
	if err != nil {
		t.Fatalf("Probe failed: %v (steps %+v)", err, steps)
	}
	if got := stepNames(steps); got != "connect,tls,hello,auth,send" {
		t.Fatalf("steps %s, want connect,tls,hello,auth,send", got)
	}
	if !steps[3].Skipped {
		t.Errorf("auth without a username should be reported as skipped: %+v", steps[3])
	}
}

func TestProbeStopsAtTheStepThatFails(t *testing.T) {
	certs := mailpit.NewCertificates(t)
	tlsServer := mailpit.Start(t, append(certs.TLSArgs(), "--smtp-require-starttls")...)
	plain := mailpit.Start(t)

	untrusted := plainServer(tlsServer)
	untrusted.Name, untrusted.TLS = "untrusted", TLSStartTLS
	down := plainServer(plain)
	down.Name, down.Port = "down", closedPort(t)
	noSTARTTLS := plainServer(plain)
	noSTARTTLS.Name, noSTARTTLS.TLS = "plain", TLSStartTLS
	refusing := plainServer(plain)
	refusing.Name = "refusing"

	for _, c := range []struct {
		cfg   ServerConfig
		setup func()
		want  string
		code  int
	}{
		{down, func() {}, "connect!", 0},
		{untrusted, func() {}, "connect,hello,tls!", 0},
		{noSTARTTLS, func() {}, "connect,hello,tls!", 0},
		{refusing, func() {
			plain.SetChaos(t, mailpit.Chaos{Recipient: mailpit.ChaosTrigger{ErrorCode: 550, Probability: 100}})
		}, "connect,hello,tls,auth,send!", 550},
	} {
		c.setup()
		steps, err := probe(t, c.cfg, "pat@example.com")
		if err == nil {
			t.Errorf("%s: Probe succeeded, want a failure", c.cfg.Name)
			continue
		}
		if got := stepNames(steps); got != c.want {
			t.Errorf("%s: steps %s, want %s (err %v)", c.cfg.Name, got, c.want, err)
			continue
		}
		if last := steps[len(steps)-1]; last.Code != c.code {
			t.Errorf("%s: the failed step has reply code %d, want %d", c.cfg.Name, last.Code, c.code)
		}
	}
	if n := len(plain.Messages(t)) + len(tlsServer.Messages(t)); n != 0 {
		t.Errorf("%d messages arrived through failed probes, want 0", n)
	}
}

func TestProbeRefusesAnInvalidConfigBeforeDialling(t *testing.T) {
	err := Probe(context.Background(), ServerConfig{Name: "x", Host: "smtp.example.com", TLS: TLSNone, From: "a@example.com"}, "a@example.com", func(ProbeStep) {
		t.Error("Probe reported a step for a config it should refuse")
	})
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "tls" {
		t.Errorf("Probe error = %v, want the config error for tls", err)
	}
}

// probeEnvelope runs ProbeEnvelope and returns the steps it reported.
func probeEnvelope(t *testing.T, cfg ServerConfig, to string) ([]ProbeStep, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var steps []ProbeStep
	err := ProbeEnvelope(ctx, cfg, to, func(s ProbeStep) { steps = append(steps, s) })
	return steps, err
}

func TestProbeEnvelopeStopsBeforeDataSoNoMailArrives(t *testing.T) {
	certs := mailpit.NewCertificates(t)
	mp := mailpit.Start(t, append(certs.TLSArgs(), "--smtp-require-starttls")...)
	cfg := plainServer(mp)
	cfg.Name, cfg.Host, cfg.TLS, cfg.RootCAs = "relay", "localhost", TLSStartTLS, certs.Pool
	cfg.Username, cfg.Password, cfg.Auth = "gateway", "s3cret", AuthLogin

	steps, err := probeEnvelope(t, cfg, "Nina <nina@example.com>")
	if err != nil {
		t.Fatalf("ProbeEnvelope failed: %v (steps %+v)", err, steps)
	}
	if got := stepNames(steps); got != "connect,hello,tls,auth,mail,rcpt,rset,quit" {
		t.Fatalf("steps %s, want connect,hello,tls,auth,mail,rcpt,rset,quit", got)
	}
	if d := steps[5].Detail; d != "RCPT TO:<nina@example.com> accepted" {
		t.Errorf("the rcpt step says %q, want the bare recipient accepted", d)
	}
	if !strings.Contains(steps[6].Detail, "no mail sent") {
		t.Errorf("the rset step %q does not say that no mail was sent", steps[6].Detail)
	}
	// Give a wrongly sent mail time to show up before saying none did.
	time.Sleep(300 * time.Millisecond)
	if n := len(mp.Messages(t)); n != 0 {
		t.Errorf("%d messages arrived through an envelope probe, want 0", n)
	}
}

func TestProbeEnvelopeReportsARefusedSenderOrRecipientWithTheReply(t *testing.T) {
	mp := mailpit.Start(t)
	cfg := plainServer(mp)
	cfg.Name = "refusing"
	for _, c := range []struct {
		chaos mailpit.Chaos
		want  string
	}{
		{mailpit.Chaos{Sender: mailpit.ChaosTrigger{ErrorCode: 451, Probability: 100}}, "connect,hello,tls,auth,mail!"},
		{mailpit.Chaos{Recipient: mailpit.ChaosTrigger{ErrorCode: 550, Probability: 100}}, "connect,hello,tls,auth,mail,rcpt!"},
	} {
		mp.SetChaos(t, c.chaos)
		steps, err := probeEnvelope(t, cfg, "pat@example.com")
		if err == nil {
			t.Errorf("ProbeEnvelope succeeded against %+v, want a failure", c.chaos)
			continue
		}
		if got := stepNames(steps); got != c.want {
			t.Errorf("steps %s, want %s (err %v)", got, c.want, err)
			continue
		}
		code := c.chaos.Sender.ErrorCode + c.chaos.Recipient.ErrorCode
		if last := steps[len(steps)-1]; last.Code != code || !strings.Contains(last.Detail, "refused") {
			t.Errorf("the failed step %+v does not carry the server's %d refusal", last, code)
		}
	}
}

func TestProbeEnvelopeRefusesARecipientThatIsNotAnAddress(t *testing.T) {
	err := ProbeEnvelope(context.Background(), ServerConfig{Name: "x", Host: "127.0.0.1", TLS: TLSNone, From: "a@example.com"}, "not an address", func(ProbeStep) {
		t.Error("ProbeEnvelope reported a step for a recipient it should refuse")
	})
	if err == nil || !strings.Contains(err.Error(), "recipient") {
		t.Errorf("ProbeEnvelope error = %v, want one about the recipient", err)
	}
}
