package interceptor

import (
	"context"
	"errors"
	"strings"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/apierr"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/internal/ratelimit"
	"github.com/parleychat/parley/server/internal/store"
)

// errLookup marks a failure to reach the user store, as opposed to a
// refusal: the caller may retry.
var errLookup = errors.New("user lookup failed")

// --- auth ---

func (c *Chain) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := c.authenticate(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (c *Chain) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := c.authenticate(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	w := middleware.WrapServerStream(ss)
	w.WrappedContext = ctx
	return handler(srv, w)
}

// authenticate puts the caller's Principal in ctx, or refuses with
// Unauthenticated. Public methods pass untouched: a token sent to one is
// ignored, not checked.
func (c *Chain) authenticate(ctx context.Context, method string) (context.Context, error) {
	if _, public := c.public.lookup(method); public {
		c.log.DebugContext(ctx, "call started", "grpc.method", method)
		return ctx, nil
	}
	token, err := bearer(ctx)
	if err == nil {
		var claims auth.Claims
		if claims, err = c.verifier.Verify(token); err == nil {
			var p *auth.Principal
			if p, err = c.principal(ctx, claims); err == nil {
				p.SessionIP = c.clientIP(ctx)
				logging.AddFields(ctx, logging.Fields{"user", p.Username})
				c.log.DebugContext(ctx, "call started", "grpc.method", method, "user", p.Username)
				return auth.NewContext(ctx, p), nil
			}
		}
	}
	c.authFailed(err)
	if errors.Is(err, errLookup) {
		if e, ok := apierr.AsUnavailable(err); ok { // logged, in aggregate, where the store is called
			return nil, e.GRPCStatus().Err()
		}
		c.log.ErrorContext(ctx, "authentication unavailable", "grpc.method", method, "error", err)
		return nil, status.Error(codes.Unavailable, "authentication unavailable")
	}
	// The reason is for operators; it never holds the token.
	c.log.DebugContext(ctx, "call refused", "grpc.method", method, "reason", err)
	return nil, status.Error(codes.Unauthenticated, authMessage(err))
}

// bearer reads the one "authorization: Bearer <token>" value.
func bearer(ctx context.Context) (string, error) {
	vals := metadata.ValueFromIncomingContext(ctx, "authorization")
	switch {
	case len(vals) == 0:
		return "", auth.ErrTokenRequired
	case len(vals) > 1:
		return "", errors.Join(auth.ErrTokenInvalid, errors.New("more than one authorization header"))
	}
	scheme, token, _ := strings.Cut(strings.TrimSpace(vals[0]), " ")
	if !strings.EqualFold(scheme, "bearer") {
		if vals[0] == "" {
			return "", auth.ErrTokenRequired
		}
		return "", errors.Join(auth.ErrTokenInvalid, errors.New("authorization scheme is not Bearer"))
	}
	if token = strings.TrimSpace(token); token == "" {
		return "", auth.ErrTokenRequired
	}
	return token, nil
}

// principal checks the token's subject against the store and builds the
// Principal with the stored role.
func (c *Chain) principal(ctx context.Context, claims auth.Claims) (*auth.Principal, error) {
	u, err := c.users.GetUser(ctx, claims.Subject)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, errors.Join(auth.ErrTokenInvalid, errors.New("unknown user"))
	case err != nil:
		return nil, errors.Join(errLookup, err)
	case !u.Active:
		return nil, auth.ErrAccountDeactivated
	}
	role, err := auth.ParseRole(u.Role)
	if err != nil {
		// A corrupt record grants nothing: the zero role fails every check.
		c.log.ErrorContext(ctx, "stored role unknown", "user", u.Username, "error", err)
	}
	p := &auth.Principal{Username: u.Username, Role: role, LastSeenAt: u.LastSeenAt}
	p.SetExpiresAt(claims.ExpiresAt)
	return p, nil
}

// AuthFailure is why a token was refused, as the metrics count it.
type AuthFailure int

// Auth failure reasons; String gives the metric label.
const (
	AuthTokenRequired AuthFailure = iota
	AuthTokenInvalid
	AuthTokenExpired
	AuthAccountDeactivated
	AuthUnavailable // the user store could not be reached
	numAuthFailures
)

var authFailureNames = [numAuthFailures]string{"token_required", "token_invalid", "token_expired", "account_deactivated", "unavailable"}

func (f AuthFailure) String() string {
	if f >= 0 && f < numAuthFailures {
		return authFailureNames[f]
	}
	return "unknown"
}

// AuthFailures lists every AuthFailure, in order.
func AuthFailures() []AuthFailure {
	out := make([]AuthFailure, numAuthFailures)
	for i := range out {
		out[i] = AuthFailure(i)
	}
	return out
}

// AuthFailed counts the refusals for reason f, at stream or call open and
// at in-band refresh, ever: a plain counter the metrics collector reads.
func (c *Chain) AuthFailed(f AuthFailure) int64 {
	if f < 0 || f >= numAuthFailures {
		return 0
	}
	return c.authFails[f].Load()
}

// authFailed counts a refusal by its cause.
func (c *Chain) authFailed(err error) {
	f := AuthTokenInvalid
	switch {
	case errors.Is(err, errLookup):
		f = AuthUnavailable
	case errors.Is(err, auth.ErrTokenRequired):
		f = AuthTokenRequired
	case errors.Is(err, auth.ErrTokenExpired):
		f = AuthTokenExpired
	case errors.Is(err, auth.ErrAccountDeactivated):
		f = AuthAccountDeactivated
	}
	c.authFails[f].Add(1)
}

// authMessage is the client-facing text for an authentication failure.
func authMessage(err error) string {
	switch {
	case errors.Is(err, auth.ErrTokenRequired):
		return "token required"
	case errors.Is(err, auth.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, auth.ErrAccountDeactivated):
		return "account deactivated"
	}
	return "invalid token"
}

// --- roles ---

func (c *Chain) unaryRoles(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := c.authorize(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (c *Chain) streamRoles(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := c.authorize(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

func (c *Chain) authorize(ctx context.Context, method string) error {
	if _, public := c.public.lookup(method); public {
		return nil
	}
	p, ok := auth.FromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "token required") // unreachable after authenticate
	}
	min, listed := c.roles.lookup(method)
	if !listed {
		c.log.WarnContext(ctx, "method not in the role table", "grpc.method", method, "user", p.Username)
		return status.Error(codes.PermissionDenied, "method not allowed")
	}
	if !p.Role.AtLeast(min) {
		return status.Errorf(codes.PermissionDenied, "requires role %s", min)
	}
	return nil
}

// --- rate limit ---

func (c *Chain) unaryLimit(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := c.chargeCall(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (c *Chain) streamLimit(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := c.chargeCall(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

// chargeCall charges a call or stream open: Connect per client IP (it is
// the expensive, long-lived one), uploads and everything else per user, or
// per IP before login. The unary reads (GetHistory, ListRooms,
// ListConversations, ...) share the user's "other" bucket, as they share
// the Chat/* RoleUser row of the role table.
func (c *Chain) chargeCall(ctx context.Context, method string) error {
	kind, key := ratelimit.KindOther, c.callerKey(ctx)
	switch method {
	case chatv1.Chat_Connect_FullMethodName:
		kind, key = ratelimit.KindConnect, "ip:"+c.clientIP(ctx)
	case chatv1.Chat_UploadFile_FullMethodName:
		kind = ratelimit.KindUpload
	}
	if ok, retry := c.limiter.Allow(key, kind); !ok {
		return exhausted(apierr.RateLimited(kind.String(), retry).Msg, retry)
	}
	return nil
}

// callerKey is the rate-limit key of the caller. The prefixes keep a user
// named like an address from sharing that address's buckets.
func (c *Chain) callerKey(ctx context.Context) string {
	if p, ok := auth.FromContext(ctx); ok {
		return "u:" + p.Username
	}
	return "ip:" + c.clientIP(ctx)
}
