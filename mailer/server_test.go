package mailer

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestServerConfigValidate(t *testing.T) {
	valid := ServerConfig{Name: "primary", Host: "smtp.example.com", From: "Gateway <noreply@example.com>"}
	cases := []struct {
		name      string
		edit      func(*ServerConfig)
		wantField string // "" means valid
	}{
		{"defaults are enough", func(*ServerConfig) {}, ""},
		{"implicit tls", func(c *ServerConfig) { c.TLS = TLSImplicit }, ""},
		{"explicit port", func(c *ServerConfig) { c.Port = 2525 }, ""},
		{"auth", func(c *ServerConfig) { c.Username, c.Password = "gw", "secret" }, ""},
		{"bare from address", func(c *ServerConfig) { c.From = "noreply@example.com" }, ""},
		{"ipv6 host", func(c *ServerConfig) { c.Host = "2001:db8::25" }, ""},
		{"tls none on localhost", func(c *ServerConfig) { c.Host, c.TLS = "localhost", TLSNone }, ""},
		{"tls none on 127.0.0.1", func(c *ServerConfig) { c.Host, c.TLS = "127.0.0.1", TLSNone }, ""},
		{"tls none on 127.8.9.10", func(c *ServerConfig) { c.Host, c.TLS = "127.8.9.10", TLSNone }, ""},
		{"tls none on ::1", func(c *ServerConfig) { c.Host, c.TLS = "::1", TLSNone }, ""},
		{"missing host", func(c *ServerConfig) { c.Host = "" }, "host"},
		{"host with scheme", func(c *ServerConfig) { c.Host = "smtp://smtp.example.com" }, "host"},
		{"tls none on a remote host", func(c *ServerConfig) { c.TLS = TLSNone }, "tls"},
		{"tls none on a private ip", func(c *ServerConfig) { c.Host, c.TLS = "10.0.0.25", TLSNone }, "tls"},
		{"tls none on a name that merely starts with localhost", func(c *ServerConfig) { c.Host, c.TLS = "localhost.example.com", TLSNone }, "tls"},
		{"unknown tls mode", func(c *ServerConfig) { c.TLS = "ssl" }, "tls"},
		{"port too large", func(c *ServerConfig) { c.Port = 70000 }, "port"},
		{"negative port", func(c *ServerConfig) { c.Port = -1 }, "port"},
		{"missing from", func(c *ServerConfig) { c.From = "" }, "from"},
		{"from not an address", func(c *ServerConfig) { c.From = "Gateway" }, "from"},
		{"password without username", func(c *ServerConfig) { c.Password = "secret" }, "username"},
		{"username with empty password", func(c *ServerConfig) { c.Username = "gw" }, "password"},
		{"negative timeout", func(c *ServerConfig) { c.Timeout = -time.Second }, "timeout"},
		{"opportunistic tls on a remote host", func(c *ServerConfig) { c.TLS = TLSOpportunistic }, "tls"},
		{"opportunistic tls on a private ip", func(c *ServerConfig) { c.Host, c.TLS = "10.0.0.25", TLSOpportunistic }, "tls"},
		{"opportunistic tls on localhost", func(c *ServerConfig) { c.Host, c.TLS = "localhost", TLSOpportunistic }, ""},
		{"opportunistic tls on a name under localhost", func(c *ServerConfig) { c.Host, c.TLS = "relay.localhost", TLSOpportunistic }, ""},
		{"opportunistic tls on a remote host with insecure_tls_ok", func(c *ServerConfig) { c.TLS, c.InsecureTLSOK = TLSOpportunistic, true }, ""},
		{"tls none on a remote host with insecure_tls_ok", func(c *ServerConfig) { c.TLS, c.InsecureTLSOK = TLSNone, true }, ""},
		{"tls none on a name under localhost", func(c *ServerConfig) { c.Host, c.TLS = "home.localhost", TLSNone }, ""},
		{"insecure_tls_ok with starttls", func(c *ServerConfig) { c.InsecureTLSOK = true }, "insecure_tls_ok"},
		{"insecure_tls_ok with implicit tls", func(c *ServerConfig) { c.TLS, c.InsecureTLSOK = TLSImplicit, true }, "insecure_tls_ok"},
		{"named auth mechanism", func(c *ServerConfig) { c.Username, c.Password, c.Auth = "gw", "secret", AuthCRAMMD5 }, ""},
		{"helo name", func(c *ServerConfig) { c.HELO = "gateway.example.com" }, ""},
		{"unknown auth mechanism", func(c *ServerConfig) { c.Username, c.Password, c.Auth = "gw", "secret", "xoauth2" }, "auth"},
		{"auth mechanism without username", func(c *ServerConfig) { c.Auth = AuthPlain }, "auth"},
		{"helo with a space", func(c *ServerConfig) { c.HELO = "gateway example" }, "helo"},
		{"helo with a line break", func(c *ServerConfig) { c.HELO = "gateway\r\nRCPT TO:<x@example.com>" }, "helo"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := valid
			c.edit(&cfg)
			err := cfg.Validate()
			switch {
			case c.wantField == "" && err != nil:
				t.Fatalf("Validate refused a valid config: %v", err)
			case c.wantField != "" && err == nil:
				t.Fatalf("Validate accepted the config, want an error naming %q", c.wantField)
			case c.wantField != "" && !strings.Contains(err.Error(), `"primary": `+c.wantField+":"):
				t.Fatalf("error %q does not name server primary and field %q", err, c.wantField)
			}
		})
	}
}

// TestClearTextRefusalsSayTheFix: refusing tls none or opportunistic
// for a remote host names the host and the two ways out.
func TestClearTextRefusalsSayTheFix(t *testing.T) {
	for _, mode := range []TLSMode{TLSNone, TLSOpportunistic} {
		err := ServerConfig{Name: "relay", Host: "smtp.example.com", TLS: mode, From: "gw@example.com"}.Validate()
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != "tls" {
			t.Fatalf("tls %s to smtp.example.com: error %v, want a ConfigError on tls", mode, err)
		}
		for _, want := range []string{string(mode) + " sends sign-in links in clear text to \"smtp.example.com\"", "use starttls or implicit", "set insecure_tls_ok", "only for loopback hosts such as localhost"} {
			if !strings.Contains(ce.Reason, want) {
				t.Errorf("tls %s: reason %q does not say %q", mode, ce.Reason, want)
			}
		}
	}
}

func TestServerConfigDefaultsFollowTheTLSMode(t *testing.T) {
	for mode, port := range map[TLSMode]int{"": 587, TLSStartTLS: 587, TLSImplicit: 465, TLSOpportunistic: 587, TLSNone: 25} {
		c := ServerConfig{Host: "localhost", TLS: mode, From: "a@example.com"}.withDefaults()
		if c.Port != port {
			t.Errorf("tls %q: default port %d, want %d", mode, c.Port, port)
		}
		if c.Timeout != 15*time.Second {
			t.Errorf("tls %q: default timeout %s, want 15s", mode, c.Timeout)
		}
	}
	if got := (ServerConfig{}).withDefaults().TLS; got != TLSStartTLS {
		t.Errorf("default tls mode %q, want starttls", got)
	}
}

func TestNewSMTPRefusesAnInvalidServer(t *testing.T) {
	_, err := NewSMTP(map[string]ServerConfig{
		"good": {Host: "smtp.example.com", From: "a@example.com"},
		"bad":  {Host: "smtp.example.com", From: "a@example.com", TLS: TLSNone},
	})
	if err == nil || !strings.Contains(err.Error(), `"bad": tls:`) {
		t.Fatalf("NewSMTP error = %v, want one naming server bad and field tls", err)
	}
}

func TestValidateReportsAConfigErrorNamingTheField(t *testing.T) {
	err := ServerConfig{Name: "relay", Host: "smtp.example.com", From: "a@example.com", TLS: TLSNone}.Validate()
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Server != "relay" || ce.Field != "tls" {
		t.Fatalf("Validate error = %#v, want a *ConfigError for server relay, field tls", err)
	}
}

func TestNewSMTPRefusesANameThatDiffersFromItsKey(t *testing.T) {
	_, err := NewSMTP(map[string]ServerConfig{"primary": {Name: "backup", Host: "smtp.example.com", From: "a@example.com"}})
	if err == nil {
		t.Fatal("NewSMTP accepted a server whose Name differs from its key")
	}
}

func newTestSMTP(t *testing.T) *SMTP {
	t.Helper()
	s, err := NewSMTP(map[string]ServerConfig{
		"primary": {Host: "smtp1.example.com", From: "Gateway <noreply@example.com>"},
		"backup":  {Host: "smtp2.example.com", From: "noreply@backup.example.org"},
	})
	if err != nil {
		t.Fatalf("NewSMTP failed: %v", err)
	}
	return s
}

func TestSendWithNoKnownServerFailsPermanently(t *testing.T) {
	s := newTestSMTP(t)
	_, err := s.Send(context.Background(), &Message{ID: "m1", To: "a@example.com", Servers: []string{"gone"}})
	if !errors.Is(err, ErrPermanent) {
		t.Fatalf("Send error = %v, want ErrPermanent: no retry can find a server that is not configured", err)
	}
}

func TestServersThatFailedRecentlyAreTriedLast(t *testing.T) {
	s := newTestSMTP(t)
	clock := newFakeClock()
	s.now = clock.Now
	m := &Message{ID: "m1", Servers: []string{"ghost", "primary", "backup"}}
	names := func() []string {
		up, down, err := s.order(m)
		if err != nil {
			t.Fatalf("order failed: %v", err)
		}
		var out []string
		for _, srv := range append(up, down...) {
			out = append(out, srv.cfg.Name)
		}
		return out
	}
	if got := strings.Join(names(), ","); got != "primary,backup" {
		t.Errorf("order = %s, want primary,backup (message order, unknown names skipped)", got)
	}
	s.markDown("primary")
	if got := strings.Join(names(), ","); got != "backup,primary" {
		t.Errorf("order after primary failed = %s, want backup,primary", got)
	}
	clock.Advance(downFor)
	if got := strings.Join(names(), ","); got != "primary,backup" {
		t.Errorf("order once primary's down time passed = %s, want primary,backup", got)
	}
}

func TestBuiltMessageIsMultipartAlternativeWithAutomationHeaders(t *testing.T) {
	s := newTestSMTP(t)
	m := &Message{
		ID: "Ab-3_x.y", To: "alice@example.com", Subject: "Sign in to finance",
		Text: "plain body", HTML: "<p>html body</p>",
	}
	msg, err := buildMsg(s.servers["primary"], m, time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	if err != nil {
		t.Fatalf("buildMsg failed: %v", err)
	}
	var buf bytes.Buffer
	if _, err := msg.WriteTo(&buf); err != nil {
		t.Fatalf("writing message: %v", err)
	}
	raw := buf.String()
	for _, want := range []string{
		"Message-ID: <Ab-3_x.y@example.com>",
		"Auto-Submitted: auto-generated",
		"Date: Thu, 02 Jan 2025 03:04:05 +0000",
		`From: "Gateway" <noreply@example.com>`,
		"To: <alice@example.com>",
		"Subject: Sign in to finance",
		"Content-Type: multipart/alternative",
		"Content-Type: text/plain",
		"Content-Type: text/html",
	} {
		if !strings.Contains(raw, want) {
			t.Errorf("message lacks %q:\n%s", want, raw)
		}
	}
	if strings.Contains(raw, "User-Agent") || strings.Contains(raw, "X-Mailer") {
		t.Errorf("message advertises the mail library:\n%s", raw)
	}
}

func TestBuildMessageRefusesAnInvalidRecipient(t *testing.T) {
	s := newTestSMTP(t)
	if _, err := buildMsg(s.servers["primary"], &Message{ID: "m1", To: "not an address"}, time.Now()); err == nil {
		t.Fatal("buildMsg accepted an invalid recipient")
	}
	_, err := s.Send(context.Background(), &Message{ID: "m1", To: "not an address", Servers: []string{"primary"}})
	if !errors.Is(err, ErrPermanent) {
		t.Fatalf("Send error = %v, want ErrPermanent for a recipient that can never be valid", err)
	}
}

func TestMessageIDLocalPartKeepsOnlyDotAtomCharacters(t *testing.T) {
	for id, want := range map[string]string{
		"abc-DEF_123":   "abc-DEF_123",
		"a b<c>@d":      "abcd",
		".leading.dot.": "leading.dot",
		"<>@ ":          "mailauth",
	} {
		if got := messageIDLocal(id); got != want {
			t.Errorf("messageIDLocal(%q) = %q, want %q", id, got, want)
		}
	}
}
