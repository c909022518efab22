package server_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/servertest"
)

// roomRow is a RoomInfo as the room list checks compare it.
type roomRow struct {
	name            string
	members, online int32
	joined          bool
}

func roomRows(rooms []*chatv1.RoomInfo) []roomRow {
	out := make([]roomRow, len(rooms))
	for i, r := range rooms {
		out[i] = roomRow{r.GetName(), r.GetMemberCount(), r.GetOnlineCount(), r.GetJoined()}
	}
	return out
}

// TestRoomsListStoredMembers: ListRooms and the in-stream listRooms list
// every room with a stored member, online or not, with its stored member
// count and, apart, how many members are online.
func TestRoomsListStoredMembers(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	conn := srv.Dial(t)
	aliceTok, bobTok := srv.Token(t, "alice", auth.RoleUser), srv.Token(t, "bob", auth.RoleUser)
	srv.Token(t, "carol", auth.RoleUser) // a user who never connects

	alice := connect(t, conn, "alice", aliceTok)
	for _, r := range []string{"attic", "lobby"} {
		alice.next(replyTo(alice.send(join(r))))
	}
	bob := connect(t, conn, "bob", bobTok)
	bob.next(replyTo(bob.send(join("lobby"))))
	alice.close()
	if err := alice.ended(); status.Code(err) != codes.Canceled {
		t.Fatalf("alice's stream ended with %v", err)
	}
	// alice's going offline has been handled once bob hears of it.
	bob.next(wentOffline("alice"))

	want := []roomRow{
		{"attic", 1, 0, false}, // nobody online: listed all the same
		{"general", 3, 1, true},
		{"lobby", 2, 1, true},
	}
	id := bob.send(&chatv1.ClientEvent{Event: &chatv1.ClientEvent_ListRooms{ListRooms: &chatv1.ListRoomsCommand{}}})
	if got := roomRows(bob.next(replyTo(id)).GetRoomsList().GetRooms()); !equalRows(got, want) {
		t.Fatalf("in-stream rooms:\n got %v\nwant %v", got, want)
	}
	list, err := chatv1.NewChatClient(conn).ListRooms(servertest.WithToken(context.Background(), bobTok), &chatv1.ListRoomsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := roomRows(list.GetRooms()); !equalRows(got, want) {
		t.Fatalf("ListRooms:\n got %v\nwant %v", got, want)
	}
}

func equalRows(a, b []roomRow) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// convRow is a ConversationSummary as the checks compare it.
type convRow struct {
	room, user string
	lastSeq    int64
	lastText   string
}

func convRows(cs []*chatv1.ConversationSummary) []convRow {
	out := make([]convRow, len(cs))
	for i, c := range cs {
		out[i] = convRow{c.GetConversation().GetRoom(), c.GetConversation().GetUser(), c.GetLastSeq(), c.GetLastMessage().GetText()}
	}
	return out
}

// TestListConversations: every room and direct conversation the caller is
// in, whoever wrote first, with its last message and sequence, the most
// recently active first and rooms without a message last, paged with
// opaque tokens, behind the same gate as the other calls.
func TestListConversations(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	conn := srv.Dial(t)
	chat := chatv1.NewChatClient(conn)
	aliceTok := srv.Token(t, "alice", auth.RoleUser)
	alice := connect(t, conn, "alice", aliceTok)
	aaron := connect(t, conn, "aaron", srv.Token(t, "aaron", auth.RoleUser))
	bob := connect(t, conn, "bob", srv.Token(t, "bob", auth.RoleUser))

	alice.next(replyTo(alice.send(join("quiet"))))
	bob.next(replyTo(bob.send(join("elsewhere"))))
	bob.next(replyTo(bob.send(sendRoom("elsewhere", "not alice's", ""))))
	alice.next(replyTo(alice.send(sendRoom("general", "morning", ""))))
	aaron.next(replyTo(aaron.send(sendPrivate("alice", "from aaron")))) // key d:aaron:alice
	alice.next(replyTo(alice.send(sendPrivate("bob", "to bob 1"))))
	alice.next(replyTo(alice.send(sendPrivate("bob", "to bob 2"))))

	want := []convRow{
		{user: "bob", lastSeq: 2, lastText: "to bob 2"},
		{user: "aaron", lastSeq: 1, lastText: "from aaron"},
		{room: "general", lastSeq: 1, lastText: "morning"},
		{room: "quiet"},
	}
	ctx := servertest.WithToken(context.Background(), aliceTok)
	var got []convRow
	req := &chatv1.ListConversationsRequest{PageSize: 3}
	for pages := 1; ; pages++ {
		resp, err := chat.ListConversations(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, convRows(resp.GetConversations())...)
		if resp.GetNextPageToken() == "" {
			if pages != 2 {
				t.Fatalf("%d pages of 3 for %d conversations", pages, len(want))
			}
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	if len(got) != len(want) {
		t.Fatalf("conversations:\n got %v\nwant %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("conversations:\n got %v\nwant %v", got, want)
		}
	}

	resp, err := chat.ListConversations(ctx, &chatv1.ListConversationsRequest{PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	if m := resp.GetConversations()[0].GetLastMessage(); m.GetSender() != "alice" || m.GetSeq() != 2 || m.GetId() == "" || m.GetSentAt() == nil {
		t.Fatalf("last message = %v", m)
	}

	for _, c := range []struct {
		ctx  context.Context
		req  *chatv1.ListConversationsRequest
		code codes.Code
	}{
		{context.Background(), &chatv1.ListConversationsRequest{}, codes.Unauthenticated},
		{ctx, &chatv1.ListConversationsRequest{PageToken: "bogus"}, codes.InvalidArgument},
		{ctx, &chatv1.ListConversationsRequest{PageSize: 201}, codes.InvalidArgument},
	} {
		if _, err := chat.ListConversations(c.ctx, c.req); status.Code(err) != c.code {
			t.Errorf("ListConversations(%v) = %v, want %v", c.req, err, c.code)
		}
	}
}
