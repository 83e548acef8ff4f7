package caddymodule

import (
	"net/http"
	"strings"
)

// cookieValue finds a cookie in the request headers without allocating,
// unlike http.Request.Cookie, which parses every cookie on every request.
// It returns the first pair of that name; the endpoints that must not pick
// one of two check cookieCount first.
func cookieValue(h http.Header, name string) (string, bool) {
	v, ok, _ := cookieValueAnd(h, name, "")
	return v, ok
}

// cookieValueAnd is cookieValue that also reports, from the same pass
// over the headers, whether there is a pair of the cookie named other
// (none when other is empty), so that the authenticated path learns
// whether to remove the pending cookie without a second search.
func cookieValueAnd(h http.Header, name, other string) (v string, ok, hasOther bool) {
	found := false
	for _, line := range h["Cookie"] {
		for len(line) > 0 {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = strings.TrimLeft(part, " \t")
			switch {
			case !found && isCookiePair(part, name):
				found = true
				v = strings.TrimRight(part[len(name)+1:], " \t")
				if len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"' {
					v = v[1 : len(v)-1]
				}
			case other != "" && isCookiePair(part, other):
				hasOther = true
			}
			if found && (hasOther || other == "") {
				return v, v != "", hasOther
			}
		}
	}
	return v, v != "", hasOther
}

// isCookiePair reports whether part (one pair of a Cookie header, leading
// blanks trimmed) is a pair of the named cookie.
func isCookiePair(part, name string) bool {
	return len(part) > len(name) && part[len(name)] == '=' && part[:len(name)] == name
}

// cookieCount counts the pairs of the named cookie in the request headers,
// in one Cookie header or several.
func cookieCount(h http.Header, name string) int {
	n := 0
	for _, line := range h["Cookie"] {
		for len(line) > 0 {
			var part string
			part, line, _ = strings.Cut(line, ";")
			if isCookiePair(strings.TrimLeft(part, " \t"), name) {
				n++
			}
		}
	}
	return n
}

// removeCookie deletes every pair of the named cookie from the request's
// Cookie headers, and a header left empty; a header without the name is
// kept as it is. It allocates, so the authenticated path calls it only
// when cookieValueAnd saw the cookie.
func removeCookie(h http.Header, name string) {
	lines := h["Cookie"]
	found := false
	for _, line := range lines {
		if strings.Contains(line, name) {
			found = true
			break
		}
	}
	if !found {
		return
	}
	kept := make([]string, 0, len(lines))
	for _, line := range lines {
		if !strings.Contains(line, name) {
			kept = append(kept, line)
			continue
		}
		var b strings.Builder
		for len(line) > 0 {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = strings.Trim(part, " \t")
			if part == "" || isCookiePair(part, name) {
				continue
			}
			if b.Len() > 0 {
				b.WriteString("; ")
			}
			b.WriteString(part)
		}
		if b.Len() > 0 {
			kept = append(kept, b.String())
		}
	}
	if len(kept) == 0 {
		delete(h, "Cookie")
		return
	}
	h["Cookie"] = kept
}
