package stores

import (
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/mailauth/caddy-mailauth/internal/caddyfilearg"
)

// usage is the error for a store line the app cannot read.
const usage = "store: want 'store badger [<dir>]' or 'store redis <url> { … }'"

// UnmarshalCaddyfile reads
//
//	store badger [<dir>]
func (b *Badger) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // store
	args := d.RemainingArgs()
	if len(args) == 0 || len(args) > 2 {
		return d.Errf(usage)
	}
	if len(args) == 2 {
		b.Path = args[1]
	}
	if d.NextBlock(d.Nesting()) {
		return d.Errf("store badger: takes no block")
	}
	return nil
}

// UnmarshalCaddyfile reads
//
//	store redis [<url>] {
//		tls
//		tls_ca <file>
//		key_prefix <prefix>
//		pool_size <n>
//		dial_timeout <duration>
//		sentinel <master> <host:port...>
//		cluster <host:port...>
//	}
func (r *Redis) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // store
	args := d.RemainingArgs()
	if len(args) == 0 || len(args) > 2 {
		return d.Errf(usage)
	}
	if len(args) == 2 {
		r.URL = args[1]
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		switch opt {
		case "tls":
			if d.NextArg() {
				return d.ArgErr()
			}
			r.TLS = true
		case "tls_ca", "key_prefix":
			if !d.NextArg() || d.CountRemainingArgs() > 0 {
				return d.Errf("store redis: %s: want one value", opt)
			}
			if opt == "tls_ca" {
				r.TLSCA = d.Val()
			} else {
				r.KeyPrefix = d.Val()
			}
		case "pool_size":
			if !d.NextArg() || d.CountRemainingArgs() > 0 {
				return d.Errf("store redis: pool_size: want one number")
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n < 1 {
				return d.Errf("store redis: pool_size: %q is not a positive number", d.Val())
			}
			r.PoolSize = n
		case "dial_timeout":
			dur, err := caddyfilearg.Duration(d, "store redis: dial_timeout")
			if err != nil {
				return err
			}
			r.DialTimeout = dur
		case "sentinel":
			a := d.RemainingArgs()
			if len(a) < 2 {
				return d.Errf("store redis: sentinel: want 'sentinel <master name> <host:port...>'")
			}
			r.SentinelMaster, r.SentinelAddrs = a[0], a[1:]
		case "cluster":
			a := d.RemainingArgs()
			if len(a) == 0 {
				return d.Errf("store redis: cluster: want 'cluster <host:port...>'")
			}
			r.ClusterAddrs = a
		default:
			return d.Errf("store redis: unknown option %q (tls, tls_ca, key_prefix, pool_size, dial_timeout, sentinel, cluster)", opt)
		}
	}
	if r.URL == "" && len(r.SentinelAddrs) == 0 && len(r.ClusterAddrs) == 0 {
		return d.Errf("store redis: want a URL (store redis redis://host:6379/0), or sentinel or cluster addresses")
	}
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*Badger)(nil)
	_ caddyfile.Unmarshaler = (*Redis)(nil)
)
