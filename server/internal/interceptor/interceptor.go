// Package interceptor is Parley's one policy chain. Every call reaches the
// services through these interceptors, in this order, whatever the
// transport: native gRPC and gRPC-Web through the gRPC server
// (ServerOptions), the WebSocket attached to a session directly through
// the same stream chain, assembled once (Serve, the gate):
//
//	recovery → metrics → logging → auth → roles → rate limit → validation → Config.Policy
//
// Recovery turns a panic into Internal. Logging records each call's end
// (method, code, duration, user; never payloads or metadata values). Auth
// reads "authorization: Bearer <JWT>", verifies it and looks the user up;
// the stored role, not the token's, goes into the *auth.Principal in the
// context. Roles refuses methods the caller's role does not reach, and any
// method missing from the table (fail closed). Rate limit charges each
// call, each stream open and, on Chat.Connect, each received ClientEvent.
// Validation runs protovalidate on every request and received message.
//
// On Chat.Connect a refused command does not end the stream: the wrapped
// RecvMsg returns an *apierr.InBand, which the handler answers in band
// before reading on. A client that keeps hammering past the limit, or a
// message that cannot be decoded, ends the stream with a status.
//
// Concurrency: a *Chain is immutable after New and safe for concurrent use.
// The per-stream RecvMsg wrapper keeps unsynchronised state and relies on
// gRPC's rule that one goroutine at a time calls RecvMsg on a stream.
package interceptor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"buf.build/go/protovalidate"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/internal/ratelimit"
	"github.com/parleychat/parley/server/internal/store"
)

// UserLookup finds an account by name. It returns an error wrapping
// store.ErrNotFound when there is none. It must be safe for concurrent use.
type UserLookup interface {
	GetUser(ctx context.Context, username string) (store.User, error)
}

// DefaultAbuseThreshold is how many consecutive rate-limited commands end
// a Connect stream when Config.AbuseThreshold is zero.
const DefaultAbuseThreshold = 50

// Config configures a Chain. Verifier, Users and Limiter are required;
// other zero fields take the defaults.
type Config struct {
	// Verifier checks access tokens.
	Verifier *auth.Verifier
	// Users is consulted on every authenticated call and stream open, so a
	// deactivated or demoted user loses access before their token expires.
	Users UserLookup
	// Limiter holds the rate-limit buckets. The Chain does not close it.
	Limiter *ratelimit.Limiter
	// Logger receives call logs; default slog.Default().
	Logger *slog.Logger
	// PublicMethods need no token. Each is a full method name
	// ("/chat.v1.Auth/Login") or a whole service ("/grpc.health.v1.Health/*").
	// Nil means DefaultPublicMethods(); a non-nil list replaces it.
	PublicMethods []string
	// Roles maps full methods (or "/service/*") to the least role that may
	// call them. A method neither public nor in the table is refused. Nil
	// means DefaultRoles(); a non-nil map replaces it.
	Roles map[string]auth.Role
	// ClientIP returns the address to key per-IP limits on and to record as
	// the session IP; default the host of peer.FromContext.
	ClientIP func(ctx context.Context) string
	// AbuseThreshold is how many consecutive rate-limited commands end a
	// Connect stream with ResourceExhausted; default DefaultAbuseThreshold.
	AbuseThreshold int
	// Unary and Stream, when set, run right after recovery, before
	// logging, so they see every call, refused ones included: the RPC
	// metrics (package metrics) go here. Nil means none.
	Unary  grpc.UnaryServerInterceptor
	Stream grpc.StreamServerInterceptor
	// Policy adds stream interceptors to the gate after validation: they
	// see the Principal and run on every transport. Nil means none.
	Policy []grpc.StreamServerInterceptor
}

// DefaultPublicMethods returns the methods that need no token: the Auth
// service's four methods (named one by one, so a new Auth method is not
// public by accident), gRPC reflection and health.
func DefaultPublicMethods() []string {
	return []string{
		chatv1.Auth_Register_FullMethodName,
		chatv1.Auth_Login_FullMethodName,
		chatv1.Auth_Refresh_FullMethodName,
		chatv1.Auth_Logout_FullMethodName,
		"/grpc.reflection.v1.ServerReflection/*",
		"/grpc.reflection.v1alpha.ServerReflection/*",
		"/grpc.health.v1.Health/*",
	}
}

// DefaultRoles returns the default role table: every Chat method needs
// RoleUser, every Admin method RoleModerator, Admin.SetUserRole RoleAdmin.
func DefaultRoles() map[string]auth.Role {
	return map[string]auth.Role{
		"/" + chatv1.Chat_ServiceDesc.ServiceName + "/*":  auth.RoleUser,
		"/" + chatv1.Admin_ServiceDesc.ServiceName + "/*": auth.RoleModerator,
		chatv1.Admin_SetUserRole_FullMethodName:           auth.RoleAdmin,
	}
}

// Chain is the policy chain. Safe for concurrent use.
type Chain struct {
	verifier  *auth.Verifier
	users     UserLookup
	limiter   *ratelimit.Limiter
	log       *slog.Logger
	public    methodTable[struct{}]
	roles     methodTable[auth.Role]
	clientIP  func(context.Context) string
	abuse     int
	validator protovalidate.Validator
	unary     grpc.UnaryServerInterceptor
	stream    grpc.StreamServerInterceptor
	policy    []grpc.StreamServerInterceptor
	streams   []grpc.StreamServerInterceptor // the gate: every stream's policy, in order
	authFails [numAuthFailures]atomic.Int64  // see AuthFailed
}

// New checks cfg and builds the chain.
func New(cfg Config) (*Chain, error) {
	if cfg.Verifier == nil || cfg.Users == nil || cfg.Limiter == nil {
		return nil, errors.New("interceptor: Verifier, Users and Limiter are required")
	}
	c := &Chain{
		verifier: cfg.Verifier,
		users:    cfg.Users,
		limiter:  cfg.Limiter,
		log:      cfg.Logger,
		clientIP: cfg.ClientIP,
		abuse:    cfg.AbuseThreshold,
		unary:    cfg.Unary,
		stream:   cfg.Stream,
		policy:   cfg.Policy,
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.unary == nil {
		c.unary = passUnary
	}
	if c.stream == nil {
		c.stream = passStream
	}
	if c.clientIP == nil {
		c.clientIP = peerHost
	}
	if c.abuse <= 0 {
		c.abuse = DefaultAbuseThreshold
	}
	c.streams = c.gate()
	public := cfg.PublicMethods
	if public == nil {
		public = DefaultPublicMethods()
	}
	var err error
	pub := make(map[string]struct{}, len(public))
	for _, m := range public {
		pub[m] = struct{}{}
	}
	if c.public, err = newMethodTable(pub); err != nil {
		return nil, err
	}
	roles := cfg.Roles
	if roles == nil {
		roles = DefaultRoles()
	}
	for m, r := range roles {
		if !r.AtLeast(auth.RoleUser) {
			return nil, fmt.Errorf("interceptor: method %s: invalid role %s", m, r)
		}
	}
	if c.roles, err = newMethodTable(roles); err != nil {
		return nil, err
	}
	// Compile the stream messages' rules now, not on the first message.
	if c.validator, err = protovalidate.New(protovalidate.WithMessages(&chatv1.ClientEvent{}, &chatv1.UploadFileRequest{})); err != nil {
		return nil, fmt.Errorf("interceptor: validator: %w", err)
	}
	return c, nil
}

// ServerOptions returns the unary and stream chains, to pass to
// grpc.NewServer. Options added after these run inside the chain. The
// stream chain is the gate Serve runs too.
func (c *Chain) ServerOptions() []grpc.ServerOption {
	rec := recovery.WithRecoveryHandlerContext(c.recovered)
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(
			recovery.UnaryServerInterceptor(rec),
			c.unary,
			logging.UnaryServerInterceptor(c.logger(), logOpts...),
			c.unaryAuth,
			c.unaryRoles,
			c.unaryLimit,
			c.unaryValidate,
		),
		grpc.ChainStreamInterceptor(c.streams...),
	}
}

// Only the finish event: the library's start event shares an unguarded
// flag between SendMsg and RecvMsg, which races when a stream's reader and
// writer are separate goroutines, as ours are. Auth logs the start.
var logOpts = []logging.Option{logging.WithLogOnEvents(logging.FinishCall)}

func (c *Chain) logger() logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		c.log.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}

// gate is the stream chain, assembled once: the gRPC server runs it
// (ServerOptions) and so does every transport attached without it (Serve).
// An interceptor added here reaches every transport.
func (c *Chain) gate() []grpc.StreamServerInterceptor {
	return append([]grpc.StreamServerInterceptor{
		recovery.StreamServerInterceptor(recovery.WithRecoveryHandlerContext(c.recovered)),
		c.stream,
		logging.StreamServerInterceptor(c.logger(), logOpts...),
		c.streamAuth,
		c.streamRoles,
		c.streamLimit,
		c.streamMessages,
	}, c.policy...)
}

// Serve runs handler as a stream of method through the gate, the very
// chain the gRPC server runs, for a transport that reaches the services
// without the gRPC server (the bridge's /ws and gRPC-Web, attached to
// sessions directly): recovery, the RPC metrics, the finish log, auth,
// roles, the connect limit, and the per-message checks on ss.RecvMsg. ss's
// context must carry the caller's incoming metadata and peer as the gRPC
// server would set them. It runs on the caller's goroutine and returns the
// stream's status.
func (c *Chain) Serve(ss grpc.ServerStream, method string, handler grpc.StreamHandler) error {
	info := &grpc.StreamServerInfo{FullMethod: method, IsClientStream: true, IsServerStream: true}
	var next func(i int) grpc.StreamHandler
	next = func(i int) grpc.StreamHandler {
		if i == len(c.streams) {
			return handler
		}
		return func(srv any, ss grpc.ServerStream) error { return c.streams[i](srv, ss, info, next(i+1)) }
	}
	return next(0)(nil, ss)
}

// passUnary and passStream stand in for Config.Unary and Stream when nil.
func passUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	return handler(ctx, req)
}

func passStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, ss)
}

// recovered logs a panic with its stack and hides it from the client.
func (c *Chain) recovered(ctx context.Context, p any) error {
	method, _ := grpc.Method(ctx)
	c.log.ErrorContext(ctx, "panic in handler", "grpc.method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	return status.Error(codes.Internal, "internal error")
}

// peerHost is the default Config.ClientIP.
func peerHost(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return p.Addr.String()
	}
	return host
}

// methodTable maps full methods, or whole services written "/svc/*", to V.
type methodTable[V any] struct {
	exact    map[string]V
	services map[string]V // keyed by "/svc"
}

func newMethodTable[V any](m map[string]V) (methodTable[V], error) {
	t := methodTable[V]{exact: map[string]V{}, services: map[string]V{}}
	for name, v := range m {
		if !strings.HasPrefix(name, "/") || strings.Count(name, "/") != 2 || strings.HasSuffix(name, "/") {
			return t, fmt.Errorf("interceptor: %q is not a full method name like /pkg.Service/Method or /pkg.Service/*", name)
		}
		if svc, ok := strings.CutSuffix(name, "/*"); ok {
			t.services[svc] = v
		} else {
			t.exact[name] = v
		}
	}
	return t, nil
}

// lookup prefers an exact entry over its service's wildcard.
func (t methodTable[V]) lookup(fullMethod string) (V, bool) {
	if v, ok := t.exact[fullMethod]; ok {
		return v, true
	}
	if i := strings.LastIndexByte(fullMethod, '/'); i > 0 {
		v, ok := t.services[fullMethod[:i]]
		return v, ok
	}
	var zero V
	return zero, false
}

// exhausted is ResourceExhausted with a RetryInfo detail.
func exhausted(msg string, retryAfter time.Duration) error {
	st := status.New(codes.ResourceExhausted, msg)
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(retryAfter)}); err == nil {
		st = d
	}
	return st.Err()
}
