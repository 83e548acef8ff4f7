package approval

import (
	"net/url"
	"strings"
)

// SafeReturnURL returns raw if it is a path on this site, and "/" otherwise.
// Only an absolute path without a scheme or host is kept: "//evil.example",
// "/\evil.example" and "https://evil.example" all become "/", which closes
// the open-redirect hole that login pages are known for.
func SafeReturnURL(raw string) string {
	if raw == "" || raw[0] != '/' || len(raw) > 2048 {
		return "/"
	}
	if len(raw) > 1 && (raw[1] == '/' || raw[1] == '\\') {
		return "/"
	}
	for i := 0; i < len(raw); i++ {
		// Browsers strip tabs and newlines from URLs, which can turn
		// "/\t/evil.example" into "//evil.example"; control bytes are
		// never legitimate here.
		if raw[i] < 0x20 || raw[i] == 0x7f || raw[i] == '\\' {
			return "/"
		}
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return "/"
	}
	if strings.HasPrefix(u.Path, "//") {
		return "/"
	}
	return raw
}

// SafeReturnTarget is SafeReturnURL that also keeps an https URL on a host
// sharing the session cookie: cookieDomain itself or a subdomain of it.
// That is how one sign-in at apps.example.com can send the browser on to
// wiki.example.com. Anything else, including look-alike hosts
// (evil-example.com), userinfo, other schemes and ports, and encoded or
// IP hosts, falls back to SafeReturnURL's rules. Without a cookie domain
// only site paths are kept.
func SafeReturnTarget(raw, cookieDomain string) string {
	if cookieDomain == "" || !strings.HasPrefix(raw, "https://") || len(raw) > 2048 {
		return SafeReturnURL(raw)
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] < 0x21 || raw[i] == 0x7f || raw[i] == '\\' {
			return "/"
		}
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.User != nil || u.Opaque != "" || u.Port() != "" {
		return "/"
	}
	host := u.Host
	domain := strings.ToLower(strings.TrimPrefix(cookieDomain, "."))
	if host != strings.ToLower(host) || strings.ContainsAny(host, "%[]:") || strings.HasSuffix(host, ".") {
		return "/"
	}
	if host != domain && !strings.HasSuffix(host, "."+domain) {
		return "/"
	}
	return u.String()
}
