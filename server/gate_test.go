package server_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/servertest"
)

// TestGateReachesEveryTransport: a stream interceptor added in one place
// (Config.StreamPolicy) runs on Chat.Connect over native gRPC, gRPC-Web
// and /ws, sees the Principal the gate's auth put in the context, and can
// refuse the session on each.
func TestGateReachesEveryTransport(t *testing.T) {
	t.Parallel()
	var (
		mu   sync.Mutex
		seen []string
	)
	policy := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if info.FullMethod == chatv1.Chat_Connect_FullMethodName {
			p, _ := auth.FromContext(ss.Context())
			mu.Lock()
			seen = append(seen, p.Username)
			mu.Unlock()
			if p.Username == "denied" {
				return status.Error(codes.PermissionDenied, "refused by the test's policy")
			}
		}
		return handler(srv, ss)
	}
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
		c.StreamPolicy = []grpc.StreamServerInterceptor{policy}
		c.RateLimits = "connect=unlimited"
	}})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()

	// gRPC: served, and refused.
	connect(t, srv.Dial(t), "alice", srv.Token(t, "alice", auth.RoleUser))
	if _, err := tryConnectStatus(t, chatv1.NewChatClient(srv.Dial(t)), srv.Token(t, "denied", auth.RoleUser)); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("gRPC: denied got %v, want PermissionDenied", err)
	}

	// /ws (attached to the session directly): served, and refused.
	dialWS := func(user string) *websocket.Conn {
		c, _, err := websocket.Dial(ctx, "ws://"+srv.HTTPAddr()+"/ws", &websocket.DialOptions{
			Subprotocols: []string{"parley.v1", "bearer." + srv.Token(t, user, auth.RoleUser)},
		})
		if err != nil {
			t.Fatalf("dial /ws: %v", err)
		}
		t.Cleanup(func() { _ = c.CloseNow() })
		// The session opens on the first frame.
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"requestId":"p","ping":{}}`)); err != nil {
			t.Fatalf("ws write: %v", err)
		}
		return c
	}
	if _, _, err := dialWS("bob").Read(ctx); err != nil {
		t.Fatalf("/ws: bob got no welcome: %v", err)
	}
	denied := dialWS("denied")
	for {
		_, _, err := denied.Read(ctx)
		if err == nil {
			continue
		}
		if code := websocket.CloseStatus(err); code != 4403 {
			t.Fatalf("/ws: denied closed with %d (%v), want 4403", code, err)
		}
		break
	}

	// gRPC-Web over improbable's WebSocket transport.
	gw, _, err := websocket.Dial(ctx, "ws://"+srv.HTTPAddr()+"/chat.v1.Chat/Connect", &websocket.DialOptions{Subprotocols: []string{"grpc-websockets"}})
	if err != nil {
		t.Fatalf("dial gRPC-Web: %v", err)
	}
	defer gw.CloseNow()
	hdr := "content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\nauthorization: Bearer " + srv.Token(t, "carol", auth.RoleUser) + "\r\n"
	if err := gw.Write(ctx, websocket.MessageBinary, []byte(hdr)); err != nil {
		t.Fatalf("gRPC-Web header frame: %v", err)
	}
	if _, _, err := gw.Read(ctx); err != nil {
		t.Fatalf("gRPC-Web read: %v", err)
	}

	for deadline := time.Now().Add(waitFor); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		got := slices.Clone(seen)
		mu.Unlock()
		if slices.Contains(got, "carol") || time.Now().After(deadline) {
			slices.Sort(got)
			if want := []string{"alice", "bob", "carol", "denied", "denied"}; !slices.Equal(got, want) {
				t.Fatalf("the policy saw Connect from %v, want %v", got, want)
			}
			return
		}
	}
}
