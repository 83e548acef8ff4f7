package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalCaddyfile reads a mail_server block; the dispenser is on its
// name:
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
// with Validate, the rules of load, so that a mistake such as `tls none`
// for a remote host points at its line. insecure_tls_ok takes no value: it
// accepts opportunistic or none for a host that is not loopback.
// Certificate checks cannot be skipped, so no option turns them off.
func (c *MailServerConfig) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	name := d.Val()
	start := *d
	err := parseOptions(d, block{prefix: "mail_server " + strconv.Quote(name), listOptions: true, options: optionTable{
		{name: "host", read: stringArg(&c.Host)},
		{name: "port", read: positiveArg(&c.Port, "a port number")},
		{name: "tls", read: stringArg(&c.TLS)},
		{name: "insecure_tls_ok", read: flagArg(&c.InsecureTLSOK)},
		{name: "tls_ca", read: stringArg(&c.TLSCA)},
		{name: "username", read: stringArg(&c.Username)},
		{name: "password", read: stringArg(&c.Password)},
		{name: "auth", read: stringArg(&c.Auth)},
		{name: "from", read: stringArg(&c.From)},
		{name: "helo", read: stringArg(&c.HELO)},
		{name: "timeout", read: durationOption(&c.Timeout)},
		{name: "connections", read: positiveArg(&c.Connections, "a positive number")},
		{name: "idle_timeout", read: durationOption(&c.IdleTimeout)},
		{name: "rate", read: stringArg(&c.Rate)},
	}})
	if err != nil {
		return err
	}
	return errorAt(start, named(c.Validate(), name))
}
