package server

import (
	"context"
	"errors"
	"runtime/debug"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/parleychat/parley/bridge"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/apierr"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/internal/hub"
	"github.com/parleychat/parley/server/internal/interceptor"
)

// AttachConnect implements bridge.Attacher: it starts a Chat.Connect
// session for a bridged WebSocket without the in-process gRPC hop. The policy is
// the interceptor chain's own code: OpenStream does auth, roles and the
// connect limit exactly as for a gRPC stream, and every command passes
// the same per-message checks before the session sees it.
func (s *Server) AttachConnect(ctx context.Context, authorization, clientIP string, t bridge.SessionTransport) (err error) {
	if s.stopping.Load() {
		return errShuttingDown // as the gate answers a gRPC Connect
	}
	md := metadata.MD{}
	if authorization != "" {
		md.Set("authorization", authorization)
	}
	if clientIP != "" {
		md.Set(ClientIPHeader, clientIP)
	}
	// The in-process peer is what makes clientIP trusted, as on the pipe.
	ctx = peer.NewContext(metadata.NewIncomingContext(ctx, md), &peer.Peer{Addr: pipeAddr{}})
	ctx = context.WithValue(ctx, directWSKey{}, true)
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic opening a bridged session", "panic", r, "stack", string(debug.Stack()))
			err = status.Error(codes.Internal, "internal error")
		}
	}()
	ctx, events, err := s.chain.OpenStream(ctx, chatv1.Chat_Connect_FullMethodName)
	if err != nil {
		return err
	}
	// The session's context keeps md for as long as the connection; the
	// token in it is spent (the Principal carries what it proved).
	md.Delete("authorization")
	p, _ := auth.FromContext(ctx)
	sess, err := s.chat.Open(ctx, p)
	if err != nil {
		return err
	}
	// This goroutine, deep from the token check, the user lookups and the
	// hub's snapshot and replay, may now exit: the session reads on a
	// goroutine of its own.
	s.chat.Start(ctx, p, sess, directTransport{t: t, events: events}, t, func(final error) {
		s.log.Info("finished call", "transport", "ws", "grpc.method", chatv1.Chat_Connect_FullMethodName,
			"grpc.code", status.Code(final).String(), "user", p.Username, "grpc.time_ms", time.Since(start).Milliseconds())
		t.Detached()
	})
	return nil
}

// directTransport adapts a bridged connection to the session's Transport
// and runs each command through the chain's per-message policy.
type directTransport struct {
	t      bridge.SessionTransport
	events *interceptor.Events
}

func (d directTransport) Recv(ev *chatv1.ClientEvent) error {
	err := d.t.Recv(ev)
	var ce *bridge.CommandError
	if errors.As(err, &ce) {
		return &apierr.InBand{RequestID: ce.RequestID, Err: apierr.New(ce.Code, "%s", ce.Message)}
	}
	if err != nil {
		return err
	}
	return d.events.Check(ev)
}

func (d directTransport) Send(f *hub.Frame) error { return d.t.Send(f.Data) }
func (d directTransport) Flush() error            { return d.t.Flush() }
