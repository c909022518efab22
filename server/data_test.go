package server_test

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
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

func replayCap250(c *server.Config) {
	unlimitedMessages(c)
	c.ReplayCap = 250
}

// post sends the n messages send(1)..send(n) as c, without waiting for
// each answer but for every hundredth, so that no wait is long on a busy
// machine. What c receives meanwhile is read and dropped.
func post(c *client, n int, send func(i int) *chatv1.ClientEvent) {
	c.t.Helper()
	for i := 1; i <= n; i++ {
		id := c.send(send(i))
		if i%100 == 0 || i == n {
			if ev := c.until(replyTo(id)); ev[len(ev)-1].GetAck() == nil {
				c.t.Fatalf("%s: post %d answered %v", c.name, i, ev[len(ev)-1])
			}
		}
	}
}

// resumed sends a Resume and returns what answers it: the sequences
// replayed per conversation (in the order received), and StateRestored.
// Every event answering the Resume must carry its request id.
func resumed(t *testing.T, c *client, cursors ...*chatv1.ConversationCursor) (map[string][]int64, *chatv1.StateRestored) {
	t.Helper()
	id := c.send(&chatv1.ClientEvent{Event: &chatv1.ClientEvent_Resume{Resume: &chatv1.Resume{Cursors: cursors}}})
	seqs := map[string][]int64{}
	for _, ev := range c.until(func(ev *chatv1.ServerEvent) bool { return ev.GetStateRestored() != nil || ev.GetError() != nil }) {
		if ev.GetError() != nil {
			t.Fatalf("resume refused: %v", ev)
		}
		rm := ev.GetRecentMessages()
		if rm == nil && ev.GetStateRestored() == nil {
			continue // live traffic
		}
		if ev.GetRequestId() != id {
			t.Fatalf("event answering resume %q carries request id %q: %.300v", id, ev.GetRequestId(), ev)
		}
		if rm != nil {
			k := rm.GetConversation().GetRoom() + "@" + rm.GetConversation().GetUser()
			for _, m := range rm.GetMessages() {
				seqs[k] = append(seqs[k], m.GetSeq())
			}
			continue
		}
		return seqs, ev.GetStateRestored()
	}
	panic("unreachable")
}

func cursor(conv *chatv1.Conversation, last int64) *chatv1.ConversationCursor {
	return &chatv1.ConversationCursor{Conversation: conv, LastSeq: last}
}

// span is the sequences from..to.
func span(from, to int64) []int64 {
	var out []int64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func equalSeqs(a, b []int64) bool {
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

// TestResumeReplaysOldestMissedFirst: a Resume replays from the oldest
// missed message (last_seq 0: the first), in order, up to the cap (250 here),
// says complete=false only while something is left, and every event
// answering it carries its request id.
func TestResumeReplaysOldestMissedFirst(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: replayCap250})
	conn := srv.Dial(t)
	alice := connect(t, conn, "alice", srv.Token(t, "alice", auth.RoleUser))
	bobTok := srv.Token(t, "bob", auth.RoleUser)
	post(alice, 260, func(i int) *chatv1.ClientEvent { return sendRoom("general", fmt.Sprint("general ", i), "") })
	alice.next(replyTo(alice.send(sendPrivate("bob", "psst"))))
	bob := connect(t, conn, "bob", bobTok)
	bob.until(func(ev *chatv1.ServerEvent) bool { return ev.GetStateRestored() != nil }) // the connect-time restore

	general, dm := roomConv("general"), userConv("alice")
	for _, c := range []struct {
		name     string
		cursors  []*chatv1.ConversationCursor
		general  []int64
		dm       []int64
		complete bool
	}{
		{"from the first message, cut at the cap", []*chatv1.ConversationCursor{cursor(general, 0)}, span(1, 250), nil, false},
		{"the rest", []*chatv1.ConversationCursor{cursor(general, 250)}, span(251, 260), nil, true},
		{"exactly the cap", []*chatv1.ConversationCursor{cursor(general, 10), cursor(dm, 1)}, span(11, 260), nil, true},
		{"the cap spent before a conversation with news", []*chatv1.ConversationCursor{cursor(general, 10), cursor(dm, 0)}, span(11, 260), nil, false},
		{"the other conversation", []*chatv1.ConversationCursor{cursor(general, 260), cursor(dm, 0)}, nil, []int64{1}, true},
	} {
		seqs, restored := resumed(t, bob, c.cursors...)
		if !equalSeqs(seqs["general@"], c.general) || !equalSeqs(seqs["@alice"], c.dm) || len(seqs) > 2 {
			t.Fatalf("%s: replayed general %v... (%d), dm %v", c.name, head(seqs["general@"]), len(seqs["general@"]), seqs["@alice"])
		}
		if restored.GetComplete() != c.complete || int(restored.GetMessagesReplayed()) != len(c.general)+len(c.dm) {
			t.Fatalf("%s: state restored = %v", c.name, restored)
		}
	}

	// A refusal answers with the request id and replays nothing.
	id := bob.send(&chatv1.ClientEvent{Event: &chatv1.ClientEvent_Resume{Resume: &chatv1.Resume{Cursors: []*chatv1.ConversationCursor{
		cursor(general, 0), cursor(roomConv("secret"), 0),
	}}}})
	evs := bob.until(replyTo(id))
	if last := evs[len(evs)-1]; errorCode(last) != chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED {
		t.Fatalf("resume naming a room bob is not in: %v", last)
	}
	for _, ev := range evs {
		if ev.GetRecentMessages() != nil || ev.GetStateRestored() != nil {
			t.Fatalf("a refused resume replayed %v", ev)
		}
	}
}

func head(s []int64) []int64 { return s[:min(len(s), 5)] }

// TestDirectMessagesReachNewUsers: private messages to a user who has
// never connected (made by EnsureUser, as `parleyd user add` does, or by
// Auth.Register) reach it on its first connect, up to the cap, with
// complete=false when more wait.
func TestDirectMessagesReachNewUsers(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: replayCap250})
	conn := srv.Dial(t)
	alice := connect(t, conn, "alice", srv.Token(t, "alice", auth.RoleUser))
	carolTok := srv.Token(t, "carol", auth.RoleUser) // EnsureUser
	reg, err := chatv1.NewAuthClient(conn).Register(context.Background(), &chatv1.RegisterRequest{Username: "dave", Password: "correct horse battery"})
	if err != nil {
		t.Fatal(err)
	}
	erinTok := srv.Token(t, "erin", auth.RoleUser)

	alice.next(replyTo(alice.send(sendPrivate("carol", "hello carol"))))
	alice.next(replyTo(alice.send(sendPrivate("dave", "hello dave"))))
	post(alice, 251, func(i int) *chatv1.ClientEvent { return sendPrivate("erin", fmt.Sprint("erin ", i)) })

	for _, c := range []struct {
		name, token string
		want        []int64
		complete    bool
	}{
		{"carol", carolTok, []int64{1}, true},
		{"dave", reg.GetTokens().GetAccessToken(), []int64{1}, true},
		{"erin", erinTok, span(1, 250), false},
	} {
		s := connect(t, conn, c.name, c.token)
		var got []int64
		var restored *chatv1.StateRestored
		for _, ev := range s.until(func(ev *chatv1.ServerEvent) bool { return ev.GetStateRestored() != nil }) {
			if rm := ev.GetRecentMessages(); rm.GetConversation().GetUser() == "alice" {
				for _, m := range rm.GetMessages() {
					if m.GetSender() != "alice" {
						t.Fatalf("%s: restored %v", c.name, m)
					}
					got = append(got, m.GetSeq())
				}
			}
			restored = ev.GetStateRestored()
		}
		if !equalSeqs(got, c.want) || restored.GetComplete() != c.complete || int(restored.GetMessagesReplayed()) != len(c.want) {
			t.Fatalf("%s's first connect restored %v... (%d), %v", c.name, head(got), len(got), restored)
		}
	}
}

// TestHistoryAfterSeqZero: GetHistory with after_seq set to 0 reads from
// the start; unset, the latest page.
func TestHistoryAfterSeqZero(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: unlimitedMessages})
	conn := srv.Dial(t)
	tok := srv.Token(t, "alice", auth.RoleUser)
	alice := connect(t, conn, "alice", tok)
	post(alice, 120, func(i int) *chatv1.ClientEvent { return sendRoom("general", fmt.Sprint("general ", i), "") })
	chat := chatv1.NewChatClient(conn)
	ctx := servertest.WithToken(context.Background(), tok)
	zero := int64(0)
	for _, c := range []struct {
		name     string
		req      *chatv1.GetHistoryRequest
		from, to int64
		more     bool
	}{
		{"after_seq 0", &chatv1.GetHistoryRequest{Conversation: roomConv("general"), AfterSeq: &zero, Limit: 100}, 1, 100, true},
		{"after_seq unset", &chatv1.GetHistoryRequest{Conversation: roomConv("general"), Limit: 100}, 21, 120, true},
	} {
		resp, err := chat.GetHistory(ctx, c.req)
		if err != nil {
			t.Fatal(err)
		}
		var got []int64
		for _, m := range resp.GetMessages() {
			got = append(got, m.GetSeq())
		}
		if !equalSeqs(got, span(c.from, c.to)) || resp.GetHasMore() != c.more {
			t.Fatalf("%s: got %v... (%d), more %v", c.name, head(got), len(got), resp.GetHasMore())
		}
	}
	if _, err := chat.GetHistory(ctx, &chatv1.GetHistoryRequest{Conversation: roomConv("general"), AfterSeq: &zero, BeforeSeq: 5}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("before_seq with after_seq 0: %v", err)
	}
}

// TestRestoreBeyondTheStoreCap: a connect-time restore is cut at the
// store's own cap (1000 direct messages) when the replay cap is higher,
// and says so with complete=false.
func TestRestoreBeyondTheStoreCap(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
		unlimitedMessages(c)
		c.ReplayCap = 1500
	}})
	conn := srv.Dial(t)
	alice := connect(t, conn, "alice", srv.Token(t, "alice", auth.RoleUser))
	frankTok := srv.Token(t, "frank", auth.RoleUser)
	post(alice, 1001, func(i int) *chatv1.ClientEvent { return sendPrivate("frank", fmt.Sprint("frank ", i)) })
	frank := connect(t, conn, "frank", frankTok)
	var got []int64
	var restored *chatv1.StateRestored
	for _, ev := range frank.until(func(ev *chatv1.ServerEvent) bool { return ev.GetStateRestored() != nil }) {
		for _, m := range ev.GetRecentMessages().GetMessages() {
			if m.GetSender() == "alice" {
				got = append(got, m.GetSeq())
			}
		}
		restored = ev.GetStateRestored()
	}
	if !equalSeqs(got, span(1, 1000)) || restored.GetComplete() || restored.GetMessagesReplayed() != 1000 {
		t.Fatalf("restored %v... (%d), %v", head(got), len(got), restored)
	}
}
