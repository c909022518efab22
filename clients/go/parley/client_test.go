package parley_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/parleychat/parley/clients/go/parley"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/servertest"
)

func TestAuth(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	anon := dial(t, srv.GRPCAddr())
	ctx := t.Context()

	reg, err := anon.Register(ctx, "alice", password)
	if err != nil {
		t.Fatal(err)
	}
	if reg.Username != "alice" || reg.Role != chatv1.Role_ROLE_USER || reg.AccessToken == "" || reg.RefreshToken == "" || reg.AccessExpiresAt.IsZero() {
		t.Fatalf("register = %+v", reg)
	}
	if _, err := anon.Register(ctx, "alice", password); status.Code(err) != codes.AlreadyExists || parley.CodeOf(err) != chatv1.ErrorCode_ERROR_CODE_FAILED_PRECONDITION {
		t.Fatalf("second register: %v", err)
	}
	if _, err := anon.Login(ctx, "alice", "wrong password"); parley.CodeOf(err) != chatv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED {
		t.Fatalf("bad login: %v", err)
	}
	login, err := anon.Login(ctx, "alice", password)
	if err != nil || login.AccessToken == "" {
		t.Fatalf("login = %+v, %v", login, err)
	}

	// Refresh rotates: the old refresh token stops working.
	ref, err := anon.Refresh(ctx, login.RefreshToken)
	if err != nil || ref.RefreshToken == login.RefreshToken || ref.Username != "alice" {
		t.Fatalf("refresh = %+v, %v", ref, err)
	}
	if _, err := anon.Refresh(ctx, login.RefreshToken); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("replayed refresh: %v", err)
	}
	if err := anon.Logout(ctx, ref.RefreshToken); err != nil {
		t.Fatal(err)
	}
	if _, err := anon.Refresh(ctx, ref.RefreshToken); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("refresh after logout: %v", err)
	}

	// Calls need a token; the access token works with WithToken.
	if _, err := anon.Rooms(ctx); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("anonymous rooms: %v", err)
	}
	if _, err := anon.Connect(ctx); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("anonymous connect: %v", err)
	}
	rooms, err := dial(t, srv.GRPCAddr(), parley.WithToken(login.AccessToken)).Rooms(ctx)
	if err != nil {
		t.Fatalf("rooms: %v", err)
	}
	if len(rooms) != 1 || rooms[0].GetName() != "general" || rooms[0].GetMemberCount() != 1 || rooms[0].GetOnlineCount() != 0 {
		t.Fatalf("rooms with nobody online = %v", rooms)
	}

	// A token source that fails fails the call without reaching the server.
	boom := errors.New("no token today")
	failing := dial(t, srv.GRPCAddr(), parley.WithTokenSource(func(context.Context) (string, error) { return "", boom }))
	if _, err := failing.OnlineUsers(ctx); !errors.Is(err, boom) {
		t.Fatalf("failing token source: %v", err)
	}
}

func TestHistoryAndPresence(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	alice, bob := register(t, srv, "alice"), register(t, srv, "bob")
	ctx := t.Context()
	as := connect(t, alice)
	connect(t, bob)
	for _, text := range []string{"one", "two", "three"} {
		if _, err := as.Send(ctx, "general", text); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := as.SendPrivate(ctx, "bob", "psst"); err != nil {
		t.Fatal(err)
	}

	msgs, more, err := bob.History(ctx, parley.Room("general"), parley.HistoryOptions{})
	if err != nil || more || len(msgs) != 3 || msgs[0].GetText() != "one" || msgs[2].GetSeq() != 3 {
		t.Fatalf("history = %v, %v, %v", msgs, more, err)
	}
	msgs, more, err = bob.History(ctx, parley.Room("general"), parley.HistoryOptions{BeforeSeq: 3, Limit: 1})
	if err != nil || !more || len(msgs) != 1 || msgs[0].GetText() != "two" {
		t.Fatalf("page = %v, %v, %v", msgs, more, err)
	}
	msgs, more, err = bob.History(ctx, parley.Room("general"), parley.HistoryOptions{Forward: true, Limit: 2})
	if err != nil || !more || len(msgs) != 2 || msgs[0].GetSeq() != 1 || msgs[1].GetSeq() != 2 {
		t.Fatalf("first forward page = %v, %v, %v", msgs, more, err)
	}
	msgs, more, err = bob.History(ctx, parley.Room("general"), parley.HistoryOptions{Forward: true, AfterSeq: 2, Limit: 2})
	if err != nil || more || len(msgs) != 1 || msgs[0].GetSeq() != 3 {
		t.Fatalf("next forward page = %v, %v, %v", msgs, more, err)
	}
	msgs, _, err = bob.History(ctx, parley.Direct("alice"), parley.HistoryOptions{})
	if err != nil || len(msgs) != 1 || msgs[0].GetText() != "psst" {
		t.Fatalf("direct history = %v, %v", msgs, err)
	}
	if _, _, err := bob.History(ctx, parley.Room("secret"), parley.HistoryOptions{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("history of a room bob is not in: %v", err)
	}

	users, err := bob.OnlineUsers(ctx)
	if err != nil || len(users) != 2 || users[0].GetUsername() != "alice" {
		t.Fatalf("online = %v, %v", users, err)
	}
	page, err := bob.OnlineUsersPage(ctx, parley.OnlinePageOptions{PageSize: 1})
	if err != nil || len(page.Users) != 1 || page.Users[0].GetUsername() != "alice" || page.OnlineCount != 2 || page.NextPageToken == "" {
		t.Fatalf("first page = %+v, %v", page, err)
	}
	page, err = bob.OnlineUsersPage(ctx, parley.OnlinePageOptions{PageSize: 1, PageToken: page.NextPageToken})
	if err != nil || len(page.Users) != 1 || page.Users[0].GetUsername() != "bob" || page.NextPageToken != "" {
		t.Fatalf("last page = %+v, %v", page, err)
	}
	rooms, err := bob.Rooms(ctx)
	if err != nil || len(rooms) != 1 || rooms[0].GetName() != "general" || rooms[0].GetMemberCount() != 2 || rooms[0].GetOnlineCount() != 2 || !rooms[0].GetJoined() {
		t.Fatalf("rooms = %v, %v", rooms, err)
	}
}

// TestConversations pages through the user's conversations with
// Client.Conversations.
func TestConversations(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	alice, bob := register(t, srv, "alice"), register(t, srv, "bob")
	ctx := t.Context()
	as := connect(t, alice)
	if _, err := as.Join(ctx, "quiet"); err != nil {
		t.Fatal(err)
	}
	if _, err := as.Send(ctx, "general", "hello"); err != nil {
		t.Fatal(err)
	}
	if _, err := as.SendPrivate(ctx, "bob", "psst"); err != nil {
		t.Fatal(err)
	}
	first, err := bob.Conversations(ctx, parley.ConversationsOptions{PageSize: 1})
	if err != nil || len(first.Conversations) != 1 || first.NextPageToken == "" {
		t.Fatalf("first page = %+v, %v", first, err)
	}
	if c := first.Conversations[0]; c.GetConversation().GetUser() != "alice" || c.GetLastSeq() != 1 || c.GetLastMessage().GetText() != "psst" {
		t.Fatalf("bob's latest conversation = %v", c)
	}
	rest, err := bob.Conversations(ctx, parley.ConversationsOptions{PageToken: first.NextPageToken})
	if err != nil || len(rest.Conversations) != 1 || rest.NextPageToken != "" || rest.Conversations[0].GetConversation().GetRoom() != "general" {
		t.Fatalf("second page = %+v, %v", rest, err)
	}
	mine, err := alice.Conversations(ctx, parley.ConversationsOptions{})
	if err != nil || len(mine.Conversations) != 3 || mine.Conversations[2].GetConversation().GetRoom() != "quiet" || mine.Conversations[2].GetLastMessage() != nil {
		t.Fatalf("alice's conversations = %+v, %v", mine, err)
	}
}

func TestFiles(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	alice, bob, carol := register(t, srv, "alice"), register(t, srv, "bob"), register(t, srv, "carol")
	ctx := t.Context()
	as, bs := connect(t, alice), connect(t, bob)
	connect(t, carol)
	for _, s := range []*parley.Session{as, bs} {
		if _, err := s.Join(ctx, "team"); err != nil {
			t.Fatal(err)
		}
	}

	content := make([]byte, 3*parley.ChunkSize+123)
	rand.Read(content)
	ref, err := alice.UploadFile(ctx, "plan.bin", "application/octet-stream", bytes.NewReader(content), int64(len(content)))
	if err != nil {
		t.Fatal(err)
	}
	if len(ref.GetId()) != 64 || ref.GetSize() != int64(len(content)) || ref.GetName() != "plan.bin" {
		t.Fatalf("upload = %v", ref)
	}
	if _, err := as.SendFile(ctx, parley.Room("team"), ref.GetId()); err != nil {
		t.Fatal(err)
	}
	fm := next(t, bs.Events(), func(ev *chatv1.ServerEvent) bool { return ev.GetMessage().GetFile() != nil }).GetMessage()
	if fm.GetFile().GetId() != ref.GetId() || fm.GetSender() != "alice" {
		t.Fatalf("file message = %v", fm)
	}
	var got bytes.Buffer
	dref, err := bob.DownloadFile(ctx, ref.GetId(), &got)
	if err != nil || !bytes.Equal(got.Bytes(), content) || dref.GetName() != "plan.bin" {
		t.Fatalf("download: %d bytes, %v, %v", got.Len(), dref, err)
	}
	if _, err := carol.DownloadFile(ctx, ref.GetId(), &got); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("carol download: %v", err)
	}

	// The declared size must match what the reader gives.
	if _, err := alice.UploadFile(ctx, "short", "", strings.NewReader("abc"), 10); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("short upload: %v", err)
	}
	if _, err := alice.UploadFile(ctx, "big", "", strings.NewReader("x"), 11<<20); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("oversized upload: %v", err)
	}
}

func TestAdmin(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	admin := dial(t, srv.GRPCAddr(), parley.WithToken(srv.TokenAs(t, "root", chatv1.Role_ROLE_ADMIN)))
	alice, bob := register(t, srv, "alice"), register(t, srv, "bob")
	ctx := t.Context()
	as, bs := connect(t, alice), connect(t, bob)

	st, err := admin.Stats(ctx)
	if err != nil || st.GetTotal().GetConnections() != 2 || st.GetTotal().GetOnlineUsers() != 2 {
		t.Fatalf("stats = %v, %v", st, err)
	}
	if _, err := alice.Stats(ctx); status.Code(err) != codes.PermissionDenied || parley.CodeOf(err) != chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED {
		t.Fatalf("user stats: %v", err)
	}
	if n, err := admin.Broadcast(ctx, "", "maintenance at noon"); err != nil || n != 2 {
		t.Fatalf("broadcast = %d, %v", n, err)
	}
	b := next(t, as.Events(), func(ev *chatv1.ServerEvent) bool { return ev.GetAdminBroadcast() != nil }).GetAdminBroadcast()
	if b.GetText() != "maintenance at noon" || b.GetFrom() != "root" {
		t.Fatalf("broadcast = %v", b)
	}

	if err := admin.SetUserRole(ctx, "alice", chatv1.Role_ROLE_MODERATOR); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Stats(ctx); err != nil {
		t.Fatalf("moderator stats: %v", err)
	}
	if err := admin.SetUserRole(ctx, "ghost", chatv1.Role_ROLE_USER); status.Code(err) != codes.NotFound {
		t.Fatalf("role of unknown user: %v", err)
	}

	// Disconnect: a notice, then the session ends with Aborted.
	if n, err := admin.DisconnectUser(ctx, "bob", "spam"); err != nil || n != 1 {
		t.Fatalf("disconnect = %d, %v", n, err)
	}
	n := next(t, bs.Events(), func(ev *chatv1.ServerEvent) bool { return ev.GetServerNotice() != nil }).GetServerNotice()
	if n.GetKind() != chatv1.NoticeKind_NOTICE_KIND_DISCONNECTED {
		t.Fatalf("notice = %v", n)
	}
	<-bs.Done()
	if status.Code(bs.Err()) != codes.Aborted {
		t.Fatalf("bob ended with %v", bs.Err())
	}
	if _, err := bs.Send(ctx, "general", "still here?"); !errors.Is(err, parley.ErrClosed) || status.Code(err) != codes.Aborted {
		t.Fatalf("send on an ended session: %v", err)
	}

	// Deactivation ends the session and refuses new ones.
	if err := admin.SetUserActive(ctx, "bob", false); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Connect(ctx); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("deactivated connect: %v", err)
	}
	if err := admin.SetUserActive(ctx, "bob", true); err != nil {
		t.Fatal(err)
	}
	connect(t, bob)
}
