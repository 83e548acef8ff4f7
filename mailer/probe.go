package mailer

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	gomail "github.com/wneessen/go-mail"
	gomaillog "github.com/wneessen/go-mail/log"
	"github.com/wneessen/go-mail/smtp"
)

// ProbeStep is one step of a test delivery: "connect", "hello", "tls",
// "auth", then "send" for Probe, or "mail", "rcpt", "rset" and "quit" for
// ProbeEnvelope.
type ProbeStep struct {
	// Name is the step.
	Name string
	// OK is false for the step that failed; no step follows it.
	OK bool
	// Skipped is set for a step the configuration leaves out (auth without
	// a username, TLS in mode none).
	Skipped bool
	// Detail says what happened: the address, the TLS version, the AUTH
	// mechanism, or the server's reply.
	Detail string
	// Code is the server's SMTP reply code for the steps after auth, or
	// for the step that failed if the server answered one; otherwise 0.
	Code int
}

// Probe sends one test mail to the address to through the server cfg,
// calling report after each step, and returns the error of the step that
// failed, if any. It goes through the same go-mail client settings as real
// deliveries (TLS policy, CA, auth, HELO, timeout), so what passes here
// passes for sign-in mail. The password never reaches report: go-mail
// redacts the AUTH exchange from the transcript this reads.
func Probe(ctx context.Context, cfg ServerConfig, to string, report func(ProbeStep)) error {
	return probeConnection(ctx, cfg, report, func(client *gomail.Client, conn *smtp.Client) error {
		return sendTestMail(client, conn, cfg.withDefaults(), to, report)
	})
}

// ProbeEnvelope is Probe without the mail: after the connection steps it
// opens a transaction with MAIL FROM (the server's from address) and RCPT
// TO:<to>, then abandons it with RSET and QUIT, so nothing is delivered.
// Its steps after "auth" are "mail", "rcpt", "rset" and "quit". A server
// that accepts RCPT may still refuse the DATA of a real mail (content
// filters), which only Probe can tell.
func ProbeEnvelope(ctx context.Context, cfg ServerConfig, to string, report func(ProbeStep)) error {
	rcpt, err := mail.ParseAddress(to)
	if err != nil {
		return fmt.Errorf("mailer: smtp %s: recipient %q: %w", cfg.Name, to, err)
	}
	return probeConnection(ctx, cfg, report, func(_ *gomail.Client, conn *smtp.Client) error {
		from, _ := mail.ParseAddress(cfg.From) // checked by Validate
		// The envelope carries bare addresses, as go-mail sends them.
		sender := (&mail.Address{Address: from.Address}).String()
		recipient := (&mail.Address{Address: rcpt.Address}).String()
		steps := []struct {
			name, addr, cmd string
			run             func(string) error
		}{
			{"mail", sender, "MAIL FROM:" + sender, conn.Mail},
			{"rcpt", recipient, "RCPT TO:" + recipient, conn.Rcpt},
		}
		for _, st := range steps {
			cmd := st.cmd
			if err := st.run(st.addr); err != nil {
				report(ProbeStep{Name: st.name, Detail: cmd + " refused: " + err.Error(), Code: replyCode(err)})
				return fmt.Errorf("mailer: smtp %s: %s: %w", cfg.Name, st.name, err)
			}
			report(ProbeStep{Name: st.name, OK: true, Code: 250, Detail: cmd + " accepted"})
		}
		if err := conn.Reset(); err != nil {
			report(ProbeStep{Name: "rset", Detail: "RSET refused: " + err.Error(), Code: replyCode(err)})
			return fmt.Errorf("mailer: smtp %s: rset: %w", cfg.Name, err)
		}
		report(ProbeStep{Name: "rset", OK: true, Code: 250, Detail: "transaction abandoned before DATA: no mail sent"})
		if err := conn.Quit(); err != nil {
			report(ProbeStep{Name: "quit", Detail: "QUIT: " + err.Error(), Code: replyCode(err)})
			return fmt.Errorf("mailer: smtp %s: quit: %w", cfg.Name, err)
		}
		report(ProbeStep{Name: "quit", OK: true, Code: 221, Detail: "connection closed"})
		return nil
	})
}

// replyCode is the SMTP reply code in err, or 0 when the server sent none.
func replyCode(err error) int {
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

// probeConnection runs the connection steps (connect, hello, tls, auth),
// then after, which reports its own steps, on the open connection.
func probeConnection(ctx context.Context, cfg ServerConfig, report func(ProbeStep), after func(*gomail.Client, *smtp.Client) error) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	tr := &transcript{}
	client, err := newClient(cfg, gomail.WithDebugLog(), gomail.WithLogger(tr))
	if err != nil {
		return fmt.Errorf("mailer: smtp %s: %w", cfg.Name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	conn, err := client.DialToSMTPClientWithContext(ctx)
	if err != nil {
		failed := tr.failedStep(cfg, err)
		// The steps before the failed one passed; say so, so the report
		// reads as a sequence.
		for _, name := range stepOrder(cfg) {
			if name == failed {
				break
			}
			switch name {
			case "connect":
				report(ProbeStep{Name: name, OK: true, Detail: "connected to " + addr})
			case "hello":
				report(ProbeStep{Name: name, OK: true, Detail: "EHLO as " + helo(cfg)})
			case "tls":
				if cfg.TLS == TLSNone || cfg.TLS == TLSOpportunistic && !tr.tlsStarted() {
					report(tlsStep(cfg, nil))
				} else {
					report(ProbeStep{Name: name, OK: true, Detail: string(cfg.TLS) + ": TLS established"})
				}
			}
		}
		detail := err.Error()
		if failed == "auth" && cfg.Auth == AuthAuto && (cfg.TLS == TLSNone || cfg.TLS == TLSOpportunistic && !tr.tlsStarted()) {
			detail += " (auth auto never sends a password over a plain-text connection; use TLS, or name the mechanism for a loopback relay)"
		}
		report(ProbeStep{Name: failed, Detail: detail, Code: tr.errorCode()})
		return fmt.Errorf("mailer: smtp %s: %s: %w", cfg.Name, failed, err)
	}
	defer func() { _ = client.CloseWithSMTPClient(conn) }()
	state, _ := conn.GetTLSConnectionState()
	for _, name := range stepOrder(cfg) {
		switch name {
		case "connect":
			report(ProbeStep{Name: "connect", OK: true, Detail: "connected to " + addr})
		case "hello":
			report(ProbeStep{Name: "hello", OK: true, Detail: "EHLO as " + helo(cfg)})
		case "tls":
			report(tlsStep(cfg, state))
		}
	}
	if cfg.Username == "" {
		report(ProbeStep{Name: "auth", OK: true, Skipped: true, Detail: "no username configured"})
	} else {
		_, offered := conn.Extension("AUTH")
		report(ProbeStep{Name: "auth", OK: true, Detail: fmt.Sprintf("authenticated as %s with %s (server offers %s)", cfg.Username, cfg.Auth, offered)})
	}
	return after(client, conn)
}

// sendTestMail is Probe's last step: one short mail to the address to.
func sendTestMail(client *gomail.Client, conn *smtp.Client, cfg ServerConfig, to string, report func(ProbeStep)) error {
	domain, _ := fromDomain(cfg.From) // checked by Validate
	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	msg, err := buildMsg(&smtpServer{cfg: cfg, domain: domain}, &Message{
		ID:      "send-test." + hex.EncodeToString(id),
		To:      to,
		Subject: "caddy-mailauth test mail via " + cfg.Name,
		Text: "This is a test mail from caddy mailauth send-test.\n\n" +
			"It went through mail server " + cfg.Name + " (" + addr + ").\n" +
			"Sign-in mail from this gateway takes the same way.\n",
	}, time.Now())
	if err != nil {
		report(ProbeStep{Name: "send", Detail: err.Error()})
		return fmt.Errorf("mailer: smtp %s: send: %w", cfg.Name, err)
	}
	if err := client.SendWithSMTPClient(conn, msg); err != nil && !msg.IsDelivered() {
		step := ProbeStep{Name: "send", Detail: "rejected: " + err.Error()}
		var sendErr *gomail.SendError
		if errors.As(err, &sendErr) {
			step.Code = sendErr.ErrorCode()
		}
		report(step)
		return fmt.Errorf("mailer: smtp %s: send: %w", cfg.Name, err)
	}
	report(ProbeStep{Name: "send", OK: true, Code: 250, Detail: "accepted: 250 " + msg.ServerResponse()})
	return nil
}

// stepOrder is the order of the connection steps in cfg's TLS mode:
// implicit TLS shakes hands before the server says anything.
func stepOrder(cfg ServerConfig) []string {
	if cfg.TLS == TLSImplicit {
		return []string{"connect", "tls", "hello"}
	}
	return []string{"connect", "hello", "tls"}
}

func helo(cfg ServerConfig) string {
	if cfg.HELO != "" {
		return cfg.HELO
	}
	return "this host's name"
}

// tlsStep describes the connection's security; state is nil for a plain
// connection.
func tlsStep(cfg ServerConfig, state *tls.ConnectionState) ProbeStep {
	if state == nil || !state.HandshakeComplete {
		why := "tls none: plain text, allowed for a loopback host or with insecure_tls_ok"
		if cfg.TLS == TLSOpportunistic {
			why = "tls opportunistic: the server offers no STARTTLS, so mail goes in plain text"
		}
		return ProbeStep{Name: "tls", OK: true, Skipped: true, Detail: why}
	}
	how := "STARTTLS"
	if cfg.TLS == TLSImplicit {
		how = "implicit TLS"
	}
	detail := fmt.Sprintf("%s, %s, %s", how, tls.VersionName(state.Version), tls.CipherSuiteName(state.CipherSuite))
	if len(state.PeerCertificates) > 0 {
		c := state.PeerCertificates[0]
		detail += fmt.Sprintf(", certificate for %s issued by %q verified, valid until %s", cfg.Host, c.Issuer.CommonName, c.NotAfter.UTC().Format(time.DateOnly))
	}
	return ProbeStep{Name: "tls", OK: true, Detail: detail}
}

// transcript is a go-mail logger that follows the SMTP dialogue, so that a
// failed dial can be pinned to the step that failed.
type transcript struct {
	mu            sync.Mutex
	helloOK       bool // an EHLO or HELO was answered with 250
	lastCmd       string
	startTLSSent  bool
	tlsDone       bool // EHLO after STARTTLS was answered
	authSent      bool
	lastReplyCode int
}

func (t *transcript) Debugf(l gomaillog.Log) { t.record(l) }
func (t *transcript) Infof(l gomaillog.Log)  { t.record(l) }
func (t *transcript) Warnf(l gomaillog.Log)  { t.record(l) }
func (t *transcript) Errorf(l gomaillog.Log) { t.record(l) }

func (t *transcript) record(l gomaillog.Log) {
	line := fmt.Sprintf(l.Format, l.Messages...)
	t.mu.Lock()
	defer t.mu.Unlock()
	if l.Direction == gomaillog.DirClientToServer {
		cmd, _, _ := strings.Cut(strings.ToUpper(line), " ")
		switch {
		case cmd == "STARTTLS":
			t.startTLSSent = true
		case strings.Contains(line, "redacted") || cmd == "AUTH":
			t.authSent = true
		}
		t.lastCmd = cmd
		return
	}
	code, _ := strconv.Atoi(strings.SplitN(line, " ", 2)[0])
	t.lastReplyCode = code
	if (t.lastCmd == "EHLO" || t.lastCmd == "HELO") && code == 250 {
		t.helloOK = true
		t.tlsDone = t.startTLSSent
	}
}

func (t *transcript) hello() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.helloOK
}

// errorCode is the last reply when it was an error (4xx or 5xx), else 0:
// a failure after a 250 came from the client, not the server.
func (t *transcript) errorCode() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.lastReplyCode >= 400 {
		return t.lastReplyCode
	}
	return 0
}

func (t *transcript) tlsStarted() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.tlsDone
}

// failedStep names the step at which DialToSMTPClientWithContext failed,
// from how far the dialogue got.
func (t *transcript) failedStep(cfg ServerConfig, err error) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case isTLSError(err):
		return "tls"
	case t.lastCmd == "":
		return "connect"
	case t.authSent:
		return "auth"
	case t.startTLSSent && !t.tlsDone:
		return "tls"
	case !t.helloOK:
		return "hello"
	case cfg.TLS == TLSStartTLS && !t.startTLSSent:
		return "tls" // STARTTLS required but not offered
	}
	return "auth" // go-mail found no usable AUTH mechanism before sending one
}

// isTLSError reports whether err comes from a TLS handshake.
func isTLSError(err error) bool {
	var (
		verify  *tls.CertificateVerificationError
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
		alert   tls.AlertError
		record  tls.RecordHeaderError
	)
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &host) ||
		errors.As(err, &alert) || errors.As(err, &record)
}
