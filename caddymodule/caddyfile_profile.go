package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/mailauth/caddy-mailauth/approval"
)

// UnmarshalCaddyfile reads a profile block; the dispenser is on its name:
//
//	profile <name> {
//		type user|manager
//		server <base URL>
//		subject <template>
//		message <template>
//		message_file <path>
//		message_html_file <path>
//		link_expiration <duration>
//		mail_servers <name...>
//		fallback <directory...>
//		notify_failed_login
//		escalate_after <duration>
//		approvers <address...>
//		number_matching on|off
//		grant_durations <duration|end_of_day...>
//		grant_max <duration>
//		justification optional|required
//		code_fallback on|off
//	}
//
// The block is checked with Validate, and errors point at the line of
// the field at fault. The mail servers and directories it names are
// checked with the rest of the app.
func (c *ProfileConfig) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	name := d.Val()
	start := *d
	err := parseOptions(d, block{prefix: "profile " + strconv.Quote(name), options: optionTable{
		{name: "type", read: stringArg(&c.Type)},
		{name: "server", read: stringArg(&c.Server)},
		{name: "subject", read: stringArg(&c.Subject)},
		{name: "message", read: stringArg(&c.Message)},
		{name: "message_file", read: stringArg(&c.MessageFile)},
		{name: "message_html_file", read: stringArg(&c.MessageHTMLFile)},
		{name: "link_expiration", read: durationOption(&c.LinkExpiration)},
		{name: "mail_servers", read: listArg(&c.MailServers, "")},
		{name: "fallback", read: listArg(&c.Fallback, "")},
		{name: "notify_failed_login", read: flagArg(&c.NotifyFailedLogin)},
		{name: "escalate_after", read: durationOption(&c.EscalateAfter)},
		{name: "approvers", read: listArg(&c.Approvers, " address")},
		{name: "number_matching", read: offArg(&c.DisableNumberMatching)},
		{name: "grant_durations", read: listArg(&c.GrantDurations, " duration (such as 1h, 8h or "+approval.EndOfDayKey+")")},
		{name: "grant_max", read: durationOption(&c.GrantMax)},
		{name: "justification", read: stringArg(&c.Justification)},
		{name: "code_fallback", read: offArg(&c.DisableCodeFallback)},
	}})
	if err != nil {
		return err
	}
	return errorAt(start, named(c.Validate(), name))
}

// UnmarshalCaddyfile reads a policy block; the dispenser is on its name:
//
//	policy <name> {
//		profile <profile>
//		directory <directory>
//		attribute <attribute>
//		values <value...>
//	}
//
// The profile and directory it names are checked with the rest of the
// app.
func (c *PolicyConfig) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	name := d.Val()
	start := *d
	err := parseOptions(d, block{prefix: "policy " + strconv.Quote(name), options: optionTable{
		{name: "profile", read: stringArg(&c.Profile)},
		{name: "directory", read: stringArg(&c.Directory)},
		{name: "attribute", read: stringArg(&c.Attribute)},
		{name: "values", read: listArg(&c.Values, "")},
	}})
	if err != nil {
		return err
	}
	return errorAt(start, named(c.Validate(), name))
}
