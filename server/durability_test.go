package server_test

import (
	"context"
	"fmt"
	"testing"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/servertest"
)

// TestRestartKeepsHistoryAndMemberships stops the server and starts a new
// one on the same data directory.
func TestRestartKeepsHistoryAndMemberships(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := servertest.Start(t, servertest.Options{DataDir: dir})
	conn := srv.Dial(t)
	tok := srv.Token(t, "alice", auth.RoleUser)
	alice := connect(t, conn, "alice", tok)
	alice.next(replyTo(alice.send(join("book-club"))))
	for i := 1; i <= 5; i++ {
		alice.next(replyTo(alice.send(sendRoom("book-club", fmt.Sprintf("chapter %d", i), ""))))
	}
	alice.next(replyTo(alice.send(sendRoom("general", "bye", ""))))
	srv.Stop()
	n := alice.next(func(ev *chatv1.ServerEvent) bool { return ev.GetServerNotice() != nil }).GetServerNotice()
	if n.GetKind() != chatv1.NoticeKind_NOTICE_KIND_SHUTDOWN || n.GetReconnectAfter().AsDuration() <= 0 {
		t.Fatalf("shutdown notice = %v", n)
	}
	alice.ended()

	srv2 := servertest.Start(t, servertest.Options{DataDir: dir})
	conn2 := srv2.Dial(t)
	alice = connect(t, conn2, "alice-again", tok) // the secret survived too
	st := alice.next(func(ev *chatv1.ServerEvent) bool { return ev.GetStateRestored() != nil }).GetStateRestored()
	if len(st.GetRooms()) != 1 || st.GetRooms()[0] != "book-club" {
		t.Fatalf("restored rooms = %v", st)
	}
	h, err := chatv1.NewChatClient(conn2).GetHistory(servertest.WithToken(context.Background(), tok), &chatv1.GetHistoryRequest{Conversation: roomConv("book-club")})
	if err != nil || len(h.GetMessages()) != 5 {
		t.Fatalf("history = %v, %v", h, err)
	}
	for i, m := range h.GetMessages() {
		if m.GetSeq() != int64(i+1) || m.GetText() != fmt.Sprintf("chapter %d", i+1) {
			t.Fatalf("history[%d] = %v", i, m)
		}
	}
	// Sequences continue after the restart.
	id := alice.send(sendRoom("book-club", "chapter 6", ""))
	if ack := alice.next(replyTo(id)).GetAck(); ack.GetSeq() != 6 {
		t.Fatalf("ack after restart = %v", ack)
	}
	// Paging backwards.
	h, err = chatv1.NewChatClient(conn2).GetHistory(servertest.WithToken(context.Background(), tok), &chatv1.GetHistoryRequest{Conversation: roomConv("book-club"), BeforeSeq: 4, Limit: 2})
	if err != nil || len(h.GetMessages()) != 2 || h.GetMessages()[0].GetSeq() != 2 || !h.GetHasMore() {
		t.Fatalf("page = %v, %v", h, err)
	}
}

// TestResumeReplaysExactlyWhatWasMissed disconnects a client, sends
// messages meanwhile, and resumes from the last sequence it saw.
func TestResumeReplaysExactlyWhatWasMissed(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	conn := srv.Dial(t)
	alice := connect(t, conn, "alice", srv.Token(t, "alice", auth.RoleUser))
	bobTok := srv.Token(t, "bob", auth.RoleUser)
	bob := connect(t, conn, "bob", bobTok)
	for i := 1; i <= 3; i++ {
		alice.next(replyTo(alice.send(sendRoom("general", fmt.Sprintf("before %d", i), ""))))
	}
	last := bob.next(textIn("general", "before 3")).GetMessage().GetSeq()
	bob.close()
	alice.next(wentOffline("bob"))
	for i := 1; i <= 4; i++ {
		alice.next(replyTo(alice.send(sendRoom("general", fmt.Sprintf("missed %d", i), ""))))
	}

	bob = connect(t, conn, "bob-again", bobTok)
	bob.until(func(ev *chatv1.ServerEvent) bool { return ev.GetStateRestored() != nil }) // the connect-time restore
	bob.send(&chatv1.ClientEvent{Event: &chatv1.ClientEvent_Resume{Resume: &chatv1.Resume{Cursors: []*chatv1.ConversationCursor{{Conversation: roomConv("general"), LastSeq: last}}}}})
	evs := bob.until(func(ev *chatv1.ServerEvent) bool { return ev.GetStateRestored() != nil })
	var got []string
	for _, ev := range evs {
		for _, m := range ev.GetRecentMessages().GetMessages() {
			got = append(got, fmt.Sprintf("%d:%s", m.GetSeq(), m.GetText()))
		}
	}
	want := fmt.Sprint([]string{"4:missed 1", "5:missed 2", "6:missed 3", "7:missed 4"})
	if fmt.Sprint(got) != want {
		t.Fatalf("replayed %v, want %v", got, want)
	}
	if st := evs[len(evs)-1].GetStateRestored(); st.GetMessagesReplayed() != 4 || !st.GetComplete() {
		t.Fatalf("state restored = %v", st)
	}
}

// TestDuplicateClientMsgID: a retried send returns the original message
// with duplicate=true and nobody receives it twice.
func TestDuplicateClientMsgID(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	conn := srv.Dial(t)
	alice := connect(t, conn, "alice", srv.Token(t, "alice", auth.RoleUser))
	bob := connect(t, conn, "bob", srv.Token(t, "bob", auth.RoleUser))
	first := alice.next(replyTo(alice.send(sendRoom("general", "once", "retry-1")))).GetAck()
	again := alice.next(replyTo(alice.send(sendRoom("general", "once", "retry-1")))).GetAck()
	if first == nil || again == nil || !again.GetDuplicate() || first.GetDuplicate() || again.GetMessageId() != first.GetMessageId() || again.GetSeq() != first.GetSeq() {
		t.Fatalf("first %v, again %v", first, again)
	}
	bob.next(textIn("general", "once"))
	for _, ev := range bob.sync() {
		if ev.GetMessage() != nil {
			t.Fatalf("bob got the duplicate: %v", ev)
		}
	}
}
