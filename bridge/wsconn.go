package bridge

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/parleychat/parley/bridge/wsframe"
)

// wsConn is the server end of a /ws WebSocket (RFC 6455) after the
// handshake: frames are read from br and written through cork.
//
// The bridge speaks the protocol itself instead of through a WebSocket
// library because of what an idle connection costs. A library connection
// holds about 2 KiB of reader, writer and lock state, and its blocked
// read a deeper stack; here an idle connection is a bufio.Reader, a
// corkConn and this struct, and its reader parks a few frames deep. With
// 10,000 idle connections that is the difference between meeting and
// missing 20 KiB each (README, Performance). It does only what one
// subprotocol's server needs: no extensions (compression is never
// negotiated), no client side. Its peers in the tests are coder/websocket's
// client, Chromium's WebSocket (clients/web/e2e) and the ws package (the
// mobile app's tests).
type wsConn struct {
	br    *bufio.Reader
	cork  *corkConn
	limit int64 // the largest message read, in bytes

	readMu  sync.Mutex // one reader at a time: the session, or Close draining
	readErr error      // the first read error, returned ever after; readMu guards
	skip    int64      // unread payload of a frame over the limit; readMu guards
	skipMsg bool       // that frame was not its message's last; readMu guards

	pingDue   atomic.Bool // a ping is out and no pong came back yet
	closeSent atomic.Bool
}

// protocolError is a frame that breaks RFC 6455; the connection closes
// with 1002.
type protocolError string

func (e protocolError) Error() string { return "websocket: " + string(e) }

// errInvalidUTF8 is a text message that is not UTF-8; RFC 6455 (section
// 8.1) has the connection failed, with 1007.
var errInvalidUTF8 = errors.New("websocket: text message is not valid UTF-8")

// upgradeWS answers a WebSocket handshake (RFC 6455, section 4.2.2) and
// takes the connection over; subprotocol, when set, is echoed. On failure
// it has answered w and returns nil.
func upgradeWS(w http.ResponseWriter, r *http.Request, subprotocol string, limit int64) *wsConn {
	switch {
	case r.Method != http.MethodGet:
		w.Header().Set("Allow", http.MethodGet)
		writeJSONError(w, http.StatusMethodNotAllowed, "INVALID_ARGUMENT", "/ws takes a GET with a WebSocket upgrade")
		return nil
	case r.ProtoMajor != 1:
		writeJSONError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "WebSockets need HTTP/1.1")
		return nil
	case !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket"):
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "websocket")
		writeJSONError(w, http.StatusUpgradeRequired, "INVALID_ARGUMENT", "/ws takes a WebSocket upgrade")
		return nil
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		w.Header().Set("Sec-WebSocket-Version", "13")
		writeJSONError(w, http.StatusUpgradeRequired, "INVALID_ARGUMENT", "unsupported WebSocket version: use 13")
		return nil
	}
	key := strings.TrimSpace(r.Header.Get("Sec-WebSocket-Key"))
	if raw, err := base64.StdEncoding.DecodeString(key); err != nil || len(raw) != 16 {
		writeJSONError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "Sec-WebSocket-Key must be 16 bytes in base64")
		return nil
	}
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		writeJSONError(w, http.StatusInternalServerError, "INTERNAL", "cannot take over the connection")
		return nil
	}
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		wsframe.AcceptKey(key) + "\r\n"
	if subprotocol != "" {
		resp += "Sec-WebSocket-Protocol: " + subprotocol + "\r\n"
	}
	// net/http leaves its deadlines on a hijacked connection; the handshake
	// gets one of its own, and the WebSocket none (pings watch it).
	_ = nc.SetDeadline(time.Now().Add(firstFrameTimeout))
	if _, err := io.WriteString(nc, resp+"\r\n"); err != nil {
		nc.Close()
		return nil
	}
	_ = nc.SetDeadline(time.Time{})

	// A small read buffer will do: a larger frame is read straight into
	// its message. Bytes the client sent after its handshake wait in
	// net/http's buffer, whose reader must not be read further (it stops
	// at the request's end: golang/go#32314); they are copied out.
	var src io.Reader = nc
	if n := brw.Reader.Buffered(); n > 0 {
		early, _ := brw.Reader.Peek(n)
		src = io.MultiReader(bytes.NewReader(bytes.Clone(early)), nc)
	}
	return &wsConn{
		br:    bufio.NewReaderSize(src, 512),
		cork:  &corkConn{Conn: nc},
		limit: limit,
	}
}

// headerHasToken reports whether a comma-separated header holds token,
// case-insensitively.
func headerHasToken(h http.Header, name, token string) bool {
	for _, line := range h.Values(name) {
		for _, t := range strings.Split(line, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// ReadMessage returns the next data message, answering pings on the way.
// After the peer's close frame it returns a websocket.CloseError; a message
// over the limit, websocket.ErrMessageTooBig; a frame that breaks the
// protocol, a protocolError; a text message that is not UTF-8,
// errInvalidUTF8. The first error is final. So a text message returned is
// always valid UTF-8, which everything downstream (protojson, the
// in-band errors that quote it, the server's encoder) may rely on.
func (c *wsConn) ReadMessage() (websocket.MessageType, []byte, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if c.readErr != nil {
		return 0, nil, c.readErr
	}
	typ, msg, err := c.readMessage()
	if err != nil {
		c.readErr = err
	}
	return typ, msg, err
}

func (c *wsConn) readMessage() (websocket.MessageType, []byte, error) {
	var (
		typ     websocket.MessageType
		msg     []byte
		started bool // a fragmented message is under way
	)
	for {
		h, err := c.readHeader()
		if err != nil {
			return 0, nil, err
		}
		if h.IsControl() {
			if err := c.control(h); err != nil {
				return 0, nil, err
			}
			continue
		}
		switch {
		case h.Opcode == wsframe.Continuation && !started:
			return 0, nil, protocolError("continuation frame outside a message")
		case h.Opcode != wsframe.Continuation && started:
			return 0, nil, protocolError("new message before the last one ended")
		case h.Opcode != wsframe.Continuation:
			typ, started = websocket.MessageType(h.Opcode), true
		}
		// Checked before anything is allocated: the length is the peer's word.
		if h.Length > c.limit-int64(len(msg)) {
			c.skip, c.skipMsg = h.Length, !h.Fin
			return 0, nil, websocket.ErrMessageTooBig
		}
		n := len(msg)
		msg = append(msg, make([]byte, h.Length)...)
		if _, err := io.ReadFull(c.br, msg[n:]); err != nil {
			return 0, nil, err
		}
		wsframe.Mask(msg[n:], h.Mask)
		if h.Fin {
			if msg == nil {
				msg = []byte{}
			}
			// Checked on the whole message: a fragment may end inside a
			// character that the next one completes.
			if typ == websocket.MessageText && !utf8.Valid(msg) {
				return 0, nil, errInvalidUTF8
			}
			return typ, msg, nil
		}
	}
}

// readHeader reads a frame header and checks it against what a server may
// accept from a client (RFC 6455, section 5).
func (c *wsConn) readHeader() (wsframe.Header, error) {
	h, err := wsframe.ReadHeader(c.br)
	switch {
	case errors.Is(err, wsframe.ErrLength):
		return h, protocolError("frame length has its top bit set")
	case err != nil:
		return h, err
	case h.RSV != 0:
		return h, protocolError("reserved bits set, but no extension was negotiated")
	case h.Opcode > wsframe.Binary && h.Opcode < wsframe.Close || h.Opcode > wsframe.Pong:
		return h, protocolError(fmt.Sprintf("unknown opcode %d", h.Opcode))
	case !h.Masked:
		return h, protocolError("a client's frames must be masked")
	case h.IsControl() && (!h.Fin || h.Length > wsframe.MaxControlPayload):
		return h, protocolError("control frames must be whole and at most 125 bytes")
	}
	return h, nil
}

// control handles a ping, pong or close frame.
func (c *wsConn) control(h wsframe.Header) error {
	var buf [wsframe.MaxControlPayload]byte
	p := buf[:h.Length]
	if _, err := io.ReadFull(c.br, p); err != nil {
		return err
	}
	wsframe.Mask(p, h.Mask)
	switch h.Opcode {
	case wsframe.Ping:
		if c.closeSent.Load() {
			return nil // closing: the peer hears our close, not a pong
		}
		return c.writeControl(wsframe.Pong, p)
	case wsframe.Pong:
		c.pingDue.Store(false)
		return nil
	}
	code, reason, err := parseClose(p)
	if err != nil {
		return err
	}
	return websocket.CloseError{Code: code, Reason: reason}
}

// parseClose reads a close frame's payload (RFC 6455, section 7.4).
func parseClose(p []byte) (websocket.StatusCode, string, error) {
	switch {
	case len(p) == 0:
		return websocket.StatusNoStatusRcvd, "", nil
	case len(p) == 1:
		return 0, "", protocolError("close frame of one byte")
	}
	code := websocket.StatusCode(binary.BigEndian.Uint16(p))
	if !validCloseCode(code) {
		return 0, "", protocolError(fmt.Sprintf("invalid close code %d", code))
	}
	if !utf8.Valid(p[2:]) {
		return 0, "", protocolError("close reason is not UTF-8")
	}
	return code, string(p[2:]), nil
}

// validCloseCode reports whether code may be sent in a close frame.
func validCloseCode(code websocket.StatusCode) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// writeControl writes a control frame at once, or with the burst that is
// being corked.
func (c *wsConn) writeControl(op byte, payload []byte) error {
	frame := wsframe.AppendHeader(make([]byte, 0, 2+len(payload)), wsframe.Header{Fin: true, Opcode: op, Length: int64(len(payload))})
	_, err := c.cork.Write(append(frame, payload...))
	return err
}

// Ping sends a ping; it reports false, sending nothing, when the last ping
// was never answered.
func (c *wsConn) Ping() (bool, error) {
	if c.pingDue.Swap(true) {
		return false, nil
	}
	return true, c.writeControl(wsframe.Ping, nil)
}

// drain reads until the peer's close, an error or the read deadline. A
// message over the limit is read past first, to its last fragment: a peer
// still sending it would otherwise have its unread bytes make the kernel
// reset the connection, and it would never see the close frame that says
// why (1009).
func (c *wsConn) drain() {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	for {
		if errors.Is(c.readErr, websocket.ErrMessageTooBig) {
			if c.readErr = c.skipRefused(); c.readErr != nil {
				return
			}
		}
		if c.readErr != nil {
			return
		}
		_, _, c.readErr = c.readMessage()
	}
}

// skipRefused reads past the rest of a message refused as too big: the
// unread payload of its frame and, when that was not the last, its
// continuation frames up to the final one. Control frames among them are
// handled as anywhere else (so a close ends it). readMu must be held.
func (c *wsConn) skipRefused() error {
	for {
		if _, err := io.CopyN(io.Discard, c.br, c.skip); err != nil {
			return err
		}
		c.skip = 0
		if !c.skipMsg {
			return nil
		}
		h, err := c.readHeader()
		if err != nil {
			return err
		}
		if h.IsControl() {
			if err := c.control(h); err != nil {
				return err
			}
			continue
		}
		if h.Opcode != wsframe.Continuation {
			return protocolError("new message before the last one ended")
		}
		c.skip, c.skipMsg = h.Length, !h.Fin
	}
}

// Close flushes what is corked, sends a close frame with code and reason,
// waits until grace for the peer's close (draining what comes before it,
// unless the session's reader is doing so), then closes the connection.
func (c *wsConn) Close(code websocket.StatusCode, reason string, grace time.Duration) error {
	deadline := time.Now().Add(grace)
	_ = c.cork.SetWriteDeadline(deadline)
	_ = c.cork.Stop()
	if c.closeSent.CompareAndSwap(false, true) {
		var p []byte
		if validCloseCode(code) { // 1005 and the like name a missing code; send none
			p = binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(reason)), uint16(code))
			p = append(p, closeReason(reason)...)
		}
		if c.writeControl(wsframe.Close, p) == nil {
			_ = c.cork.Conn.SetReadDeadline(deadline)
			c.drain()
		}
	}
	return c.cork.Conn.Close()
}
