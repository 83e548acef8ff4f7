package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Every key of a Redis store starts with its KeyPrefix and then one of these,
// so a caller's key can never land on an outbox message or a log record,
// whatever bytes it holds:
//
//	<prefix>d:<key>              a caller's key (Put, Get, Scan…)
//	<prefix>o:…                  the outbox, see redis_outbox.go
//	<prefix>l:<log>:…            the logs, see redis_log.go
//	<prefix>events               the pub/sub channel, see redis_notify.go
const (
	redisDataSpace   = "d:"
	redisOutboxSpace = "o:"
	redisLogSpace    = "l:"
	redisEvents      = "events"
)

// Default key prefixes. In cluster mode every key must hash to one slot, so
// that a transaction or a script may touch several, hence the hash tag.
const (
	defaultRedisKeyPrefix        = "mailauth:"
	defaultRedisClusterKeyPrefix = "{mailauth}:"
)

// scanCount is the COUNT hint of each SCAN round trip.
const scanCount = 500

// RedisOptions configures OpenRedis. The server must run Redis 6.2 or
// later (for GETDEL).
type RedisOptions struct {
	// URL is the server, as redis://[user:password@]host[:port][/db] or
	// rediss://… for TLS; the port defaults to 6379 and the database to 0.
	// Required for a single server. With SentinelAddrs or ClusterAddrs it
	// is optional and supplies only the credentials, database and scheme,
	// so it must have no host (redis://:password@/0).
	URL string
	// TLS connects over TLS, as a rediss:// URL does. Default: false.
	TLS bool
	// TLSCA is a PEM file of the CA certificates that the server's
	// certificate must chain to, for a private CA. It needs TLS or a
	// rediss:// URL. Default: the system roots.
	TLSCA string
	// KeyPrefix starts every key the store writes, so that two deployments
	// can share one Redis. Default: "mailauth:", or "{mailauth}:" with
	// ClusterAddrs, where it must hold a hash tag ({…}): every key then
	// lives in one slot, so one cluster shard holds the whole store.
	KeyPrefix string
	// PoolSize is the most connections kept open to each server. Default:
	// go-redis's, 10 per GOMAXPROCS.
	PoolSize int
	// DialTimeout bounds each attempt to connect. Default: 5s.
	DialTimeout time.Duration
	// SentinelAddrs are host:port addresses of Redis Sentinels, which name
	// the current master of MasterName. Default: none (no Sentinel).
	SentinelAddrs []string
	// MasterName is the Sentinel name of the master. Required with
	// SentinelAddrs, and only with them.
	MasterName string
	// ClusterAddrs are host:port seed addresses of a Redis Cluster.
	// Default: none (no cluster). Exclusive with SentinelAddrs.
	ClusterAddrs []string
}

// Redis is a Store on a Redis server, a Sentinel-managed master or a Redis
// Cluster, shared by every instance that opens it with the same KeyPrefix.
// Each operation is atomic on the server (one command, a MULTI/EXEC
// transaction or a Lua script), so instances need no other coordination.
// Writes are as durable as the server's persistence makes them: the
// contract's "durable when it returns" needs appendonly yes with
// appendfsync always, and a replica may lose the last writes on failover.
type Redis struct {
	client  redis.UniversalClient
	logger  *zap.Logger
	prefix  string // KeyPrefix
	dataPfx string // prefix + redisDataSpace

	hub    Hub
	pubsub *redis.PubSub
	wg     sync.WaitGroup

	appendMu sync.Mutex
	appends  uint64 // guarded by appendMu; paces pruneLogIndex

	closeOnce sync.Once
	closeErr  error
}

// OpenRedis connects to the server that opts describes, checks that it
// answers, and subscribes to the store's event channel. ctx bounds that
// work only; the store outlives it. It fails with an error that names the
// address if the server cannot be reached.
func OpenRedis(ctx context.Context, opts RedisOptions, logger *zap.Logger) (*Redis, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	uopts, where, err := opts.universal()
	if err != nil {
		return nil, err
	}
	client := redis.NewUniversalClient(uopts)
	if err := client.Ping(ctx).Err(); err != nil {
		client.Close()
		return nil, fmt.Errorf("store: redis: cannot reach %s: %w", where, err)
	}
	r := &Redis{
		client:  client,
		logger:  logger,
		prefix:  opts.KeyPrefix,
		dataPfx: opts.KeyPrefix + redisDataSpace,
	}
	if err := r.subscribe(ctx); err != nil {
		client.Close()
		return nil, fmt.Errorf("store: redis: subscribing on %s: %w", where, err)
	}
	return r, nil
}

// universal validates o, fills its defaults in, and translates it into
// go-redis options. where describes the server for error messages; it
// never holds the password.
func (o *RedisOptions) universal() (u *redis.UniversalOptions, where string, err error) {
	sentinel, cluster := len(o.SentinelAddrs) > 0, len(o.ClusterAddrs) > 0
	if err := o.checkTopology(sentinel, cluster); err != nil {
		return nil, "", err
	}
	parsed := &redis.Options{}
	if o.URL != "" {
		if parsed, err = parseRedisURL(o.URL, sentinel || cluster); err != nil {
			return nil, "", err
		}
	}
	if cluster && parsed.DB != 0 {
		return nil, "", fmt.Errorf("store: redis: URL selects database %d; a cluster has only database 0", parsed.DB)
	}
	tlsConf, err := o.tlsConfig(parsed.TLSConfig)
	if err != nil {
		return nil, "", err
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = defaultRedisKeyPrefix
		if cluster {
			o.KeyPrefix = defaultRedisClusterKeyPrefix
		}
	}
	if cluster && !hasHashTag(o.KeyPrefix) {
		return nil, "", fmt.Errorf("store: redis: KeyPrefix %q has no hash tag ({…}); in a cluster every key must hash to one slot", o.KeyPrefix)
	}
	u = universalFrom(parsed, tlsConf)
	if o.PoolSize > 0 {
		u.PoolSize = o.PoolSize
	}
	if o.DialTimeout > 0 {
		u.DialTimeout = o.DialTimeout
	}
	switch {
	case sentinel:
		u.Addrs, u.MasterName = o.SentinelAddrs, o.MasterName
		where = fmt.Sprintf("master %q through sentinels %s", o.MasterName, strings.Join(o.SentinelAddrs, ", "))
	case cluster:
		u.Addrs, u.IsClusterMode = o.ClusterAddrs, true
		where = "cluster " + strings.Join(o.ClusterAddrs, ", ")
	default:
		u.Addrs = []string{parsed.Addr}
		where = parsed.Addr
	}
	return u, where, nil
}

// checkTopology refuses options that name no server, or servers in two
// ways at once, and negative sizes.
func (o *RedisOptions) checkTopology(sentinel, cluster bool) error {
	switch {
	case sentinel && cluster:
		return errors.New("store: redis: SentinelAddrs and ClusterAddrs are mutually exclusive")
	case sentinel && o.MasterName == "":
		return errors.New("store: redis: MasterName is required with SentinelAddrs")
	case !sentinel && o.MasterName != "":
		return errors.New("store: redis: MasterName needs SentinelAddrs")
	case !sentinel && !cluster && o.URL == "":
		return errors.New("store: redis: URL is required")
	case o.PoolSize < 0:
		return fmt.Errorf("store: redis: PoolSize %d is negative", o.PoolSize)
	case o.DialTimeout < 0:
		return fmt.Errorf("store: redis: DialTimeout %v is negative", o.DialTimeout)
	}
	for _, a := range slices.Concat(o.SentinelAddrs, o.ClusterAddrs) {
		if a == "" {
			return errors.New("store: redis: SentinelAddrs and ClusterAddrs may not hold an empty address")
		}
	}
	return nil
}

// tlsConfig is the URL's TLS (rediss://), or TLS asked for by the option,
// with the CA file when one is given.
func (o *RedisOptions) tlsConfig(fromURL *tls.Config) (*tls.Config, error) {
	conf := fromURL
	if o.TLS && conf == nil {
		conf = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if o.TLSCA == "" {
		return conf, nil
	}
	if conf == nil {
		return nil, errors.New("store: redis: TLSCA needs TLS or a rediss:// URL")
	}
	var err error
	if conf.RootCAs, err = loadCAFile(o.TLSCA); err != nil {
		return nil, err
	}
	return conf, nil
}

// universalFrom carries what a parsed URL says over to the options every
// topology takes.
func universalFrom(parsed *redis.Options, tlsConf *tls.Config) *redis.UniversalOptions {
	return &redis.UniversalOptions{
		Username:        parsed.Username,
		Password:        parsed.Password,
		DB:              parsed.DB,
		Protocol:        parsed.Protocol,
		ClientName:      parsed.ClientName,
		MaxRetries:      parsed.MaxRetries,
		MinRetryBackoff: parsed.MinRetryBackoff,
		MaxRetryBackoff: parsed.MaxRetryBackoff,
		DialTimeout:     parsed.DialTimeout,
		ReadTimeout:     parsed.ReadTimeout,
		WriteTimeout:    parsed.WriteTimeout,
		PoolSize:        parsed.PoolSize,
		PoolTimeout:     parsed.PoolTimeout,
		MinIdleConns:    parsed.MinIdleConns,
		MaxIdleConns:    parsed.MaxIdleConns,
		ConnMaxIdleTime: parsed.ConnMaxIdleTime,
		ConnMaxLifetime: parsed.ConnMaxLifetime,
		TLSConfig:       tlsConf,
		// A caller's deadline bounds each command, not only go-redis's own
		// timeouts: a request must not hang on a stuck server.
		ContextTimeoutEnabled: true,
	}
}

// parseRedisURL is redis.ParseURL with this package's rules on top: no
// unix sockets, no skip_verify, no host when the addresses come from
// elsewhere, and errors that never repeat the URL (it may hold a password).
func parseRedisURL(raw string, noHost bool) (*redis.Options, error) {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("store: redis: URL: %w", err)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, fmt.Errorf("store: redis: URL scheme %q; want redis or rediss", u.Scheme)
	}
	if noHost && u.Hostname() != "" {
		return nil, fmt.Errorf("store: redis: URL names host %q, but the addresses come from SentinelAddrs or ClusterAddrs; leave it out (redis://:password@/0)", u.Hostname())
	}
	opts, err := redis.ParseURL(raw)
	if err != nil {
		return nil, fmt.Errorf("store: redis: URL: %w", err)
	}
	if opts.TLSConfig != nil && opts.TLSConfig.InsecureSkipVerify {
		return nil, errors.New("store: redis: URL: skip_verify is not allowed; set TLSCA to trust a private CA")
	}
	return opts, nil
}

func loadCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("store: redis: TLSCA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("store: redis: TLSCA: no PEM certificate in %s", path)
	}
	return pool, nil
}

// hasHashTag reports whether keys starting with prefix hash by a tag within
// it: Redis Cluster hashes only what lies between the first { and the next
// }, when that is not empty.
func hasHashTag(prefix string) bool {
	i := strings.IndexByte(prefix, '{')
	if i < 0 {
		return false
	}
	j := strings.IndexByte(prefix[i+1:], '}')
	return j > 0
}

// Ping checks that the server answers, for health checks and for failing
// closed while it does not.
func (r *Redis) Ping(ctx context.Context) error {
	return redisErr("ping", r.client.Ping(ctx).Err())
}

// Close stops the event subscription and closes every connection. Calling
// it again returns the first result.
func (r *Redis) Close() error {
	r.closeOnce.Do(func() {
		// Closing the PubSub closes its channel, which ends receive.
		psErr := r.pubsub.Close()
		r.wg.Wait()
		if err := errors.Join(psErr, r.client.Close()); err != nil {
			r.closeErr = fmt.Errorf("store: redis: close: %w", err)
		}
	})
	return r.closeErr
}

// Put implements Store.
func (r *Redis) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := checkRedisTTL(ctx, ttl); err != nil {
		return err
	}
	return redisErr("put", r.client.Set(ctx, r.dataKey(key), value, ceilMillis(ttl)).Err())
}

// PutMany implements Store with one MULTI/EXEC, so all keys or none.
func (r *Redis) PutMany(ctx context.Context, entries []Entry) error {
	if len(entries) == 0 {
		return ctx.Err()
	}
	for _, e := range entries {
		if err := checkRedisTTL(ctx, e.TTL); err != nil {
			return err
		}
	}
	_, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, e := range entries {
			p.Set(ctx, r.dataKey(e.Key), e.Value, ceilMillis(e.TTL))
		}
		return nil
	})
	return redisErr("put many", err)
}

// Get implements Store.
func (r *Redis) Get(ctx context.Context, key string) ([]byte, error) {
	v, err := r.client.Get(ctx, r.dataKey(key)).Bytes()
	if err != nil {
		return nil, notFoundOr("get", err)
	}
	return v, nil
}

// Take implements Store with GETDEL, which Redis runs atomically: of
// concurrent callers, whatever process they are in, one gets the value.
func (r *Redis) Take(ctx context.Context, key string) ([]byte, error) {
	v, err := r.client.GetDel(ctx, r.dataKey(key)).Bytes()
	if err != nil {
		return nil, notFoundOr("take", err)
	}
	return v, nil
}

// Delete implements Store.
func (r *Redis) Delete(ctx context.Context, key string) error {
	return redisErr("delete", r.client.Del(ctx, r.dataKey(key)).Err())
}

// Update implements Store as an optimistic transaction: WATCH the key,
// read it, and SET it in a MULTI that fails if anyone wrote the key (or
// it expired) since the WATCH. An existing key keeps its expiry (KEEPTTL).
func (r *Redis) Update(ctx context.Context, key string, ttl time.Duration, fn func(current []byte, found bool) ([]byte, error)) error {
	if err := checkRedisTTL(ctx, ttl); err != nil {
		return err
	}
	k := r.dataKey(key)
	return r.retryTx(ctx, "update", maxAttempts, func() error {
		return r.client.Watch(ctx, func(tx *redis.Tx) error {
			current, err := tx.Get(ctx, k).Bytes()
			found := err == nil
			if err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			next, err := fn(current, found)
			if err != nil {
				return fnError{err}
			}
			exp := ceilMillis(ttl)
			if found {
				exp = redis.KeepTTL
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, k, next, exp)
				return nil
			})
			return err
		}, k)
	})
}

// fnError carries an error of the caller's callback through a transaction,
// so that retryTx returns it unchanged rather than wrapped.
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

// retryTx runs try, again after a jittered pause whenever its transaction
// failed because a watched key changed, up to attempts times, after which
// it returns ErrConflict. A callback's error (fnError) comes back
// unchanged; others are wrapped for op.
func (r *Redis) retryTx(ctx context.Context, op string, attempts int, try func() error) error {
	for attempt := 1; ; attempt++ {
		err := try()
		var fe fnError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &fe):
			return fe.err
		case !errors.Is(err, redis.TxFailedErr):
			return redisErr(op, err)
		case attempt == attempts:
			return ErrConflict
		}
		// Jitter keeps the losers of one race from colliding again in
		// lockstep; the cap keeps a long queue of writers moving.
		pause := min(time.Duration(attempt)*100*time.Microsecond, 5*time.Millisecond)
		t := time.NewTimer(rand.N(pause))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Scan implements Store with SCAN over the data keys under prefix (its
// glob characters escaped) and MGET for their values. A key that SCAN
// reports twice, as it may while Redis resizes its table, is passed to fn
// once.
func (r *Redis) Scan(ctx context.Context, prefix string, fn func(key string, value []byte) bool) error {
	pattern := escapeGlob(r.dataKey(prefix)) + "*"
	nodes, err := r.masters(ctx)
	if err != nil {
		return redisErr("scan", err)
	}
	seen := map[string]struct{}{}
	for _, node := range nodes {
		var cursor uint64
		for {
			keys, next, err := node.Scan(ctx, cursor, pattern, scanCount).Result()
			if err != nil {
				return redisErr("scan", err)
			}
			fresh := keys[:0]
			for _, k := range keys {
				if _, dup := seen[k]; !dup {
					seen[k] = struct{}{}
					fresh = append(fresh, k)
				}
			}
			if len(fresh) > 0 {
				values, err := node.MGet(ctx, fresh...).Result()
				if err != nil {
					return redisErr("scan", err)
				}
				for i, v := range values {
					s, ok := v.(string)
					if !ok {
						continue // expired or deleted since SCAN saw it
					}
					if !fn(fresh[i][len(r.dataPfx):], []byte(s)) {
						return nil
					}
				}
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
	}
	return nil
}

// masters returns the servers whose keys Scan must visit: the client
// itself, or each master of a cluster.
func (r *Redis) masters(ctx context.Context) ([]redis.Cmdable, error) {
	cc, ok := r.client.(*redis.ClusterClient)
	if !ok {
		return []redis.Cmdable{r.client}, nil
	}
	var (
		mu    sync.Mutex
		nodes []redis.Cmdable
	)
	err := cc.ForEachMaster(ctx, func(_ context.Context, c *redis.Client) error {
		mu.Lock()
		defer mu.Unlock()
		nodes = append(nodes, c)
		return nil
	})
	return nodes, err
}

// escapeGlob quotes the characters that SCAN's MATCH treats as a pattern.
func escapeGlob(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func (r *Redis) dataKey(key string) string {
	return r.dataPfx + key
}

// checkRedisTTL rejects a negative ttl, which Redis would take as "delete
// at once" or reject depending on the command.
func checkRedisTTL(ctx context.Context, ttl time.Duration) error {
	if ttl < 0 {
		return fmt.Errorf("store: redis: negative ttl %v", ttl)
	}
	return ctx.Err()
}

// ceilMillis rounds ttl up to Redis's resolution, the millisecond, so that
// every key lives for at least its ttl. Zero stays zero: no expiry.
func ceilMillis(ttl time.Duration) time.Duration {
	return (ttl + time.Millisecond - 1).Truncate(time.Millisecond)
}

// notFoundOr translates redis.Nil to ErrNotFound and wraps other errors.
func notFoundOr(op string, err error) error {
	if errors.Is(err, redis.Nil) {
		return ErrNotFound
	}
	return redisErr(op, err)
}

// redisErr prefixes an error from go-redis for the operation op.
func redisErr(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("store: redis: %s: %w", op, err)
}

// Interface guards
var _ Store = (*Redis)(nil)
