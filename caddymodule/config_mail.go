package caddymodule

import (
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/mailauth/caddy-mailauth/mailer"
)

// MailServerConfig is one SMTP server that approval mail can go through.
type MailServerConfig struct {
	// Host is the SMTP server's host name or IP address. Required.
	Host string `json:"host,omitempty"`
	// Port is the SMTP port. Default: 587 for starttls and opportunistic,
	// 465 for implicit, 25 for none.
	Port int `json:"port,omitempty"`
	// TLS is how the connection is secured: "starttls" (mandatory
	// STARTTLS, the default), "implicit" (TLS from the first byte, usually
	// port 465), "opportunistic" (STARTTLS when the server offers it, plain
	// text otherwise) or "none" (plain text). Opportunistic and none are
	// refused for a host that is not loopback (localhost, a name under
	// .localhost, 127.0.0.0/8 or ::1) unless InsecureTLSOK is set. TLS 1.2
	// is the minimum version, and the server's certificate is always
	// verified.
	TLS string `json:"tls,omitempty"`
	// InsecureTLSOK accepts tls "opportunistic" or "none" for a host that
	// is not loopback, where mail (with its sign-in links) may then cross
	// the network in clear text: only for a relay reached over a network
	// trusted end to end. It is refused with "starttls" and "implicit".
	// Default: false.
	InsecureTLSOK bool `json:"insecure_tls_ok,omitempty"`
	// TLSCA is a PEM file of CA certificates that the server's certificate
	// must chain to, for a relay with a private CA. It is read when the
	// config loads. Default: the system's roots. There is no option to
	// skip verification.
	TLSCA string `json:"tls_ca,omitempty"`
	// Username authenticates to the server (SMTP AUTH) when set. It may be
	// a placeholder such as {env.SMTP_USER}, expanded when the config
	// loads. Default: no authentication.
	Username string `json:"username,omitempty"`
	// Password goes with Username. It may be a placeholder such as
	// {env.SMTP_PASSWORD}, expanded when the config loads; it must not be
	// empty once expanded. Default: none.
	Password string `json:"password,omitempty"`
	// Auth is the AUTH mechanism: "plain", "login", "cram-md5" or "auto",
	// which picks the strongest the server offers and never a plain-text
	// one over an unencrypted connection. Needs Username. Default: "auto".
	Auth string `json:"auth,omitempty"`
	// From is the sender, such as "Access Gateway <noreply@example.com>".
	// Its domain also names each mail's Message-ID. Required.
	From string `json:"from,omitempty"`
	// HELO is the name given in EHLO. Default: this machine's host name.
	HELO string `json:"helo,omitempty"`
	// Timeout bounds one delivery attempt through this server: dial, TLS,
	// auth and send. Default: 15s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// Connections is how many SMTP sessions to this server each instance
	// keeps open at once; each carries message after message, so a burst
	// costs one TLS handshake and AUTH per session, not per mail. Keep it
	// within the relay's connection limit divided by the instances
	// sharing it. Default: 2.
	Connections int `json:"connections,omitempty"`
	// IdleTimeout closes a session that carried no mail for this long.
	// Default: 30s.
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`
	// Rate caps the messages given to this server, as "<n>/<window>" such
	// as "30/1m" (Exchange Online's limit per mailbox). Mail over it goes
	// to the profile's next server or waits in the outbox, without using
	// up its retries. It is counted per instance: with several instances,
	// give each its share. Default: no limit.
	Rate string `json:"rate,omitempty"`
}

// Validate checks the server with the mailer's rules. Placeholders in
// username and password count as values here; Provision checks the
// expanded ones again, since an unset variable expands to nothing.
func (c *MailServerConfig) Validate() error {
	if c.Host == "" {
		return fieldErr("mail_server", "host", "required")
	}
	sc, err := c.serverConfig("", c.Username, c.Password)
	if err == nil {
		err = sc.Validate()
	}
	return fromConfigError(err, "")
}

// serverConfig is c as the mailer takes it, with username and password as
// given (expanded or not) and no CA pool: the caller loads TLSCA. A rate
// that does not parse is a *mailer.ConfigError for the field "rate".
func (c *MailServerConfig) serverConfig(name, username, password string) (mailer.ServerConfig, error) {
	var rate mailer.Rate
	if c.Rate != "" {
		var err error
		if rate, err = mailer.ParseRate(c.Rate); err != nil {
			return mailer.ServerConfig{}, &mailer.ConfigError{Server: name, Field: "rate", Reason: err.Error()}
		}
	}
	return mailer.ServerConfig{
		Name:          name,
		Host:          c.Host,
		Port:          c.Port,
		TLS:           mailer.TLSMode(c.TLS),
		InsecureTLSOK: c.InsecureTLSOK,
		Username:      username,
		Password:      password,
		Auth:          mailer.AuthMechanism(c.Auth),
		HELO:          c.HELO,
		From:          c.From,
		Timeout:       time.Duration(c.Timeout),
		Connections:   c.Connections,
		IdleTimeout:   time.Duration(c.IdleTimeout),
		Rate:          rate,
	}, nil
}

// loadCAs reads a PEM file of CA certificates into a pool.
func loadCAs(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}
