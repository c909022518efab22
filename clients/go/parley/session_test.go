package parley_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/parleychat/parley/clients/go/parley"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/servertest"
)

func TestSessionCommands(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) { c.TypingTimeout = 300 * time.Millisecond }})
	alice, bob, carol := register(t, srv, "alice"), register(t, srv, "bob"), register(t, srv, "carol")
	ctx := t.Context()

	as, err := alice.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer as.Close()
	if w := as.Welcome(); w.GetUser().GetUsername() != "alice" || w.GetSessionId() == "" || w.GetTokenExpiresAt() == nil {
		t.Fatalf("welcome = %v", w)
	}
	// Events open with the connect-time sequence.
	var kinds []string
	for ev := range as.Events() {
		kinds = append(kinds, fmt.Sprintf("%T", ev.GetEvent()))
		if ev.GetStateRestored() != nil {
			break
		}
	}
	if want := "[*chatv1.ServerEvent_Welcome *chatv1.ServerEvent_OnlineUsers *chatv1.ServerEvent_RecentMessages *chatv1.ServerEvent_StateRestored]"; fmt.Sprint(kinds) != want {
		t.Fatalf("first events %v, want %v", kinds, want)
	}
	bs, cs := connect(t, bob), connect(t, carol)

	// Send: the message reaches everyone, the Ack comes to the caller only.
	ack, err := as.Send(ctx, "general", "hello everyone")
	if err != nil || ack.GetSeq() != 1 || ack.GetMessageId() == "" || ack.GetDuplicate() {
		t.Fatalf("ack = %v, %v", ack, err)
	}
	m := next(t, bs.Events(), textIs("hello everyone")).GetMessage()
	if m.GetSender() != "alice" || m.GetId() != ack.GetMessageId() || m.GetClientMsgId() == "" {
		t.Fatalf("bob got %v", m)
	}
	next(t, as.Events(), textIs("hello everyone"))
	// A retry with the same client_msg_id posts once.
	again, err := as.SendWithID(ctx, "general", "hello everyone", m.GetClientMsgId())
	if err != nil || !again.GetDuplicate() || again.GetMessageId() != ack.GetMessageId() {
		t.Fatalf("retry = %v, %v", again, err)
	}

	// Rooms.
	j, err := as.Join(ctx, "lobby")
	if err != nil || j.GetRoom() != "lobby" || j.GetMemberCount() != 1 {
		t.Fatalf("join = %v, %v", j, err)
	}
	if _, err := bs.Join(ctx, "lobby"); err != nil {
		t.Fatal(err)
	}
	// Bob's join may fall in the server's window with alice's own: then
	// both come as one RoomMembersChanged instead of a MemberJoined.
	ev := next(t, as.Events(), func(ev *chatv1.ServerEvent) bool {
		return ev.GetMemberJoined() != nil || ev.GetRoomMembersChanged() != nil
	})
	if mj := ev.GetMemberJoined(); mj != nil && (mj.GetUsername() != "bob" || mj.GetRoom() != "lobby") {
		t.Fatalf("member joined = %v", mj)
	}
	if mc := ev.GetRoomMembersChanged(); mc != nil && (!slices.Equal(mc.GetJoined(), []string{"alice", "bob"}) || mc.GetRoom() != "lobby" || mc.GetMemberCount() != 2) {
		t.Fatalf("room members changed = %v", mc)
	}
	rooms, err := cs.ListRooms(ctx)
	if err != nil || len(rooms) != 2 || rooms[1].GetName() != "lobby" || rooms[1].GetJoined() {
		t.Fatalf("rooms = %v, %v", rooms, err)
	}

	// In-band refusals are *Error and the session lives on.
	_, err = cs.Send(ctx, "lobby", "let me in")
	var perr *parley.Error
	if !errors.As(err, &perr) || perr.Code != chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED || perr.Message == "" || perr.RequestID == "" {
		t.Fatalf("non-member send: %v", err)
	}
	if err := bs.Leave(ctx, "general"); parley.CodeOf(err) != chatv1.ErrorCode_ERROR_CODE_FAILED_PRECONDITION {
		t.Fatalf("leaving general: %v", err)
	}
	if _, err := as.SendPrivate(ctx, "nobody", "hello?"); parley.CodeOf(err) != chatv1.ErrorCode_ERROR_CODE_NOT_FOUND {
		t.Fatalf("unknown recipient: %v", err)
	}
	if _, err := as.Join(ctx, "bad room!"); parley.CodeOf(err) != chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
		t.Fatalf("bad room: %v", err)
	}
	if _, err := cs.Ping(ctx); err != nil {
		t.Fatalf("ping after refusals: %v", err)
	}

	// Leave tells the others.
	if err := bs.Leave(ctx, "lobby"); err != nil {
		t.Fatal(err)
	}
	ml := next(t, as.Events(), func(ev *chatv1.ServerEvent) bool { return ev.GetMemberLeft() != nil }).GetMemberLeft()
	if ml.GetUsername() != "bob" {
		t.Fatalf("member left = %v", ml)
	}

	// Private messages reach both sides, and nobody else.
	if _, err := as.SendPrivate(ctx, "bob", "psst"); err != nil {
		t.Fatal(err)
	}
	dm := next(t, bs.Events(), textIs("psst")).GetMessage()
	if dm.GetConversation().GetUser() != "bob" || dm.GetSender() != "alice" {
		t.Fatalf("dm = %v", dm)
	}

	// Typing starts and expires; a refused typing comes on Events.
	if err := as.Typing(ctx, parley.Room("general"), true); err != nil {
		t.Fatal(err)
	}
	typ := next(t, bs.Events(), func(ev *chatv1.ServerEvent) bool { return ev.GetTyping() != nil }).GetTyping()
	if typ.GetUsername() != "alice" || !typ.GetTyping() {
		t.Fatalf("typing = %v", typ)
	}
	typ = next(t, bs.Events(), func(ev *chatv1.ServerEvent) bool { return ev.GetTyping() != nil }).GetTyping()
	if typ.GetTyping() {
		t.Fatalf("typing did not expire: %v", typ)
	}
	if err := cs.Typing(ctx, parley.Room("lobby"), true); err != nil {
		t.Fatal(err)
	}
	e := next(t, cs.Events(), func(ev *chatv1.ServerEvent) bool { return ev.GetError() != nil })
	if e.GetRequestId() == "" || e.GetError().GetCode() != chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED {
		t.Fatalf("refused typing = %v", e)
	}

	// Close: Err is nil, Events closes, commands return ErrClosed.
	if err := cs.Close(); err != nil {
		t.Fatal(err)
	}
	for range cs.Events() {
	}
	if cs.Err() != nil {
		t.Fatalf("err after close = %v", cs.Err())
	}
	if _, err := cs.Ping(ctx); !errors.Is(err, parley.ErrClosed) {
		t.Fatalf("ping after close: %v", err)
	}
	cs.Close() // twice is fine
}

func TestRateLimitedSend(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{}) // messages: 5/s, burst 10
	s := connect(t, register(t, srv, "alice"))
	var limited *parley.Error
	for i := range 20 {
		_, err := s.Send(t.Context(), "general", fmt.Sprint("spam ", i))
		if errors.As(err, &limited) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if limited == nil || limited.Code != chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED || limited.RetryAfter <= 0 {
		t.Fatalf("limited = %v", limited)
	}
	if parley.CodeOf(fmt.Errorf("wrapped: %w", limited)) != chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED {
		t.Fatal("CodeOf does not see through wrapping")
	}
	time.Sleep(limited.RetryAfter)
	if _, err := s.Send(t.Context(), "general", "after waiting"); err != nil {
		t.Fatalf("send after RetryAfter: %v", err)
	}
}

// TestConcurrentCommands sends from many goroutines at once on one session:
// every command is answered with its own reply.
func TestConcurrentCommands(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	s := connect(t, register(t, srv, "alice"))
	go func() { // keep Events drained
		for range s.Events() {
		}
	}()
	const n = 10 // within the default message burst
	var wg sync.WaitGroup
	acks := make([]*chatv1.Ack, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			acks[i], errs[i] = s.Send(t.Context(), "general", fmt.Sprint("msg ", i))
			_, err := s.Ping(t.Context())
			errs[i] = errors.Join(errs[i], err)
		})
	}
	wg.Wait()
	seqs := map[int64]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("send %d: %v", i, errs[i])
		}
		seqs[acks[i].GetSeq()] = true
	}
	if len(seqs) != n {
		t.Fatalf("%d distinct seqs for %d sends", len(seqs), n)
	}
}

// TestCommandContext: a command gives up with its ctx; the session lives.
func TestCommandContext(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	s := connect(t, register(t, srv, "alice"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Ping(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("ping with a cancelled ctx: %v", err)
	}
	if _, err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}

	// Cancelling the ctx Connect was given ends the session.
	sctx, scancel := context.WithCancel(t.Context())
	s2, err := register(t, srv, "bob").Connect(sctx)
	if err != nil {
		t.Fatal(err)
	}
	scancel()
	select {
	case <-s2.Done():
	case <-time.After(waitFor):
		t.Fatal("session outlived its ctx")
	}
	if !errors.Is(s2.Err(), context.Canceled) {
		t.Fatalf("err = %v", s2.Err())
	}
	s2.Close()
}

// TestAutoRefresh: with short-lived access tokens, the client refreshes
// before expiry, unary calls keep working, and a live session outlives
// several tokens because each new one is sent in band.
func TestAutoRefresh(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) { c.AccessTTL = 3 * time.Second }})
	tok, err := dial(t, srv.GRPCAddr()).Register(t.Context(), "alice", password)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var saved []parley.Tokens
	c := dial(t, srv.GRPCAddr(), parley.WithAutoRefresh(tok, func(t parley.Tokens) {
		mu.Lock()
		saved = append(saved, t)
		mu.Unlock()
	}))
	s := connect(t, c)
	go func() {
		for range s.Events() {
		}
	}()
	time.Sleep(7 * time.Second) // more than two access lifetimes
	if _, err := s.Ping(t.Context()); err != nil {
		t.Fatalf("session after its first token expired: %v (ended: %v)", err, s.Err())
	}
	if _, err := c.Rooms(t.Context()); err != nil {
		t.Fatalf("unary call: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(saved) < 2 {
		t.Fatalf("%d refreshes, want at least 2", len(saved))
	}
	cur, ok := c.Tokens()
	if !ok || cur.RefreshToken != saved[len(saved)-1].RefreshToken || cur.RefreshToken == tok.RefreshToken {
		t.Fatalf("current tokens %+v", cur)
	}
}

// TestStaticTokenExpires: without a way to refresh, the session ends
// Unauthenticated when its token expires.
func TestStaticTokenExpires(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) { c.AccessTTL = 2 * time.Second }})
	tok, err := dial(t, srv.GRPCAddr()).Register(t.Context(), "alice", password)
	if err != nil {
		t.Fatal(err)
	}
	s := connect(t, dial(t, srv.GRPCAddr(), parley.WithToken(tok.AccessToken)))
	n := next(t, s.Events(), func(ev *chatv1.ServerEvent) bool { return ev.GetServerNotice() != nil }).GetServerNotice()
	if n.GetKind() != chatv1.NoticeKind_NOTICE_KIND_TOKEN_EXPIRING {
		t.Fatalf("notice = %v", n)
	}
	<-s.Done()
	if status.Code(s.Err()) != codes.Unauthenticated || parley.CodeOf(s.Err()) != chatv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED {
		t.Fatalf("ended with %v", s.Err())
	}
}

// TestSlowConsumer: an application that stops reading Events is
// disconnected by the server once the SDK's buffer and the server's queue
// fill, and finds out when it reads again, as Session.Events documents.
func TestSlowConsumer(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
		c.QueueSize = 16
		c.RateLimits = "message=unlimited"
	}})
	pub := connect(t, register(t, srv, "pub"))
	slowGone := make(chan struct{})
	go func() {
		for ev := range pub.Events() {
			if ev.GetUserOffline().GetUser().GetUsername() == "slow" || slices.ContainsFunc(ev.GetPresenceChanged().GetOffline(), func(u *chatv1.User) bool { return u.GetUsername() == "slow" }) {
				close(slowGone)
			}
		}
	}()
	tok, err := dial(t, srv.GRPCAddr()).Register(t.Context(), "slow", password)
	if err != nil {
		t.Fatal(err)
	}
	// A small fixed flow-control window, so the server's writes block soon
	// after the reader stops.
	slowClient := dial(t, srv.GRPCAddr(), parley.WithToken(tok.AccessToken), parley.WithEventBuffer(4),
		parley.WithDialOptions(grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10)))
	slow, err := slowClient.Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	text := strings.Repeat("y", 3000)
	for i := 0; ; i++ {
		if _, err := pub.Send(t.Context(), "general", fmt.Sprint(i, text)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-slowGone:
		default:
			if i < 2000 {
				continue
			}
			t.Fatal("not disconnected after 2,000 unread messages")
		}
		break
	}
	for range slow.Events() { // reading again, it finds the session over
	}
	if status.Code(slow.Err()) != codes.ResourceExhausted || !strings.Contains(slow.Err().Error(), "slow consumer") {
		t.Fatalf("slow session ended with %v", slow.Err())
	}
}
