package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/mailauth/caddy-mailauth/caddymodule/directories"
)

// adapt runs the Caddyfile adapter as `caddy adapt` does.
func adapt(t *testing.T, src string) ([]byte, error) {
	t.Helper()
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
	return out, err
}

// guestConfig decodes a guest module's JSON into mod, refusing fields the
// module does not have, and returns the module name under key.
func guestConfig(t *testing.T, raw json.RawMessage, key string, mod any) string {
	t.Helper()
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		t.Fatalf("module config %s: %v", raw, err)
	}
	var name string
	if err := json.Unmarshal(obj[key], &name); err != nil {
		t.Fatalf("module config %s: %s: %v", raw, key, err)
	}
	delete(obj, key)
	rest, _ := json.Marshal(obj)
	dec := json.NewDecoder(bytes.NewReader(rest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(mod); err != nil {
		t.Fatalf("module config %s does not decode into %T: %v", raw, mod, err)
	}
	return name
}

// globalBlock wraps mailauth options in a minimal valid site.
func globalBlock(opts string) string {
	return "{\n\tmailauth {\n" + opts + "\n\t}\n}\n\nhttp://:8080 {\n\tmailauth {\n\t\tdefault_profile daily\n\t}\n\trespond ok\n}\n"
}

const validOpts = `		mail_server m {
			host 127.0.0.1
			port 1025
			tls none
			from gw@example.test
		}
		directory staff local {
			user alice {
				email alice@example.test
				attr department IT Ops
			}
		}
		profile daily {
			server https://apps.example.test
			fallback staff
		}`

func TestCaddyfileExampleAdapts(t *testing.T) {
	out := adaptExample(t)
	var cfg struct {
		Apps struct {
			Mailauth App `json:"mailauth"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	app := cfg.Apps.Mailauth
	if app.Profiles["daily"] == nil || app.Profiles["daily"].Server != "https://apps.example.com" || len(app.Profiles["daily"].Fallback) != 2 {
		t.Fatalf("profile daily not adapted as written: %+v", app.Profiles["daily"])
	}
	var corp directories.LDAP
	if kind := guestConfig(t, app.Directories["corp"], "type", &corp); kind != "ldap" || corp.URL != "ldaps://dc1.example.com" || corp.UserFilter != "(|(uid={input})(mail={input}))" || len(corp.Attributes) != 2 {
		t.Fatalf("directory corp not adapted as written: type %q, %+v", kind, corp)
	}
	if p := app.Policies["executives"]; p == nil || p.Profile != "sensitive" || p.Directory != "corp" || len(p.Values) != 2 || p.Values[1] != "/^cn=finance-.*$/" {
		t.Fatalf("policy executives not adapted as written: %+v", p)
	}
	if !strings.Contains(string(out), `"policies":["executives"]`) {
		t.Fatalf("the site's policies are missing from the adapted JSON")
	}
	var staff directories.Local
	if kind := guestConfig(t, app.Directories["staff"], "type", &staff); kind != "local" {
		t.Fatalf("directory staff adapted as type %q, want local", kind)
	}
	if u := staff.Users; len(u) != 1 || u[0].Sponsor != "bob@example.com" || u[0].Attributes["department"][0] != "IT" {
		t.Fatalf("directory staff not adapted as written: %+v", u)
	}
	if ms := app.MailServers["primary"]; ms == nil || ms.Port != 587 || ms.TLS != "starttls" || ms.Password != "{env.SMTP_PASSWORD}" {
		t.Fatalf("mail_server primary not adapted as written (placeholders must survive to load time): %+v", ms)
	}
	if !strings.Contains(string(out), `"handler":"mailauth"`) || !strings.Contains(string(out), `"default_profile":"daily"`) {
		t.Fatalf("site handler missing from adapted JSON:\n%s", out)
	}
	// Authentication must run before the proxy.
	if strings.Index(string(out), `"handler":"mailauth"`) > strings.Index(string(out), `"handler":"reverse_proxy"`) {
		t.Fatal("mailauth is ordered after reverse_proxy")
	}
}

func TestCaddyfileStoreRedis(t *testing.T) {
	out, err := adapt(t, globalBlock(validOpts+"\n\t\tstore redis {env.REDIS_URL} {\n\t\t\ttls\n\t\t\ttls_ca /etc/ca.pem\n\t\t\tkey_prefix gw1:\n\t\t\tpool_size 20\n\t\t\tdial_timeout 1s\n\t\t\tsentinel mymaster 10.0.0.1:26379 10.0.0.2:26379\n\t\t}\n\t\taudit_retention 30d"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"backend":"redis"`, `"url":"{env.REDIS_URL}"`, `"tls":true`, `"tls_ca":"/etc/ca.pem"`, `"key_prefix":"gw1:"`, `"pool_size":20`, `"dial_timeout":1000000000`, `"sentinel_master":"mymaster"`, `"sentinel_addrs":["10.0.0.1:26379","10.0.0.2:26379"]`, `"audit_retention":2592000000000000`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("adapted JSON lacks %s:\n%s", want, out)
		}
	}
}

func TestCaddyfileAttrCollectsValues(t *testing.T) {
	out, err := adapt(t, globalBlock(validOpts))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"department":["IT","Ops"]`) {
		t.Fatalf("attr with two values not kept as a list:\n%s", out)
	}
}

// TestCaddyfileErrorsNameFieldAndLine: every mistake is refused with the
// field's name and the line it is on.
func TestCaddyfileErrorsNameFieldAndLine(t *testing.T) {
	for _, tc := range []struct {
		name, opts, want string
	}{
		{"unknown option", "\t\tstorage badger /x", "Caddyfile:3 - Error during parsing: unknown mailauth option \"storage\""},
		{"store backend", "\t\tstore postgres /x", "Caddyfile:3 - Error during parsing: store: backend \"postgres\" is not supported"},
		{"store redis without url", "\t\tstore redis", "Caddyfile:3 - Error during parsing: store redis: want a URL"},
		{"store redis unknown option", "\t\tstore redis redis://r:6379 {\n\t\t\tpassword x\n\t\t}", "Caddyfile:4 - Error during parsing: store redis: unknown option \"password\""},
		{"store redis pool_size", "\t\tstore redis redis://r:6379 {\n\t\t\tpool_size none\n\t\t}", "Caddyfile:4 - Error during parsing: store redis: pool_size: \"none\" is not a positive number"},
		{"store redis sentinel", "\t\tstore redis {\n\t\t\tsentinel mymaster\n\t\t}", "Caddyfile:4 - Error during parsing: store redis: sentinel: want"},
		{"audit_retention", "\t\taudit_retention forever", "Caddyfile:3 - Error during parsing: audit_retention:"},
		{"bad session_lifetime", "\t\tsession_lifetime soon", "Caddyfile:3 - Error during parsing: session_lifetime:"},
		{"mail_server without host", "\t\tmail_server m {\n\t\t\tfrom gw@example.test\n\t\t}", "mail_server \"m\": host: required"},
		{"mail_server bad tls", "\t\tmail_server m {\n\t\t\thost h\n\t\t\ttls sometimes\n\t\t}", "Caddyfile:5 - Error during parsing: mail_server \"m\": tls: \"sometimes\" is not one of"},
		{"mail_server bad port", "\t\tmail_server m {\n\t\t\thost h\n\t\t\tport 99999\n\t\t}", "Caddyfile:5 - Error during parsing: mail_server \"m\": port"},
		{"mail_server bad from", "\t\tmail_server m {\n\t\t\thost h\n\t\t\tfrom not-an-address\n\t\t}", "Caddyfile:5 - Error during parsing: mail_server \"m\": from"},
		{"duplicate mail_server", "\t\tmail_server m {\n\t\t\thost h\n\t\t\tfrom a@b.c\n\t\t}\n\t\tmail_server m {\n\t\t\thost h\n\t\t\tfrom a@b.c\n\t\t}", "Caddyfile:7 - Error during parsing: mail_server \"m\": defined twice"},
		{"directory type", "\t\tdirectory d ldapish {\n\t\t}", "Caddyfile:3 - Error during parsing: directory \"d\": type \"ldapish\" is not supported (local or ldap)"},
		{"ldap url scheme", "\t\tdirectory corp ldap {\n\t\t\turl http://dc1\n\t\t}", "Caddyfile:4 - Error during parsing: directory \"corp\": url: \"http://dc1\" must start with ldap:// or ldaps://"},
		{"ldap without base_dn", "\t\tdirectory corp ldap {\n\t\t\turl ldaps://dc1\n\t\t}", "Caddyfile:5 - Error during parsing: directory \"corp\": base_dn: required"},
		{"ldap filter without input", "\t\tdirectory corp ldap {\n\t\t\turl ldaps://dc1\n\t\t\tuser_filter (uid=bob)\n\t\t}", "Caddyfile:5 - Error during parsing: directory \"corp\": user_filter: \"(uid=bob)\" must contain {input}"},
		{"ldap pool_size", "\t\tdirectory corp ldap {\n\t\t\turl ldaps://dc1\n\t\t\tpool_size 0\n\t\t}", "Caddyfile:5 - Error during parsing: directory \"corp\": pool_size"},
		{"user without email", "\t\tdirectory d local {\n\t\t\tuser alice {\n\t\t\t\tname Alice\n\t\t\t}\n\t\t}", "directory \"d\": user \"alice\": email: required"},
		{"user bad sponsor", "\t\tdirectory d local {\n\t\t\tuser alice {\n\t\t\t\temail a@b.c\n\t\t\t\tsponsor nobody\n\t\t\t}\n\t\t}", "Caddyfile:6 - Error during parsing: directory \"d\": user \"alice\": sponsor"},
		{"profile type", "\t\tprofile p {\n\t\t\ttype robot\n\t\t}", "Caddyfile:4 - Error during parsing: profile \"p\": type: \"robot\" is not a profile type"},
		{"profile without server", "\t\tprofile p {\n\t\t\tfallback x\n\t\t}", "profile \"p\": server: required"},
		{"profile link_expiration", "\t\tprofile p {\n\t\t\tlink_expiration -5m\n\t\t}", "Caddyfile:4 - Error during parsing: profile \"p\": link_expiration: must be positive"},
		{"profile unknown field", "\t\tprofile p {\n\t\t\tmessage_html /x\n\t\t}", "Caddyfile:4 - Error during parsing: profile \"p\": unknown option \"message_html\""},
		{"fallback to missing directory", validOpts + "\n\t\tprofile q {\n\t\t\tserver https://x.test\n\t\t\tfallback staff corp\n\t\t}", "Caddyfile:21 - Error during parsing: profile \"q\": fallback: no directory named \"corp\""},
		{"mail_servers to missing server", validOpts + "\n\t\tprofile q {\n\t\t\tserver https://x.test\n\t\t\tmail_servers m backup\n\t\t\tfallback staff\n\t\t}", "Caddyfile:21 - Error during parsing: profile \"q\": mail_servers: no mail_server named \"backup\""},
		{"policy with unknown profile", validOpts + "\n\t\tpolicy execs {\n\t\t\tprofile sensitive\n\t\t\tattribute memberOf\n\t\t\tvalues x\n\t\t}", "Caddyfile:23 - Error during parsing: policy \"execs\": profile: no profile named \"sensitive\""},
		{"policy directory outside the fallback", validOpts + "\n\t\tdirectory other local {\n\t\t}\n\t\tpolicy execs {\n\t\t\tprofile daily\n\t\t\tdirectory other\n\t\t\tattribute memberOf\n\t\t\tvalues x\n\t\t}", "Caddyfile:26 - Error during parsing: policy \"execs\": directory: \"other\" is not in the fallback list of profile \"daily\""},
		{"policy bad regex", validOpts + "\n\t\tpolicy execs {\n\t\t\tprofile daily\n\t\t\tattribute memberOf\n\t\t\tvalues ok \"/^cn=(finance/\"\n\t\t}", "Caddyfile:22 - Error during parsing: policy \"execs\": values: \"/^cn=(finance/\" is not a valid regular expression"},
		{"policy without attribute", validOpts + "\n\t\tpolicy execs {\n\t\t\tprofile daily\n\t\t\tvalues x\n\t\t}", "Caddyfile:22 - Error during parsing: policy \"execs\": attribute: required"},
		{"approvers not addresses", validOpts + "\n\t\tprofile q {\n\t\t\tapprovers ops\n\t\t}", "Caddyfile:20 - Error during parsing: profile \"q\": approvers: \"ops\" is not a mail address"},
		{"field set twice", "\t\tprofile p {\n\t\t\tserver https://a.test\n\t\t\tserver https://b.test\n\t\t}", "Caddyfile:5 - Error during parsing: profile \"p\": server: set twice"},
		{"grant_durations empty", "\t\tprofile p {\n\t\t\tgrant_durations\n\t\t}", "Caddyfile:4 - Error during parsing: profile \"p\": grant_durations: name at least one duration"},
		{"grant_durations not a duration", "\t\tprofile p {\n\t\t\tgrant_durations 1h later\n\t\t}", "Caddyfile:4 - Error during parsing: profile \"p\": grant_durations: \"later\" is not a positive duration"},
		{"grant_max", "\t\tprofile p {\n\t\t\tgrant_max forever\n\t\t}", "Caddyfile:4 - Error during parsing: profile \"p\": grant_max:"},
		{"justification", "\t\tprofile p {\n\t\t\tjustification sometimes\n\t\t}", "Caddyfile:4 - Error during parsing: profile \"p\": justification: want optional or required"},
		{"code_fallback value", "\t\tprofile p {\n\t\t\tcode_fallback no\n\t\t}", "Caddyfile:4 - Error during parsing: profile \"p\": code_fallback: want on or off"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := adapt(t, globalBlock(tc.opts))
			wantParseError(t, err, tc.want)
		})
	}
}

func TestSiteDirectiveNeedsDefaultProfile(t *testing.T) {
	_, err := adapt(t, "{\n\tmailauth {\n"+validOpts+"\n\t}\n}\n\nhttp://:8080 {\n\tmailauth {\n\t}\n\trespond ok\n}\n")
	if err == nil || !strings.HasSuffix(err.Error(), "at Caddyfile:24") || !strings.Contains(err.Error(), "default_profile: required") {
		t.Fatalf("want default_profile required at line 24, got %v", err)
	}
}

// loadJSON provisions a config as `caddy validate` does, with the store in
// a temporary directory.
func loadJSON(t *testing.T, src string) error {
	t.Helper()
	src = strings.Replace(src, "\t\tmail_server m {", "\t\tstore badger "+filepath.ToSlash(t.TempDir())+"\n\t\tmail_server m {", 1)
	out, err := adapt(t, src)
	if err != nil {
		return err
	}
	var cfg caddy.Config
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	return caddy.Validate(&cfg)
}

func TestValidConfigProvisions(t *testing.T) {
	if err := loadJSON(t, globalBlock(validOpts)); err != nil {
		t.Fatalf("a valid config was refused: %v", err)
	}
}

// TestLoadErrorsNameTheField covers what only provisioning can check.
func TestLoadErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct{ name, src, want string }{
		{"unknown default_profile", strings.Replace(globalBlock(validOpts), "default_profile daily", "default_profile nightly", 1), `default_profile: no profile named "nightly"`},
		{"server with a path", globalBlock(strings.Replace(validOpts, "https://apps.example.test", "https://apps.example.test/login", 1)), `profile "daily": server:`},
		{"tls none off loopback", globalBlock(strings.Replace(validOpts, "host 127.0.0.1", "host smtp.example.test", 1)), `mail_server "m"`},
		{"bad subject template", globalBlock(strings.Replace(validOpts, "fallback staff", "fallback staff\n\t\t\tsubject \"{{.Nope}}\"", 1)), `profile "daily": subject/message`},
		{"escalation on a user profile", globalBlock(strings.Replace(validOpts, "fallback staff\n", "fallback staff\n\t\t\tescalate_after 5m\n", 1)), `profile "daily": escalate_after: escalation needs type manager`},
		{"escalation after the link expired", globalBlock(strings.Replace(validOpts, "fallback staff\n", "fallback staff\n\t\t\ttype manager\n\t\t\tescalate_after 20m\n", 1)), `profile "daily": escalate_after: 20m0s must be positive and shorter than link_expiration (15m0s)`},
		{"unknown policy on a site", strings.Replace(globalBlock(validOpts), "default_profile daily", "default_profile daily\n\t\tpolicies nope", 1), `policies: no policy named "nope"`},
		{"code_fallback on a manager profile", globalBlock(strings.Replace(validOpts, "fallback staff\n", "fallback staff\n\t\t\ttype manager\n\t\t\tcode_fallback off\n", 1)), `profile "daily": code_fallback: a manager profile never mails a code`},
		{"missing message_file", globalBlock(strings.Replace(validOpts, "fallback staff", "fallback staff\n\t\t\tmessage_file /nonexistent/mail.txt", 1)), `profile "daily": message_file`},
		{"grants on a user profile", globalBlock(strings.Replace(validOpts, "fallback staff\n", "fallback staff\n\t\t\tgrant_durations 1h\n", 1)), `profile "daily": grant_durations: only a manager profile gives time-boxed grants`},
		{"justification on a user profile", globalBlock(strings.Replace(validOpts, "fallback staff\n", "fallback staff\n\t\t\tjustification required\n", 1)), `profile "daily": justification: only a manager profile`},
		{"grant_max over the session lifetime", globalBlock(strings.Replace(validOpts, "fallback staff\n", "fallback staff\n\t\t\ttype manager\n\t\t\tgrant_max 12h\n", 1)), `profile "daily": grant_max: 12h0m0s must be positive and at most session_lifetime (8h0m0s)`},
		{"grant duration over grant_max", globalBlock(strings.Replace(validOpts, "fallback staff\n", "fallback staff\n\t\t\ttype manager\n\t\t\tgrant_max 2h\n\t\t\tgrant_durations 1h 4h\n", 1)), `profile "daily": grant_durations: 4h is longer than grant_max (2h0m0s)`},
		{"grant duration twice", globalBlock(strings.Replace(validOpts, "fallback staff\n", "fallback staff\n\t\t\ttype manager\n\t\t\tgrant_durations 1h 60m\n", 1)), `profile "daily": grant_durations: 60m is listed twice`},
		{"http server off loopback", globalBlock(strings.Replace(validOpts, "https://apps.example.test", "http://apps.example.com", 1)), `mailauth: profile "daily": server: "http://apps.example.com" sends sign-in links in clear text; use https:// (http:// is allowed only for loopback hosts such as localhost)`},
		{"http server on a name that merely starts with localhost", globalBlock(strings.Replace(validOpts, "https://apps.example.test", "http://localhost.example.com:8080", 1)), `profile "daily": server: "http://localhost.example.com:8080" sends sign-in links in clear text`},
		{"plain ldap off loopback", globalBlock(validOpts + "\n\t\tdirectory corp ldap {\n\t\t\turl ldap://dc1.example.com\n\t\t\tbase_dn dc=example,dc=com\n\t\t}"), `mailauth: directory "corp": url: "ldap://dc1.example.com" sends the bind password and every lookup in clear text; use ldaps://dc1.example.com or set start_tls (plain ldap:// is allowed only for loopback hosts such as localhost)`},
		{"tls opportunistic off loopback", globalBlock(strings.Replace(strings.Replace(validOpts, "host 127.0.0.1", "host smtp.example.com", 1), "tls none", "tls opportunistic", 1)), `mail_server "m": tls: opportunistic sends sign-in links in clear text to "smtp.example.com" whenever STARTTLS is not offered, and anyone on the path can remove the offer; use starttls or implicit, or set insecure_tls_ok`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := loadJSON(t, tc.src)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error containing %q, got %v", tc.want, err)
			}
		})
	}
}

// TestClearTextLoadsForLoopbackHostsAndWithTheOptIn: http:// links,
// plain LDAP and unencrypted mail are fine for hosts that can only be
// this machine, written as localhost, a name under .localhost, 127.x or
// ::1; and tls none or opportunistic to a remote relay loads with
// insecure_tls_ok.
func TestClearTextLoadsForLoopbackHostsAndWithTheOptIn(t *testing.T) {
	for _, tc := range []struct{ name, from, to string }{
		{"http server on localhost", "https://apps.example.test", "http://localhost:8080"},
		{"http server under .localhost", "https://apps.example.test", "http://home.localhost"},
		{"http server on 127.0.0.1", "https://apps.example.test", "http://127.0.0.1:9000"},
		{"http server on ::1", "https://apps.example.test", "http://[::1]:8080"},
		{"opportunistic tls to a name under .localhost", "host 127.0.0.1\n\t\t\tport 1025\n\t\t\ttls none", "host relay.localhost\n\t\t\tport 1025\n\t\t\ttls opportunistic"},
		{"tls none to a remote relay with insecure_tls_ok", "host 127.0.0.1\n\t\t\tport 1025\n\t\t\ttls none", "host relay.corp.example\n\t\t\tport 25\n\t\t\ttls none\n\t\t\tinsecure_tls_ok"},
		{"opportunistic tls to a remote relay with insecure_tls_ok", "host 127.0.0.1\n\t\t\tport 1025\n\t\t\ttls none", "host relay.corp.example\n\t\t\ttls opportunistic\n\t\t\tinsecure_tls_ok"},
		{"plain ldap to 127.0.0.1", "\t\tprofile daily {", "\t\tdirectory corp ldap {\n\t\t\turl ldap://127.0.0.1:389\n\t\t\tbase_dn dc=example,dc=com\n\t\t}\n\t\tprofile daily {"},
		{"plain ldap with start_tls", "\t\tprofile daily {", "\t\tdirectory corp ldap {\n\t\t\turl ldap://dc1.example.com\n\t\t\tstart_tls\n\t\t\tbase_dn dc=example,dc=com\n\t\t}\n\t\tprofile daily {"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(validOpts, tc.from) {
				t.Fatalf("the base config has no %q to replace", tc.from)
			}
			if err := loadJSON(t, globalBlock(strings.Replace(validOpts, tc.from, tc.to, 1))); err != nil {
				t.Fatalf("refused: %v", err)
			}
		})
	}
}

// wantParseError checks that err is the Caddyfile error the table row
// describes: "Caddyfile:N - Error during parsing: message" means the message
// and that it ends at line N; anything else must just be contained.
func wantParseError(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("config was accepted; want an error containing %q", want)
	}
	line := ""
	if m := lineRE.FindStringSubmatch(want); m != nil {
		want, line = m[2], ", at Caddyfile:"+m[1]
	}
	if !strings.Contains(err.Error(), want) || !strings.HasSuffix(err.Error(), line) {
		t.Fatalf("error %q\ndoes not contain %q and end in %q", err, want, line)
	}
}

// lineRE splits "Caddyfile:N - Error during parsing: message" in the
// table into the line and the message.
var lineRE = regexp.MustCompile(`^Caddyfile:(\d+) - Error during parsing: (.*)$`)

func TestCaddyfileProfileGrantOptions(t *testing.T) {
	out, err := adapt(t, globalBlock(strings.Replace(validOpts, "fallback staff\n", "fallback staff\n\t\t\ttype manager\n\t\t\tgrant_durations 30m 2h end_of_day\n\t\t\tgrant_max 4h\n\t\t\tjustification required\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Apps struct {
			Mailauth App `json:"mailauth"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	p := cfg.Apps.Mailauth.Profiles["daily"]
	if strings.Join(p.GrantDurations, " ") != "30m 2h end_of_day" || time.Duration(p.GrantMax) != 4*time.Hour || p.Justification != "required" {
		t.Errorf("grant options adapted to %+v", p)
	}
	if err := loadJSON(t, globalBlock(strings.Replace(validOpts, "fallback staff\n", "fallback staff\n\t\t\ttype manager\n\t\t\tgrant_durations 30m 2h end_of_day\n\t\t\tgrant_max 4h\n\t\t\tjustification required\n", 1))); err != nil {
		t.Errorf("a manager profile with grant options was refused: %v", err)
	}
}

func TestCaddyfileCodeFallbackOff(t *testing.T) {
	out, err := adapt(t, globalBlock(strings.Replace(validOpts, "fallback staff\n", "fallback staff\n\t\t\tcode_fallback off\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"disable_code_fallback":true`) {
		t.Fatalf("code_fallback off is not in the adapted JSON:\n%s", out)
	}
	out, err = adapt(t, globalBlock(strings.Replace(validOpts, "fallback staff\n", "fallback staff\n\t\t\tcode_fallback on\n", 1)))
	if err != nil || strings.Contains(string(out), "code_fallback") {
		t.Fatalf("code_fallback on is the default and adapts to nothing: %v\n%s", err, out)
	}
}

// TestCaddyfileGetsTheLoadChecksAtTheirLine: a rule that only load used
// to check now refuses the Caddyfile when it is adapted, at the line of
// the field.
func TestCaddyfileGetsTheLoadChecksAtTheirLine(t *testing.T) {
	_, err := adapt(t, globalBlock(strings.Replace(validOpts, "fallback staff\n", "fallback staff\n\t\t\tescalate_after 5m\n", 1)))
	wantParseError(t, err, "Caddyfile:18 - Error during parsing: profile \"daily\": escalate_after: escalation needs type manager")
}

// TestJSONGetsTheCaddyfileChecks: a rule that only the adapter used to
// check refuses a JSON config too, as a FieldError naming the block.
func TestJSONGetsTheCaddyfileChecks(t *testing.T) {
	app := &App{
		MailServers: map[string]*MailServerConfig{"m": {Host: "127.0.0.1", TLS: "none", From: "gw@example.test"}},
		Directories: map[string]json.RawMessage{"staff": json.RawMessage(`{"type":"local"}`), "other": json.RawMessage(`{"type":"local"}`)},
		Profiles:    map[string]*ProfileConfig{"daily": {Server: "https://apps.example.test", Fallback: []string{"staff"}}},
		Policies:    map[string]*PolicyConfig{"execs": {Profile: "daily", Directory: "other", Attribute: "memberOf", Values: []string{"x"}}},
	}
	err := app.validate()
	fe, ok := errors.AsType[*FieldError](err)
	if !ok || fe.Block != "policy" || fe.Name != "execs" || fe.Field != "directory" || !strings.Contains(err.Error(), `policy "execs": directory: "other" is not in the fallback list of profile "daily"`) {
		t.Fatalf("a JSON policy on a directory outside its profile's fallback list gave %v; want a FieldError naming policy execs and its directory", err)
	}
}
