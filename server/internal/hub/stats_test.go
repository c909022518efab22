package hub_test

import (
	"testing"
	"time"

	"github.com/parleychat/parley/server/internal/hub"
)

// TestStatsCountDropsAndSlowConsumers: a session that stops draining its
// queue is closed once as a slow consumer, and what fan-out could not
// queue to it from then on is counted as dropped, not delivered.
func TestStatsCountDropsAndSlowConsumers(t *testing.T) {
	t.Parallel()
	// Presence goes out at once, so that nothing but the broadcasts is
	// queued after the drains below.
	h, _ := newHubConfig(t, 0, hub.Config{QueueSize: 8, PresenceWindow: -1, TypingTimeout: time.Second})
	slow := attach(t, h, "slow")
	fast := attach(t, h, "fast")
	drain(slow)
	drain(fast)
	before := h.Stats()

	const n = 20
	for range n {
		h.Broadcast("admin", "hello", "")
		drain(fast)
	}
	st := h.Stats()
	if got := st.SlowConsumers - before.SlowConsumers; got != 1 {
		t.Errorf("slow consumers +%d, want +1", got)
	}
	// The slow session took 8, its queue's bound; the 9th closed it and
	// it and the 11 after were dropped.
	if got := st.MessagesOut - before.MessagesOut; got != n+8 {
		t.Errorf("delivered +%d, want %d", got, n+8)
	}
	if got := st.Dropped - before.Dropped; got != n-8 {
		t.Errorf("dropped +%d, want %d", got, n-8)
	}
	select {
	case <-slow.Done():
	default:
		t.Fatalf("slow session still open")
	}
}
