package bridge

import (
	"context"
	"errors"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/session"
)

// attach starts the /ws session through cfg.Sessions and reports whether
// it runs; the session then owns the connection, and cleans up through
// Detached.
func (s *wsSession) attach(ctx context.Context, auth, ip string, first []byte, firstType websocket.MessageType, isHello bool) bool {
	t := &directTransport{s: s, ip: ip}
	if !isHello {
		t.pending, t.pendingType = first, firstType
	}
	if err := s.b.cfg.Sessions.Attach(ctx, session.Conn{Authorization: auth, ClientIP: ip}, t, t.detached); err != nil {
		t.Close(session.FromStatus(err))
		return false
	}
	return true
}

// directTransport is the WebSocket as the server's session sees it: its
// session.Transport.
type directTransport struct {
	s           *wsSession
	ip          string
	pending     []byte // the first frame, when it was already a command
	pendingType websocket.MessageType
}

func (t *directTransport) Recv(ev *chatv1.ClientEvent) error {
	typ, data := t.pendingType, t.pending
	if data != nil {
		t.pending = nil
	} else {
		var err error
		if typ, data, err = t.s.conn.ReadMessage(); err != nil {
			t.s.readFailed(err)
			return io.EOF
		}
	}
	if typ == websocket.MessageBinary {
		if err := proto.Unmarshal(data, ev); err != nil {
			return &session.InBandError{Code: chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, Message: clip("malformed protobuf: " + err.Error())}
		}
		return nil
	}
	if err := jsonIn.Unmarshal(data, ev); err != nil {
		return &session.InBandError{RequestID: probeRequestID(data), Code: chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, Message: clip("malformed JSON: " + err.Error())}
	}
	return nil
}

// Write corks frames and writes them as one burst: one write(2). No
// per-write timeout: a write stuck on a client that stopped reading ends
// when the session's end closes the WebSocket.
func (t *directTransport) Write(frames ...*session.Frame) error {
	for _, f := range frames {
		typ, frame, err := t.s.encode(wsItem{raw: f.Data})
		if err != nil {
			return err
		}
		if err := t.s.conn.cork.WriteFrame(typ, frame); err != nil {
			t.s.end(closeGoingAway, "write failed")
			return errors.Join(io.ErrClosedPipe, err)
		}
	}
	if err := t.s.conn.cork.Uncork(); err != nil {
		t.s.end(closeGoingAway, "write failed")
		return errors.Join(io.ErrClosedPipe, err)
	}
	return nil
}

// Close ends the WebSocket with d's close code; the first end wins.
func (t *directTransport) Close(d session.Disconnect) {
	t.s.end(websocket.StatusCode(d.Code), d.Reason)
}

// detached finishes the connection once the session has let go of it.
func (t *directTransport) detached() {
	<-t.s.closed // Close came first, so the close is under way
	t.s.finish(t.ip)
}

// clip makes a decode error fit to echo in band: at most maxInBandMessage
// bytes, cut on a character boundary, and valid UTF-8 whatever it quotes.
// The message travels in a protobuf string, which must be UTF-8: the
// server's encoder cannot send it otherwise.
func clip(msg string) string {
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	if len(msg) > maxInBandMessage {
		cut := maxInBandMessage
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut]
	}
	return msg
}
