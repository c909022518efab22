package bridge_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/parleychat/parley/bridge"
	"github.com/parleychat/parley/bridge/internal/grpcwebws"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/session"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// A process-wide timer loop started by improbable's dependency at init.
		goleak.IgnoreTopFunction("github.com/desertbit/timer.timerRoutine"),
	)
}

const (
	allowedOrigin = "http://app.example:8080"
	evilOrigin    = "http://evil.example"
)

// ---------------------------------------------------------------------------
// A scripted chat.v1 server with a tiny auth interceptor.

type userKey struct{}

// testChat is a stand-in for parleyd: tokens are "tok-<user>"; Connect
// answers commands by script (see Connect).
type testChat struct {
	chatv1.UnimplementedChatServer
	chatv1.UnimplementedAuthServer

	mu     sync.Mutex
	md     map[string]metadata.MD // by "<user> <full method>"
	ended  map[string]chan error  // Connect handler results, by user
	files  map[string]*storedFile
	chunks map[string][]int // chunk sizes of uploads, by user
	hist   map[string]*chatv1.GetHistoryRequest
}

type storedFile struct {
	ref  *chatv1.FileRef
	data []byte
}

func newTestChat() *testChat {
	return &testChat{
		md:     map[string]metadata.MD{},
		ended:  map[string]chan error{},
		files:  map[string]*storedFile{},
		chunks: map[string][]int{},
		hist:   map[string]*chatv1.GetHistoryRequest{},
	}
}

func (c *testChat) endedCh(user string) chan error {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.ended[user]
	if !ok {
		ch = make(chan error, 16)
		c.ended[user] = ch
	}
	return ch
}

// lastMD returns the metadata of user's last call of method.
func (c *testChat) lastMD(user, method string) metadata.MD {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.md[user+" "+method]
}

func (c *testChat) record(ctx context.Context, method string) {
	md, _ := metadata.FromIncomingContext(ctx)
	user := "-"
	if a := md.Get("authorization"); len(a) > 0 {
		user = strings.TrimPrefix(a[0], "Bearer tok-")
	}
	c.mu.Lock()
	c.md[user+" "+method] = md.Copy()
	c.mu.Unlock()
}

func authenticate(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	a := md.Get("authorization")
	if len(a) != 1 || !strings.HasPrefix(a[0], "Bearer tok-") || len(a[0]) == len("Bearer tok-") {
		return "", status.Error(codes.Unauthenticated, "missing or invalid token")
	}
	return strings.TrimPrefix(a[0], "Bearer tok-"), nil
}

func (c *testChat) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	c.record(ctx, info.FullMethod)
	if strings.HasPrefix(info.FullMethod, "/chat.v1.Auth/") {
		return h(ctx, req)
	}
	user, err := authenticate(ctx)
	if err != nil {
		return nil, err
	}
	return h(context.WithValue(ctx, userKey{}, user), req)
}

type authedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s authedStream) Context() context.Context { return s.ctx }

func (c *testChat) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	c.record(ss.Context(), info.FullMethod)
	user, err := authenticate(ss.Context())
	if err != nil {
		return err
	}
	return h(srv, authedStream{ss, context.WithValue(ss.Context(), userKey{}, user)})
}

func userOf(ctx context.Context) string { u, _ := ctx.Value(userKey{}).(string); return u }

// Connect sends Welcome, then answers each command. SendMessage text is a
// script: "perm", "unavailable", "exhausted", "internal" end the stream
// with that status; "bye" ends it OK; "flood:N:SIZE" sends N messages of
// SIZE bytes; "invalid" answers with an in-band INVALID_ARGUMENT; anything
// else is acked and echoed.
func (c *testChat) Connect(stream chatv1.Chat_ConnectServer) (err error) {
	user := userOf(stream.Context())
	defer func() { c.endedCh(user) <- err }()
	if err := stream.Send(&chatv1.ServerEvent{Event: &chatv1.ServerEvent_Welcome{Welcome: &chatv1.Welcome{
		SessionId:  fmt.Sprintf("s-%d", time.Now().UnixNano()),
		User:       &chatv1.User{Username: user, Role: chatv1.Role_ROLE_USER},
		ServerTime: timestamppb.Now(),
	}}}); err != nil {
		return err
	}
	for seq := int64(1); ; seq++ {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		rid := ev.GetRequestId()
		var out []*chatv1.ServerEvent
		switch e := ev.GetEvent().(type) {
		case *chatv1.ClientEvent_Ping:
			out = append(out, &chatv1.ServerEvent{RequestId: rid, Event: &chatv1.ServerEvent_Pong{Pong: &chatv1.Pong{ServerTime: timestamppb.Now()}}})
		case *chatv1.ClientEvent_SendMessage:
			text := e.SendMessage.GetText()
			switch {
			case text == "perm":
				return status.Error(codes.PermissionDenied, "not allowed in this room")
			case text == "unavailable":
				return status.Error(codes.Unavailable, "server restarting")
			case text == "exhausted":
				return status.Error(codes.ResourceExhausted, "too many connections")
			case text == "internal":
				return status.Error(codes.Internal, "internal error")
			case text == "bye":
				return nil
			case strings.HasPrefix(text, "disconnect:"):
				// As parleyd ends a session: its Disconnect event, then
				// the status of the same row of the table.
				var code int
				var reason string
				if i := strings.IndexByte(text[len("disconnect:"):], ':'); i >= 0 {
					code, _ = strconv.Atoi(text[len("disconnect:") : len("disconnect:")+i])
					reason = text[len("disconnect:")+i+1:]
				}
				d := session.Disconnect{Code: session.Code(code), Reason: reason}
				if err := stream.Send(d.Event()); err != nil {
					return err
				}
				return d.Err()
			case text == "invalid":
				out = append(out, &chatv1.ServerEvent{RequestId: rid, Event: &chatv1.ServerEvent_Error{Error: &chatv1.Error{
					Code: chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, Message: "text: invalid",
				}}})
			case strings.HasPrefix(text, "flood:"):
				var n, size int
				fmt.Sscanf(text, "flood:%d:%d", &n, &size)
				body := strings.Repeat("x", size)
				for i := range n {
					if err := stream.Send(&chatv1.ServerEvent{Event: &chatv1.ServerEvent_Message{Message: &chatv1.Message{
						Id: strconv.Itoa(i), Seq: int64(i + 1), Sender: "flood", Body: &chatv1.Message_Text{Text: body},
					}}}); err != nil {
						return err
					}
				}
			default:
				conv := &chatv1.Conversation{Kind: &chatv1.Conversation_Room{Room: e.SendMessage.GetRoom()}}
				out = append(out,
					&chatv1.ServerEvent{RequestId: rid, Event: &chatv1.ServerEvent_Ack{Ack: &chatv1.Ack{MessageId: "m" + strconv.FormatInt(seq, 10), Seq: seq, Conversation: conv}}},
					&chatv1.ServerEvent{Event: &chatv1.ServerEvent_Message{Message: &chatv1.Message{
						Id: "m" + strconv.FormatInt(seq, 10), Conversation: conv, Seq: seq, Sender: user,
						SentAt: timestamppb.Now(), Body: &chatv1.Message_Text{Text: text},
					}}})
			}
		default:
			out = append(out, &chatv1.ServerEvent{RequestId: rid, Event: &chatv1.ServerEvent_Error{Error: &chatv1.Error{
				Code: chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, Message: "unsupported command",
			}}})
		}
		for _, o := range out {
			if err := stream.Send(o); err != nil {
				return err
			}
		}
	}
}

func (c *testChat) GetHistory(ctx context.Context, req *chatv1.GetHistoryRequest) (*chatv1.GetHistoryResponse, error) {
	c.mu.Lock()
	c.hist[userOf(ctx)] = req
	c.mu.Unlock()
	if req.GetConversation() == nil {
		return nil, status.Error(codes.InvalidArgument, "conversation: value is required")
	}
	if req.GetLimit() > 100 || req.GetLimit() < 0 {
		return nil, status.Error(codes.InvalidArgument, "limit: must be at most 100")
	}
	switch req.GetConversation().GetRoom() {
	case "forbidden":
		return nil, status.Error(codes.PermissionDenied, "not a member of forbidden")
	case "missing":
		return nil, status.Error(codes.NotFound, "no such room")
	case "limited":
		st, _ := status.New(codes.ResourceExhausted, "rate limit exceeded").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(2500 * time.Millisecond)})
		return nil, st.Err()
	case "broken":
		return nil, errors.New("some internal failure")
	}
	return &chatv1.GetHistoryResponse{HasMore: true, Messages: []*chatv1.Message{{
		Id: "m1", Seq: 1, Sender: "alice", Conversation: req.GetConversation(), Body: &chatv1.Message_Text{Text: "hello"},
	}}}, nil
}

func (c *testChat) ListOnlineUsers(ctx context.Context, _ *chatv1.ListOnlineUsersRequest) (*chatv1.ListOnlineUsersResponse, error) {
	return &chatv1.ListOnlineUsersResponse{Users: []*chatv1.User{{Username: userOf(ctx), Role: chatv1.Role_ROLE_USER}}}, nil
}

func (c *testChat) ListRooms(context.Context, *chatv1.ListRoomsRequest) (*chatv1.ListRoomsResponse, error) {
	return &chatv1.ListRoomsResponse{Rooms: []*chatv1.RoomInfo{{Name: "general", MemberCount: 2, Joined: true}}}, nil
}

func (c *testChat) UploadFile(stream chatv1.Chat_UploadFileServer) error {
	user := userOf(stream.Context())
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	info := first.GetInfo()
	if info == nil || info.GetName() == "" || info.GetSize() <= 0 {
		return status.Error(codes.InvalidArgument, "info: name and size are required")
	}
	var data []byte
	var sizes []int
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if len(m.GetChunk()) > 64<<10 {
			return status.Error(codes.InvalidArgument, "chunk too large")
		}
		sizes = append(sizes, len(m.GetChunk()))
		data = append(data, m.GetChunk()...)
	}
	if int64(len(data)) != info.GetSize() {
		return status.Errorf(codes.InvalidArgument, "got %d bytes, declared %d", len(data), info.GetSize())
	}
	sum := sha256.Sum256(data)
	ref := &chatv1.FileRef{Id: hex.EncodeToString(sum[:]), Name: info.GetName(), Size: info.GetSize(), ContentType: info.GetContentType()}
	c.mu.Lock()
	c.files[ref.Id] = &storedFile{ref: ref, data: data}
	c.chunks[user] = sizes
	c.mu.Unlock()
	return stream.SendAndClose(&chatv1.UploadFileResponse{File: ref})
}

func (c *testChat) addFile(ref *chatv1.FileRef, data []byte) {
	c.mu.Lock()
	c.files[ref.Id] = &storedFile{ref: ref, data: data}
	c.mu.Unlock()
}

func (c *testChat) DownloadFile(req *chatv1.DownloadFileRequest, stream chatv1.Chat_DownloadFileServer) error {
	c.mu.Lock()
	f := c.files[req.GetFileId()]
	c.mu.Unlock()
	if f == nil {
		return status.Error(codes.NotFound, "no such file")
	}
	if err := stream.Send(&chatv1.DownloadFileResponse{Data: &chatv1.DownloadFileResponse_Info{Info: f.ref}}); err != nil {
		return err
	}
	for off := 0; off < len(f.data); off += 10000 {
		end := min(off+10000, len(f.data))
		if err := stream.Send(&chatv1.DownloadFileResponse{Data: &chatv1.DownloadFileResponse_Chunk{Chunk: f.data[off:end]}}); err != nil {
			return err
		}
	}
	return nil
}

func (c *testChat) Login(_ context.Context, req *chatv1.LoginRequest) (*chatv1.LoginResponse, error) {
	if req.GetPassword() != "secret" {
		return nil, status.Error(codes.Unauthenticated, "wrong username or password")
	}
	return &chatv1.LoginResponse{
		User:   &chatv1.User{Username: req.GetUsername(), Role: chatv1.Role_ROLE_USER},
		Tokens: &chatv1.Tokens{AccessToken: "tok-" + req.GetUsername(), RefreshToken: "r-" + req.GetUsername()},
	}, nil
}

// ---------------------------------------------------------------------------
// The environment: test gRPC server on loopback, a bridge in front.

type mode string

const (
	inProcess  mode = "in-process" // Config.GRPCServer set
	standalone mode = "standalone" // gRPC-Web through the proxy over Conn
)

type env struct {
	chat     *testChat
	grpcAddr string
	bridge   *bridge.Bridge
	http     *httptest.Server
	base     string // http://127.0.0.1:port
}

func newEnv(t testing.TB, m mode, configure func(*bridge.Config)) *env {
	t.Helper()
	return newEnvWith(t, m, false, configure)
}

// newEnvWith gives the bridge a Conn over net.Pipe when pipe is set, as
// parleyd does, instead of loopback TCP.
func newEnvWith(t testing.TB, m mode, pipe bool, configure func(*bridge.Config)) *env {
	t.Helper()
	chat := newTestChat()
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(chat.unary), grpc.ChainStreamInterceptor(chat.stream))
	chatv1.RegisterChatServer(srv, chat)
	chatv1.RegisterAuthServer(srv, chat)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	target, opts := lis.Addr().String(), []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if pipe {
		pl := newPipeListener()
		go func() { _ = srv.Serve(pl) }()
		target, opts = "passthrough:///pipe", append(opts, grpc.WithContextDialer(pl.dial))
	}
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })

	cfg := bridge.Config{Conn: conn, AllowedOrigins: []string{allowedOrigin}}
	if m == inProcess {
		cfg.GRPCServer = srv
	}
	if configure != nil {
		configure(&cfg)
	}
	b, err := bridge.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(b.Handler())
	t.Cleanup(hs.Close)
	t.Cleanup(func() { _ = b.Close() })
	return &env{chat: chat, grpcAddr: lis.Addr().String(), bridge: b, http: hs, base: hs.URL}
}

func (e *env) wsURL(path string) string { return "ws" + strings.TrimPrefix(e.base, "http") + path }

// grpcClient is a native gRPC client of the test server.
func (e *env) grpcClient(t testing.TB) chatv1.ChatClient {
	t.Helper()
	conn, err := grpc.NewClient(e.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return chatv1.NewChatClient(conn)
}

// waitEnded waits for user's Connect handler to return.
func (e *env) waitEnded(t testing.TB, user string, within time.Duration) error {
	t.Helper()
	select {
	case err := <-e.chat.endedCh(user):
		return err
	case <-time.After(within):
		t.Fatalf("Connect handler of %s still running after %s", user, within)
		return nil
	}
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// ---------------------------------------------------------------------------
// /ws client helpers.

type wsOpts struct {
	origin       string
	subprotocols []string
}

func dialWS(t testing.TB, ctx context.Context, e *env, o wsOpts) *websocket.Conn {
	t.Helper()
	c, resp, err := dialWSResp(ctx, e, o)
	if err != nil {
		t.Fatalf("dial /ws: %v (resp %v)", err, resp)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	c.SetReadLimit(8 << 20)
	return c
}

func dialWSResp(ctx context.Context, e *env, o wsOpts) (*websocket.Conn, *http.Response, error) {
	h := http.Header{}
	if o.origin != "" {
		h.Set("Origin", o.origin)
	}
	return websocket.Dial(ctx, e.wsURL("/ws"), &websocket.DialOptions{HTTPHeader: h, Subprotocols: o.subprotocols})
}

func writeText(t testing.TB, ctx context.Context, c *websocket.Conn, s string) {
	t.Helper()
	if err := c.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func writeJSONEvent(t testing.TB, ctx context.Context, c *websocket.Conn, ev *chatv1.ClientEvent) {
	t.Helper()
	b, err := protojson.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	writeText(t, ctx, c, string(b))
}

func writeBinaryEvent(t testing.TB, ctx context.Context, c *websocket.Conn, ev *chatv1.ClientEvent) {
	t.Helper()
	b, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Write(ctx, websocket.MessageBinary, b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// readWS reads one ServerEvent, decoding by frame type.
func readWS(ctx context.Context, c *websocket.Conn) (websocket.MessageType, *chatv1.ServerEvent, []byte, error) {
	typ, data, err := c.Read(ctx)
	if err != nil {
		return 0, nil, nil, err
	}
	ev := new(chatv1.ServerEvent)
	if typ == websocket.MessageBinary {
		err = proto.Unmarshal(data, ev)
	} else {
		err = protojson.Unmarshal(data, ev)
	}
	return typ, ev, data, err
}

func mustReadWS(t testing.TB, ctx context.Context, c *websocket.Conn, wantType websocket.MessageType) *chatv1.ServerEvent {
	t.Helper()
	typ, ev, raw, err := readWS(ctx, c)
	if err != nil {
		t.Fatalf("read /ws: %v", err)
	}
	if typ != wantType {
		t.Fatalf("frame type %v, want %v (%s)", typ, wantType, raw)
	}
	return ev
}

// readClose reads until the connection closes and returns the close frame.
func readClose(t testing.TB, ctx context.Context, c *websocket.Conn) websocket.CloseError {
	t.Helper()
	_, ce := readLastAndClose(t, ctx, c)
	return ce
}

// readLastAndClose reads until the connection closes and returns the last
// event before the close frame (nil if none came) and the close frame.
func readLastAndClose(t testing.TB, ctx context.Context, c *websocket.Conn) (*chatv1.ServerEvent, websocket.CloseError) {
	t.Helper()
	var last *chatv1.ServerEvent
	for {
		_, ev, raw, err := readWS(ctx, c)
		if err == nil {
			last = ev
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("connection ended without a close frame: %v (%s)", err, raw)
		}
		return last, ce
	}
}

func ping(rid string) *chatv1.ClientEvent {
	return &chatv1.ClientEvent{RequestId: rid, Event: &chatv1.ClientEvent_Ping{Ping: &chatv1.Ping{}}}
}

func say(rid, room, text string) *chatv1.ClientEvent {
	return &chatv1.ClientEvent{RequestId: rid, Event: &chatv1.ClientEvent_SendMessage{SendMessage: &chatv1.SendMessage{Room: room, Text: text}}}
}

func hello(user string) string { return `{"authorization":"Bearer tok-` + user + `"}` }

// ---------------------------------------------------------------------------
// gRPC-Web clients.

type gwClient = grpcwebws.Conn

func dialGRPCWeb(ctx context.Context, e *env, method, origin string, headers map[string]string, upgradeHeaders http.Header) (*gwClient, *http.Response, error) {
	h := http.Header{}
	for k, v := range upgradeHeaders {
		h[k] = v
	}
	if origin != "" {
		h.Set("Origin", origin)
	}
	return grpcwebws.Dial(ctx, e.base, method, headers, h)
}

func grpcFrame(flag byte, payload []byte) []byte { return grpcwebws.Frame(flag, payload) }

// grpcWebUnary makes a plain (HTTP, not WebSocket) gRPC-Web call and
// returns the reply and the final status.
func grpcWebUnary(ctx context.Context, e *env, method, origin, auth string, req, resp proto.Message) (*http.Response, error) {
	b, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	hr, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.base+method, bytes.NewReader(grpcFrame(0, b)))
	hr.Header.Set("Content-Type", "application/grpc-web+proto")
	hr.Header.Set("X-Grpc-Web", "1")
	if origin != "" {
		hr.Header.Set("Origin", origin)
	}
	if auth != "" {
		hr.Header.Set("Authorization", auth)
	}
	res, err := http.DefaultClient.Do(hr)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return res, err
	}
	if res.StatusCode != http.StatusOK {
		return res, fmt.Errorf("HTTP %d: %s", res.StatusCode, body)
	}
	var final error = errors.New("no trailers")
	sawTrailer := false
	for len(body) >= 5 {
		n := int(binary.BigEndian.Uint32(body[1:5]))
		flag, payload := body[0], body[5:5+n]
		body = body[5+n:]
		if flag&0x80 == 0 {
			if err := proto.Unmarshal(payload, resp); err != nil {
				return res, err
			}
			continue
		}
		hdr, err := grpcwebws.ParseHeaderBlock(payload)
		if err != nil {
			return res, err
		}
		if final, sawTrailer = grpcwebws.StatusFrom(hdr), true; errors.Is(final, io.EOF) {
			final = nil
		}
	}
	if !sawTrailer && res.Header.Get("Grpc-Status") != "" { // trailers-only: in the headers
		code, _ := strconv.Atoi(res.Header.Get("Grpc-Status"))
		final = status.Error(codes.Code(code), res.Header.Get("Grpc-Message"))
	}
	return res, final
}

func insecureCreds() credentials.TransportCredentials { return insecure.NewCredentials() }

func protoMarshal(v any) ([]byte, error) { return proto.Marshal(v.(proto.Message)) }

// pipeListener hands net.Pipe ends to a grpc.Server, like parleyd's
// in-process connection.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *pipeListener) Addr() net.Addr { return &net.UnixAddr{Name: "pipe", Net: "pipe"} }

func (l *pipeListener) dial(ctx context.Context, _ string) (net.Conn, error) {
	s, c := net.Pipe()
	select {
	case l.conns <- s:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
