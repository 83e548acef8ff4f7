package approval

import (
	"strings"
	"testing"
)

func TestSafeReturnURL(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		// Kept: absolute paths on this site, with query and fragment.
		{"root", "/", "/"},
		{"path with query and fragment", "/a?b=c#d", "/a?b=c#d"},
		{"nested path", "/reports/2025/q1", "/reports/2025/q1"},
		{"query holding a URL", "/go?next=https://evil.example", "/go?next=https://evil.example"},
		{"encoded space", "/a%20b", "/a%20b"},
		{"colon after the first segment", "/a:b", "/a:b"},
		{"longest kept", "/" + strings.Repeat("a", 2047), "/" + strings.Repeat("a", 2047)},

		// Refused: anything that is not an absolute path on this site.
		{"empty", "", "/"},
		{"relative", "a", "/"},
		{"dot relative", "./a", "/"},
		{"protocol-relative", "//evil.example", "/"},
		{"protocol-relative with path", "//evil.example/path", "/"},
		{"backslash host", "/\\evil.example", "/"},
		{"backslash later", "/a\\b", "/"},
		{"absolute URL", "https://evil.example", "/"},
		{"absolute URL on our host", "https://apps.example.com/", "/"},
		{"tab between slashes", "/\t/evil.example", "/"},
		{"newline between slashes", "/\n/evil.example", "/"},
		{"carriage return", "/\r/evil.example", "/"},
		{"NUL", "/a\x00b", "/"},
		{"DEL", "/a\x7fb", "/"},
		{"javascript", "javascript:alert(1)", "/"},
		{"data URL", "data:text/html,<script>alert(1)</script>", "/"},
		{"userinfo", "//user@evil.example", "/"},
		{"too long", "/" + strings.Repeat("a", 2048), "/"},
		{"bad escape", "/%zz", "/"},

		// "/%2F/evil.example" is, taken literally, a path on this site whose
		// first segment is an encoded slash: a browser sent there stays here.
		// SafeReturnURL still refuses it, on purpose: its decoded path starts
		// with "//", and an app or proxy that decodes %2F before redirecting
		// (a trailing-slash redirect, say) would turn it into
		// "//evil.example". Losing such a return path costs nothing.
		{"encoded slash making a protocol-relative path", "/%2F/evil.example", "/"},
		{"encoded slash lower case", "/%2f/evil.example", "/"},
		{"encoded slash later in the path", "/a/%2F/b", "/a/%2F/b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SafeReturnURL(tt.in); got != tt.want {
				t.Errorf("SafeReturnURL(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestSafeReturnURLOutputIsAlwaysSafe(t *testing.T) {
	for _, in := range []string{"", "/", "//x", "/\\x", "http://x", "/%2F/x", "/\t/x", "\\\\x", "/.//x", "/a"} {
		got := SafeReturnURL(in)
		if got == "" || got[0] != '/' || len(got) > 1 && (got[1] == '/' || got[1] == '\\') {
			t.Errorf("SafeReturnURL(%q) = %q, which is not a same-site path", in, got)
		}
		if again := SafeReturnURL(got); again != got {
			t.Errorf("SafeReturnURL is not idempotent: %q → %q → %q", in, got, again)
		}
	}
}

func TestSafeReturnTargetKeepsHttpsHostsUnderTheCookieDomainOnly(t *testing.T) {
	for _, tc := range []struct{ raw, domain, want string }{
		{"https://wiki.example.com/page?x=1", "example.com", "https://wiki.example.com/page?x=1"},
		{"https://example.com/", "example.com", "https://example.com/"},
		{"https://wiki.example.com/", ".example.com", "https://wiki.example.com/"},
		{"/local", "example.com", "/local"},
		{"https://wiki.example.com/", "", "/"},
		{"http://wiki.example.com/", "example.com", "/"},
		{"https://evil-example.com/", "example.com", "/"},
		{"https://example.com.evil.net/", "example.com", "/"},
		{"https://user@wiki.example.com/", "example.com", "/"},
		{"https://wiki.example.com:8443/", "example.com", "/"},
		{"https://WIKI.example.com/", "example.com", "/"},
		{"https://wiki.example.com./", "example.com", "/"},
		{"https://wiki%2eexample.com/", "example.com", "/"},
		{"https://wiki.example.com\\@evil.net/", "example.com", "/"},
		{"https://wiki.example.com/\tx", "example.com", "/"},
		{"javascript://example.com/%0aalert(1)", "example.com", "/"},
	} {
		if got := SafeReturnTarget(tc.raw, tc.domain); got != tc.want {
			t.Errorf("SafeReturnTarget(%q, %q) = %q, want %q", tc.raw, tc.domain, got, tc.want)
		}
	}
}
