package server_test

import (
	"context"
	"fmt"
	"strings"
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

// shortToken issues a token for an existing user that expires after ttl.
func shortToken(t *testing.T, srv *servertest.Server, user string, ttl time.Duration) string {
	t.Helper()
	srv.Token(t, user, auth.RoleUser) // creates the user
	secret, err := server.LoadOrCreateSecret(srv.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := auth.NewIssuer(auth.IssuerConfig{Secret: secret, Issuer: "parley", Audience: "parley", TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := iss.Issue(user, auth.RoleUser)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestTokenExpiresMidStream: a stream outlives its token only if the
// client refreshes in band.
func TestTokenExpiresMidStream(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	conn := srv.Dial(t)

	// JWT expiry has whole-second precision, so a token minted for ttl
	// lives between ttl-1s and ttl: 3s leaves a loaded machine time to
	// connect (and refresh) before it runs out.
	c := connect(t, conn, "short", shortToken(t, srv, "alice", 3*time.Second))
	n := c.next(func(ev *chatv1.ServerEvent) bool { return ev.GetServerNotice() != nil }).GetServerNotice()
	if n.GetKind() != chatv1.NoticeKind_NOTICE_KIND_TOKEN_EXPIRING {
		t.Fatalf("notice = %v", n)
	}
	err := c.ended()
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(status.Convert(err).Message(), "token expired") {
		t.Fatalf("ended with %v", err)
	}

	// Refreshed in band, the stream lives past the first token's expiry.
	r := connect(t, conn, "refreshed", shortToken(t, srv, "bob", 3*time.Second))
	id := r.send(&chatv1.ClientEvent{Event: &chatv1.ClientEvent_RefreshToken{RefreshToken: &chatv1.RefreshToken{AccessToken: srv.Token(t, "bob", auth.RoleUser)}}})
	ref := r.next(replyTo(id)).GetTokenRefreshed()
	if ref == nil || time.Until(ref.GetExpiresAt().AsTime()) < 10*time.Minute {
		t.Fatalf("refresh = %v", ref)
	}
	time.Sleep(3500 * time.Millisecond) // past the first token's expiry
	r.sync()

	// A token for someone else is refused in band; the stream lives.
	id = r.send(&chatv1.ClientEvent{Event: &chatv1.ClientEvent_RefreshToken{RefreshToken: &chatv1.RefreshToken{AccessToken: srv.Token(t, "carol", auth.RoleUser)}}})
	if ev := r.next(replyTo(id)); errorCode(ev) != chatv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED {
		t.Fatalf("foreign refresh = %v", ev)
	}
	r.sync()
}

// TestStreamRateLimit: over-limit commands are refused in band with a
// retry hint and the stream stays open; sustained abuse ends it.
func TestStreamRateLimit(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
		c.RateLimits = "message=1/s:3"
	}})
	conn := srv.Dial(t)
	c := connect(t, conn, "alice", srv.Token(t, "alice", auth.RoleUser))
	// Invalid input is refused in band, and the stream lives.
	id := c.send(join("bad room!"))
	if ev := c.next(replyTo(id)); errorCode(ev) != chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
		t.Fatalf("bad room name: %v", ev)
	}
	id = c.send(sendRoom("general", strings.Repeat("x", 4001), "")) // takes a token: limits come first
	if ev := c.next(replyTo(id)); errorCode(ev) != chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
		t.Fatalf("text too long: %v", ev)
	}
	c.sync()

	var acks, limited int
	for i := range 5 {
		id := c.send(sendRoom("general", fmt.Sprintf("spam %d", i), ""))
		ev := c.next(replyTo(id))
		switch {
		case ev.GetAck() != nil:
			acks++
		case errorCode(ev) == chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED:
			limited++
			if ev.GetError().GetRetryAfter().AsDuration() <= 0 {
				t.Fatalf("no retry hint: %v", ev)
			}
		default:
			t.Fatalf("unexpected reply %v", ev)
		}
	}
	if acks != 2 || limited != 3 {
		t.Fatalf("acks %d, limited %d; want 2 and 3", acks, limited)
	}
	c.sync() // other commands still work: the stream is open

	// Keep hammering: the stream ends with ResourceExhausted.
	for range 200 {
		if err := c.stream.Send(sendRoom("general", "more spam", "")); err != nil {
			break
		}
	}
	if err := c.ended(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("abuse ended with %v", err)
	}
}

// TestSlowConsumer: a client that stops reading is disconnected while the
// others keep receiving everything.
func TestSlowConsumer(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
		c.QueueSize = 64 // room for the fast clients to lag a little on a busy machine
		c.RateLimits = "message=unlimited"
	}})
	conn := srv.Dial(t)
	// The slow client's own connection has a small fixed flow-control
	// window, so the server's writes to it block once it stops reading.
	slowConn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithInsecure(), grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer slowConn.Close()

	fast := connect(t, conn, "fast", srv.Token(t, "fast", auth.RoleUser))
	pub := connect(t, conn, "pub", srv.Token(t, "pub", auth.RoleUser))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	slow, err := chatv1.NewChatClient(slowConn).Connect(servertest.WithToken(ctx, srv.Token(t, "slow", auth.RoleUser)))
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := slow.Recv(); err != nil || ev.GetWelcome() == nil {
		t.Fatalf("slow welcome: %v %v", ev, err)
	}
	fast.next(cameOnline("slow"))

	const n = 400
	text := strings.Repeat("y", 3000)
	// pub waits for its acks every 16 sends, as a real client would: a
	// publisher that never waits could itself fall a queue behind on a
	// loaded machine (its own messages and acks come back to it).
	for i := range n {
		id := pub.send(sendRoom("general", fmt.Sprintf("%d %s", i, text), ""))
		if i%16 == 15 {
			pub.until(func(ev *chatv1.ServerEvent) bool { return ev.GetRequestId() == id })
		}
	}
	for i := range n {
		want := fmt.Sprintf("%d %s", i, text)
		fast.next(func(ev *chatv1.ServerEvent) bool { return ev.GetMessage().GetText() == want })
	}
	fast.next(wentOffline("slow"))
	// Reading now, the slow client finds its stream closed with the reason.
	for {
		if _, err = slow.Recv(); err != nil {
			break
		}
	}
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "slow consumer") {
		t.Fatalf("slow client ended with %v", err)
	}
}
