package store

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The outbox is three structures under <prefix>o:, all in the key prefix's
// slot, changed together by one script or transaction at a time:
//
//	o:m:<id>  hash: p payload, a attempts, e enqueued (Unix ns), r
//	          priority (absent for PriorityHigh); the message itself,
//	          which expires with the message
//	o:q       sorted set of ids, scored by when each is next claimable
//	          (Unix ms): its due time, or the end of its lease once claimed
//	o:n       the same as o:q for the PriorityLow messages, which Claim
//	          reads only once o:q has no due message left
//	o:x       sorted set of ids, scored by when each expires (Unix ms on the
//	          server's clock; +inf for never), which makes OutboxLen a ZCOUNT
//
// Claim is one script: take the ids of o:q, then of o:n, scored at or
// before now, lowest first, skip (and forget) those whose message has expired, and move each
// one it returns to now+lease. That move is the lease: a worker that dies
// holding it leaves the message scored at now+lease, where the next Claim
// by any instance finds it, so every message is delivered at least once.
// Ack deletes all three entries; Retry rescores o:q to the retry time.
//
// Why no Redis Stream with a consumer group, whose XAUTOCLAIM reclaims a
// dead consumer's entries: XAUTOCLAIM judges a lease by how long an entry
// has been idle on the server's clock, whereas the Outbox contract judges
// it against the now its caller passes to Claim (the clock is an input,
// and tests move it an hour ahead in a millisecond). An entry leased until
// now+lease must come back when a Claim passes that time, and a stream
// cannot express that. Nor can it express scheduled due times and
// retries, which would need this sorted set anyway: the stream would only
// duplicate it.
const (
	outboxMsgSpace = redisOutboxSpace + "m:"
	outboxQueue    = redisOutboxSpace + "q"
	outboxLowQueue = redisOutboxSpace + "n"
	outboxExpiries = redisOutboxSpace + "x"
)

// serverNowMs, a Lua snippet, is the server's clock in Unix ms, which
// expiries follow.
const serverNowMs = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// KEYS: message, queue, expiries, low queue. ARGV: id, payload, enqueued
// (Unix ns), due (Unix ms), ttl (ms; 0 for never), priority.
var enqueueScript = redis.NewScript(serverNowMs + `
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'p', ARGV[2], 'a', 0, 'e', ARGV[3])
local exp = '+inf'
local ttl = tonumber(ARGV[5])
if ttl > 0 then
	exp = now + ttl
	redis.call('PEXPIREAT', KEYS[1], exp)
end
local queue, other = KEYS[2], KEYS[4]
if ARGV[6] ~= '0' then
	redis.call('HSET', KEYS[1], 'r', ARGV[6])
	queue, other = KEYS[4], KEYS[2]
end
redis.call('ZREM', other, ARGV[1])
redis.call('ZADD', queue, ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[3], exp, ARGV[1])
return 1
`)

// KEYS: queue, expiries, low queue. ARGV: now (Unix ms), max, lease end
// (Unix ms, after now), message key prefix. Returns id, payload, attempts,
// enqueued for each message claimed, the high queue's first, oldest due
// first. Message keys are built from the prefix, in the same slot as the
// declared keys.
var claimScript = redis.NewScript(serverNowMs + `
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
local out = {}
local left = tonumber(ARGV[2])
for _, queue in ipairs({KEYS[1], KEYS[3]}) do
	while left > 0 do
		local ids = redis.call('ZRANGEBYSCORE', queue, '-inf', ARGV[1], 'LIMIT', 0, left)
		if #ids == 0 then
			break
		end
		for _, id in ipairs(ids) do
			local m = redis.call('HMGET', ARGV[4] .. id, 'p', 'a', 'e')
			if m[1] then
				redis.call('ZADD', queue, ARGV[3], id)
				out[#out + 1] = id
				out[#out + 1] = m[1]
				out[#out + 1] = m[2]
				out[#out + 1] = m[3]
				left = left - 1
			else
				redis.call('ZREM', queue, id)
				redis.call('ZREM', KEYS[2], id)
			end
		end
	end
end
return out
`)

// KEYS: message, queue, expiries, low queue. ARGV: id, at (Unix ms),
// attempts to add. Returns 0 if the message is gone.
var retryScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
	redis.call('ZREM', KEYS[2], ARGV[1])
	redis.call('ZREM', KEYS[3], ARGV[1])
	redis.call('ZREM', KEYS[4], ARGV[1])
	return 0
end
if ARGV[3] ~= '0' then
	redis.call('HINCRBY', KEYS[1], 'a', ARGV[3])
end
local queue = KEYS[2]
if redis.call('HEXISTS', KEYS[1], 'r') == 1 then
	queue = KEYS[4]
end
redis.call('ZADD', queue, ARGV[2], ARGV[1])
return 1
`)

// KEYS: expiries. Returns how many have not expired.
var outboxLenScript = redis.NewScript(serverNowMs + `
return redis.call('ZCOUNT', KEYS[1], now, '+inf')
`)

// Enqueue implements Outbox. Without a due time the message is due at the
// current wall-clock time. Enqueueing an id that is queued already
// replaces the message, attempts and expiry included.
func (r *Redis) Enqueue(ctx context.Context, id string, payload []byte, due time.Time, ttl time.Duration, prio Priority) error {
	if err := checkRedisTTL(ctx, ttl); err != nil {
		return err
	}
	now := time.Now()
	if due.IsZero() {
		due = now
	}
	keys := []string{r.outboxMsgKey(id), r.prefix + outboxQueue, r.prefix + outboxExpiries, r.prefix + outboxLowQueue}
	err := enqueueScript.Run(ctx, r.client, keys,
		id, payload, now.UnixNano(), due.UnixMilli(), ceilMillis(ttl).Milliseconds(), int(prio)).Err()
	return redisErr("enqueue", err)
}

// Claim implements Outbox. Due times and leases have millisecond
// resolution; a lease is at least a millisecond, so one Claim never
// returns a message twice.
func (r *Redis) Claim(ctx context.Context, now time.Time, max int, lease time.Duration) ([]OutboxItem, error) {
	if err := ctx.Err(); err != nil || max <= 0 {
		return nil, err
	}
	nowMs := now.UnixMilli()
	until := now.Add(lease).UnixMilli()
	if until <= nowMs {
		until = nowMs + 1
	}
	keys := []string{r.prefix + outboxQueue, r.prefix + outboxExpiries, r.prefix + outboxLowQueue}
	res, err := claimScript.Run(ctx, r.client, keys, nowMs, max, until, r.prefix+outboxMsgSpace).Slice()
	if err != nil {
		return nil, redisErr("claim", err)
	}
	if len(res)%4 != 0 {
		return nil, redisErr("claim", errCorruptOutbox)
	}
	items := make([]OutboxItem, 0, len(res)/4)
	for i := 0; i < len(res); i += 4 {
		item, err := outboxItem(res[i : i+4])
		if err != nil {
			return nil, redisErr("claim", err)
		}
		items = append(items, item)
	}
	return items, nil
}

// outboxItem decodes one message of claimScript's reply.
func outboxItem(f []any) (OutboxItem, error) {
	id, ok1 := f[0].(string)
	payload, ok2 := f[1].(string)
	attempts, ok3 := f[2].(string)
	enqueued, ok4 := f[3].(string)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return OutboxItem{}, errCorruptOutbox
	}
	a, err := strconv.Atoi(attempts)
	if err != nil {
		return OutboxItem{}, fmt.Errorf("%w: attempts %q", errCorruptOutbox, attempts)
	}
	e, err := strconv.ParseInt(enqueued, 10, 64)
	if err != nil {
		return OutboxItem{}, fmt.Errorf("%w: enqueued %q", errCorruptOutbox, enqueued)
	}
	return OutboxItem{ID: id, Payload: []byte(payload), Attempts: a, EnqueuedAt: time.Unix(0, e)}, nil
}

// Ack implements Outbox. Acknowledging a message that is gone (acked
// before, or expired) is not an error.
func (r *Redis) Ack(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	_, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, r.outboxMsgKey(id))
		p.ZRem(ctx, r.prefix+outboxQueue, id)
		p.ZRem(ctx, r.prefix+outboxLowQueue, id)
		p.ZRem(ctx, r.prefix+outboxExpiries, id)
		return nil
	})
	return redisErr("ack", err)
}

// Retry implements Outbox. It returns ErrNotFound if the message was
// acknowledged or has expired. The message keeps its expiry.
func (r *Redis) Retry(ctx context.Context, id string, at time.Time) error {
	return r.reschedule(ctx, id, at, 1, "retry")
}

// Postpone implements Outbox. It returns ErrNotFound if the message was
// acknowledged or has expired. The message keeps its expiry.
func (r *Redis) Postpone(ctx context.Context, id string, at time.Time) error {
	return r.reschedule(ctx, id, at, 0, "postpone")
}

// reschedule moves message id to at in its queue and adds attempts to its
// attempt counter.
func (r *Redis) reschedule(ctx context.Context, id string, at time.Time, attempts int, op string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	keys := []string{r.outboxMsgKey(id), r.prefix + outboxQueue, r.prefix + outboxExpiries, r.prefix + outboxLowQueue}
	found, err := retryScript.Run(ctx, r.client, keys, id, at.UnixMilli(), attempts).Int()
	switch {
	case err != nil:
		return redisErr(op, err)
	case found == 0:
		return ErrNotFound
	}
	return nil
}

// OutboxLen implements Outbox: it counts the messages that have not
// expired, in O(log n).
func (r *Redis) OutboxLen(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	n, err := outboxLenScript.Run(ctx, r.client, []string{r.prefix + outboxExpiries}).Int()
	if err != nil {
		return 0, redisErr("outbox len", err)
	}
	return n, nil
}

func (r *Redis) outboxMsgKey(id string) string {
	return r.prefix + outboxMsgSpace + id
}
