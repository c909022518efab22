// Package session is the session engine: one connected client, whatever
// its transport, from the hub's Welcome to its Disconnect. It owns the one
// seam every transport plugs into (Transport: it hands received commands in
// through Recv and offers Write and Close), the one run mode, the
// coalescing writer, the token-expiry watch and the Disconnect table that
// decides the gRPC status, the WebSocket close code and the Disconnect
// event of every session end.
//
// The gRPC handler (package chatsvc), the bridged /ws connection and any
// other transport are thin adapters onto Transport; the arrow runs
// transport → session, never back.
//
// Concurrency: per session, one goroutine calls Recv (the reader, the only
// long-lived one) and at most one calls Write (a writer that exists only
// while frames wait, so an idle connection costs one goroutine). Close may
// be called from any goroutine, more than once. Engine is safe for
// concurrent use.
package session

import (
	"context"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/hub"
)

// Frame is one ServerEvent the hub encoded once for every recipient: a
// transport writes Data as it is and must not modify it.
type Frame = hub.Frame

// Transport is one client connection as the session sees it.
type Transport interface {
	// Recv returns the next command. An *InBandError refuses one frame in
	// band (the session reads on); io.EOF means the client is gone; any
	// other error ends the session with it (a gRPC status).
	Recv(ev *chatv1.ClientEvent) error
	// Write writes frames, in order, as one burst (one write(2) where the
	// transport can).
	Write(frames ...*Frame) error
	// Close ends the connection with d, so that a blocked Recv or Write
	// returns. Any goroutine may call it, more than once; the first wins.
	Close(d Disconnect)
}

// InBandError is a client frame a transport could not decode: it is
// answered with an Error event and the session reads on.
type InBandError struct {
	RequestID string
	Code      chatv1.ErrorCode
	Message   string
}

func (e *InBandError) Error() string { return e.Message }

// Attacher starts sessions for connections that are not gRPC streams
// (parleyd's bridge): the policy gate runs exactly as for a gRPC Connect.
// Attach returns at once; the gate and then the session read t on a
// goroutine of their own, so the caller's goroutine may exit. An error
// means the connection was refused before the gate (the server is
// stopping). Otherwise t.Close gets the Disconnect (its first call: the
// gate's refusal, such as a bad token, or the session's end), then done,
// after which t is no longer used.
type Attacher interface {
	Attach(ctx context.Context, c Conn, t Transport, done func()) error
}

// Conn is what a transport knows of its client before the session opens.
type Conn struct {
	Authorization string // "Bearer <token>", or empty
	ClientIP      string // the client's address as the bridge saw it
}
