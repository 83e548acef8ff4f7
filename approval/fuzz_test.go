package approval

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// The fuzz targets below state the properties of the functions that take
// attacker-controlled input. Their seeds run in every `go test`; explore
// further with, for example:
//
//	go test -run '^$' -fuzz FuzzSafeReturnURL -fuzztime 30s ./approval/

// FuzzSafeReturnURL: the return target is either kept as it was or
// replaced by "/", and whatever is kept stays on this site.
func FuzzSafeReturnURL(f *testing.F) {
	for _, s := range []string{
		"", "/", "/app", "/a?b=c#d", "/reports/q3?x=1", "/go?next=https://evil.example",
		"//evil", "//evil.example/path", "/\\evil", "/\\/evil", "\\\\evil", "/%2F/evil", "/%2f/evil",
		"/%5C/evil", "/%5c%5cevil", "/%252F/evil", "/a/%2F/b", "https://a@b", "//a@b", "/@evil.example",
		"https://evil.example", "HTTPS://evil.example", "javascript:alert(1)", "/javascript:alert(1)",
		"data:text/html,x", "/\t/evil", "/\r\n/evil", "/\n/evil", "\t//evil", " /app", "/a\x00b",
		"/a\x7fb", "/\u3000/evil", "/\uff0f\uff0fevil", "/\xff", "/%zz", "/a:b", "/:80", "/?//evil",
		"/#//evil", "/" + strings.Repeat("a", 2047), "/" + strings.Repeat("a", 2048),
		"/" + strings.Repeat("%2F", 700),
	} {
		f.Add(s)
	}
	base, err := url.Parse("https://apps.example.test/login")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got := SafeReturnURL(raw)
		if got != "/" && got != raw {
			t.Fatalf("SafeReturnURL(%q) = %q; want the input itself or \"/\"", raw, got)
		}
		if again := SafeReturnURL(got); again != got {
			t.Fatalf("SafeReturnURL is not idempotent: %q -> %q -> %q", raw, got, again)
		}
		if !strings.HasPrefix(got, "/") || strings.HasPrefix(got, "//") || strings.HasPrefix(got, "/\\") {
			t.Fatalf("SafeReturnURL(%q) kept %q, which is not a path on this site", raw, got)
		}
		for i := 0; i < len(got); i++ {
			if c := got[i]; c < 0x20 || c == 0x7f {
				t.Fatalf("SafeReturnURL(%q) kept control byte %#x at %d; browsers strip them and may then leave the site", raw, c, i)
			}
		}
		u, err := url.Parse(got)
		if err != nil {
			t.Fatalf("SafeReturnURL(%q) kept %q, which does not parse as a URL: %v", raw, got, err)
		}
		if u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
			t.Fatalf("SafeReturnURL(%q) kept %q, which has scheme=%q host=%q user=%v opaque=%q", raw, got, u.Scheme, u.Host, u.User, u.Opaque)
		}
		if strings.HasPrefix(u.Path, "//") {
			t.Fatalf("SafeReturnURL(%q) kept %q, whose decoded path %q is protocol-relative", raw, got, u.Path)
		}
		if r := base.ResolveReference(u); r.Scheme != base.Scheme || r.Host != base.Host || r.User != nil {
			t.Fatalf("SafeReturnURL(%q) kept %q, which resolves off the site to %s", raw, got, r)
		}
	})
}

// FuzzNormalizeIdentity: an accepted identity is one clean token that
// normalising again leaves alone.
func FuzzNormalizeIdentity(f *testing.F) {
	for _, s := range []string{
		"", "alice", "  alice  ", "alice@example.test", "Alice@Example.TEST", "\talice\t",
		"alice\r\nbcc: mallory@example.test", "alice\n", "ali\x00ce", "\x1b[31malice", "alice\x7f",
		"alice\u0085x", "alice\xff", "\xff\xfe", "a,b", "a;b", "a b", "alice,bob@example.test",
		"alice@example.test, bob@example.test", "*)(uid=*", "*", "(|(uid=*))", "\\2a", "ａｌｉｃｅ",
		"ａｌｉｃｅ＠ｅｘａｍｐｌｅ．ｔｅｓｔ", "ﬁnance", "Å", "A\u030a", "\u00b4", "\u3000alice\u3000",
		"\u00a0alice", "al\u200bice", "al\u200dice", "\ufeffalice", "al\u2028ice", "\u202ealice",
		"ａ，ｂ", "ａ；ｂ", "\uff0c", "\ufe50", "\u2024", "\u2474", "\u33a1", "\ufdfa",
		strings.Repeat("a", 254), strings.Repeat("a", 255), " " + strings.Repeat("a", 254) + " ",
		strings.Repeat("ａ", 100), strings.Repeat("\ufdfa", 20), strings.Repeat("a", 4*254+1),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := NormalizeIdentity(in)
		if err != nil {
			if !errors.Is(err, ErrBadInput) {
				t.Fatalf("NormalizeIdentity(%q) returned %v; want ErrBadInput", in, err)
			}
			if got != "" {
				t.Fatalf("NormalizeIdentity(%q) failed but returned %q", in, got)
			}
			return
		}
		if !utf8.ValidString(got) {
			t.Fatalf("NormalizeIdentity(%q) = %q, which is not valid UTF-8", in, got)
		}
		if got == "" || len(got) > maxInput {
			t.Fatalf("NormalizeIdentity(%q) = %q (%d bytes); want 1 to %d bytes", in, got, len(got), maxInput)
		}
		if n := norm.NFKC.String(got); n != got {
			t.Fatalf("NormalizeIdentity(%q) = %q, which is not NFKC-stable: NFKC gives %q", in, got, n)
		}
		for i, r := range got {
			if unicode.IsControl(r) || unicode.IsSpace(r) || r == ',' || r == ';' {
				t.Fatalf("NormalizeIdentity(%q) = %q, which holds %U at byte %d", in, got, r, i)
			}
		}
		again, err := NormalizeIdentity(got)
		if err != nil || again != got {
			t.Fatalf("NormalizeIdentity is not idempotent: %q -> %q -> %q, %v", in, got, again, err)
		}
	})
}

// FuzzPolicyValues: any configured value and any directory value are safe
// to compare; a plain value (neither /regex/ nor with '*') matches exactly
// the values equal to it ignoring case; Explain agrees with Match.
func FuzzPolicyValues(f *testing.F) {
	for _, s := range [][2]string{
		{"IT", "it"}, {"IT", "IT Ops"}, {"cn=executives,*", "CN=Executives,ou=groups,dc=example,dc=com"},
		{"*,ou=groups,*", "cn=x,ou=groups,dc=t"}, {"a*b*c", "acb"}, {"ab*ba", "aba"}, {"*", ""},
		{"**", "x"}, {"cn=[x]?", "cn=[x]?"}, {"/^cn=finance-.*$/", "cn=finance-board"},
		{"/(?i)^cn=finance-.*$/", "CN=Finance-board"}, {"/", "/"}, {"//", ""}, {"/(/", "("},
		{"/a{1000}/", "a"}, {"/\\p{Greek}+/", "Ω"}, {"*)(uid=*", "*)(uid=*"}, {"*)(uid=*", "x)(uid=y"},
		{"a,b", "A,B"}, {"a b", "A B"}, {"\t", "\t"}, {"\r\n", "\r\n"}, {"ＩＴ", "ｉｔ"},
		{"ß", "ẞ"}, {"K", "\u212a"}, {"Σ", "ς"}, {"ǅ", "ǆ"}, {"\xff", "\xff"}, {"\xff", "\ufffd"},
		{"\xe2*\x82\xac", "€"}, {"", ""}, {"", "x"},
		{strings.Repeat("a*", 200), strings.Repeat("a", 1000)}, {strings.Repeat("x", 5000), strings.Repeat("X", 5000)},
	} {
		f.Add(s[0], s[1])
	}
	prof := profileWith("sensitive", "corp")
	f.Fuzz(func(t *testing.T, value, attr string) {
		isRegex := len(value) >= 2 && value[0] == '/' && value[len(value)-1] == '/'
		pol, err := NewPolicy("p", prof, "corp", "memberOf", []string{value})
		if err != nil {
			if !isRegex {
				t.Fatalf("NewPolicy refused plain or wildcard value %q: %v", value, err)
			}
			return
		}
		id := identity("corp", map[string][]string{"memberOf": {attr}})
		got := pol.Match(id)
		explained, why := pol.Explain(id)
		if explained != got {
			t.Fatalf("value %q against %q: Match=%v but Explain=%v (%s)", value, attr, got, explained, why)
		}
		if why == "" {
			t.Fatalf("value %q against %q: Explain gave no reason", value, attr)
		}
		if isRegex {
			return
		}
		if !strings.Contains(value, "*") {
			if want := strings.EqualFold(attr, value); got != want {
				t.Fatalf("plain value %q against %q: matched=%v, want %v as strings.EqualFold says", value, attr, got, want)
			}
			if !pol.Match(identity("corp", map[string][]string{"memberOf": {value}})) {
				t.Fatalf("plain value %q does not match itself", value)
			}
			return
		}
		// A wildcard matches every string that fills each '*' with
		// something, including nothing and the '*' itself.
		if utf8.ValidString(value) {
			for _, fill := range []string{"", "*", "x"} {
				if s := strings.ReplaceAll(value, "*", fill); !pol.Match(identity("corp", map[string][]string{"memberOf": {s}})) {
					t.Fatalf("wildcard value %q does not match %q", value, s)
				}
			}
		}
	})
}
