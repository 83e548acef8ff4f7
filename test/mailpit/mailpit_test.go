package mailpit

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strconv"
	"testing"
	"time"

	gomail "github.com/wneessen/go-mail"
)

func send(t *testing.T, s *Server, to, subject string) error {
	t.Helper()
	c, err := gomail.NewClient(s.SMTPHost, gomail.WithPort(s.SMTPPort), gomail.WithTLSPolicy(gomail.NoTLS))
	if err != nil {
		t.Fatalf("building client: %v", err)
	}
	m := gomail.NewMsg()
	if err := m.From("sender@example.com"); err != nil {
		t.Fatalf("from: %v", err)
	}
	if err := m.To(to); err != nil {
		t.Fatalf("to: %v", err)
	}
	m.Subject(subject)
	m.SetBodyString(gomail.TypeTextPlain, "hello")
	m.SetGenHeader(gomail.Header("X-Test"), "yes")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.DialAndSendWithContext(ctx, m)
}

func TestStartedServerReceivesMailAndShowsItThroughTheAPI(t *testing.T) {
	s := Start(t)
	if err := send(t, s, "bob@example.com", "hello bob"); err != nil {
		t.Fatalf("sending to mailpit failed: %v", err)
	}
	m := s.WaitForMessage(t, "bob@example.com", 5*time.Second)
	if m.Subject != "hello bob" {
		t.Errorf("subject = %q, want %q", m.Subject, "hello bob")
	}
	if m.From != "sender@example.com" {
		t.Errorf("from = %q, want sender@example.com", m.From)
	}
	if len(m.To) != 1 || m.To[0] != "bob@example.com" {
		t.Errorf("to = %q, want [bob@example.com]", m.To)
	}
	if m.Text == "" {
		t.Error("text part is empty, want the body that was sent")
	}
	if got := m.Header("x-test"); got != "yes" {
		t.Errorf("header X-Test = %q, want yes (headers: %v)", got, m.Headers)
	}
	if got := len(s.Messages(t)); got != 1 {
		t.Errorf("Messages returned %d entries, want 1", got)
	}
}

func TestDeleteAllEmptiesTheMailbox(t *testing.T) {
	s := Start(t)
	if err := send(t, s, "carol@example.com", "one"); err != nil {
		t.Fatalf("sending failed: %v", err)
	}
	s.WaitForMessage(t, "carol@example.com", 5*time.Second)
	s.DeleteAll(t)
	if got := s.Messages(t); len(got) != 0 {
		t.Errorf("after DeleteAll, %d messages remain: %+v", len(got), got)
	}
}

func TestChaosMakesTheServerRefuseRecipients(t *testing.T) {
	s := Start(t)
	s.SetChaos(t, Chaos{Recipient: ChaosTrigger{ErrorCode: 451, Probability: 100}})
	if err := send(t, s, "dave@example.com", "refused"); err == nil {
		t.Fatal("send succeeded while chaos refuses every recipient")
	}
	s.SetChaos(t, Chaos{})
	if err := send(t, s, "dave@example.com", "accepted"); err != nil {
		t.Fatalf("send failed after chaos was turned off: %v", err)
	}
}

func TestStopClosesTheSMTPPort(t *testing.T) {
	s := Start(t)
	s.Stop()
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(s.SMTPHost, strconv.Itoa(s.SMTPPort)), time.Second)
	if err == nil {
		conn.Close()
		t.Fatal("SMTP port still accepts connections after Stop")
	}
	s.Stop() // a second Stop, as the test cleanup does, must not block or panic
}

func TestRestartServesTheSamePortsAndKeepsEarlierMessages(t *testing.T) {
	s := Start(t)
	if err := send(t, s, "erin@example.com", "before"); err != nil {
		t.Fatalf("sending failed: %v", err)
	}
	s.WaitForMessage(t, "erin@example.com", 5*time.Second)
	s.Stop()
	s.Restart(t)
	if err := send(t, s, "frank@example.com", "after"); err != nil {
		t.Fatalf("sending to the restarted server on port %d failed: %v", s.SMTPPort, err)
	}
	s.WaitForMessage(t, "frank@example.com", 5*time.Second)
	if got := len(s.Messages(t)); got != 2 {
		t.Errorf("after a restart the mailbox holds %d messages, want the 2 sent before and after", got)
	}
}

func TestCertificatesAreTrustedThroughTheirCAForLocalhostAndLoopback(t *testing.T) {
	c := NewCertificates(t)
	pair, err := tls.LoadX509KeyPair(c.Cert, c.Key)
	if err != nil {
		t.Fatalf("the server certificate and key do not load as a pair: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"localhost", "127.0.0.1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: c.Pool, DNSName: host}); err != nil {
			t.Errorf("the certificate does not verify for %s against the CA: %v", host, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "localhost"}); err == nil {
		t.Error("the certificate verifies against the system roots; it must need the test CA")
	}
}
