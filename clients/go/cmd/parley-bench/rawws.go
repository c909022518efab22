package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/bridge/wsframe"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// wsWire is /ws (JSON or binary) on a minimal RFC 6455 client: the bench
// reads frames straight from a large buffer, so a burst the server wrote
// at once costs it one read(2), not one per frame. A general-purpose
// client spends as much CPU per delivery as the server does, and the
// load generator shares the server's two cores: its cost would cap the
// figures it reports.
type wsWire struct {
	conn   net.Conn
	br     *bufio.Reader
	binary bool

	wmu  sync.Mutex // writes: commands, and pongs from the reader
	wbuf []byte

	msg     []byte // a fragmented message being reassembled
	ctx     context.Context
	stopCtx func() bool
}

// dialWS opens /ws with the token as a subprotocol and sends the empty
// hello that picks the format.
func dialWS(ctx context.Context, addr, token string, bin bool) (wire, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	var key [16]byte
	_, _ = rand.Read(key[:])
	k := base64.StdEncoding.EncodeToString(key[:])
	req := "GET /ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + k + "\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Protocol: parley.v1, bearer." + token + "\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		conn.Close()
		return nil, err
	}
	w := &wsWire{conn: conn, br: bufio.NewReaderSize(conn, 64<<10), binary: bin}
	resp, err := http.ReadResponse(w.br, nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != wsframe.AcceptKey(k) {
		conn.Close()
		return nil, fmt.Errorf("/ws upgrade: %s", resp.Status)
	}
	_ = conn.SetDeadline(time.Time{})
	op := wsframe.Text
	if bin {
		op = wsframe.Binary
	}
	if err := w.writeFrame(op, []byte("{}")); err != nil {
		conn.Close()
		return nil, err
	}
	return w, nil
}

// writeFrame sends one final, masked frame, as a client must.
func (w *wsWire) writeFrame(op byte, p []byte) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	h := wsframe.Header{Fin: true, Opcode: op, Masked: true, Length: int64(len(p))}
	_, _ = rand.Read(h.Mask[:])
	b := wsframe.AppendHeader(w.wbuf[:0], h)
	start := len(b)
	b = append(b, p...)
	wsframe.Mask(b[start:], h.Mask)
	w.wbuf = b
	_, err := w.conn.Write(b)
	return err
}

func (w *wsWire) send(_ context.Context, ev *chatv1.ClientEvent) error {
	if w.binary {
		b, err := proto.Marshal(ev)
		if err != nil {
			return err
		}
		return w.writeFrame(wsframe.Binary, b)
	}
	b, err := protojson.Marshal(ev)
	if err != nil {
		return err
	}
	return w.writeFrame(wsframe.Text, b)
}

func (w *wsWire) join(ctx context.Context, room string) error  { return w.send(ctx, joinEvent(room)) }
func (w *wsWire) leave(ctx context.Context, room string) error { return w.send(ctx, leaveEvent(room)) }
func (w *wsWire) publish(ctx context.Context, room, text string) error {
	return w.send(ctx, sendEvent(room, text))
}

// recv returns the next event; its slices are valid until the next recv.
func (w *wsWire) recv(ctx context.Context) (event, error) {
	if ctx != w.ctx { // a cancelled ctx ends a blocked read
		if w.stopCtx != nil {
			w.stopCtx()
		}
		w.ctx = ctx
		w.stopCtx = context.AfterFunc(ctx, func() { _ = w.conn.SetReadDeadline(time.Unix(1, 0)) })
	}
	for {
		op, data, err := w.readMessage()
		if err != nil {
			if ctx.Err() != nil {
				return event{}, ctx.Err()
			}
			return event{}, err
		}
		switch op {
		case wsframe.Binary:
			return scanParley(data)
		case wsframe.Text:
			return scanParleyJSON(data)
		}
	}
}

// readMessage returns the next data message, answering pings on the way.
// A message that fits the buffer is returned in place (until the next read).
func (w *wsWire) readMessage() (byte, []byte, error) {
	w.msg = w.msg[:0]
	var first byte
	for {
		fin, op, n, err := w.readHeader()
		if err != nil {
			return 0, nil, err
		}
		if n > maxRead || len(w.msg)+n > maxRead {
			return 0, nil, errors.New("ws: message over the read limit")
		}
		if op >= wsframe.Close { // control frames come whole, between fragments too
			p := make([]byte, n)
			if _, err := io.ReadFull(w.br, p); err != nil {
				return 0, nil, err
			}
			switch op {
			case wsframe.Close:
				code := 1005
				if len(p) >= 2 {
					code = int(binary.BigEndian.Uint16(p))
				}
				return 0, nil, fmt.Errorf("ws: closed by the server: %d %s", code, p[min(2, len(p)):])
			case wsframe.Ping:
				if err := w.writeFrame(wsframe.Pong, p); err != nil {
					return 0, nil, err
				}
			}
			continue
		}
		if op != wsframe.Continuation {
			first = op
		}
		if fin && len(w.msg) == 0 && n <= w.br.Size() {
			p, err := w.br.Peek(n)
			if err != nil {
				return 0, nil, err
			}
			_, _ = w.br.Discard(n)
			return first, p, nil
		}
		start := len(w.msg)
		w.msg = append(w.msg, make([]byte, n)...)
		if _, err := io.ReadFull(w.br, w.msg[start:]); err != nil {
			return 0, nil, err
		}
		if fin {
			return first, w.msg, nil
		}
	}
}

// readHeader reads a frame header; the server's frames are unmasked.
func (w *wsWire) readHeader() (fin bool, op byte, n int, err error) {
	h, err := wsframe.ReadHeader(w.br)
	switch {
	case err != nil:
		return false, 0, 0, err
	case h.Masked:
		return false, 0, 0, errors.New("ws: masked frame from the server")
	case h.Length > maxRead:
		return false, 0, 0, errors.New("ws: frame over the read limit")
	}
	return h.Fin, h.Opcode, int(h.Length), nil
}

func (w *wsWire) close() { _ = w.conn.Close() }
