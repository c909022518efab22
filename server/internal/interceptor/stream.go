package interceptor

import (
	"context"
	"errors"
	"time"

	"buf.build/go/protovalidate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/apierr"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/internal/ratelimit"
)

// maxRequestIDLen matches ClientEvent.request_id's rule; a longer id is not
// echoed back, so a refusal never reflects an oversized client string.
const maxRequestIDLen = 64

func (c *Chain) streamMessages(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, &messageStream{ServerStream: ss, Events: c.newEvents(ss.Context())})
}

// messageStream checks every message the handler receives.
type messageStream struct {
	grpc.ServerStream
	*Events
}

// Events checks the commands of one live session: rate limit, validation
// and in-band token refresh, exactly as the interceptors do on a gRPC
// stream. One goroutine at a time calls Check (gRPC's rule for RecvMsg),
// so it keeps its count without a lock.
type Events struct {
	c       *Chain
	ctx     context.Context
	p       *auth.Principal // nil on public streams
	key     string
	refused int // consecutive rate-limited ClientEvents
}

func (c *Chain) newEvents(ctx context.Context) *Events {
	p, _ := auth.FromContext(ctx)
	return &Events{c: c, ctx: ctx, p: p, key: c.callerKey(ctx)}
}

// RecvMsg receives, then charges, validates and (for refresh_token)
// re-authenticates. A refused ClientEvent comes back as *apierr.InBand and
// the stream lives; anything else returned is terminal.
func (s *messageStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		// gRPC reports a message it cannot decode (or a truncated one) as
		// Internal. It is the client's fault and ends the stream; say so to
		// the handler and the call log, so it is not logged as our error.
		// grpc-go has already sent its own Internal status to the client by
		// now, so the client sees that one.
		if status.Code(err) == codes.Internal {
			return status.Error(codes.InvalidArgument, "malformed message")
		}
		return err
	}
	if ev, ok := m.(*chatv1.ClientEvent); ok {
		return s.Events.checkEvent(ev)
	}
	return s.c.validateStatus(s.ctx, m)
}

func (s *Events) checkEvent(ev *chatv1.ClientEvent) error {
	reqID := ev.GetRequestId()
	if len(reqID) > maxRequestIDLen {
		reqID = ""
	}
	kind := eventKind(ev)
	if ok, retry := s.c.limiter.Allow(s.key, kind); !ok {
		s.refused++
		if s.refused >= s.c.abuse {
			s.c.log.WarnContext(s.ctx, "stream ended: too many rate-limited commands", "key", s.key, "refused", s.refused)
			// At least a second: a client cut off for hammering should not
			// be invited straight back.
			return exhausted("too many rate-limited commands; reconnect later", max(retry, time.Second))
		}
		return &apierr.InBand{RequestID: reqID, Err: apierr.RateLimited(kind.String(), retry)}
	}
	s.refused = 0
	if err := s.c.validator.Validate(ev); err != nil {
		var ve *protovalidate.ValidationError
		if !errors.As(err, &ve) {
			s.c.log.ErrorContext(s.ctx, "validation failed to run", "error", err)
			return &apierr.InBand{RequestID: reqID, Err: apierr.Internal()}
		}
		return &apierr.InBand{RequestID: reqID, Err: apierr.InvalidArgument("%s", violationText(ve))}
	}
	if rt := ev.GetRefreshToken(); rt != nil {
		if e := s.refresh(rt.GetAccessToken()); e != nil {
			return &apierr.InBand{RequestID: reqID, Err: e}
		}
	}
	return nil
}

// refresh moves the session's expiry to that of a new token for the same,
// still active, user. The role stays as it was at stream open: the
// Principal's Role is read without a lock by the handler.
func (s *Events) refresh(token string) *apierr.Error {
	if s.p == nil {
		return apierr.Unauthenticated("no session to refresh")
	}
	claims, err := s.c.verifier.Verify(token)
	if err == nil && claims.Subject != s.p.Username {
		return apierr.Unauthenticated("token is for another user")
	}
	if err == nil {
		_, err = s.c.principal(s.ctx, claims)
	}
	if err != nil {
		s.c.authFailed(err)
	}
	switch {
	case errors.Is(err, errLookup):
		if e, ok := apierr.AsUnavailable(err); ok { // logged, in aggregate, where the store is called
			return e
		}
		s.c.log.ErrorContext(s.ctx, "token refresh unavailable", "user", s.p.Username, "error", err)
		return apierr.New(chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE, "authentication unavailable")
	case err != nil:
		s.c.log.DebugContext(s.ctx, "token refresh refused", "user", s.p.Username, "reason", err)
		return apierr.Unauthenticated("%s", authMessage(err))
	}
	s.p.SetExpiresAt(claims.ExpiresAt)
	return nil
}

// eventKind is the budget a command is charged to.
func eventKind(ev *chatv1.ClientEvent) ratelimit.Kind {
	switch ev.GetEvent().(type) {
	case *chatv1.ClientEvent_SendMessage, *chatv1.ClientEvent_SendPrivateMessage, *chatv1.ClientEvent_SendFile:
		return ratelimit.KindMessage
	case *chatv1.ClientEvent_Typing:
		return ratelimit.KindTyping
	case *chatv1.ClientEvent_JoinRoom:
		return ratelimit.KindJoin
	}
	return ratelimit.KindOther
}
