package server_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testenv"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/servertest"
)

// TestCluster runs two nodes that share a database and a NATS subject,
// with one user on each: presence, global, room and private messages,
// typing, admin broadcast and disconnect all cross between them.
func TestCluster(t *testing.T) {
	t.Parallel()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir() // one SQLite file, shared by both nodes
		testCluster(t, dir, dir, "")
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		// Separate data directories: the nodes share only PostgreSQL and
		// NATS (and the token secret, which a deployment distributes).
		dirA, dirB := t.TempDir(), t.TempDir()
		secret, err := server.LoadOrCreateSecret(dirA)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dirB, "jwt.secret"), []byte(hex.EncodeToString(secret)), 0o600); err != nil {
			t.Fatal(err)
		}
		testCluster(t, dirA, dirB, testenv.PostgresSchema(t, "parley_test_"))
	})
}

func testCluster(t *testing.T, dirA, dirB, databaseURL string) {
	b := make([]byte, 6)
	rand.Read(b)
	subject := "parley.test." + hex.EncodeToString(b)
	node := func(c *server.Config) {
		c.NATSURL, c.NATSSubject = testenv.NATSURL(), subject
		c.DatabaseURL = databaseURL
		c.RateLimits = "other=unlimited"
		// Long enough that the burst of joins below falls in one window;
		// every other step waits for either form of an event.
		c.PresenceWindow = 500 * time.Millisecond
	}
	a := servertest.Start(t, servertest.Options{DataDir: dirA, Configure: node})
	bn := servertest.Start(t, servertest.Options{DataDir: dirB, Configure: node})
	connA, connB := a.Dial(t), bn.Dial(t)

	alice := connect(t, connA, "alice@A", a.Token(t, "alice", auth.RoleUser))
	bob := connect(t, connB, "bob@B", bn.Token(t, "bob", auth.RoleUser))

	// Presence crosses nodes.
	alice.next(cameOnline("bob"))
	users, err := chatv1.NewChatClient(connA).ListOnlineUsers(servertest.WithToken(context.Background(), a.Token(t, "alice", auth.RoleUser)), &chatv1.ListOnlineUsersRequest{})
	if err != nil || len(users.GetUsers()) != 2 {
		t.Fatalf("online users on A = %v, %v", users, err)
	}

	// Global chat: stored once, delivered on both nodes, in order.
	for _, text := range []string{"one", "two", "three"} {
		alice.next(replyTo(alice.send(sendRoom("general", text, ""))))
	}
	for i, text := range []string{"one", "two", "three"} {
		if m := bob.next(textIn("general", text)).GetMessage(); m.GetSeq() != int64(i+1) || m.GetSender() != "alice" {
			t.Fatalf("bob got %v", m)
		}
	}
	id := bob.send(sendRoom("general", "four from B", ""))
	if ack := bob.next(replyTo(id)).GetAck(); ack.GetSeq() != 4 {
		t.Fatalf("B's ack = %v (sequences are shared through the database)", ack)
	}
	alice.next(textIn("general", "four from B"))

	// Rooms: bob joins on B, alice on A sees him as a member.
	bob.next(replyTo(bob.send(join("ops"))))
	for i := 0; ; i++ { // B announces bob's rooms within a debounce interval
		rooms, err := chatv1.NewChatClient(connA).ListRooms(servertest.WithToken(context.Background(), a.Token(t, "alice", auth.RoleUser)), &chatv1.ListRoomsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(rooms.GetRooms()) == 2 && rooms.GetRooms()[1].GetName() == "ops" && rooms.GetRooms()[1].GetOnlineCount() == 1 {
			break
		}
		if i == 200 {
			t.Fatalf("A never saw bob in ops: %v", rooms)
		}
		time.Sleep(10 * time.Millisecond)
	}
	joined := alice.next(replyTo(alice.send(join("ops")))).GetRoomJoined()
	if joined.GetMemberCount() != 2 || joined.GetMembers()[0] != "alice" || joined.GetMembers()[1] != "bob" {
		t.Fatalf("room joined on A = %v", joined)
	}
	bob.next(func(ev *chatv1.ServerEvent) bool { return ev.GetMemberJoined().GetUsername() == "alice" })
	alice.next(replyTo(alice.send(sendRoom("ops", "ops from A", ""))))
	bob.next(textIn("ops", "ops from A"))

	// Private messages and typing.
	alice.next(replyTo(alice.send(sendPrivate("bob", "psst"))))
	if m := bob.next(func(ev *chatv1.ServerEvent) bool { return ev.GetMessage().GetText() == "psst" }).GetMessage(); m.GetSender() != "alice" {
		t.Fatalf("private = %v", m)
	}
	bob.send(&chatv1.ClientEvent{Event: &chatv1.ClientEvent_Typing{Typing: &chatv1.Typing{Conversation: userConv("alice"), Typing: true}}})
	if ty := alice.next(func(ev *chatv1.ServerEvent) bool { return ev.GetTyping() != nil }).GetTyping(); ty.GetUsername() != "bob" || !ty.GetTyping() {
		t.Fatalf("typing = %v", ty)
	}

	// Admin on A: stats list both nodes; broadcast and disconnect reach B.
	admin := chatv1.NewAdminClient(connA)
	actx := servertest.WithToken(context.Background(), a.Token(t, "root", auth.RoleAdmin))
	st, err := admin.GetStats(actx, &chatv1.GetStatsRequest{})
	if err != nil || len(st.GetNodes()) != 2 || st.GetTotal().GetConnections() != 2 || st.GetTotal().GetOnlineUsers() != 2 {
		t.Fatalf("stats = %v, %v", st, err)
	}

	// A burst of joins on A reaches bob on B as one RoomMembersChanged,
	// counting B's member too.
	dave := connect(t, connA, "dave@A", a.Token(t, "dave", auth.RoleUser))
	erin := connect(t, connA, "erin@A", a.Token(t, "erin", auth.RoleUser))
	idD, idE := dave.send(join("ops")), erin.send(join("ops"))
	dave.next(replyTo(idD))
	erin.next(replyTo(idE))
	mc := bob.next(func(ev *chatv1.ServerEvent) bool { return ev.GetRoomMembersChanged() != nil }).GetRoomMembersChanged()
	if mc.GetRoom() != "ops" || !slices.Equal(mc.GetJoined(), []string{"dave", "erin"}) || len(mc.GetLeft()) != 0 || mc.GetMemberCount() != 4 {
		t.Fatalf("room members changed on B = %v", mc)
	}

	// Counts span the cluster: alice, dave and erin on A, bob on B.
	if br, err := admin.Broadcast(actx, &chatv1.BroadcastRequest{Text: "cluster-wide"}); err != nil || br.GetSessions() != 4 {
		t.Fatalf("broadcast reached %d sessions (%v), want 4 on both nodes", br.GetSessions(), err)
	}
	bob.next(func(ev *chatv1.ServerEvent) bool { return ev.GetAdminBroadcast().GetText() == "cluster-wide" })
	if br, err := admin.Broadcast(actx, &chatv1.BroadcastRequest{Text: "ops only", Room: "ops"}); err != nil || br.GetSessions() != 4 {
		t.Fatalf("room broadcast reached %d sessions (%v), want 4", br.GetSessions(), err)
	}
	bob.next(func(ev *chatv1.ServerEvent) bool { return ev.GetAdminBroadcast().GetText() == "ops only" })
	if dr, err := admin.DisconnectUser(actx, &chatv1.DisconnectUserRequest{Username: "bob"}); err != nil || dr.GetSessions() != 1 {
		t.Fatalf("disconnect on A closed %d of bob's sessions on B (%v), want 1", dr.GetSessions(), err)
	}
	bob.ended()
	alice.next(wentOffline("bob"))

	// A node that stops takes its users offline everywhere at once.
	carol := connect(t, connB, "carol@B", bn.Token(t, "carol", auth.RoleUser))
	_ = carol
	alice.next(cameOnline("carol"))
	bn.Stop()
	alice.next(wentOffline("carol"))
}
