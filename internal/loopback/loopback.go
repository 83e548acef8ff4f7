// Package loopback tells, from the literal written in a configuration,
// whether a host can only be this machine. Configuration that would send
// sign-in links, bind passwords or lookups in clear text is accepted only
// for such hosts. Names are never resolved: loading a config does no
// network I/O, and an answer from DNS is not proof.
package loopback

import (
	"net"
	"strings"
)

// Host reports whether host is a loopback host by its spelling:
// "localhost" or a name under ".localhost" (RFC 6761 reserves both for
// loopback), an IPv4 address in 127.0.0.0/8, or ::1. host is bare, with
// no port or brackets, as url.URL.Hostname returns it; one trailing dot
// (the absolute form of a name) is allowed.
func Host(host string) bool {
	host = strings.TrimSuffix(host, ".")
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback()
	}
	host = strings.ToLower(host)
	return host == "localhost" || (strings.HasSuffix(host, ".localhost") && !strings.HasPrefix(host, "."))
}
