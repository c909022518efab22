package server

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/session"
)

// Attach implements session.Attacher: it runs a Chat.Connect session for a
// bridged connection without the in-process gRPC hop, through the same
// gate as a gRPC stream (interceptor.Chain.Serve: recovery, metrics, the
// finish log, auth, roles, limits and the per-command checks). The
// session's goroutine is the gate's, so the caller's may exit.
func (s *Server) Attach(ctx context.Context, c session.Conn, t session.Transport, done func()) error {
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
	// The in-process peer is what makes ClientIP trusted, as on the pipe.
	ctx = peer.NewContext(metadata.NewIncomingContext(ctx, md), &peer.Peer{Addr: pipeAddr{}})
	ctx = context.WithValue(ctx, directWSKey{}, true)
	go func() {
		err := s.chain.Serve(attached{ctx: ctx, t: t}, chatv1.Chat_Connect_FullMethodName, func(_ any, stream grpc.ServerStream) error {
			// The session's context keeps md for as long as the
			// connection; the token in it is spent.
			md.Delete("authorization")
			ctx := stream.Context()
			p, ok := auth.FromContext(ctx)
			if !ok { // Connect is never public; this is a bug, not the client's
				return status.Error(codes.Internal, "internal error")
			}
			engine := s.chat.Sessions()
			sess, err := engine.Open(ctx, p)
			if err != nil {
				return err
			}
			return engine.Serve(ctx, p, sess, gated{Transport: t, stream: stream})
		})
		t.Close(session.FromStatus(err)) // a no-op unless the gate refused it
		if done != nil {
			done()
		}
	}()
	return nil
}

// attached is an attached transport as the gate sees it: a stream whose
// RecvMsg is the transport's Recv. The session writes through the
// Transport itself, never SendMsg.
type attached struct {
	ctx context.Context
	t   session.Transport
}

var errNotAStream = errors.New("server: an attached session sends through its transport")

func (a attached) Context() context.Context     { return a.ctx }
func (a attached) SetHeader(metadata.MD) error  { return nil }
func (a attached) SendHeader(metadata.MD) error { return nil }
func (a attached) SetTrailer(metadata.MD)       {}
func (a attached) SendMsg(any) error            { return errNotAStream }
func (a attached) RecvMsg(m any) error {
	ev, ok := m.(*chatv1.ClientEvent)
	if !ok {
		return errNotAStream
	}
	return a.t.Recv(ev)
}

// gated is t with its commands received through the gate's per-message
// checks (the stream the gate handed the handler).
type gated struct {
	session.Transport
	stream grpc.ServerStream
}

func (g gated) Recv(ev *chatv1.ClientEvent) error { return g.stream.RecvMsg(ev) }
