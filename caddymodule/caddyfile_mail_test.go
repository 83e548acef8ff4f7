package caddymodule

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/mailauth/caddy-mailauth/mailer"
	"github.com/mailauth/caddy-mailauth/test/mailpit"
)

// mailServerOpts is a global block whose mail_server m has the given body.
func mailServerOpts(body string) string {
	return strings.Replace(validOpts, "\t\t\thost 127.0.0.1\n\t\t\tport 1025\n\t\t\ttls none\n\t\t\tfrom gw@example.test\n", body, 1)
}

func TestCaddyfileMailServerTakesEveryOption(t *testing.T) {
	out, err := adapt(t, globalBlock(mailServerOpts(`			host smtp.example.test
			port 2465
			tls implicit
			tls_ca /etc/caddy/relay-ca.pem
			username gateway
			password {env.SMTP_PASSWORD}
			auth cram-md5
			from "Access Gateway <gw@example.test>"
			helo gw.example.test
			timeout 20s
			connections 4
			idle_timeout 1m
			rate 30/1m
`)))
	if err != nil {
		t.Fatalf("a mail_server using every option does not adapt: %v", err)
	}
	var cfg struct {
		Apps struct {
			Mailauth App `json:"mailauth"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	got := cfg.Apps.Mailauth.MailServers["m"]
	want := MailServerConfig{
		Host: "smtp.example.test", Port: 2465, TLS: "implicit", TLSCA: "/etc/caddy/relay-ca.pem",
		Username: "gateway", Password: "{env.SMTP_PASSWORD}", Auth: "cram-md5",
		From: "Access Gateway <gw@example.test>", HELO: "gw.example.test", Timeout: caddy.Duration(20 * time.Second),
		Connections: 4, IdleTimeout: caddy.Duration(time.Minute), Rate: "30/1m",
	}
	if got == nil || *got != want {
		t.Fatalf("mail_server m adapted to %+v, want %+v (the password placeholder kept for load)", got, want)
	}
}

func TestCaddyfileMailServerErrorsNameServerFieldAndLine(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"unknown tls mode", "\t\t\thost h\n\t\t\ttls ssl\n\t\t\tfrom gw@example.test\n", "Caddyfile:5 - Error during parsing: mail_server \"m\": tls: \"ssl\" is not one of starttls, implicit, opportunistic, none"},
		{"unknown auth", "\t\t\thost h\n\t\t\tusername u\n\t\t\tpassword p\n\t\t\tauth xoauth2\n\t\t\tfrom gw@example.test\n", "Caddyfile:7 - Error during parsing: mail_server \"m\": auth: \"xoauth2\" is not one of plain, login, cram-md5, auto"},
		{"auth without username", "\t\t\thost h\n\t\t\tauth plain\n\t\t\tfrom gw@example.test\n", "Caddyfile:5 - Error during parsing: mail_server \"m\": auth: plain needs a username"},
		{"tls none for a remote host points at the tls line", "\t\t\thost smtp.example.test\n\t\t\ttls none\n\t\t\tfrom gw@example.test\n", "Caddyfile:5 - Error during parsing: mail_server \"m\": tls: none sends sign-in links in clear text to \"smtp.example.test\"; use starttls or implicit, or set insecure_tls_ok"},
		{"tls opportunistic for a remote host points at the tls line", "\t\t\thost smtp.example.test\n\t\t\ttls opportunistic\n\t\t\tfrom gw@example.test\n", "Caddyfile:5 - Error during parsing: mail_server \"m\": tls: opportunistic sends sign-in links in clear text to \"smtp.example.test\" whenever STARTTLS is not offered"},
		{"insecure_tls_ok with starttls points at its line", "\t\t\thost smtp.example.test\n\t\t\tinsecure_tls_ok\n\t\t\tfrom gw@example.test\n", "Caddyfile:5 - Error during parsing: mail_server \"m\": insecure_tls_ok: has no effect with tls starttls, which always encrypts; remove it"},
		{"insecure_tls_ok with a value", "\t\t\thost smtp.example.test\n\t\t\ttls none\n\t\t\tinsecure_tls_ok yes\n\t\t\tfrom gw@example.test\n", "Caddyfile:6 - Error during parsing: mail_server \"m\": insecure_tls_ok: takes no value"},
		{"helo with a space", "\t\t\thost h\n\t\t\thelo \"gw example\"\n\t\t\tfrom gw@example.test\n", "Caddyfile:5 - Error during parsing: mail_server \"m\": helo:"},
		{"password without username", "\t\t\thost h\n\t\t\tpassword p\n\t\t\tfrom gw@example.test\n", "mail_server \"m\": username: is required when a password is set"},
		{"skip-verify is no option", "\t\t\thost h\n\t\t\ttls_insecure_skip_verify\n\t\t\tfrom gw@example.test\n", "Caddyfile:5 - Error during parsing: mail_server \"m\": unknown option \"tls_insecure_skip_verify\""},
		{"unknown option", "\t\t\thost h\n\t\t\tinsecure yes\n\t\t\tfrom gw@example.test\n", "Caddyfile:5 - Error during parsing: mail_server \"m\": unknown option \"insecure\""},
		{"option set twice", "\t\t\thost h\n\t\t\thelo a\n\t\t\thelo b\n\t\t\tfrom gw@example.test\n", "Caddyfile:6 - Error during parsing: mail_server \"m\": helo: set twice"},
		{"bad timeout", "\t\t\thost h\n\t\t\ttimeout soon\n\t\t\tfrom gw@example.test\n", "Caddyfile:5 - Error during parsing: mail_server \"m\": timeout"},
		{"no connections", "\t\t\thost h\n\t\t\tconnections 0\n\t\t\tfrom gw@example.test\n", "Caddyfile:5 - Error during parsing: mail_server \"m\": connections: \"0\" is not a positive number"},
		{"too many connections", "\t\t\thost h\n\t\t\tconnections 500\n\t\t\tfrom gw@example.test\n", "Caddyfile:5 - Error during parsing: mail_server \"m\": connections: 500 is out of range 1-100"},
		{"bad idle_timeout", "\t\t\thost h\n\t\t\tidle_timeout -1s\n\t\t\tfrom gw@example.test\n", "Caddyfile:5 - Error during parsing: mail_server \"m\": idle_timeout"},
		{"rate without a window", "\t\t\thost h\n\t\t\trate 30\n\t\t\tfrom gw@example.test\n", "Caddyfile:5 - Error during parsing: mail_server \"m\": rate: \"30\" is not <messages>/<window>, such as 30/1m"},
		{"rate of no messages", "\t\t\thost h\n\t\t\trate 0/1m\n\t\t\tfrom gw@example.test\n", "Caddyfile:5 - Error during parsing: mail_server \"m\": rate: \"0/1m\": \"0\" is not a positive number of messages"},
		{"rate with a bad window", "\t\t\thost h\n\t\t\trate 30/fortnight\n\t\t\tfrom gw@example.test\n", "Caddyfile:5 - Error during parsing: mail_server \"m\": rate: \"30/fortnight\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := adapt(t, globalBlock(mailServerOpts(tc.body)))
			wantParseError(t, err, tc.want)
		})
	}
}

func TestCaddyfileInsecureTLSOKAdaptsToItsJSONField(t *testing.T) {
	out, err := adapt(t, globalBlock(mailServerOpts("\t\t\thost relay.corp.example\n\t\t\ttls opportunistic\n\t\t\tinsecure_tls_ok\n\t\t\tfrom gw@example.test\n")))
	if err != nil {
		t.Fatalf("tls opportunistic with insecure_tls_ok does not adapt: %v", err)
	}
	if !strings.Contains(string(out), `"tls":"opportunistic","insecure_tls_ok":true`) {
		t.Fatalf("insecure_tls_ok is not in the adapted mail_server:\n%s", out)
	}
}

func TestLoadExpandsMailCredentialsAndReadsTheCA(t *testing.T) {
	certs := mailpit.NewCertificates(t)
	t.Setenv("MAILAUTH_TEST_SMTP_USER", "gateway")
	t.Setenv("MAILAUTH_TEST_SMTP_PASSWORD", "s3cret")
	app := &App{MailServers: map[string]*MailServerConfig{"relay": {
		Host: "smtp.example.test", TLS: "starttls", TLSCA: certs.CA, Auth: "login", HELO: "gw.example.test",
		Username: "{env.MAILAUTH_TEST_SMTP_USER}", Password: "{env.MAILAUTH_TEST_SMTP_PASSWORD}", From: "gw@example.test",
		Timeout: caddy.Duration(7 * time.Second),
	}}}
	servers, err := app.mailServers(caddy.NewReplacer())
	if err != nil {
		t.Fatalf("mailServers refused a valid server: %v", err)
	}
	got := servers["relay"]
	if got.Username != "gateway" || got.Password != "s3cret" {
		t.Errorf("credentials %q/%q, want the expanded gateway/s3cret", got.Username, got.Password)
	}
	if got.Auth != mailer.AuthLogin || got.HELO != "gw.example.test" || got.TLS != mailer.TLSStartTLS || got.Timeout != 7*time.Second {
		t.Errorf("mapped to %+v, want auth login, helo gw.example.test, starttls and 7s", got)
	}
	if got.RootCAs == nil || !got.RootCAs.Equal(certs.Pool) {
		t.Error("the tls_ca file did not become the server's root CAs")
	}
}

func TestLoadErrorsForMailServersNameTheField(t *testing.T) {
	notPEM := filepath.Join(t.TempDir(), "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  MailServerConfig
		want string
	}{
		{"missing tls_ca file", MailServerConfig{Host: "h.example.test", From: "a@example.test", TLSCA: "/nonexistent/ca.pem"}, `mailauth: mail_server "relay": tls_ca: open /nonexistent/ca.pem`},
		{"tls_ca without a certificate", MailServerConfig{Host: "h.example.test", From: "a@example.test", TLSCA: notPEM}, `mailauth: mail_server "relay": tls_ca: ` + notPEM + ` holds no PEM certificate`},
		{"password placeholder that expands to nothing", MailServerConfig{Host: "h.example.test", From: "a@example.test", Username: "u", Password: "{env.MAILAUTH_TEST_UNSET}"}, `mailauth: mail_server "relay": password: is empty while username "u" is set`},
		{"tls none off loopback", MailServerConfig{Host: "h.example.test", From: "a@example.test", TLS: "none"}, `mailauth: mail_server "relay": tls: none sends sign-in links in clear text`},
		{"tls opportunistic off loopback", MailServerConfig{Host: "h.example.test", From: "a@example.test", TLS: "opportunistic"}, `mailauth: mail_server "relay": tls: opportunistic sends sign-in links in clear text to "h.example.test"`},
		{"insecure_tls_ok with implicit tls", MailServerConfig{Host: "h.example.test", From: "a@example.test", TLS: "implicit", InsecureTLSOK: true}, `mailauth: mail_server "relay": insecure_tls_ok: has no effect with tls implicit`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := &App{MailServers: map[string]*MailServerConfig{"relay": &tc.cfg}}
			_, err := app.mailServers(caddy.NewReplacer())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error containing %q, got %v", tc.want, err)
			}
		})
	}
}

func TestLoadMapsConnectionsIdleTimeoutAndRate(t *testing.T) {
	app := &App{MailServers: map[string]*MailServerConfig{"relay": {
		Host: "127.0.0.1", TLS: "none", From: "gw@example.test",
		Connections: 5, IdleTimeout: caddy.Duration(time.Minute), Rate: "300/m",
	}}}
	servers, err := app.mailServers(caddy.NewReplacer())
	if err != nil {
		t.Fatalf("mailServers refused a valid server: %v", err)
	}
	got := servers["relay"]
	if got.Connections != 5 || got.IdleTimeout != time.Minute || got.Rate != (mailer.Rate{Messages: 300, Per: time.Minute}) {
		t.Errorf("mapped to connections %d, idle %v, rate %v; want 5, 1m, 300/1m", got.Connections, got.IdleTimeout, got.Rate)
	}
	app.MailServers["relay"].Rate = "300 per minute"
	if _, err := app.mailServers(caddy.NewReplacer()); err == nil || !strings.Contains(err.Error(), `mail_server "relay": rate: `) {
		t.Errorf("a JSON rate that does not parse gave %v; want an error naming the server and the rate field", err)
	}
}
