package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/servertest"
)

// TestTutorialChat walks the Socket.IO tutorial's global chat with several
// clients: online list, come online and offline, recent messages on
// connect, broadcast to everyone, typing and its expiry.
func TestTutorialChat(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
		c.TypingTimeout = 300 * time.Millisecond
		c.PresenceWindow = -1 // one event per change, as the tutorial sends them
	}})
	conn := srv.Dial(t)

	alice := connect(t, conn, "alice", srv.Token(t, "alice", auth.RoleUser))
	bob := connect(t, conn, "bob", srv.Token(t, "bob", auth.RoleUser))

	// Alice sees bob come online; bob's snapshot lists both.
	on := alice.next(func(ev *chatv1.ServerEvent) bool { return ev.GetUserOnline() != nil })
	if got := on.GetUserOnline().GetUser().GetUsername(); got != "bob" || on.GetUserOnline().GetOnlineCount() != 2 {
		t.Fatalf("user online = %v", on)
	}
	snap := bob.next(func(ev *chatv1.ServerEvent) bool { return ev.GetOnlineUsers() != nil }).GetOnlineUsers()
	if len(snap.GetUsers()) != 2 || snap.GetUsers()[0].GetUsername() != "alice" || snap.GetUsers()[1].GetUsername() != "bob" {
		t.Fatalf("online snapshot = %v", snap)
	}
	restored := bob.next(func(ev *chatv1.ServerEvent) bool { return ev.GetStateRestored() != nil })
	if !restored.GetStateRestored().GetComplete() {
		t.Fatalf("state restored = %v", restored)
	}

	// A second device of bob does not announce bob again.
	bob2 := connect(t, conn, "bob2", srv.Token(t, "bob", auth.RoleUser))
	bob2.next(func(ev *chatv1.ServerEvent) bool { return ev.GetStateRestored() != nil })

	// Broadcast to everyone in general, the tutorial's io.emit.
	id := alice.send(sendRoom("general", "hello everyone", "m1"))
	ack := alice.next(replyTo(id)).GetAck()
	if ack == nil || ack.GetSeq() != 1 || ack.GetDuplicate() {
		t.Fatalf("ack = %v", ack)
	}
	for _, c := range []*client{alice, bob, bob2} {
		m := c.next(textIn("general", "hello everyone")).GetMessage()
		if m.GetSender() != "alice" || m.GetSeq() != 1 || m.GetId() != ack.GetMessageId() || m.GetClientMsgId() != "m1" || m.GetSentAt() == nil {
			t.Fatalf("%s got %v", c.name, m)
		}
	}
	for _, ev := range alice.sync() {
		if ev.GetUserOnline() != nil {
			t.Fatalf("bob's second session announced him again: %v", ev)
		}
	}

	// Typing: start reaches the others, and expires by itself.
	alice.send(&chatv1.ClientEvent{Event: &chatv1.ClientEvent_Typing{Typing: &chatv1.Typing{Conversation: roomConv("general"), Typing: true}}})
	typ := bob.next(func(ev *chatv1.ServerEvent) bool { return ev.GetTyping() != nil }).GetTyping()
	if typ.GetUsername() != "alice" || !typ.GetTyping() || typ.GetConversation().GetRoom() != "general" {
		t.Fatalf("typing = %v", typ)
	}
	typ = bob.next(func(ev *chatv1.ServerEvent) bool { return ev.GetTyping() != nil }).GetTyping()
	if typ.GetUsername() != "alice" || typ.GetTyping() {
		t.Fatalf("typing did not expire: %v", typ)
	}
	// An explicit stop ends it at once; the typer never hears itself.
	bob.send(&chatv1.ClientEvent{Event: &chatv1.ClientEvent_Typing{Typing: &chatv1.Typing{Conversation: roomConv("general"), Typing: true}}})
	bob.send(&chatv1.ClientEvent{Event: &chatv1.ClientEvent_Typing{Typing: &chatv1.Typing{Conversation: roomConv("general"), Typing: false}}})
	if a, b := alice.next(func(ev *chatv1.ServerEvent) bool { return ev.GetTyping() != nil }), alice.next(func(ev *chatv1.ServerEvent) bool { return ev.GetTyping() != nil }); !a.GetTyping().GetTyping() || b.GetTyping().GetTyping() {
		t.Fatalf("typing start/stop = %v, %v", a, b)
	}
	for _, ev := range bob.sync() {
		if ev.GetTyping().GetUsername() == "bob" {
			t.Fatalf("bob heard his own typing: %v", ev)
		}
	}

	// Bob goes offline only when his last session closes.
	bob.close()
	if err := bob.ended(); status.Code(err) != codes.Canceled {
		t.Fatalf("bob ended with %v", err)
	}
	for _, ev := range alice.sync() {
		if ev.GetUserOffline() != nil {
			t.Fatalf("bob offline with a session left: %v", ev)
		}
	}
	bob2.close()
	off := alice.next(func(ev *chatv1.ServerEvent) bool { return ev.GetUserOffline() != nil }).GetUserOffline()
	if off.GetUser().GetUsername() != "bob" || off.GetOnlineCount() != 1 {
		t.Fatalf("user offline = %v", off)
	}
	users, err := chatv1.NewChatClient(conn).ListOnlineUsers(servertest.WithToken(context.Background(), srv.Token(t, "alice", auth.RoleUser)), &chatv1.ListOnlineUsersRequest{})
	if err != nil || len(users.GetUsers()) != 1 || users.GetUsers()[0].GetUsername() != "alice" {
		t.Fatalf("online users = %v, %v", users, err)
	}
}

// TestRecentMessagesOnConnect checks the last 50 of general arrive on
// connect, oldest first.
func TestRecentMessagesOnConnect(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: unlimitedMessages})
	conn := srv.Dial(t)
	alice := connect(t, conn, "alice", srv.Token(t, "alice", auth.RoleUser))
	for i := 1; i <= 60; i++ {
		id := alice.send(sendRoom("general", fmt.Sprintf("msg %d", i), ""))
		if alice.next(replyTo(id)).GetAck() == nil {
			t.Fatalf("message %d not acked", i)
		}
	}
	bob := connect(t, conn, "bob", srv.Token(t, "bob", auth.RoleUser))
	recent := bob.next(func(ev *chatv1.ServerEvent) bool { return ev.GetRecentMessages() != nil }).GetRecentMessages()
	msgs := recent.GetMessages()
	if recent.GetConversation().GetRoom() != "general" || len(msgs) != 50 {
		t.Fatalf("recent: %d messages in %v", len(msgs), recent.GetConversation())
	}
	for i, m := range msgs {
		if want := fmt.Sprintf("msg %d", i+11); m.GetText() != want || m.GetSeq() != int64(i+11) {
			t.Fatalf("recent[%d] = %q seq %d, want %q", i, m.GetText(), m.GetSeq(), want)
		}
	}
}

// TestPrivateMessages covers online, offline and unknown recipients.
func TestPrivateMessages(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	conn := srv.Dial(t)
	aliceTok, bobTok := srv.Token(t, "alice", auth.RoleUser), srv.Token(t, "bob", auth.RoleUser)
	alice := connect(t, conn, "alice", aliceTok)
	alice2 := connect(t, conn, "alice2", aliceTok)
	bob := connect(t, conn, "bob", bobTok)
	carol := connect(t, conn, "carol", srv.Token(t, "carol", auth.RoleUser))

	id := alice.send(sendPrivate("bob", "psst bob"))
	ack := alice.next(replyTo(id)).GetAck()
	if ack == nil || ack.GetConversation().GetUser() != "bob" || ack.GetSeq() != 1 {
		t.Fatalf("ack = %v", ack)
	}
	isDM := func(ev *chatv1.ServerEvent) bool { return ev.GetMessage().GetText() == "psst bob" }
	for _, c := range []*client{bob, alice2} {
		m := c.next(isDM).GetMessage()
		if m.GetSender() != "alice" || m.GetConversation().GetUser() != "bob" {
			t.Fatalf("%s got %v", c.name, m)
		}
	}
	for _, ev := range carol.sync() {
		if isDM(ev) {
			t.Fatal("carol saw a private message between alice and bob")
		}
	}

	// Unknown recipient.
	id = alice.send(sendPrivate("nobody", "hello?"))
	if ev := alice.next(replyTo(id)); errorCode(ev) != chatv1.ErrorCode_ERROR_CODE_NOT_FOUND {
		t.Fatalf("unknown recipient: %v", ev)
	}

	// Offline recipient gets it on the next connect.
	bob.close()
	bob.ended()
	// Bob's detach (and his last-seen time) is done once alice hears it.
	alice.next(wentOffline("bob"))
	id = alice.send(sendPrivate("bob", "while you were out"))
	alice.next(replyTo(id))
	bob = connect(t, conn, "bob-again", bobTok)
	rec := bob.next(func(ev *chatv1.ServerEvent) bool {
		return ev.GetRecentMessages().GetConversation().GetUser() != ""
	}).GetRecentMessages()
	if rec.GetConversation().GetUser() != "alice" || len(rec.GetMessages()) != 1 || rec.GetMessages()[0].GetText() != "while you were out" {
		t.Fatalf("offline delivery = %v", rec)
	}
	st := bob.next(func(ev *chatv1.ServerEvent) bool { return ev.GetStateRestored() != nil }).GetStateRestored()
	if st.GetMessagesReplayed() != 1 || !st.GetComplete() {
		t.Fatalf("state restored = %v", st)
	}

	// History of the conversation, from either side.
	h, err := chatv1.NewChatClient(conn).GetHistory(servertest.WithToken(context.Background(), bobTok), &chatv1.GetHistoryRequest{Conversation: userConv("alice")})
	if err != nil || len(h.GetMessages()) != 2 || h.GetMessages()[1].GetSeq() != 2 {
		t.Fatalf("history = %v, %v", h, err)
	}
}

// TestRooms covers join, member lists, room messages for members only,
// non-members refused, leave, and the rooms list.
func TestRooms(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	conn := srv.Dial(t)
	alice := connect(t, conn, "alice", srv.Token(t, "alice", auth.RoleUser))
	bob := connect(t, conn, "bob", srv.Token(t, "bob", auth.RoleUser))
	carol := connect(t, conn, "carol", srv.Token(t, "carol", auth.RoleUser))

	id := alice.send(join("lobby"))
	if j := alice.next(replyTo(id)).GetRoomJoined(); j.GetRoom() != "lobby" || j.GetMemberCount() != 1 {
		t.Fatalf("alice joined = %v", j)
	}
	id = bob.send(join("lobby"))
	if j := bob.next(replyTo(id)).GetRoomJoined(); j.GetMemberCount() != 2 || len(j.GetMembers()) != 2 || j.GetMembers()[0] != "alice" {
		t.Fatalf("bob joined = %v", j)
	}
	// Bob's join falls in alice's window (100 ms): alone it is a
	// MemberJoined, with alice's own join a RoomMembersChanged.
	ev := alice.next(func(ev *chatv1.ServerEvent) bool {
		return ev.GetMemberJoined() != nil || ev.GetRoomMembersChanged() != nil
	})
	if mj := ev.GetMemberJoined(); mj != nil && (mj.GetUsername() != "bob" || mj.GetRoom() != "lobby" || mj.GetMemberCount() != 2) {
		t.Fatalf("member joined = %v", mj)
	}
	if mc := ev.GetRoomMembersChanged(); mc != nil && (!slices.Equal(mc.GetJoined(), []string{"alice", "bob"}) || mc.GetRoom() != "lobby" || mc.GetMemberCount() != 2) {
		t.Fatalf("room members changed = %v", mc)
	}

	id = bob.send(sendRoom("lobby", "hi lobby", ""))
	bob.next(replyTo(id))
	alice.next(textIn("lobby", "hi lobby"))
	for _, ev := range carol.sync() {
		if ev.GetMessage() != nil || ev.GetMemberJoined() != nil || ev.GetRoomMembersChanged() != nil {
			t.Fatalf("carol, not a member, saw %v", ev)
		}
	}
	id = carol.send(sendRoom("lobby", "let me in", ""))
	if ev := carol.next(replyTo(id)); errorCode(ev) != chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED {
		t.Fatalf("non-member send: %v", ev)
	}
	if _, err := chatv1.NewChatClient(conn).GetHistory(servertest.WithToken(context.Background(), srv.Token(t, "carol", auth.RoleUser)), &chatv1.GetHistoryRequest{Conversation: roomConv("lobby")}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("non-member history: %v", err)
	}

	id = carol.send(&chatv1.ClientEvent{Event: &chatv1.ClientEvent_ListRooms{ListRooms: &chatv1.ListRoomsCommand{}}})
	rooms := carol.next(replyTo(id)).GetRoomsList().GetRooms()
	if len(rooms) != 2 || rooms[0].GetName() != "general" || rooms[0].GetMemberCount() != 3 || rooms[0].GetOnlineCount() != 3 ||
		rooms[1].GetName() != "lobby" || rooms[1].GetMemberCount() != 2 || rooms[1].GetOnlineCount() != 2 || rooms[1].GetJoined() {
		t.Fatalf("rooms = %v", rooms)
	}

	id = bob.send(&chatv1.ClientEvent{Event: &chatv1.ClientEvent_LeaveRoom{LeaveRoom: &chatv1.LeaveRoom{Room: "lobby"}}})
	if bob.next(replyTo(id)).GetRoomLeft().GetRoom() != "lobby" {
		t.Fatal("no room left reply")
	}
	ml := alice.next(func(ev *chatv1.ServerEvent) bool { return ev.GetMemberLeft() != nil }).GetMemberLeft()
	if ml.GetUsername() != "bob" || ml.GetMemberCount() != 1 {
		t.Fatalf("member left = %v", ml)
	}
	id = bob.send(&chatv1.ClientEvent{Event: &chatv1.ClientEvent_LeaveRoom{LeaveRoom: &chatv1.LeaveRoom{Room: "general"}}})
	if ev := bob.next(replyTo(id)); errorCode(ev) != chatv1.ErrorCode_ERROR_CODE_FAILED_PRECONDITION {
		t.Fatalf("leaving general: %v", ev)
	}

	// The last member leaving removes the room: it has no stored member.
	id = alice.send(&chatv1.ClientEvent{Event: &chatv1.ClientEvent_LeaveRoom{LeaveRoom: &chatv1.LeaveRoom{Room: "lobby"}}})
	alice.next(replyTo(id))
	list, err := chatv1.NewChatClient(conn).ListRooms(servertest.WithToken(context.Background(), srv.Token(t, "carol", auth.RoleUser)), &chatv1.ListRoomsRequest{})
	if err != nil || len(list.GetRooms()) != 1 {
		t.Fatalf("rooms after everyone left = %v, %v", list, err)
	}
}

// TestFiles uploads a file, posts it to a room, and checks who may
// download it.
func TestFiles(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	conn := srv.Dial(t)
	aliceTok, bobTok, carolTok := srv.Token(t, "alice", auth.RoleUser), srv.Token(t, "bob", auth.RoleUser), srv.Token(t, "carol", auth.RoleUser)
	alice := connect(t, conn, "alice", aliceTok)
	bob := connect(t, conn, "bob", bobTok)
	for _, c := range []*client{alice, bob} {
		c.next(replyTo(c.send(join("team"))))
	}

	content := make([]byte, 150_000) // three chunks
	rand.Read(content)
	ref := upload(t, conn, aliceTok, "plan.bin", "application/octet-stream", content)
	if !fileIDPattern.MatchString(ref.GetId()) || ref.GetSize() != int64(len(content)) || ref.GetName() != "plan.bin" {
		t.Fatalf("upload = %v", ref)
	}

	// Carol cannot read it before it is shared with her, nor can bob.
	if _, err := download(conn, carolTok, ref.GetId()); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("carol download before sharing: %v", err)
	}
	id := alice.send(&chatv1.ClientEvent{Event: &chatv1.ClientEvent_SendFile{SendFile: &chatv1.SendFile{Conversation: roomConv("team"), FileId: ref.GetId()}}})
	if alice.next(replyTo(id)).GetAck() == nil {
		t.Fatal("file message not acked")
	}
	fm := bob.next(func(ev *chatv1.ServerEvent) bool { return ev.GetMessage().GetFile() != nil }).GetMessage()
	if fm.GetFile().GetId() != ref.GetId() || fm.GetFile().GetName() != "plan.bin" || fm.GetFile().GetSize() != int64(len(content)) || fm.GetSender() != "alice" {
		t.Fatalf("file message = %v", fm)
	}
	got, err := download(conn, bobTok, ref.GetId())
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("bob download: %d bytes, %v", len(got), err)
	}
	if _, err := download(conn, carolTok, ref.GetId()); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("carol (not in team) download: %v", err)
	}
	if _, err := download(conn, carolTok, hex.EncodeToString(make([]byte, 32))); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown file: %v", err)
	}

	// Sizes are enforced: declared size must match, and the limit holds.
	stream, _ := chatv1.NewChatClient(conn).UploadFile(servertest.WithToken(context.Background(), aliceTok))
	stream.Send(&chatv1.UploadFileRequest{Data: &chatv1.UploadFileRequest_Info{Info: &chatv1.FileInfo{Name: "big", Size: 11 << 20}}})
	if _, err := stream.CloseAndRecv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("oversized upload: %v", err)
	}
	stream, _ = chatv1.NewChatClient(conn).UploadFile(servertest.WithToken(context.Background(), aliceTok))
	stream.Send(&chatv1.UploadFileRequest{Data: &chatv1.UploadFileRequest_Info{Info: &chatv1.FileInfo{Name: "short", Size: 10}}})
	stream.Send(&chatv1.UploadFileRequest{Data: &chatv1.UploadFileRequest_Chunk{Chunk: []byte("abc")}})
	if _, err := stream.CloseAndRecv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("short upload: %v", err)
	}
}

func upload(t *testing.T, conn *grpc.ClientConn, token, name, ctype string, content []byte) *chatv1.FileRef {
	t.Helper()
	stream, err := chatv1.NewChatClient(conn).UploadFile(servertest.WithToken(context.Background(), token))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&chatv1.UploadFileRequest{Data: &chatv1.UploadFileRequest_Info{Info: &chatv1.FileInfo{Name: name, ContentType: ctype, Size: int64(len(content))}}}); err != nil {
		t.Fatal(err)
	}
	for rest := content; len(rest) > 0; {
		n := min(len(rest), 64<<10)
		if err := stream.Send(&chatv1.UploadFileRequest{Data: &chatv1.UploadFileRequest_Chunk{Chunk: rest[:n]}}); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	return resp.GetFile()
}

func download(conn *grpc.ClientConn, token, id string) ([]byte, error) {
	stream, err := chatv1.NewChatClient(conn).DownloadFile(servertest.WithToken(context.Background(), token), &chatv1.DownloadFileRequest{FileId: id})
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return buf.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
		buf.Write(resp.GetChunk())
	}
}

func unlimitedMessages(c *server.Config) {
	c.RateLimits = "message=unlimited"
}

// TestPresenceIsCoalesced: a burst of arrivals reaches each client as one
// PresenceChanged per window, not one event per user; a lone change is
// still a UserOnline/UserOffline.
func TestPresenceIsCoalesced(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) { c.PresenceWindow = 2 * time.Second }})
	conn := srv.Dial(t)
	watcher := connect(t, conn, "watcher", srv.Token(t, "watcher", auth.RoleUser))
	var toks []string
	for i := range 20 {
		toks = append(toks, srv.Token(t, fmt.Sprintf("crowd%02d", i), auth.RoleUser))
	}
	for i, tok := range toks {
		connect(t, conn, fmt.Sprintf("crowd%02d", i), tok)
	}
	seen := map[string]bool{}
	events := 0
	for len(seen) < 20 {
		ev := watcher.next(func(ev *chatv1.ServerEvent) bool { return ev.GetPresenceChanged() != nil || ev.GetUserOnline() != nil })
		events++
		if u := ev.GetUserOnline().GetUser(); u != nil {
			seen[u.GetUsername()] = true
		}
		for _, u := range ev.GetPresenceChanged().GetOnline() {
			seen[u.GetUsername()] = true
		}
	}
	if events > 5 { // 20 connects fit in one or two 2 s windows
		t.Fatalf("20 arrivals took %d events; want them coalesced", events)
	}
}
