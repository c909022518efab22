package bridge

import (
	"bufio"
	"net"
	"net/http"
	"sync"
)

// corkConn lets a /ws session's writer send a burst of events in one
// write(2): coder/websocket flushes after every message, and at a few
// hundred thousand deliveries a second one syscall per event is what
// bounds the server (half its CPU in the profile). While corked, writes
// collect in memory; Uncork sends them at once. Writes while uncorked (the
// handshake, pings, close frames) go straight through.
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
	c.buf = append(c.buf, p...)
	if len(c.buf) >= maxCorked {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Cork holds writes until Uncork.
func (c *corkConn) Cork() {
	c.mu.Lock()
	c.corked = !c.stopped
	c.mu.Unlock()
}

// Uncork writes what was held and lets later writes through.
func (c *corkConn) Uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	return c.flushLocked()
}

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
	if cap(c.buf) > 4<<10 {
		c.buf = nil // an idle connection keeps no burst-sized buffer
	} else {
		c.buf = c.buf[:0]
	}
	return err
}

// corkingWriter hands coder/websocket a hijacked connection whose writes
// go through a corkConn.
type corkingWriter struct {
	http.ResponseWriter
	cork *corkConn
}

func (w *corkingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if err := brw.Writer.Flush(); err != nil { // the 101 response
		conn.Close()
		return nil, nil, err
	}
	w.cork.Conn = conn
	return w.cork, bufio.NewReadWriter(brw.Reader, bufio.NewWriterSize(w.cork, 4<<10)), nil
}
