package interceptor_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/apierr"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/internal/interceptor"
	"github.com/parleychat/parley/server/internal/ratelimit"
	"github.com/parleychat/parley/server/internal/store"
)

var (
	secret           = []byte("interceptor-test-secret-32-bytes")
	rsaKey           = sync.OnceValue(func() *rsa.PrivateKey { k, _ := rsa.GenerateKey(rand.Reader, 2048); return k })
	edPub, edPriv, _ = ed25519.GenerateKey(rand.Reader)
)

// users is the in-memory UserLookup; the real store belongs elsewhere.
type users map[string]store.User

func (u users) GetUser(_ context.Context, name string) (store.User, error) {
	if name == "broken-db" {
		return store.User{}, errors.New("disk on fire")
	}
	if x, ok := u[name]; ok {
		return x, nil
	}
	return store.User{}, fmt.Errorf("user %q: %w", name, store.ErrNotFound)
}

var testUsers = users{
	"alice": {Username: "alice", Role: store.RoleUser, Active: true},
	"bob":   {Username: "bob", Role: store.RoleUser, Active: true},
	"mod":   {Username: "mod", Role: store.RoleModerator, Active: true},
	"root":  {Username: "root", Role: store.RoleAdmin, Active: true},
	"ghost": {Username: "ghost", Role: store.RoleUser, Active: false},
}

// syncBuffer collects log output from the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// --- test services: real registered chat.v1 servers with small bodies ---

type chatServer struct {
	chatv1.UnimplementedChatServer
}

// Connect answers like the real handler does: Welcome first, an in-band
// Error for each *apierr.InBand, TokenRefreshed for refresh_token, and a
// Pong echoing the request id for everything else.
func (chatServer) Connect(stream chatv1.Chat_ConnectServer) error {
	p, _ := auth.FromContext(stream.Context())
	if err := stream.Send(&chatv1.ServerEvent{Event: &chatv1.ServerEvent_Welcome{Welcome: &chatv1.Welcome{
		User: &chatv1.User{Username: p.Username, Role: p.Role.Proto()}}}}); err != nil {
		return err
	}
	for {
		ev, err := stream.Recv()
		if ib, ok := apierr.AsInBand(err); ok {
			if err := stream.Send(ib.Err.Event(ib.RequestID)); err != nil {
				return err
			}
			continue
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		out := &chatv1.ServerEvent{RequestId: ev.GetRequestId(), Event: &chatv1.ServerEvent_Pong{Pong: &chatv1.Pong{}}}
		if ev.GetRefreshToken() != nil {
			out.Event = &chatv1.ServerEvent_TokenRefreshed{TokenRefreshed: &chatv1.TokenRefreshed{
				ExpiresAt: timestamp(p.ExpiresAt())}}
		}
		if err := stream.Send(out); err != nil {
			return err
		}
	}
}

// ListOnlineUsers returns the caller, so tests can see the Principal.
func (chatServer) ListOnlineUsers(ctx context.Context, _ *chatv1.ListOnlineUsersRequest) (*chatv1.ListOnlineUsersResponse, error) {
	p, ok := auth.FromContext(ctx)
	if !ok || p.SessionIP != "bufconn" || p.ExpiresAt().IsZero() {
		return nil, status.Error(codes.Internal, "principal incomplete")
	}
	return &chatv1.ListOnlineUsersResponse{Users: []*chatv1.User{{Username: p.Username, Role: p.Role.Proto()}}}, nil
}

func (chatServer) GetHistory(context.Context, *chatv1.GetHistoryRequest) (*chatv1.GetHistoryResponse, error) {
	return &chatv1.GetHistoryResponse{}, nil
}

func (chatServer) ListRooms(context.Context, *chatv1.ListRoomsRequest) (*chatv1.ListRoomsResponse, error) {
	panic("list rooms exploded")
}

func (chatServer) UploadFile(stream chatv1.Chat_UploadFileServer) error {
	var n int64
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&chatv1.UploadFileResponse{File: &chatv1.FileRef{Size: n}})
		}
		if err != nil {
			return err
		}
		n += int64(len(req.GetChunk()))
	}
}

type adminServer struct {
	chatv1.UnimplementedAdminServer
}

func (adminServer) GetStats(context.Context, *chatv1.GetStatsRequest) (*chatv1.GetStatsResponse, error) {
	return &chatv1.GetStatsResponse{}, nil
}

func (adminServer) SetUserRole(context.Context, *chatv1.SetUserRoleRequest) (*chatv1.SetUserRoleResponse, error) {
	return &chatv1.SetUserRoleResponse{}, nil
}

type authServer struct {
	chatv1.UnimplementedAuthServer
}

func (authServer) Login(ctx context.Context, _ *chatv1.LoginRequest) (*chatv1.LoginResponse, error) {
	if _, ok := auth.FromContext(ctx); ok {
		return nil, status.Error(codes.Internal, "a public method got a principal")
	}
	return &chatv1.LoginResponse{}, nil
}

// hiddenDesc is a real service that the role table does not list.
var hiddenDesc = grpc.ServiceDesc{
	ServiceName: "chat.v1.Hidden",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Peek",
		Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			in := new(chatv1.GetStatsRequest)
			if err := dec(in); err != nil {
				return nil, err
			}
			h := func(context.Context, any) (any, error) { return &chatv1.GetStatsResponse{}, nil }
			if icpt == nil {
				return h(ctx, in)
			}
			return icpt(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/chat.v1.Hidden/Peek"}, h)
		},
	}},
}

// --- harness ---

type env struct {
	conn   *grpc.ClientConn
	chat   chatv1.ChatClient
	admin  chatv1.AdminClient
	issuer *auth.Issuer
	logs   *syncBuffer
}

type opts struct {
	rates map[ratelimit.Kind]ratelimit.Rate
	abuse int
}

func start(t *testing.T, o opts) *env {
	t.Helper()
	v, err := auth.NewVerifier(auth.VerifierConfig{
		HMACSecret: secret,
		PublicKeys: map[string]crypto.PublicKey{"rsa1": &rsaKey().PublicKey, "ed1": edPub},
	})
	if err != nil {
		t.Fatal(err)
	}
	iss, err := auth.NewIssuer(auth.IssuerConfig{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	rates := o.rates
	if rates == nil {
		// Generous, so only the rate tests meet a limit.
		rates = map[ratelimit.Kind]ratelimit.Rate{}
		for _, k := range []ratelimit.Kind{ratelimit.KindMessage, ratelimit.KindTyping, ratelimit.KindJoin, ratelimit.KindUpload, ratelimit.KindConnect, ratelimit.KindOther} {
			rates[k] = ratelimit.Rate{PerSecond: 1000, Burst: 1000}
		}
	}
	lim := ratelimit.New(ratelimit.Config{Rates: rates})
	logs := &syncBuffer{}
	chain, err := interceptor.New(interceptor.Config{
		Verifier: v, Users: testUsers, Limiter: lim, AbuseThreshold: o.abuse,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(chain.ServerOptions()...)
	chatv1.RegisterChatServer(srv, chatServer{})
	chatv1.RegisterAdminServer(srv, adminServer{})
	chatv1.RegisterAuthServer(srv, authServer{})
	srv.RegisterService(&hiddenDesc, struct{}{})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	reflection.Register(srv)

	lis := bufconn.Listen(1 << 20)
	go srv.Serve(lis)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
		lim.Close()
	})
	return &env{conn: conn, chat: chatv1.NewChatClient(conn), admin: chatv1.NewAdminClient(conn), issuer: iss, logs: logs}
}

func (e *env) token(t *testing.T, user string, role auth.Role) string {
	t.Helper()
	tok, _, err := e.issuer.Issue(user, role)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func bearer(tok string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
}

func sign(t *testing.T, m jwt.SigningMethod, key any, kid string, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claims(sub string, mods ...func(jwt.MapClaims)) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{"sub": sub, "role": "user", "iss": auth.DefaultIssuer, "aud": auth.DefaultAudience,
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix()}
	for _, m := range mods {
		m(c)
	}
	return c
}

func set(k string, v any) func(jwt.MapClaims) { return func(c jwt.MapClaims) { c[k] = v } }

func wantStatus(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code || (msg != "" && st.Message() != msg) {
		t.Fatalf("status = %v %q, want %v %q", st.Code(), st.Message(), code, msg)
	}
}

func retryInfo(t *testing.T, err error) time.Duration {
	t.Helper()
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	t.Fatalf("no RetryInfo in %v", err)
	return 0
}

// connect opens a Connect stream and reads the Welcome.
func connect(t *testing.T, e *env, tok string) chatv1.Chat_ConnectClient {
	t.Helper()
	ctx, cancel := context.WithCancel(bearer(tok))
	t.Cleanup(cancel)
	s, err := e.chat.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := s.Recv()
	if err != nil {
		t.Fatalf("no Welcome: %v", err)
	}
	if ev.GetWelcome() == nil {
		t.Fatalf("first event %v is not Welcome", ev)
	}
	return s
}

// roundTrip sends ev and returns the one event answering it.
func roundTrip(t *testing.T, s chatv1.Chat_ConnectClient, ev *chatv1.ClientEvent) *chatv1.ServerEvent {
	t.Helper()
	if err := s.Send(ev); err != nil {
		t.Fatal(err)
	}
	out, err := s.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	if out.GetRequestId() != ev.GetRequestId() {
		t.Fatalf("answer %v does not echo request id %q", out, ev.GetRequestId())
	}
	return out
}

func ping(id string) *chatv1.ClientEvent {
	return &chatv1.ClientEvent{RequestId: id, Event: &chatv1.ClientEvent_Ping{Ping: &chatv1.Ping{}}}
}

func say(id, text string) *chatv1.ClientEvent {
	return &chatv1.ClientEvent{RequestId: id, Event: &chatv1.ClientEvent_SendMessage{SendMessage: &chatv1.SendMessage{Room: "general", Text: text}}}
}

func typing(id string) *chatv1.ClientEvent {
	return &chatv1.ClientEvent{RequestId: id, Event: &chatv1.ClientEvent_Typing{Typing: &chatv1.Typing{
		Conversation: &chatv1.Conversation{Kind: &chatv1.Conversation_Room{Room: "general"}}, Typing: true}}}
}

// --- tests ---

func TestAuth(t *testing.T) {
	t.Parallel()
	e := start(t, opts{})
	good := e.token(t, "alice", auth.RoleUser)
	parts := strings.Split(good, ".")
	swapped := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","kid":"rsa1","typ":"JWT"}`)) + "." + parts[1] + "." + parts[2]

	var tokens []string // every token sent, to prove none reaches the log
	for _, tc := range []struct {
		name   string
		header string // full authorization value; empty sends none
		code   codes.Code
		msg    string
		role   chatv1.Role // stored role expected on success
	}{
		{name: "missing token", code: codes.Unauthenticated, msg: "token required"},
		{name: "empty bearer", header: "Bearer ", code: codes.Unauthenticated, msg: "token required"},
		{name: "malformed header", header: "Basic YWxpY2U6cHc=", code: codes.Unauthenticated, msg: "invalid token"},
		{name: "garbage token", header: "Bearer not-a-jwt", code: codes.Unauthenticated, msg: "invalid token"},
		{name: "alg none", header: "Bearer " + sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", claims("alice")), code: codes.Unauthenticated, msg: "invalid token"},
		{name: "HS256 wrong key", header: "Bearer " + sign(t, jwt.SigningMethodHS256, []byte("another-secret-of-thirty-two-b!!"), "", claims("alice")), code: codes.Unauthenticated, msg: "invalid token"},
		{name: "RS256 unknown kid", header: "Bearer " + sign(t, jwt.SigningMethodRS256, rsaKey(), "who", claims("alice")), code: codes.Unauthenticated, msg: "invalid token"},
		{name: "alg header changed", header: "Bearer " + swapped, code: codes.Unauthenticated, msg: "invalid token"},
		{name: "expired", header: "Bearer " + sign(t, jwt.SigningMethodHS256, secret, "", claims("alice", set("exp", time.Now().Add(-time.Hour).Unix()))), code: codes.Unauthenticated, msg: "token expired"},
		{name: "wrong issuer", header: "Bearer " + sign(t, jwt.SigningMethodHS256, secret, "", claims("alice", set("iss", "evil"))), code: codes.Unauthenticated, msg: "invalid token"},
		{name: "wrong audience", header: "Bearer " + sign(t, jwt.SigningMethodHS256, secret, "", claims("alice", set("aud", "other"))), code: codes.Unauthenticated, msg: "invalid token"},
		{name: "unknown user", header: "Bearer " + e.token(t, "nobody", auth.RoleUser), code: codes.Unauthenticated, msg: "invalid token"},
		{name: "deactivated user", header: "Bearer " + e.token(t, "ghost", auth.RoleUser), code: codes.Unauthenticated, msg: "account deactivated"},
		{name: "store down", header: "Bearer " + e.token(t, "broken-db", auth.RoleUser), code: codes.Unavailable, msg: "authentication unavailable"},
		{name: "valid HS256", header: "Bearer " + good, code: codes.OK, role: chatv1.Role_ROLE_USER},
		{name: "lower-case scheme", header: "bearer " + good, code: codes.OK, role: chatv1.Role_ROLE_USER},
		{name: "valid RS256", header: "Bearer " + sign(t, jwt.SigningMethodRS256, rsaKey(), "rsa1", claims("mod")), code: codes.OK, role: chatv1.Role_ROLE_MODERATOR},
		{name: "valid EdDSA", header: "Bearer " + sign(t, jwt.SigningMethodEdDSA, edPriv, "ed1", claims("root")), code: codes.OK, role: chatv1.Role_ROLE_ADMIN},
		// The token claims admin; the store says user, and the store wins.
		{name: "stored role wins", header: "Bearer " + e.token(t, "alice", auth.RoleAdmin), code: codes.OK, role: chatv1.Role_ROLE_USER},
	} {
		if tok, ok := strings.CutPrefix(tc.header, "Bearer "); ok && tok != "" {
			tokens = append(tokens, tok)
		}
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.header != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", tc.header)
			}
			resp, err := e.chat.ListOnlineUsers(ctx, &chatv1.ListOnlineUsersRequest{})
			wantStatus(t, err, tc.code, tc.msg)
			if tc.code == codes.OK && resp.GetUsers()[0].GetRole() != tc.role {
				t.Fatalf("principal role = %v, want %v", resp.GetUsers()[0].GetRole(), tc.role)
			}
			// A stream is refused the same way.
			s, err := e.chat.Connect(ctx)
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.Recv()
			wantStatus(t, err, tc.code, tc.msg)
		})
	}
	logs := e.logs.String()
	for _, tok := range tokens {
		sig := tok[strings.LastIndexByte(tok, '.')+1:]
		if strings.Contains(logs, tok) || len(sig) >= 16 && strings.Contains(logs, sig) {
			t.Fatalf("a token reached the log: %q", tok)
		}
	}
	if !strings.Contains(logs, "user=alice") {
		t.Fatal("call logs do not name the user")
	}
}

func TestPublicMethods(t *testing.T) {
	t.Parallel()
	e := start(t, opts{})
	ctx := context.Background()
	if _, err := chatv1.NewAuthClient(e.conn).Login(ctx, &chatv1.LoginRequest{Username: "alice", Password: "pw"}); err != nil {
		t.Fatalf("Login without token: %v", err)
	}
	// A bad token on a public method is ignored, not checked.
	if _, err := chatv1.NewAuthClient(e.conn).Login(bearer("garbage"), &chatv1.LoginRequest{Username: "alice", Password: "pw"}); err != nil {
		t.Fatalf("Login with a garbage token: %v", err)
	}
	if _, err := healthpb.NewHealthClient(e.conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health check: %v", err)
	}
	rs, err := reflectionpb.NewServerReflectionClient(e.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := rs.Recv()
	if err != nil || len(resp.GetListServicesResponse().GetService()) == 0 {
		t.Fatalf("reflection: %v, %v", resp, err)
	}
	rs.CloseSend()
	// Public does not mean unchecked: requests are still validated.
	_, err = chatv1.NewAuthClient(e.conn).Login(ctx, &chatv1.LoginRequest{Username: "a b", Password: "pw"})
	wantStatus(t, err, codes.InvalidArgument, "")
}

func TestRoles(t *testing.T) {
	t.Parallel()
	e := start(t, opts{})
	user, mod, admin := bearer(e.token(t, "alice", auth.RoleUser)), bearer(e.token(t, "mod", auth.RoleModerator)), bearer(e.token(t, "root", auth.RoleAdmin))
	setRole := &chatv1.SetUserRoleRequest{Username: "alice", Role: chatv1.Role_ROLE_MODERATOR}
	for _, tc := range []struct {
		name string
		call func() error
		code codes.Code
		msg  string
	}{
		{"user on GetStats", func() error { _, err := e.admin.GetStats(user, &chatv1.GetStatsRequest{}); return err }, codes.PermissionDenied, "requires role moderator"},
		{"moderator on GetStats", func() error { _, err := e.admin.GetStats(mod, &chatv1.GetStatsRequest{}); return err }, codes.OK, ""},
		{"moderator on SetUserRole", func() error { _, err := e.admin.SetUserRole(mod, setRole); return err }, codes.PermissionDenied, "requires role admin"},
		{"admin on SetUserRole", func() error { _, err := e.admin.SetUserRole(admin, setRole); return err }, codes.OK, ""},
		{"admin on Chat", func() error {
			_, err := e.chat.GetHistory(admin, &chatv1.GetHistoryRequest{Conversation: &chatv1.Conversation{Kind: &chatv1.Conversation_Room{Room: "general"}}})
			return err
		}, codes.OK, ""},
		// A token minted as admin for a stored user buys nothing.
		{"old admin token of a user", func() error {
			_, err := e.admin.GetStats(bearer(e.token(t, "bob", auth.RoleAdmin)), &chatv1.GetStatsRequest{})
			return err
		}, codes.PermissionDenied, "requires role moderator"},
		{"unlisted method, even for admin", func() error {
			return e.conn.Invoke(admin, "/chat.v1.Hidden/Peek", &chatv1.GetStatsRequest{}, &chatv1.GetStatsResponse{})
		}, codes.PermissionDenied, "method not allowed"},
		{"unlisted method without token", func() error {
			return e.conn.Invoke(context.Background(), "/chat.v1.Hidden/Peek", &chatv1.GetStatsRequest{}, &chatv1.GetStatsResponse{})
		}, codes.Unauthenticated, "token required"},
	} {
		t.Run(tc.name, func(t *testing.T) { wantStatus(t, tc.call(), tc.code, tc.msg) })
	}
}

func TestUnaryRateLimit(t *testing.T) {
	t.Parallel()
	e := start(t, opts{rates: map[ratelimit.Kind]ratelimit.Rate{ratelimit.KindOther: {PerSecond: 0.01, Burst: 1}}})
	ctx := bearer(e.token(t, "alice", auth.RoleUser))
	if _, err := e.chat.ListOnlineUsers(ctx, &chatv1.ListOnlineUsersRequest{}); err != nil {
		t.Fatal(err)
	}
	_, err := e.chat.ListOnlineUsers(ctx, &chatv1.ListOnlineUsersRequest{})
	wantStatus(t, err, codes.ResourceExhausted, "")
	if d := retryInfo(t, err); d < 90*time.Second || d > 100*time.Second {
		t.Fatalf("retry after %v, want about 100s", d)
	}
	// Another user has its own bucket.
	if _, err := e.chat.ListOnlineUsers(bearer(e.token(t, "bob", auth.RoleUser)), &chatv1.ListOnlineUsersRequest{}); err != nil {
		t.Fatalf("bob limited by alice's calls: %v", err)
	}
}

func TestConnectRateLimitPerIP(t *testing.T) {
	t.Parallel()
	e := start(t, opts{rates: map[ratelimit.Kind]ratelimit.Rate{ratelimit.KindConnect: {PerSecond: 0.01, Burst: 1}}})
	connect(t, e, e.token(t, "alice", auth.RoleUser))
	// Another user from the same address is refused too: the key is the IP.
	s, err := e.chat.Connect(bearer(e.token(t, "bob", auth.RoleUser)))
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Recv()
	wantStatus(t, err, codes.ResourceExhausted, "")
	retryInfo(t, err)
}

func TestStreamMessageRateLimit(t *testing.T) {
	t.Parallel()
	e := start(t, opts{rates: map[ratelimit.Kind]ratelimit.Rate{ratelimit.KindMessage: {PerSecond: 10, Burst: 2}}})
	s := connect(t, e, e.token(t, "alice", auth.RoleUser))
	for _, id := range []string{"m1", "m2"} {
		if out := roundTrip(t, s, say(id, "hi")); out.GetPong() == nil {
			t.Fatalf("%s: got %v, want delivery", id, out)
		}
	}
	out := roundTrip(t, s, say("m3", "hi"))
	ev := out.GetError()
	if ev.GetCode() != chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED || ev.GetRetryAfter().AsDuration() <= 0 {
		t.Fatalf("over the limit: got %v, want in-band RATE_LIMITED with retry_after", out)
	}
	// Other kinds are not charged to the message bucket.
	if out := roundTrip(t, s, ping("p1")); out.GetPong() == nil {
		t.Fatalf("ping after a refused message: %v", out)
	}
	time.Sleep(ev.GetRetryAfter().AsDuration())
	if out := roundTrip(t, s, say("m4", "hi again")); out.GetPong() == nil {
		t.Fatalf("after the bucket refilled: got %v, want delivery", out)
	}
}

func TestAbuseThresholdEndsStream(t *testing.T) {
	t.Parallel()
	e := start(t, opts{abuse: 3, rates: map[ratelimit.Kind]ratelimit.Rate{ratelimit.KindTyping: {PerSecond: 0.01, Burst: 1}}})
	s := connect(t, e, e.token(t, "alice", auth.RoleUser))
	if out := roundTrip(t, s, typing("t0")); out.GetPong() == nil {
		t.Fatalf("first typing: %v", out)
	}
	for _, id := range []string{"t1", "t2"} {
		if out := roundTrip(t, s, typing(id)); out.GetError().GetCode() != chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED {
			t.Fatalf("%s: got %v, want in-band RATE_LIMITED", id, out)
		}
	}
	if err := s.Send(typing("t3")); err != nil {
		t.Fatal(err)
	}
	_, err := s.Recv()
	wantStatus(t, err, codes.ResourceExhausted, "")
	if d := retryInfo(t, err); d < time.Second {
		t.Fatalf("retry after %v, want at least 1s", d)
	}
}

func TestStreamValidation(t *testing.T) {
	t.Parallel()
	e := start(t, opts{})
	s := connect(t, e, e.token(t, "alice", auth.RoleUser))
	for _, tc := range []struct {
		name  string
		ev    *chatv1.ClientEvent
		field string
	}{
		{"bad room name", &chatv1.ClientEvent{RequestId: "j1", Event: &chatv1.ClientEvent_JoinRoom{JoinRoom: &chatv1.JoinRoom{Room: "no spaces!"}}}, "join_room.room"},
		{"empty text", &chatv1.ClientEvent{RequestId: "s1", Event: &chatv1.ClientEvent_SendMessage{SendMessage: &chatv1.SendMessage{Room: "general"}}}, "send_message.text"},
		{"no event", &chatv1.ClientEvent{RequestId: "n1"}, "event"},
	} {
		out := roundTrip(t, s, tc.ev)
		ev := out.GetError()
		if ev.GetCode() != chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT || !strings.Contains(ev.GetMessage(), tc.field) {
			t.Fatalf("%s: got %v, want in-band INVALID_ARGUMENT naming %s", tc.name, out, tc.field)
		}
	}
	// The stream lives on.
	if out := roundTrip(t, s, ping("p")); out.GetPong() == nil {
		t.Fatalf("after refusals: %v", out)
	}
}

func TestMalformedStreamMessageIsTerminal(t *testing.T) {
	t.Parallel()
	e := start(t, opts{})
	ctx, cancel := context.WithCancel(bearer(e.token(t, "alice", auth.RoleUser)))
	defer cancel()
	s, err := e.conn.NewStream(ctx, &chatv1.Chat_ServiceDesc.Streams[0], chatv1.Chat_Connect_FullMethodName, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	var welcome []byte
	if err := s.RecvMsg(&welcome); err != nil {
		t.Fatal(err)
	}
	junk := []byte{0xff, 0xff, 0xff} // not protobuf wire format
	if err := s.SendMsg(&junk); err != nil {
		t.Fatal(err)
	}
	// grpc-go writes its own Internal status to the client the moment a
	// decode fails, before the handler returns, so that is what the client
	// sees; the handler and the call log get InvalidArgument.
	var b []byte
	err = s.RecvMsg(&b)
	wantStatus(t, err, codes.Internal, "")
	if !strings.Contains(status.Convert(err).Message(), "unmarshal") {
		t.Fatalf("status %v is not a decode failure", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(e.logs.String(), "grpc.code=InvalidArgument") {
		if time.Now().After(deadline) {
			t.Fatalf("call not logged as InvalidArgument:\n%s", e.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rawCodec sends bytes as they are, to put undecodable frames on the wire.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), b...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func TestUnaryValidation(t *testing.T) {
	t.Parallel()
	e := start(t, opts{})
	ctx := bearer(e.token(t, "alice", auth.RoleUser))
	_, err := e.chat.GetHistory(ctx, &chatv1.GetHistoryRequest{
		Conversation: &chatv1.Conversation{Kind: &chatv1.Conversation_Room{Room: "general"}}, Limit: 500})
	wantStatus(t, err, codes.InvalidArgument, "")
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "limit") || !strings.Contains(msg, "[int32.gte_lte]") {
		t.Fatalf("message %q does not name the field and rule", msg)
	}
	var br *errdetails.BadRequest
	for _, d := range status.Convert(err).Details() {
		br, _ = d.(*errdetails.BadRequest)
	}
	if len(br.GetFieldViolations()) != 1 || br.GetFieldViolations()[0].GetField() != "limit" {
		t.Fatalf("BadRequest detail = %v", br)
	}
	_, err = e.chat.GetHistory(ctx, &chatv1.GetHistoryRequest{})
	wantStatus(t, err, codes.InvalidArgument, "")

	// Client-streaming messages are validated too, and a bad one is terminal.
	up, err := e.chat.UploadFile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	up.Send(&chatv1.UploadFileRequest{Data: &chatv1.UploadFileRequest_Info{Info: &chatv1.FileInfo{Name: "a.txt", Size: 0}}})
	_, err = up.CloseAndRecv()
	wantStatus(t, err, codes.InvalidArgument, "")
	if !strings.Contains(status.Convert(err).Message(), "info.size") {
		t.Fatalf("upload refusal %q does not name info.size", status.Convert(err).Message())
	}
}

func TestInBandRefresh(t *testing.T) {
	t.Parallel()
	e := start(t, opts{})
	short := sign(t, jwt.SigningMethodHS256, secret, "", claims("alice", set("exp", time.Now().Add(time.Minute).Unix())))
	s := connect(t, e, short)

	later := time.Now().Add(time.Hour).Truncate(time.Second)
	fresh := sign(t, jwt.SigningMethodHS256, secret, "", claims("alice", set("exp", later.Unix())))
	refresh := func(id, tok string) *chatv1.ClientEvent {
		return &chatv1.ClientEvent{RequestId: id, Event: &chatv1.ClientEvent_RefreshToken{RefreshToken: &chatv1.RefreshToken{AccessToken: tok}}}
	}
	out := roundTrip(t, s, refresh("r1", fresh))
	if got := out.GetTokenRefreshed().GetExpiresAt().AsTime(); !got.Equal(later) {
		t.Fatalf("after refresh: %v, want TokenRefreshed with expiry %v", out, later)
	}
	for _, tc := range []struct {
		name, tok, msg string
	}{
		{"another user's token", e.token(t, "bob", auth.RoleUser), "token is for another user"},
		{"garbage", "not-a-jwt", "invalid token"},
		{"expired", sign(t, jwt.SigningMethodHS256, secret, "", claims("alice", set("exp", time.Now().Add(-time.Hour).Unix()))), "token expired"},
	} {
		out := roundTrip(t, s, refresh(tc.name, tc.tok))
		if ev := out.GetError(); ev.GetCode() != chatv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED || ev.GetMessage() != tc.msg {
			t.Fatalf("%s: got %v, want in-band UNAUTHENTICATED %q", tc.name, out, tc.msg)
		}
	}
	// Failed refreshes leave the expiry and the stream as they were.
	out = roundTrip(t, s, refresh("r2", fresh))
	if !out.GetTokenRefreshed().GetExpiresAt().AsTime().Equal(later) {
		t.Fatalf("expiry moved by a refused refresh: %v", out)
	}
}

func TestRefreshOfDeactivatedUser(t *testing.T) {
	t.Parallel()
	// ghost is inactive, so it cannot open a stream; check the refresh path
	// through a user who is active at open and whose refresh names ghost.
	e := start(t, opts{})
	s := connect(t, e, e.token(t, "alice", auth.RoleUser))
	out := roundTrip(t, s, &chatv1.ClientEvent{RequestId: "r", Event: &chatv1.ClientEvent_RefreshToken{RefreshToken: &chatv1.RefreshToken{AccessToken: e.token(t, "ghost", auth.RoleUser)}}})
	if out.GetError().GetCode() != chatv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED {
		t.Fatalf("got %v, want UNAUTHENTICATED", out)
	}
}

func TestPanicRecovery(t *testing.T) {
	t.Parallel()
	e := start(t, opts{})
	_, err := e.chat.ListRooms(bearer(e.token(t, "alice", auth.RoleUser)), &chatv1.ListRoomsRequest{})
	wantStatus(t, err, codes.Internal, "internal error")
	logs := e.logs.String()
	if !strings.Contains(logs, "list rooms exploded") || !strings.Contains(logs, "chatServer.ListRooms") {
		t.Fatalf("panic not logged with its stack:\n%s", logs)
	}
	// The server is still serving.
	if _, err := e.chat.ListOnlineUsers(bearer(e.token(t, "alice", auth.RoleUser)), &chatv1.ListOnlineUsersRequest{}); err != nil {
		t.Fatal(err)
	}
}

func TestNewConfig(t *testing.T) {
	t.Parallel()
	v, _ := auth.NewVerifier(auth.VerifierConfig{HMACSecret: secret})
	lim := ratelimit.New(ratelimit.Config{})
	defer lim.Close()
	for _, tc := range []struct {
		name string
		cfg  interceptor.Config
	}{
		{"no verifier", interceptor.Config{Users: testUsers, Limiter: lim}},
		{"no users", interceptor.Config{Verifier: v, Limiter: lim}},
		{"no limiter", interceptor.Config{Verifier: v, Users: testUsers}},
		{"bad method name", interceptor.Config{Verifier: v, Users: testUsers, Limiter: lim, PublicMethods: []string{"chat.v1.Auth/Login"}}},
		{"zero role", interceptor.Config{Verifier: v, Users: testUsers, Limiter: lim, Roles: map[string]auth.Role{"/chat.v1.Chat/*": 0}}},
	} {
		if _, err := interceptor.New(tc.cfg); err == nil {
			t.Errorf("%s: New succeeded", tc.name)
		}
	}
	if _, err := interceptor.New(interceptor.Config{Verifier: v, Users: testUsers, Limiter: lim}); err != nil {
		t.Fatal(err)
	}
}

func timestamp(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }
