package parley_test

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/parleychat/parley/clients/go/parley"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/servertest"
)

// freeAddr returns a loopback address nobody listens on, so a server can be
// restarted on the same port.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// recorder drains a ResilientSession's events in the background, counting
// each message id, so the test can wait for texts and check for duplicates.
type recorder struct {
	mu    sync.Mutex
	texts map[string]int // text -> times delivered
	ids   map[string]int // message id -> times delivered
	kinds []string
	done  chan struct{}
	moved chan struct{} // pinged on every event
}

func record(events <-chan *chatv1.ServerEvent) *recorder {
	r := &recorder{texts: map[string]int{}, ids: map[string]int{}, done: make(chan struct{}), moved: make(chan struct{}, 1)}
	go func() {
		defer close(r.done)
		for ev := range events {
			r.mu.Lock()
			msgs := ev.GetRecentMessages().GetMessages()
			if m := ev.GetMessage(); m != nil {
				msgs = append(msgs, m)
			}
			for _, m := range msgs {
				r.texts[m.GetText()]++
				r.ids[m.GetId()]++
			}
			r.kinds = append(r.kinds, fmt.Sprintf("%T", ev.GetEvent()))
			r.mu.Unlock()
			select {
			case r.moved <- struct{}{}:
			default:
			}
		}
	}()
	return r
}

func (r *recorder) waitTexts(t *testing.T, texts ...string) {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		r.mu.Lock()
		missing := ""
		for _, text := range texts {
			if r.texts[text] == 0 {
				missing = text
				break
			}
		}
		r.mu.Unlock()
		if missing == "" {
			return
		}
		select {
		case <-r.moved:
		case <-r.done:
			t.Fatalf("events closed while waiting for %q", missing)
		case <-timeout:
			t.Fatalf("no %q within %s", missing, waitFor)
		}
	}
}

func (r *recorder) checkOnce(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, n := range r.ids {
		if n != 1 {
			t.Errorf("message %s delivered %d times", id, n)
		}
	}
}

// TestResilientSurvivesRestart stops the server and starts another on the
// same port and data: the session reconnects after the server's hint,
// resumes what it missed in every conversation exactly once, and a send
// made while disconnected goes through after the reconnect.
func TestResilientSurvivesRestart(t *testing.T) {
	t.Parallel()
	addr, dir := freeAddr(t), t.TempDir()
	const hint = 2 * time.Second
	start := func() *servertest.Server {
		return servertest.Start(t, servertest.Options{DataDir: dir, Configure: func(c *server.Config) {
			c.GRPCAddr, c.ReconnectAfter = addr, hint
		}})
	}
	srv := start()
	alice, bob := register(t, srv, "alice"), register(t, srv, "bob")
	ctx := t.Context()

	type lost struct {
		err  error
		wait time.Duration
	}
	losses := make(chan lost, 10)
	r, err := alice.ConnectResilient(ctx, parley.WithReconnectHook(func(err error, wait time.Duration) { losses <- lost{err, wait} }))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rec := record(r.Events())
	if _, err := r.Join(ctx, "club"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Join(ctx, "quiet"); err != nil { // no message before the restart
		t.Fatal(err)
	}

	bs := connect(t, bob)
	if _, err := bs.Join(ctx, "club"); err != nil {
		t.Fatal(err)
	}
	if _, err := bs.Join(ctx, "quiet"); err != nil {
		t.Fatal(err)
	}
	for _, m := range []struct{ room, text string }{{"general", "before general"}, {"club", "before club"}} {
		if _, err := bs.Send(ctx, m.room, m.text); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bs.SendPrivate(ctx, "alice", "before dm"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Send(ctx, "general", "alice before"); err != nil {
		t.Fatal(err)
	}
	rec.waitTexts(t, "before general", "before club", "before dm", "alice before")

	srv.Stop()
	l := <-losses
	if status.Code(l.err) != codes.Unavailable || l.wait < hint {
		t.Fatalf("lost with %v, waiting %s; want Unavailable and at least %s", l.err, l.wait, hint)
	}
	// A send made while disconnected waits for the next session.
	type result struct {
		ack *chatv1.Ack
		err error
	}
	sent := make(chan result, 1)
	go func() {
		ack, err := r.Send(ctx, "club", "sent while down")
		sent <- result{ack, err}
	}()

	// Messages alice misses while she is away, in every kind of conversation.
	srv = start()
	bob2 := dial(t, srv.GRPCAddr(), parley.WithToken(srv.TokenAs(t, "bob", chatv1.Role_ROLE_USER)))
	bs = connect(t, bob2)
	for _, m := range []struct{ room, text string }{{"general", "missed general"}, {"club", "missed club"}, {"quiet", "missed quiet"}} {
		if _, err := bs.Send(ctx, m.room, m.text); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bs.SendPrivate(ctx, "alice", "missed dm"); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-losses:
		t.Fatalf("a reconnect failed before the hint elapsed: %v", l.err)
	default:
	}

	rec.waitTexts(t, "missed general", "missed club", "missed quiet", "missed dm", "sent while down")
	res := <-sent
	if res.err != nil || res.ack.GetConversation().GetRoom() != "club" {
		t.Fatalf("send while down = %v, %v", res.ack, res.err)
	}
	next(t, bs.Events(), textIs("sent while down"))

	// Live again; then everything delivered is checked for duplicates.
	if _, err := r.Send(ctx, "general", "after"); err != nil {
		t.Fatal(err)
	}
	rec.waitTexts(t, "after")
	if _, err := r.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	rec.checkOnce(t)
	cur := map[string]int64{}
	for _, c := range r.Cursors() {
		cur[fmt.Sprint(c.GetConversation().GetRoom(), c.GetConversation().GetUser())] = c.GetLastSeq()
	}
	if cur["general"] != 4 || cur["club"] != 3 || cur["quiet"] != 1 || cur["bob"] != 2 {
		t.Fatalf("cursors = %v", cur)
	}
	if err := r.Close(); err != nil || r.Err() != nil {
		t.Fatalf("close = %v, err = %v", err, r.Err())
	}
	<-rec.done
}

// TestResilientStops: an administrator's disconnect (a notice without
// reconnect_after) and a refused reconnect both end it for good.
func TestResilientStops(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	admin := dial(t, srv.GRPCAddr(), parley.WithToken(srv.TokenAs(t, "root", chatv1.Role_ROLE_ADMIN)))
	alice := register(t, srv, "alice")
	ctx := t.Context()

	r, err := alice.ConnectResilient(ctx, parley.WithBackoff(10*time.Millisecond, 50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rec := record(r.Events())
	if _, err := r.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.DisconnectUser(ctx, "alice", "bye"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.Done():
	case <-time.After(waitFor):
		t.Fatal("still running after an administrator's disconnect")
	}
	<-rec.done
	if status.Code(r.Err()) != codes.Aborted {
		t.Fatalf("err = %v", r.Err())
	}
	if _, err := r.Send(ctx, "general", "hello?"); !errors.Is(err, parley.ErrClosed) {
		t.Fatalf("send after stop: %v", err)
	}

	// A lost stream is retried, but a refused reconnect ends it: here the
	// account is deactivated, which also ends the stream (with a notice
	// without reconnect_after, so it stops either way).
	bob := register(t, srv, "bob")
	r2, err := bob.ConnectResilient(ctx, parley.WithBackoff(10*time.Millisecond, 50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	rec2 := record(r2.Events())
	if err := admin.SetUserActive(ctx, "bob", false); err != nil {
		t.Fatal(err)
	}
	<-rec2.done
	if r2.Err() == nil {
		t.Fatal("no error after deactivation")
	}
}

// TestResilientRefusedReconnect: after the stream is lost for a reason
// worth retrying, a reconnect refused as Unauthenticated ends it. Here the
// server comes back with a new signing key (a fresh data directory), so
// the old token is no longer accepted.
func TestResilientRefusedReconnect(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	start := func() *servertest.Server {
		return servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
			c.GRPCAddr, c.ReconnectAfter = addr, 100*time.Millisecond
		}})
	}
	srv := start()
	c := dial(t, addr, parley.WithToken(srv.TokenAs(t, "alice", chatv1.Role_ROLE_USER)))
	r, err := c.ConnectResilient(t.Context(), parley.WithBackoff(10*time.Millisecond, 50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rec := record(r.Events())
	srv.Stop()
	start()
	<-rec.done
	if status.Code(r.Err()) != codes.Unauthenticated {
		t.Fatalf("err = %v", r.Err())
	}
}

// TestResumeFrom: cursors saved from one run resume the next, which gets
// what it missed and not what it had.
func TestResumeFrom(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	alice, bob := register(t, srv, "alice"), register(t, srv, "bob")
	ctx := t.Context()
	bs := connect(t, bob)
	go func() {
		for range bs.Events() {
		}
	}()
	if _, err := bs.Join(ctx, "club"); err != nil {
		t.Fatal(err)
	}

	r, err := alice.ConnectResilient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rec := record(r.Events())
	if _, err := r.Join(ctx, "club"); err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{"seen general", "seen club"} {
		room := strings.TrimPrefix(text, "seen ")
		if _, err := bs.Send(ctx, room, text); err != nil {
			t.Fatal(err)
		}
	}
	rec.waitTexts(t, "seen general", "seen club")
	saved := r.Cursors()
	r.Close()
	<-rec.done

	for _, text := range []string{"missed general", "missed club"} {
		room := strings.TrimPrefix(text, "missed ")
		if _, err := bs.Send(ctx, room, text); err != nil {
			t.Fatal(err)
		}
	}
	r, err = alice.ConnectResilient(ctx, parley.WithResumeFrom(saved))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rec = record(r.Events())
	rec.waitTexts(t, "missed general", "missed club")
	if _, err := r.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.texts["seen general"] != 0 || rec.texts["seen club"] != 0 || rec.texts["missed general"] != 1 || rec.texts["missed club"] != 1 {
		t.Fatalf("delivered %v", rec.texts)
	}
}

// TestResilientPagesPastTheReplayCap: more missed than the server's
// replay cap comes in full, each message once: a first connect's direct
// messages, and a Resume from seq 0 (cursors saved before anything was
// seen), both cut at the cap and continued.
func TestResilientPagesPastTheReplayCap(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
		c.ReplayCap = 100
		c.RateLimits = "message=unlimited"
	}})
	alice, carol, dave := register(t, srv, "alice"), register(t, srv, "carol"), register(t, srv, "dave")
	ctx := t.Context()
	as := connect(t, alice)
	go func() {
		for range as.Events() {
		}
	}()
	for i := 1; i <= 250; i++ {
		if _, err := as.Send(ctx, "general", fmt.Sprint("general ", i)); err != nil {
			t.Fatal(err)
		}
		if _, err := as.SendPrivate(ctx, "carol", fmt.Sprint("dm ", i)); err != nil {
			t.Fatal(err)
		}
	}

	for _, c := range []struct {
		name   string
		client *parley.Client
		opts   []parley.ReconnectOption
		prefix string
	}{
		// carol has never connected: her first connect restores 100
		// direct messages, and the session asks for the rest.
		{"carol", carol, nil, "dm "},
		// dave saved a cursor before he saw anything in general.
		{"dave", dave, []parley.ReconnectOption{parley.WithResumeFrom([]*chatv1.ConversationCursor{{Conversation: parley.Room("general")}})}, "general "},
	} {
		r, err := c.client.ConnectResilient(ctx, c.opts...)
		if err != nil {
			t.Fatal(err)
		}
		rec := record(r.Events())
		rec.waitTexts(t, c.prefix+"1", c.prefix+"250")
		if _, err := r.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		r.Close()
		<-rec.done
		rec.checkOnce(t)
		for i := 1; i <= 250; i++ {
			if n := rec.texts[fmt.Sprint(c.prefix, i)]; n != 1 {
				t.Fatalf("%s: %q delivered %d times", c.name, fmt.Sprint(c.prefix, i), n)
			}
		}
	}
}
