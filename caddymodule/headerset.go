package caddymodule

import "net/http"

// headerSet is a set of request header names compared the way an app
// behind the proxy may read them. Go's server canonicalises only the case
// of a name ("x_remote_user" arrives as "X_remote_user"), and CGI and
// FastCGI (php_fastcgi, among others) upper-case every name and turn '-'
// into '_', so X-Remote-User, X_Remote_User and x-remote_user all become
// HTTP_X_REMOTE_USER; PHP folds '.' onto '_' as well. A name in the set
// therefore matches every spelling that differs from it only in ASCII
// case or in which of '-', '_' and '.' separates its words.
//
// Caddy itself drops names with '_' or '.' by default, but a server's
// expected_underscore_headers and expected_dot_headers let chosen ones
// through, and the set must not rely on which are chosen.
//
// Names are normalised once, at provision; a request's keys are compared
// byte by byte against them, so removing the headers allocates nothing.
type headerSet struct {
	// names are lower case, with '_' and '.' written as '-'.
	names []string
	// lengths has bit n set when a name is n bytes long (bit 63: 63 or
	// more), so most of a request's keys are passed over without a
	// comparison.
	lengths uint64
}

func newHeaderSet(names []string) headerSet {
	var s headerSet
	for _, name := range names {
		b := []byte(name)
		for i, c := range b {
			b[i] = foldHeaderByte(c)
		}
		n := string(b)
		if n == "" || s.has(n) {
			continue
		}
		s.names = append(s.names, n)
		s.lengths |= lengthBit(len(n))
	}
	return s
}

func lengthBit(n int) uint64 { return 1 << min(n, 63) }

// foldHeaderByte maps the bytes that CGI and PHP treat alike to one:
// ASCII upper case to lower case, '_' and '.' to '-'.
func foldHeaderByte(c byte) byte {
	switch {
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	case c == '_' || c == '.':
		return '-'
	}
	return c
}

// has reports whether key is one of the names in any spelling.
func (s *headerSet) has(key string) bool {
	if s.lengths&lengthBit(len(key)) == 0 {
		return false
	}
	for _, n := range s.names {
		if len(n) == len(key) && sameHeader(key, n) {
			return true
		}
	}
	return false
}

// sameHeader compares key with a normalised name.
func sameHeader(key, normalised string) bool {
	for i := 0; i < len(key); i++ {
		if foldHeaderByte(key[i]) != normalised[i] {
			return false
		}
	}
	return true
}

// removeFrom deletes every header of h whose name is in the set, looking
// at each of the request's keys once.
func (s *headerSet) removeFrom(h http.Header) {
	for key := range h {
		if s.has(key) {
			delete(h, key)
		}
	}
}
