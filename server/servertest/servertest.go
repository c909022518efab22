// Package servertest starts a complete Parley server on loopback for tests:
// real listeners on random ports, a real SQLite file in a temporary data
// directory, the real interceptor chain. Stop it (or let tb.Cleanup do it)
// and start another on the same DataDir to test what survives a restart.
package servertest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/internal/auth"
)

// Server is a running test server.
type Server struct {
	*server.Server
	DataDir string
	cancel  context.CancelFunc
	done    chan error
}

// Options tune a test server.
type Options struct {
	// DataDir reuses a data directory (for restarts); default a new temp dir.
	DataDir string
	// Configure edits the config before the server is built.
	Configure func(*server.Config)
}

// Start starts a server and stops it when the test ends.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	if opts.DataDir == "" {
		opts.DataDir = tb.TempDir()
	}
	cfg := server.Config{
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", MetricsAddr: "off", DataDir: opts.DataDir,
		ShutdownGrace: 5 * time.Second, Logger: slog.New(slog.DiscardHandler),
	}
	if opts.Configure != nil {
		opts.Configure(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg)
	if err != nil {
		cancel()
		tb.Fatalf("servertest: new server: %v", err)
	}
	if err := srv.Start(ctx); err != nil {
		cancel()
		tb.Fatalf("servertest: start: %v", err)
	}
	s := &Server{Server: srv, DataDir: opts.DataDir, cancel: cancel, done: make(chan error, 1)}
	tb.Cleanup(s.Stop)
	return s
}

// Stop shuts the server down gracefully; safe to call twice.
func (s *Server) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = s.Shutdown(ctx)
	s.cancel()
}

// Token returns an access token for username with role, creating the user
// when needed.
func (s *Server) Token(tb testing.TB, username string, role auth.Role) string {
	tb.Helper()
	if err := s.EnsureUser(context.Background(), username, role); err != nil {
		tb.Fatalf("servertest: ensure user %s: %v", username, err)
	}
	tok, _, err := s.Issuer().Issue(username, role)
	if err != nil {
		tb.Fatalf("servertest: issue token: %v", err)
	}
	return tok
}

// TokenAs is Token for tests outside the server tree, which cannot name
// auth.Role: role is the chat.v1 role (USER, MODERATOR or ADMIN).
func (s *Server) TokenAs(tb testing.TB, username string, role chatv1.Role) string {
	tb.Helper()
	r := auth.RoleFromProto(role)
	if r == 0 {
		tb.Fatalf("servertest: no such role %v", role)
	}
	return s.Token(tb, username, r)
}

// Dial connects to the native gRPC listener; closed when the test ends.
func (s *Server) Dial(tb testing.TB) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatalf("servertest: dial: %v", err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// WithToken returns ctx carrying `authorization: Bearer token`.
func WithToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}
