package bridge

import (
	"net"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/parleychat/parley/bridge/wsframe"
)

// corkConn lets a /ws session's writer send a burst of events in one
// write(2): at a few hundred thousand deliveries a second one syscall per
// event is what bounds the server (half its CPU in the profile).
// WriteFrame corks it: frames, and control frames written meanwhile,
// collect in memory until Uncork sends them at once. Uncorked, control
// frames (pings, pongs, the close) go straight through.
type corkConn struct {
	net.Conn
	mu      sync.Mutex
	corked  bool
	stopped bool
	buf     []byte
}

// maxCorked bounds what a burst may hold before it is written anyway.
const maxCorked = 64 << 10

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return c.Conn.Write(p)
	}
	if c.buf == nil {
		c.buf = *corkBufs.Get().(*[]byte)
	}
	c.buf = append(c.buf, p...)
	if len(c.buf) >= maxCorked {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// WriteFrame queues one unfragmented, unmasked data frame (a server's) and
// holds it until Uncork. It is safe beside the control frames wsConn
// writes, which arrive whole, one Write each.
func (c *corkConn) WriteFrame(typ websocket.MessageType, payload []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return net.ErrClosed
	}
	if c.buf == nil {
		c.buf = *corkBufs.Get().(*[]byte)
	}
	c.buf = wsframe.AppendHeader(c.buf, wsframe.Header{Fin: true, Opcode: byte(typ), Length: int64(len(payload))})
	c.buf = append(c.buf, payload...)
	c.corked = true
	if len(c.buf) >= maxCorked {
		return c.flushLocked()
	}
	return nil
}

// Uncork writes what was held and lets later writes through.
func (c *corkConn) Uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	return c.flushLocked()
}

// SetWriteDeadline bounds the writes to come, including one in progress
// (which holds the lock); it must not wait for that lock.
func (c *corkConn) SetWriteDeadline(t time.Time) error { return c.Conn.SetWriteDeadline(t) }

// Stop uncorks for good, before the connection closes.
func (c *corkConn) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked, c.stopped = false, true
	return c.flushLocked()
}

func (c *corkConn) flushLocked() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	// An idle connection keeps no buffer; bursts share them.
	if cap(c.buf) <= maxPooled {
		b := c.buf[:0]
		corkBufs.Put(&b)
	}
	c.buf = nil
	return err
}

// corkBufs holds burst buffers between bursts.
var corkBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// maxPooled keeps a rare huge burst's buffer out of the pool.
const maxPooled = maxCorked + 16<<10
