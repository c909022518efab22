package hub

import (
	"sync"
	"time"
)

// gathered collects changes during a window and hands the window's last
// change per key to a flush when it ends. Presence and room member events
// go out this way: announcing every change to every session costs O(N²)
// events while N users connect; gathered, one event per session per
// window.
type gathered[K comparable, V any] struct {
	mu      sync.Mutex
	pending map[K]V
	timer   *time.Timer
	closed  bool
}

// add records v for k, replacing a change of k earlier in the window. The
// window's first change starts its timer, which calls flush after window.
func (g *gathered[K, V]) add(k K, v V, window time.Duration, flush func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	if g.pending == nil {
		g.pending = map[K]V{}
	}
	g.pending[k] = v
	if g.timer == nil {
		g.timer = time.AfterFunc(window, flush)
	}
}

// take returns the window's changes and starts the next window.
func (g *gathered[K, V]) take() map[K]V {
	g.mu.Lock()
	defer g.mu.Unlock()
	changes := g.pending
	g.pending, g.timer = nil, nil
	return changes
}

// close drops what is pending; nothing more is gathered.
func (g *gathered[K, V]) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	if g.timer != nil {
		g.timer.Stop()
	}
	g.pending = nil
}
