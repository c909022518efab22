package server

import (
	"context"
	"runtime/debug"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/internal/interceptor"
	"github.com/parleychat/parley/server/session"
)

// Attach implements session.Attacher: it starts a Chat.Connect session for
// a bridged connection without the in-process gRPC hop. The policy is the
// interceptor chain's own code: OpenStream does auth, roles and the
// connect limit exactly as for a gRPC stream, and every command passes the
// same per-message checks before the session sees it.
func (s *Server) Attach(ctx context.Context, c session.Conn, t session.Transport, done func()) (err error) {
	if s.stopping.Load() {
		return errShuttingDown // as the gate answers a gRPC Connect
	}
	md := metadata.MD{}
	if c.Authorization != "" {
		md.Set("authorization", c.Authorization)
	}
	if c.ClientIP != "" {
		md.Set(ClientIPHeader, c.ClientIP)
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
	engine := s.chat.Sessions()
	sess, err := engine.Open(ctx, p)
	if err != nil {
		return err
	}
	name := c.Transport
	if name == "" {
		name = "ws"
	}
	// This goroutine, deep from the token check, the user lookups and the
	// hub's snapshot and replay, may now exit: the session reads on a
	// goroutine of its own.
	engine.Start(ctx, p, sess, checked{Transport: t, events: events}, true, func(d session.Disconnect) {
		s.log.Info("finished call", "transport", name, "grpc.method", chatv1.Chat_Connect_FullMethodName,
			"grpc.code", status.Code(d.Err()).String(), "user", p.Username, "grpc.time_ms", time.Since(start).Milliseconds())
		if done != nil {
			done()
		}
	})
	return nil
}

// checked runs each command an attached transport receives through the
// chain's per-message policy, as the gRPC stream's RecvMsg does.
type checked struct {
	session.Transport
	events *interceptor.Events
}

func (c checked) Recv(ev *chatv1.ClientEvent) error {
	if err := c.Transport.Recv(ev); err != nil {
		return err
	}
	return c.events.Check(ev)
}
