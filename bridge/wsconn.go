package bridge

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
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
// negotiated), no client side, whole messages only. The bridge's tests
// drive it with coder/websocket's client and with Chromium.
type wsConn struct {
	br    *bufio.Reader
	cork  *corkConn
	limit int64 // the largest message read, in bytes

	readMu  sync.Mutex // one reader at a time: the session, or Close draining
	readErr error      // the first read error, returned ever after; readMu guards

	pingDue   atomic.Bool // a ping is out and no pong came back yet
	closeSent atomic.Bool
}

// Opcodes (RFC 6455, section 5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa
)

// maxControlPayload is the largest control frame payload.
const maxControlPayload = 125

// protocolError is a frame that breaks RFC 6455; the connection closes
// with 1002.
type protocolError string

func (e protocolError) Error() string { return "websocket: " + string(e) }

// wsGUID is RFC 6455's key suffix for Sec-WebSocket-Accept.
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

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
	sum := sha1.Sum([]byte(key + wsGUID))
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		base64.StdEncoding.EncodeToString(sum[:]) + "\r\n"
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
// protocol, a protocolError. The first error is final.
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

// frameHeader is what readMessage needs of a frame's header.
type frameHeader struct {
	fin    bool
	opcode byte
	length int64
	mask   [4]byte
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
		if h.opcode >= opClose {
			if err := c.control(h); err != nil {
				return 0, nil, err
			}
			continue
		}
		switch {
		case h.opcode == opContinuation && !started:
			return 0, nil, protocolError("continuation frame outside a message")
		case h.opcode != opContinuation && started:
			return 0, nil, protocolError("new message before the last one ended")
		case h.opcode != opContinuation:
			typ, started = websocket.MessageType(h.opcode), true
		}
		// Checked before anything is allocated: the length is the peer's word.
		if h.length > c.limit-int64(len(msg)) {
			return 0, nil, websocket.ErrMessageTooBig
		}
		n := len(msg)
		msg = append(msg, make([]byte, h.length)...)
		if _, err := io.ReadFull(c.br, msg[n:]); err != nil {
			return 0, nil, err
		}
		unmask(msg[n:], h.mask)
		if h.fin {
			if msg == nil {
				msg = []byte{}
			}
			return typ, msg, nil
		}
	}
}

// readHeader reads and checks one frame header (RFC 6455, section 5.2).
func (c *wsConn) readHeader() (frameHeader, error) {
	var h frameHeader
	var b [8]byte
	if _, err := io.ReadFull(c.br, b[:2]); err != nil {
		return h, err
	}
	h.fin = b[0]&0x80 != 0
	h.opcode = b[0] & 0x0f
	switch {
	case b[0]&0x70 != 0:
		return h, protocolError("reserved bits set, but no extension was negotiated")
	case h.opcode > opBinary && h.opcode < opClose || h.opcode > opPong:
		return h, protocolError(fmt.Sprintf("unknown opcode %d", h.opcode))
	case b[1]&0x80 == 0:
		return h, protocolError("a client's frames must be masked")
	}
	switch n := b[1] & 0x7f; n {
	case 126:
		if _, err := io.ReadFull(c.br, b[:2]); err != nil {
			return h, err
		}
		h.length = int64(binary.BigEndian.Uint16(b[:2]))
	case 127:
		if _, err := io.ReadFull(c.br, b[:8]); err != nil {
			return h, err
		}
		u := binary.BigEndian.Uint64(b[:8])
		if u>>63 != 0 {
			return h, protocolError("frame length has its top bit set")
		}
		h.length = int64(u)
	default:
		h.length = int64(n)
	}
	if h.opcode >= opClose && (!h.fin || h.length > maxControlPayload) {
		return h, protocolError("control frames must be whole and at most 125 bytes")
	}
	if _, err := io.ReadFull(c.br, h.mask[:]); err != nil {
		return h, err
	}
	return h, nil
}

// control handles a ping, pong or close frame.
func (c *wsConn) control(h frameHeader) error {
	var buf [maxControlPayload]byte
	p := buf[:h.length]
	if _, err := io.ReadFull(c.br, p); err != nil {
		return err
	}
	unmask(p, h.mask)
	switch h.opcode {
	case opPing:
		if c.closeSent.Load() {
			return nil // closing: the peer hears our close, not a pong
		}
		return c.writeControl(opPong, p)
	case opPong:
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

// unmask XORs p with the frame's masking key, eight bytes at a time.
func unmask(p []byte, key [4]byte) {
	k32 := binary.LittleEndian.Uint32(key[:])
	k64 := uint64(k32) | uint64(k32)<<32
	for len(p) >= 8 {
		binary.LittleEndian.PutUint64(p, binary.LittleEndian.Uint64(p)^k64)
		p = p[8:]
	}
	for i := range p {
		p[i] ^= key[i&3]
	}
}

// writeControl writes a control frame at once, or with the burst that is
// being corked.
func (c *wsConn) writeControl(op byte, payload []byte) error {
	frame := make([]byte, 0, 2+len(payload))
	frame = append(frame, 0x80|op, byte(len(payload)))
	_, err := c.cork.Write(append(frame, payload...))
	return err
}

// Ping sends a ping; it reports false, sending nothing, when the last ping
// was never answered.
func (c *wsConn) Ping() (bool, error) {
	if c.pingDue.Swap(true) {
		return false, nil
	}
	return true, c.writeControl(opPing, nil)
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
		if c.writeControl(opClose, p) == nil {
			_ = c.cork.Conn.SetReadDeadline(deadline)
			c.readMu.Lock()
			for c.readErr == nil {
				_, _, c.readErr = c.readMessage()
			}
			c.readMu.Unlock()
		}
	}
	return c.cork.Conn.Close()
}
