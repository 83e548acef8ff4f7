package caddymodule

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// fuzzSite wraps body as the contents of the global mailauth block, in
// front of a site that uses the module, as an operator would write it.
func fuzzSite(body string) string {
	return "{\n\tmailauth {\n" + body + "\n\t}\n}\n\nhttp://:8080 {\n\tmailauth {\n\t\tdefault_profile daily\n\t}\n\trespond ok\n}\n"
}

// exampleGlobalBody is the body of the global mailauth block of
// Caddyfile.example, so the fuzzer starts from everything it shows.
func exampleGlobalBody(f *testing.F) string {
	src, err := os.ReadFile(filepath.Join("..", "Caddyfile.example"))
	if err != nil {
		f.Fatal(err)
	}
	s := string(src)
	start := strings.Index(s, "\tmailauth {\n")
	if start < 0 {
		f.Fatal("Caddyfile.example has no global mailauth block")
	}
	s = s[start+len("\tmailauth {\n"):]
	end := strings.Index(s, "\n\t}\n}")
	if end < 0 {
		f.Fatal("the global mailauth block of Caddyfile.example does not end as expected")
	}
	return s[:end]
}

// FuzzCaddyfileGlobal: whatever text an operator puts in the global
// mailauth block, the Caddyfile adapter answers with JSON or an error and
// never panics.
func FuzzCaddyfileGlobal(f *testing.F) {
	seeds := []string{
		validOpts,
		exampleGlobalBody(f),
		"",
		"}",
		"{",
		"}}}{{{",
		"store",
		"store badger",
		"store badger /tmp/x extra",
		"store redis",
		"session_lifetime",
		"session_lifetime -1h",
		"session_lifetime 99999999999999999h",
		"session_lifetime {env.X}",
		"cookie_domain .",
		"mail_server",
		"mail_server m",
		"mail_server m {\n}",
		"mail_server m {\n\tport 99999999999999999999\n}",
		"mail_server m {\n\tport -1\n\ttls bogus\n\ttimeout x\n}",
		"mail_server m {\n\thost 127.0.0.1\n\tfrom \"a\r\nBcc: x@evil.example\"\n}",
		"directory",
		"directory d",
		"directory d bogus",
		"directory d local {\n\tuser\n}",
		"directory d local {\n\tuser a {\n\t\tattr\n\t}\n}",
		"directory d local {\n\tuser a {\n\t\tattr k\n\t}\n}",
		"directory d local {\n\tuser a {\n\t\temail\n\t\tsponsor\n\t}\n}",
		"directory d local {\n\tuser a {\n\t}\n\tuser a {\n\t}\n}",
		"directory d ldap {\n\turl ldaps://dc.example.test\n\tuser_filter \"*)(uid=*\"\n}",
		"directory d ldap {\n\turl\n\ttimeout\n\tattributes\n}",
		"profile",
		"profile p {\n\ttype\n}",
		"profile p {\n\ttype bogus\n\tserver //evil\n}",
		"profile p {\n\tserver https://a@b\n\tlink_expiration 0s\n\tsubject \"{{\"\n}",
		"profile p {\n\tserver javascript:alert(1)\n\tfallback\n\tmail_servers\n}",
		"profile p {\n\tapprovers\n\tescalate_after\n\tnotify_failed_login x\n}",
		validOpts + "\n\t\tpolicy p {\n\t\t\tprofile daily\n\t\t\tattribute memberOf\n\t\t\tvalues \"/(/\" \"*)(uid=*\" a,b \"a b\"\n\t\t}",
		validOpts + "\n\t\tpolicy p {\n\t\t\tprofile daily\n\t\t\tattribute\n\t\t\tvalues\n\t\t}",
		validOpts + "\n\t\tpolicy p {\n\t\t\tprofile daily\n\t\t\tdirectory\n\t\t}",
		validOpts + "\n\t\tpolicy {\n\t\t}",
		validOpts + "\n\t\tbogus_option",
		"\tstore badger /tmp/x\r\n\tsession_lifetime 1h\r\n",
		"\x00",
		"\xff\xfe",
		"\"unterminated",
		"`unterminated",
		"<<EOF\nx\nEOF",
		"x <<EOF\n\tx\n\tEOF",
		"{$HOME}",
		"{env.X} {",
		"# comment only",
		"\\",
		"profile ｐ {\n\tserver https://ａｐｐｓ.example.test\n}",
		strings.Repeat("{", 1000),
		strings.Repeat("directory d local {\n", 200),
		strings.Repeat("x ", 5000),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	adapter := caddyconfig.GetAdapter("caddyfile")
	f.Fuzz(func(t *testing.T, body string) {
		// `import` reads files and globs from the disk: a fuzzer that
		// writes "import /dev/zero" would hang the run, and reading files
		// is no part of the mailauth parser.
		if strings.Contains(body, "import") {
			return
		}
		out, _, err := adapter.Adapt([]byte(fuzzSite(body)), map[string]any{"filename": "Caddyfile"})
		if err == nil && !json.Valid(out) {
			t.Fatalf("the adapter accepted the block %q but produced invalid JSON: %s", body, out)
		}
	})
}
