package approval

import (
	"strings"
	"sync"
	"time"
)

// Verifying a cookie (base64 and an HMAC over it) is most of what the
// authenticated path costs, and a browser sends the same cookie on every
// request until it is refreshed. So the codec keeps the sessions it has
// verified, by their exact cookie value: a request whose cookie was seen
// before costs a map lookup and a copy, and allocates nothing, while a
// cookie seen for the first time is verified in full. Only a value that
// verified is ever stored, and a lookup matches the whole value, so a
// changed byte is a miss and is verified like any other. The cache is the
// codec's: a new key set (a reload, a rotation) starts an empty one.

// Sizing of the cache: sessionCacheShards × sessionCacheShardSize
// cookies (16,384, a few MiB) in shards with locks of their own, so that
// requests on different cores rarely meet.
const (
	sessionCacheShards    = 64
	sessionCacheShardSize = 256
)

// verified is a session that verified, with its placeholder values boxed
// once so that setting them on a request allocates nothing.
type verified struct {
	session Session
	// id, email and directory are the session's identity as interface
	// values, for Caddy's replacer.
	id, email, directory any
}

type sessionCache struct {
	shards [sessionCacheShards]struct {
		mu sync.RWMutex
		m  map[string]*verified
	}
}

// shard picks a cookie's shard from its last character, which is part of
// the HMAC and so evenly spread.
func (c *sessionCache) shard(value string) int {
	return int(value[len(value)-1]) % sessionCacheShards
}

func (c *sessionCache) get(value string) *verified {
	if value == "" {
		return nil
	}
	sh := &c.shards[c.shard(value)]
	sh.mu.RLock()
	v := sh.m[value]
	sh.mu.RUnlock()
	return v
}

// put keeps v under a copy of value, so that the request's header can be
// collected. A full shard drops one entry (the one Go's map iteration
// happens to start at, which is as good as random).
func (c *sessionCache) put(value string, v *verified) {
	sh := &c.shards[c.shard(value)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.m == nil {
		sh.m = make(map[string]*verified, sessionCacheShardSize)
	}
	if len(sh.m) >= sessionCacheShardSize {
		for k := range sh.m {
			delete(sh.m, k)
			break
		}
	}
	sh.m[strings.Clone(value)] = v
}

// verify returns the verified session of value: from the cache when the
// value verified before, else verified in full and kept.
func (c *SessionCodec) verify(value string, now time.Time) (*verified, error) {
	if v := c.cache.get(value); v != nil {
		if now.Unix() >= v.session.ExpiresAt {
			return nil, ErrSessionExpired
		}
		return v, nil
	}
	// Decoded on the stack first: a forged cookie, the cheap path, must
	// not allocate.
	var sess Session
	if err := c.decode(value, now, &sess); err != nil {
		return nil, err
	}
	v := &verified{session: sess}
	v.id, v.email, v.directory = v.session.User, v.session.Email, v.session.Directory
	c.cache.put(value, v)
	return v, nil
}
