package store

import (
	"context"
	"encoding/binary"

	"go.uber.org/zap"
)

// Every topic shares one Redis channel, <prefix>events, so that a process
// holds one subscription however many browsers wait: a message is framed
// as the topic's length (uvarint), the topic and the payload, and the
// receiving process hands it to its Hub, which finds the subscribers.

// subscribe starts receiving the store's channel into the Hub. It returns
// once Redis has confirmed the subscription, so that a message published
// after OpenRedis returns reaches this process.
func (r *Redis) subscribe(ctx context.Context) error {
	ps := r.client.Subscribe(ctx, r.prefix+redisEvents)
	if _, err := ps.Receive(ctx); err != nil {
		ps.Close()
		return err
	}
	r.pubsub = ps
	// The channel reconnects and resubscribes by itself after a broken
	// connection; messages published meanwhile are lost, as the Notifier
	// contract allows.
	ch := ps.Channel()
	r.wg.Go(func() {
		for m := range ch {
			r.dispatch(m.Payload)
		}
	})
	return nil
}

// dispatch hands one framed message to the subscribers of its topic.
func (r *Redis) dispatch(frame string) {
	n, k := binary.Uvarint([]byte(frame[:min(len(frame), binary.MaxVarintLen64)]))
	if k <= 0 || uint64(len(frame)-k) < n {
		r.logger.Warn("dropping malformed event", zap.Int("bytes", len(frame)))
		return
	}
	topic := frame[k : k+int(n)]
	r.hub.Dispatch(topic, []byte(frame[k+int(n):]))
}

// Publish implements Notifier: every process subscribed to this store,
// this one included, receives the message through Redis.
func (r *Redis) Publish(ctx context.Context, topic string, payload []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	frame := make([]byte, 0, binary.MaxVarintLen64+len(topic)+len(payload))
	frame = binary.AppendUvarint(frame, uint64(len(topic)))
	frame = append(frame, topic...)
	frame = append(frame, payload...)
	return redisErr("publish", r.client.Publish(ctx, r.prefix+redisEvents, frame).Err())
}

// Subscribe implements Notifier. It registers fn in this process only,
// which costs no round trip: the one subscription of the store's channel
// feeds every topic.
func (r *Redis) Subscribe(topic string, fn func(payload []byte)) (cancel func()) {
	return r.hub.Subscribe(topic, fn)
}
