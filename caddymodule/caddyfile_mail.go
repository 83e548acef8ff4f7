package caddymodule

import (
	"errors"
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/mailauth/caddy-mailauth/mailer"
)

// parseMailServer reads a mail_server block; the dispenser is on its name:
//
//	mail_server <name> {
//		host <host>
//		port <port>
//		tls starttls|implicit|opportunistic|none
//		insecure_tls_ok
//		tls_ca <pem file>
//		username <user>
//		password <password>
//		auth plain|login|cram-md5|auto
//		from <address>
//		helo <host name>
//		timeout <duration>
//		connections <n>
//		idle_timeout <duration>
//		rate <n>/<window>
//	}
//
// Errors name the server, the field and the line. The block is checked
// with the same rules as at load (mailer.ServerConfig.Validate), so that a
// mistake such as `tls none` for a remote host points at its line.
// insecure_tls_ok takes no value: it accepts opportunistic or none for a
// host that is not loopback.
// mailServerOptions are the options of a mail_server block. Certificate
// checks cannot be skipped, so no option turns them off.
var mailServerOptions = map[string]bool{
	"host": true, "port": true, "tls": true, "insecure_tls_ok": true, "tls_ca": true, "username": true,
	"password": true, "auth": true, "from": true, "helo": true, "timeout": true,
	"connections": true, "idle_timeout": true, "rate": true,
}

func parseMailServer(d *caddyfile.Dispenser) (*MailServerConfig, error) {
	name := d.Val()
	errf := func(d *caddyfile.Dispenser, format string, args ...any) error {
		return d.Errf("mail_server %q: "+format, append([]any{name}, args...)...)
	}
	ms := &MailServerConfig{}
	nesting := d.Nesting()
	// Where each field was set, for errors found once the block is read.
	lines := map[string]caddyfile.Dispenser{}
	for d.NextBlock(nesting) {
		f := d.Val()
		if !mailServerOptions[f] {
			return nil, errf(d, "unknown option %q (host, port, tls, insecure_tls_ok, tls_ca, username, password, auth, from, helo, timeout, connections, idle_timeout, rate)", f)
		}
		if _, dup := lines[f]; dup {
			return nil, errf(d, "%s: set twice", f)
		}
		lines[f] = *d
		if f == "insecure_tls_ok" {
			if d.NextArg() {
				return nil, errf(d, "insecure_tls_ok: takes no value")
			}
			ms.InsecureTLSOK = true
			continue
		}
		if f == "timeout" || f == "idle_timeout" {
			dur, err := durationArg(d, "mail_server "+strconv.Quote(name)+": "+f)
			if err != nil {
				return nil, err
			}
			if f == "timeout" {
				ms.Timeout = dur
			} else {
				ms.IdleTimeout = dur
			}
			continue
		}
		if !d.NextArg() || d.CountRemainingArgs() > 0 {
			return nil, errf(d, "%s: want one value", f)
		}
		v := d.Val()
		switch f {
		case "host":
			ms.Host = v
		case "port":
			port, err := strconv.Atoi(v)
			if err != nil || port < 1 || port > 65535 {
				return nil, errf(d, "port: %q is not a port number", v)
			}
			ms.Port = port
		case "tls":
			switch mailer.TLSMode(v) {
			case mailer.TLSStartTLS, mailer.TLSImplicit, mailer.TLSOpportunistic, mailer.TLSNone:
			default:
				return nil, errf(d, "tls: %q is not one of starttls, implicit, opportunistic, none", v)
			}
			ms.TLS = v
		case "tls_ca":
			ms.TLSCA = v
		case "username":
			ms.Username = v
		case "password":
			ms.Password = v
		case "auth":
			switch mailer.AuthMechanism(v) {
			case mailer.AuthPlain, mailer.AuthLogin, mailer.AuthCRAMMD5, mailer.AuthAuto:
			default:
				return nil, errf(d, "auth: %q is not one of plain, login, cram-md5, auto", v)
			}
			ms.Auth = v
		case "from":
			if !validAddress(v) {
				return nil, errf(d, "from: %q is not a mail address", v)
			}
			ms.From = v
		case "helo":
			ms.HELO = v
		case "connections":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return nil, errf(d, "connections: %q is not a positive number", v)
			}
			ms.Connections = n
		case "rate":
			// Checked with the rest of the block below.
			ms.Rate = v
		}
	}
	if ms.Host == "" {
		return nil, errf(d, "host: required")
	}
	if ms.From == "" {
		return nil, errf(d, "from: required")
	}
	// Placeholders stay unexpanded here; Validate accepts them as values,
	// and load checks the expanded ones again.
	sc, err := ms.serverConfig(name, ms.Username, ms.Password)
	if err == nil {
		err = sc.Validate()
	}
	var ce *mailer.ConfigError
	if errors.As(err, &ce) {
		at, ok := lines[ce.Field]
		if !ok {
			at = *d
		}
		return nil, errf(&at, "%s: %s", ce.Field, ce.Reason)
	}
	if err != nil {
		return nil, errf(d, "%v", err)
	}
	return ms, nil
}
