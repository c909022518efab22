package bridge

import (
	"context"
	"errors"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/coder/websocket"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// Attacher starts Chat.Connect sessions for connections that are not gRPC
// streams. The implementation must apply the same policy as the gRPC
// server's interceptors (auth, roles, connect limit on open; rate limit,
// validation and token refresh on every command).
//
// AttachConnect returns once the session runs, which then reads t on a
// goroutine of its own: the caller's goroutine may exit, so an idle
// connection keeps no stack from its upgrade and authentication. The
// session ends by calling t.Abort with its final status (a gRPC status
// error, nil for OK) and then t.Detached. An error means the connection was
// refused and no session started.
type Attacher interface {
	AttachConnect(ctx context.Context, authorization, clientIP string, t SessionTransport) error
}

// SessionTransport is a bridged connection as the server's session sees
// it. One goroutine calls Recv and another Send.
type SessionTransport interface {
	// Recv returns the next command. A *CommandError refuses one frame in
	// band (the session reads on); io.EOF means the client is gone.
	Recv(ev *chatv1.ClientEvent) error
	// Send writes one ServerEvent in its protobuf encoding, shared with
	// other sessions: it must not be modified. It may hold the event back
	// until Flush.
	Send(event []byte) error
	// Flush writes what Send held back; it is called whenever the
	// session's queue runs empty.
	Flush() error
	// Abort closes the connection with the session's final status (a gRPC
	// status error, nil for OK), so that a blocked Recv or Send returns.
	// Any goroutine may call it, more than once; the first status wins.
	Abort(final error)
	// Detached is called once, after the session has ended and stopped
	// using the transport.
	Detached()
}

// CommandError is a client frame the bridge could not decode.
type CommandError struct {
	RequestID string
	Code      chatv1.ErrorCode
	Message   string
}

func (e *CommandError) Error() string { return e.Message }

// attach starts the /ws session through cfg.Sessions and reports whether
// it runs; the session then owns the connection, and cleans up through
// Detached.
func (s *wsSession) attach(ctx context.Context, auth, ip string, first []byte, firstType websocket.MessageType, isHello bool) bool {
	t := &directTransport{s: s, ip: ip}
	if !isHello {
		t.pending, t.pendingType = first, firstType
	}
	if err := s.b.cfg.Sessions.AttachConnect(ctx, auth, ip, t); err != nil {
		t.Abort(err)
		return false
	}
	return true
}

// directTransport reads and writes the WebSocket for the server's session.
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
			return &CommandError{Code: chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, Message: clip("malformed protobuf: " + err.Error())}
		}
		return nil
	}
	if err := jsonIn.Unmarshal(data, ev); err != nil {
		return &CommandError{RequestID: probeRequestID(data), Code: chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, Message: clip("malformed JSON: " + err.Error())}
	}
	return nil
}

func (t *directTransport) Send(event []byte) error {
	typ, frame, err := t.s.encode(wsItem{raw: event})
	if err != nil {
		return err
	}
	// No per-write timeout: a write stuck on a client that stopped reading
	// ends when the session's end closes the WebSocket. The frame waits in
	// memory until Flush, so a burst costs one write(2).
	if err := t.s.conn.cork.WriteFrame(typ, frame); err != nil {
		t.s.end(closeGoingAway, "write failed")
		return errors.Join(io.ErrClosedPipe, err)
	}
	return nil
}

// Flush writes the frames Send held back; the session's writer calls it
// when its queue is empty.
func (t *directTransport) Flush() error {
	if err := t.s.conn.cork.Uncork(); err != nil {
		t.s.end(closeGoingAway, "write failed")
		return errors.Join(io.ErrClosedPipe, err)
	}
	return nil
}

// Abort ends the WebSocket with final's close code; the first end wins.
func (t *directTransport) Abort(final error) {
	st := status.Convert(final)
	t.s.end(CloseCode(st), st.Message())
}

// Detached finishes the connection once the session has let go of it.
func (t *directTransport) Detached() {
	<-t.s.closed // Abort came first, so the close is under way
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
