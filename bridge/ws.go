package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/session"
)

const (
	// Subprotocol is the /ws subprotocol; the only one the bridge echoes.
	Subprotocol = "parley.v1"
	// bearerPrefix marks the token offered as a second subprotocol.
	bearerPrefix = "bearer."

	// firstFrameTimeout bounds the wait for the client's first frame.
	firstFrameTimeout = 10 * time.Second
	// maxInBandMessage cuts decode errors echoed to the client.
	maxInBandMessage = 200
)

var (
	jsonIn  = protojson.UnmarshalOptions{DiscardUnknown: false}
	jsonOut = protojson.MarshalOptions{} // lowerCamelCase names, enums as names, int64 as strings
)

// serveWS is /ws: one Chat.Connect per WebSocket. See the package
// documentation for the protocol.
func (b *Bridge) serveWS(w http.ResponseWriter, r *http.Request) {
	if refuseTokenInURL(w, r) {
		return
	}
	if !b.origins.allowsRequest(r) {
		b.refusals.refused(r, "ws", originOf(r))
		writeJSONError(w, http.StatusForbidden, "PERMISSION_DENIED", originRefusal(originOf(r)))
		return
	}
	subToken, v1, err := subprotocols(r)
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, "INVALID_ARGUMENT", err.Error())
		return
	}
	s := &wsSession{b: b, done: make(chan struct{}), closed: make(chan struct{})}
	if !b.addSession(s) {
		writeJSONError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "server shutting down")
		return
	}
	var echo string
	if v1 {
		echo = Subprotocol
	}
	conn := upgradeWS(w, r, echo, b.cfg.MaxFrameBytes)
	if conn == nil {
		b.removeSession(s)
		return // upgradeWS has answered
	}
	// The session runs on a goroutine of its own and the handler returns:
	// net/http then drops its connection state (buffers, request, a deep
	// stack), which would otherwise stay as long as the WebSocket, a few
	// KiB per idle connection.
	go s.run(conn, remoteIP(r), subToken)
}

// subprotocols returns the token offered as "bearer.<token>" in
// Sec-WebSocket-Protocol, which must come with "parley.v1", and whether
// "parley.v1" was offered.
func subprotocols(r *http.Request) (token string, v1 bool, err error) {
	var seen bool
	for _, line := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(line, ",") {
			p = strings.TrimSpace(p)
			switch {
			case p == Subprotocol:
				v1 = true
			case len(p) > len(bearerPrefix) && strings.EqualFold(p[:len(bearerPrefix)], bearerPrefix):
				if seen {
					return "", false, errors.New("more than one bearer.<token> subprotocol")
				}
				seen, token = true, p[len(bearerPrefix):]
			}
		}
	}
	if seen && !v1 {
		return "", false, fmt.Errorf("offer the %q subprotocol with bearer.<token>", Subprotocol)
	}
	return token, v1, nil
}

// wsFormat is the encoding a /ws connection answers in.
type wsFormat int

const (
	formatJSON   wsFormat = iota // text frames, protojson
	formatBinary                 // binary frames, protobuf
)

// wsItem is one entry of a session's send queue: an event from the server
// (raw protobuf), an event made by the bridge, or the stream's end.
type wsItem struct {
	raw   []byte
	ev    *chatv1.ServerEvent
	final *status.Status
	isEnd bool
	// disconnect, on the end, is the Disconnect event the server sent last,
	// if it did: the close then carries its code and reason.
	disconnect *chatv1.Disconnect
}

// wsSession is one /ws connection and its Connect stream.
//
// Goroutines: run, started when the HTTP handler returns after the
// upgrade, reads the first frame. Attached directly to the server's
// sessions, it then exits: the session reads on a goroutine of its own
// and writes from one that exists only while frames wait, so an idle
// connection costs one goroutine with a shallow stack. Proxied over gRPC,
// run is the only reader and the only caller of stream.SendMsg; recvLoop
// is the only caller of stream.RecvMsg and feeds the bounded queue without
// ever blocking, and writeLoop drains it. Pings
// and the first-frame deadline run on timers, not goroutines. Whoever sees
// the end first calls end, once, which closes the WebSocket so that every
// blocked read and write returns.
type wsSession struct {
	b      *Bridge
	conn   *wsConn
	queue  chan wsItem // the proxied path's outbound queue
	format wsFormat    // set by readLoop from the first frame
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu          sync.Mutex // guards the four below
	started     bool       // run has the connection (end then closes it)
	ended       bool       // end was called (run then closes it)
	pingTimer   *time.Timer
	pingStopped bool

	endOnce sync.Once
	done    chan struct{}
	closed  chan struct{} // closed when the WebSocket is
	code    websocket.StatusCode
	reason  string
	// farewell is the Disconnect event of a proxied session the bridge
	// itself ends while the stream is open (slow consumer, shutdown),
	// written before the close as the server's sessions write theirs.
	farewell *chatv1.ServerEvent
	// writerDone is closed when the proxied path's writeLoop returns; nil
	// until it starts (s.mu guards the field).
	writerDone chan struct{}

	grpcWeb *grpcWebState // set on a gRPC-Web Connect (grpcwebdirect.go)
}

// closeTimeout bounds the close handshake, and a write stuck on a client
// that stopped reading once the session has ended.
const closeTimeout = 5 * time.Second

// slowCloseTimeout replaces closeTimeout for a client closed as a slow
// consumer or for exceeding a limit.
const slowCloseTimeout = time.Second

// end records why the session ends and closes the WebSocket (once run has
// started); the first call wins.
func (s *wsSession) end(code websocket.StatusCode, reason string) { s.endWith(code, reason, nil) }

// endFor ends the session for a reason of the bridge's own, d from the one
// Disconnect table: the close carries its code and reason and, on the
// proxied path, the client first gets d as a Disconnect event, as from a
// session the server ends. (Attached to the server's sessions, the
// session writes its own.)
func (s *wsSession) endFor(d session.Disconnect) {
	s.endWith(websocket.StatusCode(d.Code), d.Reason, d.Event())
}

func (s *wsSession) endWith(code websocket.StatusCode, reason string, farewell *chatv1.ServerEvent) {
	s.endOnce.Do(func() {
		s.code, s.reason, s.farewell = code, closeReason(reason), farewell
		if s.grpcWeb != nil {
			s.grpcWeb.trailer.CompareAndSwap(nil, noTrailer) // ended without a status
		}
		close(s.done)
		s.mu.Lock()
		s.ended = true
		started := s.started
		s.mu.Unlock()
		if started {
			go s.shutdown()
		}
	})
}

// shutdown closes the connection with the recorded status.
func (s *wsSession) shutdown() {
	defer close(s.closed)
	s.cancel() // ends the Connect stream, so the server's handler returns
	s.stopPings()
	grace := closeTimeout
	if s.code == closeSlowConsumer || s.code == closeRateLimited {
		// A client dropped for not keeping up (or for abuse) may have a
		// write stuck on it: its close frame is not worth holding the
		// connection for long.
		grace = slowCloseTimeout
	}
	deadline := time.Now().Add(grace)
	if s.grpcWeb != nil {
		_ = s.conn.cork.SetWriteDeadline(deadline)
		s.writeTrailer()
	}
	if s.farewell != nil {
		s.sayFarewell(deadline)
	}
	_ = s.conn.Close(s.code, s.reason, time.Until(deadline))
}

// sayFarewell writes the Disconnect event of a proxied session the bridge
// ended, once its writer has stopped (so that the event is the last one),
// within deadline: a writer stuck on a client that stopped reading fails
// at the deadline, and the event with it. Best effort, as on the server:
// the close carries the same code and reason.
func (s *wsSession) sayFarewell(deadline time.Time) {
	s.mu.Lock()
	writerDone := s.writerDone
	s.mu.Unlock()
	if writerDone == nil {
		return // attached, or the stream never opened
	}
	_ = s.conn.cork.SetWriteDeadline(deadline)
	<-writerDone
	typ, frame, err := s.encode(wsItem{ev: s.farewell})
	if err != nil {
		return
	}
	if s.conn.cork.WriteFrame(typ, frame) == nil {
		_ = s.conn.cork.Uncork()
	}
}

// run serves the connection until it ends, or until a session attached
// directly takes it over (which then finishes it).
func (s *wsSession) run(conn *wsConn, ip, subToken string) {
	ctx, cancel := context.WithCancel(context.Background()) // shutdown cancels
	s.mu.Lock()
	s.conn, s.cancel, s.started = conn, cancel, true
	// Pings run on a timer: an idle connection keeps no goroutine for them.
	s.pingTimer = time.AfterFunc(s.b.cfg.PingInterval, s.ping)
	ended := s.ended // by the bridge closing, before the session started
	s.mu.Unlock()
	if ended {
		go s.shutdown()
	}
	late := time.AfterFunc(s.b.firstFrameTimeout, func() {
		s.end(closeFirstFrame, "no first frame within "+s.b.firstFrameTimeout.String())
	})
	if s.readLoop(ctx, ip, subToken, late) {
		return
	}
	s.end(closeGoingAway, "") // a no-op unless the reading ended without a status
	<-s.closed
	s.wg.Wait()
	s.finish(ip)
}

// finish runs last, once the WebSocket is closed and nothing uses it.
func (s *wsSession) finish(ip string) {
	s.b.log.Debug("ws session ended", "remote", ip, "code", int(s.code), "reason", s.reason)
	s.b.removeSession(s)
}

// readLoop reads the first frame, opens Connect, then reads until the
// session ends. It reports true when a session attached directly took the
// connection over instead.
func (s *wsSession) readLoop(ctx context.Context, ip, subToken string, late *time.Timer) (attached bool) {
	typ, data, err := s.conn.ReadMessage()
	late.Stop()
	if err != nil {
		s.readFailed(err)
		return false
	}
	if typ == websocket.MessageBinary {
		s.format = formatBinary
	}

	auth, isHello, err := parseHello(data)
	if err != nil {
		s.end(closeBadRequest, err.Error())
		return false
	}
	switch {
	case auth != "" && subToken != "":
		s.end(closeBadRequest, "token given twice: in the first frame and in Sec-WebSocket-Protocol")
		return false
	case subToken != "":
		auth = "Bearer " + subToken
	}
	if !printableASCII(auth) {
		s.end(closeBadRequest, "token must be printable ASCII")
		return false
	}

	if s.b.cfg.Sessions != nil {
		return s.attach(ctx, auth, ip, data, typ, isHello)
	}
	md := metadata.Pairs(s.b.cfg.ClientIPHeader, ip)
	if auth != "" {
		md.Set("authorization", auth)
	}
	stream, err := s.b.cfg.Conn.NewStream(metadata.NewOutgoingContext(ctx, md),
		&chatv1.Chat_ServiceDesc.Streams[0], chatv1.Chat_Connect_FullMethodName,
		grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		st := status.Convert(err)
		s.end(CloseCode(st), st.Message())
		return false
	}
	s.queue = make(chan wsItem, s.b.cfg.SendQueue)
	writerDone := make(chan struct{})
	s.mu.Lock()
	s.writerDone = writerDone
	s.mu.Unlock()
	s.wg.Add(2)
	go func() { defer s.wg.Done(); s.recvLoop(stream) }()
	go func() { defer s.wg.Done(); defer close(writerDone); s.writeLoop() }()

	sendOK := true
	if !isHello {
		sendOK = s.forward(stream, typ, data)
	}
	for {
		typ, data, err := s.conn.ReadMessage()
		if err != nil {
			s.readFailed(err)
			return false
		}
		if sendOK { // after a failed send the status is on its way; drop
			sendOK = s.forward(stream, typ, data)
		}
	}
}

// readFailed ends the session after a failed read: the peer closed or
// vanished, sent a message over the limit, or broke the protocol.
func (s *wsSession) readFailed(err error) {
	var perr protocolError
	switch code := websocket.CloseStatus(err); {
	case code != -1:
		s.end(code, "") // echoed, as RFC 6455 asks
	case errors.Is(err, websocket.ErrMessageTooBig):
		s.end(websocket.StatusMessageTooBig, "frame too large")
	case errors.As(err, &perr):
		s.end(websocket.StatusProtocolError, string(perr))
	case errors.Is(err, errInvalidUTF8):
		s.end(websocket.StatusInvalidFramePayloadData, "text frame is not valid UTF-8")
	default:
		s.end(closeGoingAway, "read failed")
	}
}

// forward decodes one client frame and sends it on the stream; a frame
// that does not decode is answered in band and dropped. It reports false
// when the stream no longer takes messages.
func (s *wsSession) forward(stream grpc.ClientStream, typ websocket.MessageType, data []byte) bool {
	var raw []byte
	if typ == websocket.MessageBinary {
		if err := proto.Unmarshal(data, new(chatv1.ClientEvent)); err != nil {
			s.inBandError("", "malformed protobuf: "+err.Error())
			return true
		}
		raw = data
	} else {
		ev := new(chatv1.ClientEvent)
		if err := jsonIn.Unmarshal(data, ev); err != nil {
			s.inBandError(probeRequestID(data), "malformed JSON: "+err.Error())
			return true
		}
		var err error
		if raw, err = proto.Marshal(ev); err != nil {
			s.inBandError(ev.GetRequestId(), "cannot encode event: "+err.Error())
			return true
		}
	}
	return stream.SendMsg(&rawMsg{b: raw}) == nil
}

func (s *wsSession) inBandError(requestID, msg string) {
	ev := &chatv1.ServerEvent{
		RequestId: requestID,
		Event: &chatv1.ServerEvent_Error{Error: &chatv1.Error{
			Code:    chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT,
			Message: clip(msg),
		}},
	}
	s.enqueue(wsItem{ev: ev})
}

// enqueue never blocks: a full queue ends the session as a slow consumer.
func (s *wsSession) enqueue(it wsItem) {
	select {
	case s.queue <- it:
	case <-s.done:
	default:
		s.endFor(session.Disconnect{Code: session.CodeSlowConsumer, Reason: "slow consumer"})
	}
}

func (s *wsSession) recvLoop(stream grpc.ClientStream) {
	var last []byte // the last message, which may be the server's Disconnect
	for {
		m := new(rawMsg)
		if err := stream.RecvMsg(m); err != nil {
			var st *status.Status
			if !errors.Is(err, io.EOF) {
				st = status.Convert(err)
			}
			s.enqueue(wsItem{final: st, isEnd: true, disconnect: lastDisconnect(last)})
			return
		}
		last = m.b
		s.enqueue(wsItem{raw: m.b})
	}
}

// lastDisconnect is the Disconnect event in raw, the last message of a
// stream, if it is one. A session the server ends sends it before its
// status and gives the close code there: the status alone cannot always
// name it (a slow consumer and a rate limit both end ResourceExhausted,
// 1008 and 4429 in the table). Only the last message is decoded, once per
// stream.
func lastDisconnect(raw []byte) *chatv1.Disconnect {
	if raw == nil {
		return nil
	}
	ev := new(chatv1.ServerEvent)
	if proto.Unmarshal(raw, ev) != nil {
		return nil
	}
	d := ev.GetDisconnect()
	if d == nil || d.GetCode() > 0xffff || !validCloseCode(websocket.StatusCode(d.GetCode())) {
		return nil
	}
	return d
}

func (s *wsSession) writeLoop() {
	for {
		select {
		case <-s.done:
			return
		case it := <-s.queue:
			if it.isEnd {
				if d := it.disconnect; d != nil {
					s.end(websocket.StatusCode(d.GetCode()), d.GetReason())
				} else {
					s.end(CloseCode(it.final), it.final.Message())
				}
				return
			}
			typ, frame, err := s.encode(it)
			if err != nil {
				s.b.log.Error("ws: cannot encode server event", "err", err)
				continue
			}
			// No per-write timeout (it would cost a timer per event): a
			// write stuck on a client that stopped reading is ended by the
			// slow-consumer rule or the ping timeout, whose close unblocks
			// it. Frames cork until the queue is empty: one write(2) a burst.
			err = s.conn.cork.WriteFrame(typ, frame)
			if err == nil && len(s.queue) == 0 {
				err = s.conn.cork.Uncork()
			}
			if err != nil {
				s.end(closeGoingAway, "write failed")
				return
			}
		}
	}
}

func (s *wsSession) encode(it wsItem) (websocket.MessageType, []byte, error) {
	if s.format == formatBinary {
		if it.ev != nil {
			b, err := proto.Marshal(it.ev)
			return websocket.MessageBinary, b, err
		}
		return websocket.MessageBinary, it.raw, nil // as the server encoded it
	}
	ev := it.ev
	if ev == nil {
		ev = new(chatv1.ServerEvent)
		if err := proto.Unmarshal(it.raw, ev); err != nil {
			return 0, nil, err
		}
	}
	b, err := jsonOut.Marshal(ev)
	return websocket.MessageText, b, err
}

// ping pings the client every PingInterval (run arms the timer); a ping
// still unanswered at the next one ends the session. The pong arrives
// through the reader, so no goroutine waits for it.
func (s *wsSession) ping() {
	s.mu.Lock()
	if s.pingStopped {
		s.mu.Unlock()
		return
	}
	s.wg.Add(1) // before stopPings, so run's Wait covers it
	s.mu.Unlock()
	defer s.wg.Done()

	answered, err := s.conn.Ping()
	switch {
	case !answered:
		s.end(closeGoingAway, "ping timeout")
		return
	case err != nil:
		s.end(closeGoingAway, "write failed")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.pingStopped {
		s.pingTimer.Reset(s.b.cfg.PingInterval)
	}
}

func (s *wsSession) stopPings() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pingStopped = true
	s.pingTimer.Stop()
}

// parseHello reports whether data is a hello frame, a JSON object whose
// only key is "authorization", and returns that key's value.
func parseHello(data []byte) (auth string, ok bool, err error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return "", false, nil
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(trimmed, &fields) != nil {
		return "", false, nil
	}
	for k := range fields {
		if k != "authorization" {
			return "", false, nil
		}
	}
	if v, has := fields["authorization"]; has {
		if err := json.Unmarshal(v, &auth); err != nil {
			return "", false, errors.New(`first frame: "authorization" must be a string like "Bearer <token>"`)
		}
	}
	return auth, true, nil
}

// probeRequestID finds a request id in a frame that is not a valid
// ClientEvent, so that the in-band error can answer it.
func probeRequestID(data []byte) string {
	var p struct {
		Camel string `json:"requestId"`
		Snake string `json:"request_id"`
	}
	_ = json.Unmarshal(data, &p)
	id := p.Camel
	if id == "" {
		id = p.Snake
	}
	if len(id) > 64 {
		return ""
	}
	return id
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
