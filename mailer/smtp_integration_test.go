package mailer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/mailauth/caddy-mailauth/approval/mailtemplate"
	"github.com/mailauth/caddy-mailauth/test/mailpit"
)

// These tests run against real mailpit processes; see test/mailpit.

const arrival = 10 * time.Second

// plainServer points at a mailpit over a plain connection, which Validate
// allows because mailpit listens on loopback.
func plainServer(mp *mailpit.Server) ServerConfig {
	return ServerConfig{
		Host: mp.SMTPHost, Port: mp.SMTPPort, TLS: TLSNone,
		From: "Access Gateway <noreply@gateway.example.com>", Timeout: 5 * time.Second,
	}
}

func mustSMTP(t *testing.T, cfgs map[string]ServerConfig) *SMTP {
	t.Helper()
	s, err := NewSMTP(cfgs)
	if err != nil {
		t.Fatalf("NewSMTP failed: %v", err)
	}
	return s
}

func renderedMessage(t *testing.T, id, to string, servers ...string) *Message {
	t.Helper()
	// The mail the core renders, so the transport is tested with what it
	// really carries: a multipart message with a link.
	tpl, err := mailtemplate.Parse("", "", "")
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2025, 6, 2, 10, 42, 0, 0, time.UTC)
	subject, text, html, err := tpl.Render(mailtemplate.Data{
		Link: "https://apps.example.com/.mailauth/verify?token=abc123",
		User: mailtemplate.User{Name: "Alice Smith", Username: "asmith", Email: "alice@example.com"},
		App:  "finance.example.com", ClientIP: "203.0.113.7", Browser: "Firefox on Windows",
		RequestedAt: at, ExpiresAt: at.Add(15 * time.Minute), Reference: "K7Q-2ZP", MatchCode: "Z9Q4",
	})
	if err != nil {
		t.Fatalf("Render failed: %v", err)
	}
	return &Message{
		ID: id, Servers: servers, To: to, Subject: subject, Text: text, HTML: html,
		ExpiresAt: time.Now().Add(15 * time.Minute), Reference: "K7Q-2ZP",
	}
}

func send(t *testing.T, s *SMTP, m *Message) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return s.Send(ctx, m)
}

// closedPort returns a loopback port that refuses connections.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

func TestSMTPDeliversRenderedMailWithBothPartsAndAutomationHeaders(t *testing.T) {
	mp := mailpit.Start(t)
	s := mustSMTP(t, map[string]ServerConfig{"local": plainServer(mp)})

	server, err := send(t, s, renderedMessage(t, "login-42", "alice@example.com", "local"))
	if err != nil || server != "local" {
		t.Fatalf("Send = %q, %v; want delivery through local", server, err)
	}
	got := mp.WaitForMessage(t, "alice@example.com", arrival)
	if got.Subject != "Sign in to finance.example.com" {
		t.Errorf("subject = %q, want %q", got.Subject, "Sign in to finance.example.com")
	}
	if got.From != "noreply@gateway.example.com" {
		t.Errorf("from = %q, want noreply@gateway.example.com", got.From)
	}
	link := "https://apps.example.com/.mailauth/verify?token=abc123"
	if !strings.Contains(got.Text, link) {
		t.Errorf("text part lacks the link:\n%s", got.Text)
	}
	if !strings.Contains(got.HTML, `<html lang="en">`) || !strings.Contains(got.HTML, link) {
		t.Errorf("html part is not the rendered HTML document with the link:\n%s", got.HTML)
	}
	if v := got.Header("Auto-Submitted"); v != "auto-generated" {
		t.Errorf("Auto-Submitted = %q, want auto-generated", v)
	}
	if v := got.Header("Message-ID"); v != "<login-42@gateway.example.com>" {
		t.Errorf("Message-ID = %q, want <login-42@gateway.example.com>", v)
	}
	if v := got.Header("Content-Type"); !strings.HasPrefix(v, "multipart/alternative") {
		t.Errorf("Content-Type = %q, want multipart/alternative", v)
	}
	if v := got.Header("Date"); v == "" {
		t.Error("message has no Date header")
	}
}

func TestSMTPFailsOverWhenTheFirstServerRefusesConnections(t *testing.T) {
	mp := mailpit.Start(t)
	dead := plainServer(mp)
	dead.Port = closedPort(t)
	s := mustSMTP(t, map[string]ServerConfig{"dead": dead, "live": plainServer(mp)})

	server, err := send(t, s, renderedMessage(t, "m1", "bob@example.com", "dead", "live"))
	if err != nil {
		t.Fatalf("Send failed although the second server is up: %v", err)
	}
	if server != "live" {
		t.Errorf("Send went through %q, want live", server)
	}
	mp.WaitForMessage(t, "bob@example.com", arrival)
}

func TestSMTPFailsOverWhenTheFirstServerRefusesTemporarily(t *testing.T) {
	busy, spare := mailpit.Start(t), mailpit.Start(t)
	busy.SetChaos(t, mailpit.Chaos{Recipient: mailpit.ChaosTrigger{ErrorCode: 451, Probability: 100}})
	s := mustSMTP(t, map[string]ServerConfig{"busy": plainServer(busy), "spare": plainServer(spare)})

	server, err := send(t, s, renderedMessage(t, "m1", "carol@example.com", "busy", "spare"))
	if err != nil || server != "spare" {
		t.Fatalf("Send = %q, %v; want delivery through spare after busy's 451", server, err)
	}
	spare.WaitForMessage(t, "carol@example.com", arrival)
	if n := len(busy.Messages(t)); n != 0 {
		t.Errorf("busy server holds %d messages, want 0", n)
	}
}

func TestSMTPReturnsAPermanentRefusalWithoutTryingOtherServers(t *testing.T) {
	strict, spare := mailpit.Start(t), mailpit.Start(t)
	strict.SetChaos(t, mailpit.Chaos{Recipient: mailpit.ChaosTrigger{ErrorCode: 550, Probability: 100}})
	s := mustSMTP(t, map[string]ServerConfig{"strict": plainServer(strict), "spare": plainServer(spare)})

	server, err := send(t, s, renderedMessage(t, "m1", "dave@example.com", "strict", "spare"))
	if !errors.Is(err, ErrPermanent) {
		t.Fatalf("Send error = %v, want ErrPermanent for a 550", err)
	}
	if server != "strict" || !strings.HasPrefix(err.Error(), "mailer: smtp strict: ") {
		t.Errorf("Send = %q, %q; want the refusing server named in both", server, err)
	}
	// Give a wrongly attempted failover time to land before checking.
	time.Sleep(200 * time.Millisecond)
	if n := len(spare.Messages(t)); n != 0 {
		t.Errorf("spare server received %d messages after a permanent refusal, want 0", n)
	}
}

func TestSMTPWithAllServersDownReturnsATemporaryErrorNamingEach(t *testing.T) {
	a := ServerConfig{Host: "127.0.0.1", Port: closedPort(t), TLS: TLSNone, From: "a@example.com"}
	b := a
	b.Port = closedPort(t)
	s := mustSMTP(t, map[string]ServerConfig{"a": a, "b": b})

	_, err := send(t, s, renderedMessage(t, "m1", "erin@example.com", "a", "b"))
	if err == nil || errors.Is(err, ErrPermanent) {
		t.Fatalf("Send error = %v, want a temporary error", err)
	}
	for _, want := range []string{"mailer: smtp a: ", "mailer: smtp b: "} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

// selfSignedCert writes a certificate for 127.0.0.1 and its key, and
// returns their paths and a pool that trusts the certificate.
func selfSignedCert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "mailpit test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestSMTPUpgradesWithSTARTTLSAndAuthenticates(t *testing.T) {
	certFile, keyFile, pool := selfSignedCert(t)
	mp := mailpit.Start(t, "--smtp-tls-cert", certFile, "--smtp-tls-key", keyFile, "--smtp-require-starttls")
	cfg := plainServer(mp)
	cfg.TLS, cfg.RootCAs = TLSStartTLS, pool
	cfg.Username, cfg.Password = "gateway", "secret"
	s := mustSMTP(t, map[string]ServerConfig{"tls": cfg})

	if _, err := send(t, s, renderedMessage(t, "m1", "frank@example.com", "tls")); err != nil {
		t.Fatalf("Send over STARTTLS with AUTH failed: %v", err)
	}
	if got := mp.WaitForMessage(t, "frank@example.com", arrival); got.Username != "gateway" {
		t.Errorf("message arrived authenticated as %q, want gateway", got.Username)
	}
}

func TestSMTPRefusesAServerCertificateItCannotVerify(t *testing.T) {
	certFile, keyFile, _ := selfSignedCert(t)
	mp := mailpit.Start(t, "--smtp-tls-cert", certFile, "--smtp-tls-key", keyFile)
	cfg := plainServer(mp)
	cfg.TLS = TLSStartTLS // system roots: the self-signed certificate is untrusted
	s := mustSMTP(t, map[string]ServerConfig{"tls": cfg})

	if _, err := send(t, s, renderedMessage(t, "m1", "grace@example.com", "tls")); err == nil {
		t.Fatal("Send succeeded with an untrusted certificate")
	}
	if n := len(mp.Messages(t)); n != 0 {
		t.Errorf("server received %d messages over an unverified connection, want 0", n)
	}
}

func TestSMTPInStartTLSModeRefusesAServerWithoutSTARTTLS(t *testing.T) {
	mp := mailpit.Start(t) // no certificate: mailpit offers no STARTTLS
	cfg := plainServer(mp)
	cfg.TLS = TLSStartTLS
	s := mustSMTP(t, map[string]ServerConfig{"plain": cfg})

	if _, err := send(t, s, renderedMessage(t, "m1", "heidi@example.com", "plain")); err == nil {
		t.Fatal("Send fell back to plain text although STARTTLS is mandatory")
	}
	if n := len(mp.Messages(t)); n != 0 {
		t.Errorf("server received %d messages in clear text, want 0", n)
	}
}

func TestOutboxDeliversThroughTheBackupWhenThePrimaryStops(t *testing.T) {
	primary, backup := mailpit.Start(t), mailpit.Start(t)
	primary.Stop()
	s := mustSMTP(t, map[string]ServerConfig{"primary": plainServer(primary), "backup": plainServer(backup)})
	clock := newFakeClock()
	q := newFakeQueue(clock)
	ev := make(events, 10)
	o := NewOutbox(q, s, zaptest.NewLogger(t), ev.record)
	o.now = clock.Now
	run(t, o)

	m := renderedMessage(t, "m1", "ivan@example.com", "primary", "backup")
	m.ExpiresAt = clock.Now().Add(15 * time.Minute)
	if err := o.Enqueue(context.Background(), m); err != nil {
		t.Fatalf("Enqueue failed: %v", err)
	}
	e := ev.next(t)
	if e.Kind != EventSent || e.Server != "backup" {
		t.Fatalf("got %s event via %q (err %v), want sent via backup", e.Kind, e.Server, e.Err)
	}
	backup.WaitForMessage(t, "ivan@example.com", arrival)
}
