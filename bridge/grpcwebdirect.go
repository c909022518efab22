package bridge

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/bridge/wsframe"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/session"
)

// grpcWebSubprotocol is improbable's WebSocket transport's subprotocol.
const grpcWebSubprotocol = "grpc-websockets"

// The gRPC-Web frame flags: a message, or a header block (the response
// headers, and last the trailers).
const (
	grpcWebMessage = 0x00
	grpcWebHeaders = 0x80
)

// grpcWebResponseHeaders is the header block that opens every response,
// as improbable's wrapper sends it for a gRPC server's.
var grpcWebResponseHeaders = []byte("content-type: application/grpc-web+proto\r\n")

// directGRPCWeb reports whether r is the gRPC-Web WebSocket request of
// Chat.Connect that the bridge attaches to the server's sessions itself,
// without improbable's wrapper and the in-process gRPC hop: the one path
// where per-event cost matters. Everything else (unary calls, the
// standalone proxy) goes through improbable.
func (b *Bridge) directGRPCWeb(r *http.Request) bool {
	return b.cfg.Sessions != nil && r.URL.Path == chatv1.Chat_Connect_FullMethodName && b.grpcWeb.IsGrpcWebSocketRequest(r)
}

// serveGRPCWebConnect serves the Connect of improbable's WebSocket
// transport on the bridge's own WebSocket server. The caller has checked
// the origin and the token-in-URL rule. The wire is improbable's
// (go/grpcweb/websocket_wrapper.go, v0.15.0): the client's first message
// is its header block ("key: value\r\n" lines); every later one is 0x00
// and a gRPC frame, or a lone 0x01 when the client half-closes; the server
// sends gRPC-Web frames: a header block, messages, and a trailer block
// with grpc-status and grpc-message.
func (b *Bridge) serveGRPCWebConnect(w http.ResponseWriter, r *http.Request) {
	s := &wsSession{b: b, done: make(chan struct{}), closed: make(chan struct{}), format: formatBinary, grpcWeb: &grpcWebState{}}
	if !b.addSession(s) {
		grpcWebRefusal(w, "server shutting down")
		return
	}
	conn := upgradeWS(w, r, grpcWebSubprotocol, b.cfg.MaxFrameBytes)
	if conn == nil {
		b.removeSession(s)
		return
	}
	// The kernel drops a peer that stops acknowledging (pings included).
	setTCPUserTimeout(conn.cork.Conn, 2*b.cfg.PingInterval)
	go s.runGRPCWeb(conn, remoteIP(r))
}

// grpcWebState is what a gRPC-Web session adds to a wsSession.
type grpcWebState struct {
	headerSent atomic.Bool // the response header block is written
	// trailer is the status the trailer block carries, set (once, before
	// end) by whoever ends the call with a status; a connection that
	// failed under it (a vanished peer, a frame over the limit, a broken
	// frame) ends with its close code only, as with improbable's wrapper.
	trailer atomic.Pointer[status.Status]
}

// runGRPCWeb reads the header frame and attaches the call to a session,
// which then owns the connection.
func (s *wsSession) runGRPCWeb(conn *wsConn, ip string) {
	s.mu.Lock()
	s.conn, s.cancel, s.started = conn, func() {}, true
	s.pingTimer = time.AfterFunc(s.b.cfg.PingInterval, s.ping)
	ended := s.ended
	s.mu.Unlock()
	if ended {
		go s.shutdown()
	}
	late := time.AfterFunc(s.b.headerFrameTimeout, func() {
		s.endGRPCWeb(status.New(codes.DeadlineExceeded, "no header frame within "+s.b.headerFrameTimeout.String()))
	})
	_, data, err := conn.ReadMessage()
	late.Stop()
	if err == nil {
		var call grpcWebCall
		if call, err = parseGRPCWebHeaders(data); err != nil {
			s.endGRPCWeb(status.New(codes.InvalidArgument, err.Error()))
		} else {
			ctx, cancel := context.WithCancel(context.WithValue(context.Background(), grpcWebKey{}, true))
			if call.hasTimeout {
				// As a gRPC server sets a call's deadline from grpc-timeout:
				// the session's own watch ends it when the deadline passes,
				// with DeadlineExceeded through the Disconnect table.
				ctx, cancel = context.WithTimeout(ctx, call.timeout)
			}
			t := &grpcWebTransport{s: s, ip: ip, cancel: cancel}
			err := s.b.cfg.Sessions.Attach(ctx, session.Conn{Authorization: call.auth, ClientIP: ip}, t, t.detached)
			if err == nil {
				return // the session finishes the connection
			}
			cancel()
			t.Close(session.FromStatus(err))
		}
	} else {
		s.grpcWebReadFailed(err)
	}
	s.end(closeGoingAway, "")
	<-s.closed
	s.wg.Wait()
	s.finish(ip)
}

// grpcWebReadFailed is readFailed for a gRPC-Web call. A message over the
// limit also ends the call with a status that says so, the Disconnect
// table's for 1009 (InvalidArgument), in trailers before the 1009 close:
// improbable's wrapper only closes, which a browser's client reports as a
// call that ended without a status.
func (s *wsSession) grpcWebReadFailed(err error) {
	if errors.Is(err, websocket.ErrMessageTooBig) {
		d := session.Disconnect{Code: session.CodeTooBig, Reason: fmt.Sprintf("grpc-web: a message over the %d-byte limit", s.conn.limit)}
		s.grpcWeb.trailer.CompareAndSwap(nil, status.Convert(d.Err()))
	}
	s.readFailed(err)
}

// noTrailer seals a call that ended without a status (its peer vanished
// or broke the protocol, a write failed): a status that comes after the
// end, such as the session's own for the same failure, must not race the
// close to the wire.
var noTrailer = status.New(codes.Unknown, "")

// endGRPCWeb ends the call with st in its trailers; nil is OK (as
// status.Convert(nil) gives it), which needs its trailers too.
func (s *wsSession) endGRPCWeb(st *status.Status) {
	if st == nil {
		st = status.New(codes.OK, "")
	}
	s.grpcWeb.trailer.CompareAndSwap(nil, st)
	code := closeNormal // as improbable closes after the trailers
	if st.Code() == codes.Unavailable {
		code = closeGoingAway
	}
	s.end(code, st.Message())
}

// writeTrailer writes the trailer block, after the header block if none
// went out yet (improbable's client reads a trailers-only response so
// too), when the call ended with a status. shutdown calls it before the
// close frame, under the close's write deadline.
func (s *wsSession) writeTrailer() {
	st := s.grpcWeb.trailer.Load()
	if st == nil || st == noTrailer {
		return
	}
	cork := s.conn.cork
	if !s.grpcWeb.headerSent.Swap(true) {
		if cork.writeGRPCWeb(grpcWebHeaders, grpcWebResponseHeaders) != nil {
			return
		}
	}
	if cork.writeGRPCWeb(grpcWebHeaders, trailerBlock(st)) == nil {
		_ = cork.Uncork()
	}
}

// trailerBlock is st as gRPC-Web trailers: lower-case keys, grpc-message
// percent-encoded as gRPC's HTTP/2 transport encodes it.
func trailerBlock(st *status.Status) []byte {
	b := []byte("grpc-status: " + strconv.Itoa(int(st.Code())) + "\r\n")
	if msg := st.Message(); msg != "" {
		b = append(b, "grpc-message: "...)
		b = appendGRPCMessage(b, msg)
		b = append(b, "\r\n"...)
	}
	return b
}

// appendGRPCMessage percent-encodes msg: every byte outside printable
// ASCII, and '%' (gRPC's PROTOCOL-HTTP2 "Percent-Encoded").
func appendGRPCMessage(b []byte, msg string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c >= 0x20 && c <= 0x7e && c != '%' {
			b = append(b, c)
			continue
		}
		b = append(b, '%', hex[c>>4], hex[c&0xf])
	}
	return b
}

// grpcWebCall is what a session uses of the header frame.
type grpcWebCall struct {
	auth       string        // authorization, or empty
	timeout    time.Duration // grpc-timeout, when hasTimeout
	hasTimeout bool
}

// parseGRPCWebHeaders reads the header frame and returns the headers of it
// a session uses: authorization, and grpc-timeout (the call's deadline,
// as a gRPC server honours it). The rest (content-type, x-grpc-web, user
// agents) is the client library's and is dropped, as are identity and
// forwarding headers: the client's address is the TCP peer's.
func parseGRPCWebHeaders(data []byte) (grpcWebCall, error) {
	var call grpcWebCall
	r := textproto.NewReader(bufio.NewReader(io.MultiReader(strings.NewReader(string(data)), strings.NewReader("\r\n"))))
	h, err := r.ReadMIMEHeader()
	if err != nil {
		return call, fmt.Errorf("bad header frame: %v", err)
	}
	if vv := h["Authorization"]; len(vv) > 1 {
		return call, fmt.Errorf("bad header frame: authorization given %d times", len(vv))
	} else if len(vv) == 1 {
		call.auth = vv[0]
	}
	if !printableASCII(call.auth) {
		return call, fmt.Errorf("bad header frame: authorization must be printable ASCII")
	}
	switch vv := h["Grpc-Timeout"]; len(vv) {
	case 0:
	case 1:
		if call.timeout, call.hasTimeout, err = parseGRPCTimeout(vv[0]); err != nil {
			return call, fmt.Errorf("bad header frame: %v", err)
		}
	default:
		return call, fmt.Errorf("bad header frame: grpc-timeout given %d times", len(vv))
	}
	return call, nil
}

// parseGRPCTimeout reads a grpc-timeout value as gRPC over HTTP/2 defines
// it: at most 8 digits, then a unit, H, M, S, m, u or n. A value longer
// than a time.Duration holds (99999999H is some 11,000 years) is no
// deadline at all (ok false).
func parseGRPCTimeout(v string) (d time.Duration, ok bool, err error) {
	bad := func() (time.Duration, bool, error) {
		return 0, false, fmt.Errorf("grpc-timeout %q: want up to 8 digits and a unit (H, M, S, m, u or n)", clip(v))
	}
	if len(v) < 2 || len(v) > 9 {
		return bad()
	}
	var n int64
	for _, c := range []byte(v[:len(v)-1]) {
		if c < '0' || c > '9' {
			return bad()
		}
		n = n*10 + int64(c-'0')
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return bad()
	}
	if n > math.MaxInt64/int64(unit) {
		return 0, false, nil
	}
	return time.Duration(n) * unit, true, nil
}

// grpcWebTransport is the gRPC-Web WebSocket as the server's session sees
// it: the hub's encoded events framed straight into the corked write
// buffer, a burst to one write(2).
type grpcWebTransport struct {
	s      *wsSession
	ip     string
	cancel context.CancelFunc // releases the call's context (and its deadline) once detached
}

// errClientGone is how a vanished client ends its call: improbable's
// wrapper cancels the stream, so its sessions end "cancelled".
var errClientGone = status.Error(codes.Canceled, "client went away")

func (t *grpcWebTransport) Recv(ev *chatv1.ClientEvent) error {
	_, data, err := t.s.conn.ReadMessage()
	if err != nil {
		t.s.grpcWebReadFailed(err)
		return errClientGone
	}
	msg, halfClosed, err := grpcWebClientMessage(data)
	switch {
	case err != nil:
		return err
	case halfClosed:
		return io.EOF
	}
	if err := proto.Unmarshal(msg, ev); err != nil {
		return &session.InBandError{Code: chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, Message: clip("malformed protobuf: " + err.Error())}
	}
	return nil
}

// grpcWebClientMessage unwraps one client message of improbable's
// transport: 0x00 and one whole, uncompressed gRPC frame (its message
// returned), or a lone 0x01 (halfClosed). A compressed frame ends the
// call with Unimplemented (no compression is negotiated), anything else
// with InvalidArgument: a broken client.
func grpcWebClientMessage(data []byte) (msg []byte, halfClosed bool, err error) {
	switch {
	case len(data) == 1 && data[0] == 1:
		return nil, true, nil
	case len(data) == 0 || data[0] != 0:
		return nil, false, status.Error(codes.InvalidArgument, "grpc-web: a client message must start with 0x00 (data) or be 0x01 (end of sending)")
	}
	f := data[1:]
	switch {
	case len(f) < 5:
		return nil, false, status.Error(codes.InvalidArgument, "grpc-web: truncated gRPC frame")
	case f[0] == 1:
		return nil, false, status.Error(codes.Unimplemented, "grpc-web: gRPC frame flag 0x1: compression is not supported")
	case f[0] != 0:
		return nil, false, status.Errorf(codes.InvalidArgument, "grpc-web: gRPC frame flag %#x: a client message's flag must be 0x0", f[0])
	case uint64(binary.BigEndian.Uint32(f[1:5])) != uint64(len(f)-5):
		return nil, false, status.Error(codes.InvalidArgument, "grpc-web: gRPC frame length does not match its WebSocket message")
	}
	return f[5:], false, nil
}

// Write frames the events as gRPC-Web messages into one burst, after the
// response's header block on the first. As on /ws, no per-write timeout:
// a write stuck on a client that stopped reading ends when the session's
// end closes the WebSocket.
func (t *grpcWebTransport) Write(frames ...*session.Frame) error {
	cork := t.s.conn.cork
	var err error
	if !t.s.grpcWeb.headerSent.Swap(true) {
		err = cork.writeGRPCWeb(grpcWebHeaders, grpcWebResponseHeaders)
	}
	for _, f := range frames {
		if err != nil {
			break
		}
		err = cork.writeGRPCWeb(grpcWebMessage, f.Data)
	}
	if err == nil {
		err = cork.Uncork()
	}
	if err != nil {
		t.s.end(closeGoingAway, "write failed")
		return fmt.Errorf("%w: %v", io.ErrClosedPipe, err)
	}
	return nil
}

// Close ends the call with d as its trailers; the first end wins.
func (t *grpcWebTransport) Close(d session.Disconnect) {
	t.s.endGRPCWeb(status.Convert(d.Err()))
}

// detached finishes the connection once the session has let go of it.
func (t *grpcWebTransport) detached() {
	t.cancel()
	<-t.s.closed
	t.s.finish(t.ip)
}

// writeGRPCWeb corks one gRPC-Web frame (flag, 4-byte length, payload) as
// one binary WebSocket message, without copying payload twice.
func (c *corkConn) writeGRPCWeb(flag byte, payload []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return net.ErrClosed
	}
	if c.buf == nil {
		c.buf = *corkBufs.Get().(*[]byte)
	}
	c.buf = wsframe.AppendHeader(c.buf, wsframe.Header{Fin: true, Opcode: byte(websocket.MessageBinary), Length: int64(5 + len(payload))})
	c.buf = append(c.buf, flag)
	c.buf = binary.BigEndian.AppendUint32(c.buf, uint32(len(payload)))
	c.buf = append(c.buf, payload...)
	c.corked = true
	if len(c.buf) >= maxCorked {
		return c.flushLocked()
	}
	return nil
}
