package stores

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/store"
)

func init() {
	caddy.RegisterModule(Redis{})
}

// defaultDialTimeout is short so that a page answers 503 quickly while
// Redis is down, rather than after go-redis's 5 s.
const defaultDialTimeout = 2 * time.Second

// Redis keeps the state in Redis, shared by every Caddy instance that
// points at the same Redis and key_prefix.
type Redis struct {
	// URL is the Redis server, redis://[user:password@]host[:port][/db] or
	// rediss://… for TLS. Placeholders such as {env.REDIS_URL} expand at
	// load, which keeps the password out of the config. Required, except
	// with sentinel or cluster addresses, where it may only carry the
	// password and database (redis://:password@/0).
	URL string `json:"url,omitempty"`
	// TLS connects to Redis over TLS, as a rediss:// URL does. Default:
	// off.
	TLS bool `json:"tls,omitempty"`
	// TLSCA is a PEM file of CA certificates that Redis's certificate must
	// chain to. Default: the system's roots. Verification cannot be turned
	// off.
	TLSCA string `json:"tls_ca,omitempty"`
	// KeyPrefix starts every Redis key, so several deployments can share
	// one Redis. Default: "mailauth:" ("{mailauth}:" in a cluster, where
	// the prefix must hold a hash tag).
	KeyPrefix string `json:"key_prefix,omitempty"`
	// PoolSize is the most connections kept open to each Redis server.
	// Default: go-redis's, 10 per CPU.
	PoolSize int `json:"pool_size,omitempty"`
	// DialTimeout bounds each connection attempt to Redis. Default: 2s,
	// so that a sign-in page answers 503 quickly while Redis is down.
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`
	// SentinelMaster is the Sentinel name of a Sentinel-managed master.
	// Default: none (no Sentinel).
	SentinelMaster string `json:"sentinel_master,omitempty"`
	// SentinelAddrs are the host:port addresses of the Sentinels that
	// watch SentinelMaster. Default: none.
	SentinelAddrs []string `json:"sentinel_addrs,omitempty"`
	// ClusterAddrs are host:port seed addresses of a Redis Cluster.
	// Default: none (no cluster).
	ClusterAddrs []string `json:"cluster_addrs,omitempty"`

	// id is the store's key in the pool while this module holds it.
	id string
}

// CaddyModule returns the Caddy module information.
func (Redis) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "mailauth.stores.redis",
		New: func() caddy.Module { return new(Redis) },
	}
}

// Open connects to Redis, or shares the connections and subscriptions of
// a config before this one.
func (r *Redis) Open(logger *zap.Logger) (store.Store, error) {
	opts := store.RedisOptions{
		URL:           caddy.NewReplacer().ReplaceKnown(r.URL, ""),
		TLS:           r.TLS,
		TLSCA:         r.TLSCA,
		KeyPrefix:     r.KeyPrefix,
		PoolSize:      r.PoolSize,
		DialTimeout:   time.Duration(r.DialTimeout),
		MasterName:    r.SentinelMaster,
		SentinelAddrs: r.SentinelAddrs,
		ClusterAddrs:  r.ClusterAddrs,
	}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = defaultDialTimeout
	}
	// Pooled by everything that tells one shared store from another.
	id := fmt.Sprintf("redis:%s|%s|%s|%s|%s", opts.URL, opts.KeyPrefix, opts.MasterName, strings.Join(opts.SentinelAddrs, ","), strings.Join(opts.ClusterAddrs, ","))
	val, _, err := pool.LoadOrNew(id, func() (caddy.Destructor, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*opts.DialTimeout)
		defer cancel()
		s, err := store.OpenRedis(ctx, opts, logger)
		if err != nil {
			return nil, err
		}
		return pooled{s}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("mailauth: store redis: %w", err)
	}
	r.id = id
	return val.(pooled).Store, nil
}

// Shared reports that other Caddy instances may use the same store, so
// that counts kept in it, such as rate limits, are theirs too.
func (Redis) Shared() bool { return true }

// Cleanup lets go of the connections; the last config using them closes
// them.
func (r *Redis) Cleanup() error { return release(&r.id) }

// Interface guards
var (
	_ Provider           = (*Redis)(nil)
	_ caddy.CleanerUpper = (*Redis)(nil)
)
