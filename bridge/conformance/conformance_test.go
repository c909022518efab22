package conformance_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/parleychat/parley/bridge"
	"github.com/parleychat/parley/bridge/internal/grpcwebws"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/servertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/desertbit/timer.timerRoutine"),
	)
}

const waitFor = 20 * time.Second

// ---------------------------------------------------------------------------
// One chat session over any transport.

// session is one Chat.Connect, whatever carries it. recv returns the
// stream's end as an error: io.EOF for OK, else a status error.
type session struct {
	name   string
	send   func(*chatv1.ClientEvent) error
	events chan *chatv1.ServerEvent
	end    chan error
	close  func()
	reqs   int
}

// newSession starts the one goroutine that reads from recv.
func newSession(name string, send func(*chatv1.ClientEvent) error, recv func() (*chatv1.ServerEvent, error), closeFn func()) *session {
	s := &session{name: name, send: send, events: make(chan *chatv1.ServerEvent, 1000), end: make(chan error, 1), close: closeFn}
	go func() {
		for {
			ev, err := recv()
			if err != nil {
				close(s.events)
				s.end <- err
				return
			}
			s.events <- ev
		}
	}()
	return s
}

// transport opens sessions to a running server; token "" sends none.
type transport struct {
	name string
	open func(t testing.TB, h *harness, token string) *session
}

// The bridge inside parleyd (in-process gRPC server and connection), and
// a standalone bridge in front of parleyd's gRPC port (gRPC-Web through
// the proxy, /ws over a TCP connection).
var transports = []transport{
	{"grpc", openGRPC},
	{"grpc-web-ws", openGRPCWeb(false)},
	{"ws-json", openWS(websocket.MessageText, false)},
	{"ws-binary", openWS(websocket.MessageBinary, false)},
	{"standalone/grpc-web-ws", openGRPCWeb(true)},
	{"standalone/ws-json", openWS(websocket.MessageText, true)},
}

func openGRPC(t testing.TB, h *harness, token string) *session {
	conn := h.srv.Dial(t)
	ctx, cancel := context.WithCancel(context.Background())
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	stream, err := chatv1.NewChatClient(conn).Connect(ctx)
	if err != nil {
		cancel()
		t.Fatalf("grpc: connect: %v", err)
	}
	s := newSession("grpc", stream.Send, stream.Recv, cancel)
	t.Cleanup(s.close)
	return s
}

func openGRPCWeb(standalone bool) func(t testing.TB, h *harness, token string) *session {
	return func(t testing.TB, h *harness, token string) *session {
		base, origin := h.bridgeURL(t, standalone)
		ctx, cancel := context.WithCancel(context.Background())
		hdr := map[string]string{}
		if token != "" {
			hdr["authorization"] = "Bearer " + token
		}
		c, _, err := grpcwebws.Dial(ctx, base, chatv1.Chat_Connect_FullMethodName, hdr, http.Header{"Origin": {origin}})
		if err != nil {
			cancel()
			t.Fatalf("grpc-web: dial: %v", err)
		}
		s := newSession("grpc-web-ws",
			func(ev *chatv1.ClientEvent) error { return c.Send(ctx, ev) },
			func() (*chatv1.ServerEvent, error) {
				ev := new(chatv1.ServerEvent)
				return ev, c.Recv(ctx, ev)
			},
			func() { cancel(); c.Close() })
		t.Cleanup(s.close)
		return s
	}
}

// openWS authenticates with a hello frame of the chosen type, which fixes
// the connection's format.
func openWS(format websocket.MessageType, standalone bool) func(t testing.TB, h *harness, token string) *session {
	return func(t testing.TB, h *harness, token string) *session {
		base, origin := h.bridgeURL(t, standalone)
		ctx, cancel := context.WithCancel(context.Background())
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/ws", &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {origin}}})
		if err != nil {
			cancel()
			t.Fatalf("ws: dial: %v", err)
		}
		hello := `{}`
		if token != "" {
			hello = `{"authorization":"Bearer ` + token + `"}`
		}
		if err := c.Write(ctx, format, []byte(hello)); err != nil {
			t.Fatalf("ws: hello: %v", err)
		}
		send := func(ev *chatv1.ClientEvent) error {
			var b []byte
			var err error
			if format == websocket.MessageText {
				b, err = protojson.Marshal(ev)
			} else {
				b, err = proto.Marshal(ev)
			}
			if err != nil {
				return err
			}
			return c.Write(ctx, format, b)
		}
		recv := func() (*chatv1.ServerEvent, error) {
			typ, data, err := c.Read(ctx)
			if err != nil {
				var ce websocket.CloseError
				if errors.As(err, &ce) {
					return nil, statusFromClose(ce)
				}
				return nil, err
			}
			if typ != format {
				return nil, fmt.Errorf("ws: got a %v frame on a %v connection", typ, format)
			}
			ev := new(chatv1.ServerEvent)
			if typ == websocket.MessageText {
				return ev, protojson.Unmarshal(data, ev)
			}
			return ev, proto.Unmarshal(data, ev)
		}
		name := map[websocket.MessageType]string{websocket.MessageText: "ws-json", websocket.MessageBinary: "ws-binary"}[format]
		s := newSession(name, send, recv, func() { cancel(); _ = c.CloseNow() })
		t.Cleanup(s.close)
		return s
	}
}

// statusFromClose inverts bridge.CloseCode for the codes it maps one to one.
func statusFromClose(ce websocket.CloseError) error {
	switch ce.Code {
	case websocket.StatusNormalClosure:
		return io.EOF
	case 4401:
		return status.Error(codes.Unauthenticated, ce.Reason)
	case 4403:
		return status.Error(codes.PermissionDenied, ce.Reason)
	case 4429:
		return status.Error(codes.ResourceExhausted, ce.Reason)
	case websocket.StatusServiceRestart:
		return status.Error(codes.Unavailable, ce.Reason)
	}
	return fmt.Errorf("ws: closed %d %q", ce.Code, ce.Reason)
}

// ---------------------------------------------------------------------------
// Scripting and recording.

// recorder keeps what each named client saw, normalized.
type recorder struct {
	t    testing.TB
	seen map[string][]string
}

func (r *recorder) note(who string, evs ...*chatv1.ServerEvent) {
	for _, ev := range evs {
		r.seen[who] = append(r.seen[who], normalize(ev))
	}
}

func (r *recorder) noteEnd(who string, err error) {
	if errors.Is(err, io.EOF) {
		err = nil
	}
	st := status.Convert(err)
	// The coarsest common form: the /ws close code (and its 123-byte reason).
	r.seen[who] = append(r.seen[who], fmt.Sprintf("END %d %q", bridge.CloseCode(st), cut(st.Message(), 123)))
}

func cut(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func (s *session) do(t testing.TB, ev *chatv1.ClientEvent) string {
	t.Helper()
	s.reqs++
	if ev.RequestId == "" {
		ev.RequestId = fmt.Sprintf("%s-%d", strings.SplitN(s.name, "/", 2)[0], s.reqs)
	}
	if err := s.send(ev); err != nil {
		t.Fatalf("%s: send: %v", s.name, err)
	}
	return ev.RequestId
}

// sync pings and returns what arrived before the pong: everything queued
// to this client before the server read the ping.
func (s *session) sync(t testing.TB) []*chatv1.ServerEvent {
	t.Helper()
	id := s.do(t, &chatv1.ClientEvent{Event: &chatv1.ClientEvent_Ping{Ping: &chatv1.Ping{}}})
	var seen []*chatv1.ServerEvent
	timeout := time.After(waitFor)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				t.Fatalf("%s: stream ended (%v) during sync; saw %v", s.name, <-s.end, seen)
			}
			if ev.GetPong() != nil && ev.GetRequestId() == id {
				return seen
			}
			seen = append(seen, ev)
		case <-timeout:
			t.Fatalf("%s: no pong within %s; saw %v", s.name, waitFor, seen)
		}
	}
}

// finish waits for the stream to end and returns the events before it.
func (s *session) finish(t testing.TB) ([]*chatv1.ServerEvent, error) {
	t.Helper()
	var seen []*chatv1.ServerEvent
	timeout := time.After(waitFor)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				return seen, <-s.end
			}
			seen = append(seen, ev)
		case <-timeout:
			t.Fatalf("%s: stream did not end within %s", s.name, waitFor)
		}
	}
}

// volatile string fields, blanked when set.
var volatile = map[protoreflect.Name]bool{"id": true, "message_id": true, "session_id": true, "node_id": true}

// normalize renders ev with ids, timestamps and durations reduced to
// "set" markers, so that runs on different servers compare equal.
func normalize(ev *chatv1.ServerEvent) string {
	m := proto.Clone(ev).(*chatv1.ServerEvent)
	scrub(m.ProtoReflect())
	if e := m.GetError(); e != nil { // "retry after 16m39.98s" varies by the ms
		e.Message = retryAfter.ReplaceAllString(e.GetMessage(), "retry after *")
	}
	return prototext.MarshalOptions{}.Format(m)
}

var retryAfter = regexp.MustCompile(`retry after [0-9.hmµns]+`)

func scrub(m protoreflect.Message) {
	type field struct {
		fd protoreflect.FieldDescriptor
		v  protoreflect.Value
	}
	var fields []field
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		fields = append(fields, field{fd, v})
		return true
	})
	for _, f := range fields {
		switch {
		case f.fd.Message() != nil && !f.fd.IsList() && !f.fd.IsMap() &&
			(f.fd.Message().FullName() == "google.protobuf.Timestamp" || f.fd.Message().FullName() == "google.protobuf.Duration"):
			m.Set(f.fd, protoreflect.ValueOfMessage(m.NewField(f.fd).Message())) // kept as "present"
		case f.fd.Kind() == protoreflect.StringKind && !f.fd.IsList() && volatile[f.fd.Name()]:
			m.Set(f.fd, protoreflect.ValueOfString("*"))
		case f.fd.IsList() && f.fd.Message() != nil:
			l := f.v.List()
			for i := range l.Len() {
				scrub(l.Get(i).Message())
			}
		case f.fd.Message() != nil && !f.fd.IsMap():
			scrub(f.v.Message())
		}
	}
}

// ---------------------------------------------------------------------------
// The scenarios: each gets a fresh server per transport, so sequence
// numbers, presence and rate limits start equal.

type scenario struct {
	name      string
	configure func(*server.Config)
	run       func(t *testing.T, h *harness)
}

type harness struct {
	srv  *servertest.Server
	tr   transport
	rec  *recorder
	toks map[string]string

	standalone string // base URL of the standalone bridge, once started
}

const standaloneOrigin = "http://conformance.test"

// bridgeURL returns the base URL of parleyd's own bridge, or of a
// standalone bridge in front of its gRPC port, and an origin it allows.
func (h *harness) bridgeURL(t testing.TB, standalone bool) (base, origin string) {
	t.Helper()
	if !standalone {
		return "http://" + h.srv.HTTPAddr(), "http://" + h.srv.HTTPAddr()
	}
	if h.standalone == "" {
		h.standalone = startStandalone(t, h.srv.GRPCAddr())
	}
	return h.standalone, standaloneOrigin
}

// startStandalone serves a bridge whose Conn is a TCP connection to addr.
func startStandalone(t testing.TB, addr string) string {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	b, err := bridge.New(bridge.Config{Conn: conn, AllowedOrigins: []string{standaloneOrigin}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(b.Handler())
	t.Cleanup(hs.Close)
	t.Cleanup(func() { _ = b.Close() })
	return hs.URL
}

// token registers user (through Auth.Register over native gRPC) once.
func (h *harness) token(t testing.TB, user string) string {
	t.Helper()
	if tok, ok := h.toks[user]; ok {
		return tok
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	resp, err := chatv1.NewAuthClient(h.srv.Dial(t)).Register(ctx, &chatv1.RegisterRequest{Username: user, Password: "correct horse battery"})
	if err != nil {
		t.Fatalf("register %s: %v", user, err)
	}
	h.toks[user] = resp.GetTokens().GetAccessToken()
	return h.toks[user]
}

// connect opens user's session and records what it sees up to a sync.
func (h *harness) connect(t testing.TB, user string) *session {
	t.Helper()
	s := h.tr.open(t, h, h.token(t, user))
	s.name = user + "/" + h.tr.name
	h.rec.note(user, s.sync(t)...)
	return s
}

func (h *harness) sync(t testing.TB, user string, s *session) { h.rec.note(user, s.sync(t)...) }

var scenarios = []scenario{
	{name: "connect and welcome", run: func(t *testing.T, h *harness) {
		h.connect(t, "alice")
	}},
	{name: "message, ack and delivery", run: func(t *testing.T, h *harness) {
		alice := h.connect(t, "alice")
		bob := h.connect(t, "bob")
		h.sync(t, "alice", alice)
		alice.do(t, &chatv1.ClientEvent{RequestId: "m1", Event: &chatv1.ClientEvent_SendMessage{SendMessage: &chatv1.SendMessage{Room: "general", Text: "hello, bob", ClientMsgId: "c1"}}})
		h.sync(t, "alice", alice)
		h.sync(t, "bob", bob)
		bob.do(t, &chatv1.ClientEvent{RequestId: "p1", Event: &chatv1.ClientEvent_SendPrivateMessage{SendPrivateMessage: &chatv1.SendPrivateMessage{To: "alice", Text: "psst", ClientMsgId: "c2"}}})
		h.sync(t, "bob", bob)
		h.sync(t, "alice", alice)
	}},
	{name: "join room", run: func(t *testing.T, h *harness) {
		alice := h.connect(t, "alice")
		bob := h.connect(t, "bob")
		alice.do(t, &chatv1.ClientEvent{RequestId: "j1", Event: &chatv1.ClientEvent_JoinRoom{JoinRoom: &chatv1.JoinRoom{Room: "lounge"}}})
		h.sync(t, "alice", alice)
		bob.do(t, &chatv1.ClientEvent{RequestId: "j2", Event: &chatv1.ClientEvent_JoinRoom{JoinRoom: &chatv1.JoinRoom{Room: "lounge"}}})
		h.sync(t, "bob", bob)
		h.sync(t, "alice", alice)
		bob.do(t, &chatv1.ClientEvent{RequestId: "m1", Event: &chatv1.ClientEvent_SendMessage{SendMessage: &chatv1.SendMessage{Room: "lounge", Text: "hi lounge"}}})
		h.sync(t, "bob", bob)
		h.sync(t, "alice", alice)
	}},
	{name: "bad input answered in band", run: func(t *testing.T, h *harness) {
		alice := h.connect(t, "alice")
		for i, ev := range []*chatv1.ClientEvent{
			{Event: &chatv1.ClientEvent_SendMessage{SendMessage: &chatv1.SendMessage{Room: "general", Text: ""}}},
			{Event: &chatv1.ClientEvent_SendMessage{SendMessage: &chatv1.SendMessage{Room: "no spaces!", Text: "x"}}},
			{Event: &chatv1.ClientEvent_JoinRoom{JoinRoom: &chatv1.JoinRoom{Room: strings.Repeat("r", 65)}}},
			{},
		} {
			ev.RequestId = fmt.Sprintf("b%d", i)
			alice.do(t, ev)
		}
		h.sync(t, "alice", alice) // the stream lives on
	}},
	{name: "rate limit answered in band", configure: limitMessages(3), run: func(t *testing.T, h *harness) {
		alice := h.connect(t, "alice")
		for i := range 5 {
			alice.do(t, &chatv1.ClientEvent{RequestId: fmt.Sprintf("r%d", i), Event: &chatv1.ClientEvent_SendMessage{SendMessage: &chatv1.SendMessage{Room: "general", Text: fmt.Sprintf("n%d", i)}}})
		}
		h.sync(t, "alice", alice)
	}},
	{name: "missing token", run: func(t *testing.T, h *harness) {
		s := h.tr.open(t, h, "")
		evs, err := s.finish(t)
		h.rec.note("anon", evs...)
		h.rec.noteEnd("anon", err)
	}},
	{name: "invalid token", run: func(t *testing.T, h *harness) {
		s := h.tr.open(t, h, "not.a.jwt")
		evs, err := s.finish(t)
		h.rec.note("anon", evs...)
		h.rec.noteEnd("anon", err)
	}},
}

// limitMessages sets the per-user message rate to a burst of n and one
// more per hour, so the n+1st message in a scenario is refused.
func limitMessages(n int) func(*server.Config) {
	return func(c *server.Config) { c.RateLimits = fmt.Sprintf("message=1/h:%d", n) }
}

// TestTransportConformance runs every scenario over every transport and
// requires each client to see the same normalized event sequence.
func TestTransportConformance(t *testing.T) {
	t.Parallel()
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			got := make([]map[string][]string, len(transports))
			for i, tr := range transports {
				t.Run(tr.name, func(t *testing.T) {
					srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
						// Presence goes out at once, so that where it falls
						// in each client's sequence does not depend on timing.
						c.PresenceWindow = -1
						if sc.configure != nil {
							sc.configure(c)
						}
					}})
					h := &harness{srv: srv, tr: tr, rec: &recorder{t: t, seen: map[string][]string{}}, toks: map[string]string{}}
					sc.run(t, h)
					got[i] = h.rec.seen
				})
			}
			if t.Failed() {
				return
			}
			for i := 1; i < len(transports); i++ {
				if !reflect.DeepEqual(got[0], got[i]) {
					t.Errorf("%s saw:\n%s\n%s saw:\n%s", transports[0].name, render(got[0]), transports[i].name, render(got[i]))
				}
			}
			if len(got[0]) == 0 {
				t.Error("nothing recorded")
			}
			t.Logf("every transport saw:\n%s", render(got[0]))
		})
	}
}

func render(seen map[string][]string) string {
	var b strings.Builder
	for _, who := range []string{"alice", "bob", "anon"} {
		for i, ev := range seen[who] {
			fmt.Fprintf(&b, "  %s[%d] %s\n", who, i, ev)
		}
	}
	return b.String()
}
