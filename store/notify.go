package store

import "sync"

// Hub fans messages out to in-process subscribers by topic. Badger uses it
// as its whole Notifier; a networked backend feeds it from one connection,
// so that a thousand waiting browsers cost a thousand map entries rather
// than a thousand subscriptions on the server.
type Hub struct {
	mu     sync.RWMutex
	topics map[string]map[*subscriber]struct{}
}

type subscriber struct{ fn func([]byte) }

// Subscribe registers fn for topic; see Notifier.
func (h *Hub) Subscribe(topic string, fn func(payload []byte)) (cancel func()) {
	s := &subscriber{fn: fn}
	h.mu.Lock()
	if h.topics == nil {
		h.topics = map[string]map[*subscriber]struct{}{}
	}
	subs := h.topics[topic]
	if subs == nil {
		subs = map[*subscriber]struct{}{}
		h.topics[topic] = subs
	}
	subs[s] = struct{}{}
	h.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			delete(subs, s)
			if len(subs) == 0 {
				delete(h.topics, topic)
			}
		})
	}
}

// Dispatch calls every subscriber of topic with payload. Each gets its own
// copy, so one cannot change what another sees.
func (h *Hub) Dispatch(topic string, payload []byte) {
	h.mu.RLock()
	fns := make([]func([]byte), 0, len(h.topics[topic]))
	for s := range h.topics[topic] {
		fns = append(fns, s.fn)
	}
	h.mu.RUnlock()
	for _, fn := range fns {
		fn(append([]byte(nil), payload...))
	}
}

// Topics reports how many topics have subscribers, for tests and metrics.
func (h *Hub) Topics() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.topics)
}
