package server_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/servertest"
)

// TestAdmin covers stats, broadcasts, disconnects, deactivation and the
// role refusals of the Admin service.
func TestAdmin(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	conn := srv.Dial(t)
	adminCtx := servertest.WithToken(context.Background(), srv.Token(t, "root", auth.RoleAdmin))
	modCtx := servertest.WithToken(context.Background(), srv.Token(t, "mod", auth.RoleModerator))
	userTok := srv.Token(t, "alice", auth.RoleUser)
	userCtx := servertest.WithToken(context.Background(), userTok)
	admin := chatv1.NewAdminClient(conn)

	alice := connect(t, conn, "alice", userTok)
	bob := connect(t, conn, "bob", srv.Token(t, "bob", auth.RoleUser))
	bob.next(replyTo(bob.send(join("ops"))))
	alice.next(replyTo(alice.send(sendRoom("general", "one", ""))))

	st, err := admin.GetStats(adminCtx, &chatv1.GetStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	tot := st.GetTotal()
	if tot.GetConnections() != 2 || tot.GetOnlineUsers() != 2 || tot.GetRooms() != 2 || tot.GetMessagesInTotal() != 1 || tot.GetMessagesOutTotal() < 2 || len(st.GetNodes()) != 1 || tot.GetUptime() == nil {
		t.Fatalf("stats = %v", st)
	}
	if _, err := admin.GetStats(modCtx, &chatv1.GetStatsRequest{}); err != nil {
		t.Fatalf("moderator stats: %v", err)
	}

	// Role refusals.
	for name, call := range map[string]func() error{
		"user GetStats":  func() error { _, err := admin.GetStats(userCtx, &chatv1.GetStatsRequest{}); return err },
		"user Broadcast": func() error { _, err := admin.Broadcast(userCtx, &chatv1.BroadcastRequest{Text: "x"}); return err },
		"moderator SetRole": func() error {
			_, err := admin.SetUserRole(modCtx, &chatv1.SetUserRoleRequest{Username: "alice", Role: chatv1.Role_ROLE_ADMIN})
			return err
		},
		"user DisconnectUser": func() error {
			_, err := admin.DisconnectUser(userCtx, &chatv1.DisconnectUserRequest{Username: "bob"})
			return err
		},
	} {
		if status.Code(call()) != codes.PermissionDenied {
			t.Errorf("%s: want PermissionDenied", name)
		}
	}

	// Broadcast to everyone, then to one room.
	if r, err := admin.Broadcast(modCtx, &chatv1.BroadcastRequest{Text: "maintenance at noon"}); err != nil || r.GetSessions() != 2 {
		t.Fatalf("broadcast = %v, %v", r, err)
	}
	for _, c := range []*client{alice, bob} {
		b := c.next(func(ev *chatv1.ServerEvent) bool { return ev.GetAdminBroadcast() != nil }).GetAdminBroadcast()
		if b.GetText() != "maintenance at noon" || b.GetFrom() != "mod" || b.GetRoom() != "" {
			t.Fatalf("%s broadcast = %v", c.name, b)
		}
	}
	if r, err := admin.Broadcast(adminCtx, &chatv1.BroadcastRequest{Text: "ops only", Room: "ops"}); err != nil || r.GetSessions() != 1 {
		t.Fatalf("room broadcast = %v, %v", r, err)
	}
	bob.next(func(ev *chatv1.ServerEvent) bool { return ev.GetAdminBroadcast().GetText() == "ops only" })
	for _, ev := range alice.sync() {
		if ev.GetAdminBroadcast() != nil {
			t.Fatalf("alice got the ops broadcast: %v", ev)
		}
	}

	// Admin makes alice a moderator; she can then read stats.
	if _, err := admin.SetUserRole(adminCtx, &chatv1.SetUserRoleRequest{Username: "alice", Role: chatv1.Role_ROLE_MODERATOR}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.GetStats(userCtx, &chatv1.GetStatsRequest{}); err != nil {
		t.Fatalf("promoted alice: %v", err)
	}
	if _, err := admin.SetUserRole(adminCtx, &chatv1.SetUserRoleRequest{Username: "ghost", Role: chatv1.Role_ROLE_USER}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown user role: %v", err)
	}

	// Disconnect: a notice, then the stream ends with Aborted.
	if r, err := admin.DisconnectUser(adminCtx, &chatv1.DisconnectUserRequest{Username: "bob", Reason: "spam"}); err != nil || r.GetSessions() != 1 {
		t.Fatalf("disconnect = %v, %v", r, err)
	}
	n := bob.next(func(ev *chatv1.ServerEvent) bool { return ev.GetServerNotice() != nil }).GetServerNotice()
	if n.GetKind() != chatv1.NoticeKind_NOTICE_KIND_DISCONNECTED {
		t.Fatalf("notice = %v", n)
	}
	// The Disconnect that ends the stream carries the admin's reason too:
	// clients show its reason last.
	d := bob.next(func(ev *chatv1.ServerEvent) bool { return ev.GetDisconnect() != nil }).GetDisconnect()
	if d.GetCode() != 4409 || d.GetReconnect() || d.GetReason() != "disconnected by an administrator: spam" {
		t.Fatalf("disconnect event = %v", d)
	}
	if err := bob.ended(); status.Code(err) != codes.Aborted || !strings.Contains(status.Convert(err).Message(), "spam") {
		t.Fatalf("bob ended with %v", err)
	}

	// Deactivation ends the stream and refuses the still-valid token.
	if _, err := admin.SetUserActive(adminCtx, &chatv1.SetUserActiveRequest{Username: "alice", Active: false}); err != nil {
		t.Fatal(err)
	}
	alice.ended()
	_, err = tryConnectStatus(t, chatv1.NewChatClient(conn), userTok)
	if status.Code(err) != codes.Unauthenticated || status.Convert(err).Message() != "account deactivated" {
		t.Fatalf("deactivated connect: %v", err)
	}
	if _, err := admin.SetUserActive(adminCtx, &chatv1.SetUserActiveRequest{Username: "alice", Active: true}); err != nil {
		t.Fatal(err)
	}
	connect(t, conn, "alice-back", userTok)
}

// tryConnectStatus opens a stream and returns the status it ends with
// before any event (for refusals).
func tryConnectStatus(t *testing.T, conn interface {
	chatv1.ChatClient
}, token string) (*chatv1.ServerEvent, error) {
	stream, err := conn.Connect(servertest.WithToken(context.Background(), token))
	if err != nil {
		return nil, err
	}
	return stream.Recv()
}
