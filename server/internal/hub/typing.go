package hub

import (
	"sync"
	"time"
)

// typingTable holds who is typing where. A start while already typing only
// pushes the expiry back (that is the throttle: one event per burst); a
// start without a stop expires after TypingTimeout. Nothing is stored.
type typingTable struct {
	h       *Hub
	mu      sync.Mutex
	entries map[typingKey]*typingEntry
	closed  bool
}

type typingKey struct{ conv, user string }

// typingEntry is compared by pointer so a timer that fires after its entry
// was replaced does nothing.
type typingEntry struct{ timer *time.Timer }

func (t *typingTable) init(h *Hub) {
	t.h = h
	t.entries = map[typingKey]*typingEntry{}
}

func (t *typingTable) start(conv, user string) {
	k := typingKey{conv, user}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	if e, ok := t.entries[k]; ok {
		e.timer.Reset(t.h.cfg.TypingTimeout)
		t.mu.Unlock()
		return
	}
	e := &typingEntry{}
	e.timer = time.AfterFunc(t.h.cfg.TypingTimeout, func() { t.expire(k, e) })
	t.entries[k] = e
	t.mu.Unlock()
	t.h.deliverTyping(conv, user, true)
}

func (t *typingTable) expire(k typingKey, e *typingEntry) {
	t.mu.Lock()
	if t.entries[k] != e {
		t.mu.Unlock()
		return
	}
	delete(t.entries, k)
	t.mu.Unlock()
	t.h.deliverTyping(k.conv, k.user, false)
}

func (t *typingTable) stop(conv, user string) {
	k := typingKey{conv, user}
	t.mu.Lock()
	e, ok := t.entries[k]
	if ok {
		e.timer.Stop()
		delete(t.entries, k)
	}
	t.mu.Unlock()
	if ok {
		t.h.deliverTyping(conv, user, false)
	}
}

func (t *typingTable) clearUser(user string) {
	var convs []string
	t.mu.Lock()
	for k, e := range t.entries {
		if k.user == user {
			e.timer.Stop()
			delete(t.entries, k)
			convs = append(convs, k.conv)
		}
	}
	t.mu.Unlock()
	for _, c := range convs {
		t.h.deliverTyping(c, user, false)
	}
}

func (t *typingTable) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for k, e := range t.entries {
		e.timer.Stop()
		delete(t.entries, k)
	}
}
