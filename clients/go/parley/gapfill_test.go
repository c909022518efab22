package parley_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/clients/go/parley"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/servertest"
)

// faultyLink is a stream interceptor that edits what a real server sends
// on Connect, as a faulty network or cluster would: edit maps each event
// received to the events the SDK then reads (none to drop it, two to
// duplicate it, a held one later to reorder).
func faultyLink(edit func(*chatv1.ServerEvent) []*chatv1.ServerEvent) parley.Option {
	return parley.WithDialOptions(grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil || method != chatv1.Chat_Connect_FullMethodName {
			return cs, err
		}
		return &editedStream{ClientStream: cs, edit: edit}, nil
	}))
}

// editedStream is read by the session's one reader goroutine only.
type editedStream struct {
	grpc.ClientStream
	edit  func(*chatv1.ServerEvent) []*chatv1.ServerEvent
	queue []*chatv1.ServerEvent
}

func (s *editedStream) RecvMsg(v any) error {
	for len(s.queue) == 0 {
		ev := &chatv1.ServerEvent{}
		if err := s.ClientStream.RecvMsg(ev); err != nil {
			return err
		}
		s.queue = s.edit(ev)
	}
	out := v.(*chatv1.ServerEvent)
	proto.Reset(out)
	proto.Merge(out, s.queue[0])
	s.queue = s.queue[1:]
	return nil
}

// delivery is one message as the application got it.
type delivery struct {
	text string
	live bool // a Message event, not RecentMessages
}

// orderOf returns the deliveries in conversation room, in the order
// Events gave them.
func orderOf(events []*chatv1.ServerEvent, room string) []delivery {
	var out []delivery
	for _, ev := range events {
		if m := ev.GetMessage(); m.GetConversation().GetRoom() == room {
			out = append(out, delivery{m.GetText(), true})
		}
		if rm := ev.GetRecentMessages(); rm.GetConversation().GetRoom() == room {
			for _, m := range rm.GetMessages() {
				out = append(out, delivery{m.GetText(), false})
			}
		}
	}
	return out
}

// collect drains events into a list the test reads when done.
type collected struct {
	mu     sync.Mutex
	events []*chatv1.ServerEvent
}

func collect(r *parley.ResilientSession) (*collected, *recorder) {
	c := &collected{}
	ch := make(chan *chatv1.ServerEvent, 256)
	go func() {
		defer close(ch)
		for ev := range r.Events() {
			c.mu.Lock()
			c.events = append(c.events, ev)
			c.mu.Unlock()
			ch <- ev
		}
	}()
	return c, record(ch)
}

func (c *collected) order(room string) []delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return orderOf(c.events, room)
}

// TestResilientFillsGaps: live messages the link loses, duplicates or
// delivers late reach the application once each and in seq order. The
// link (a client interceptor on a real server's stream) holds "two" until
// after "three", doubles "one" and drops "four": each jump ("three" after
// "one", "five" after "three") is preceded by the missing message read
// from history, as RecentMessages, and the late "two" is dropped.
func TestResilientFillsGaps(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	ctx := t.Context()
	bob := register(t, srv, "bob")
	tok, err := dial(t, srv.GRPCAddr()).Register(ctx, "alice", password)
	if err != nil {
		t.Fatal(err)
	}
	var held *chatv1.ServerEvent
	alice := dial(t, srv.GRPCAddr(), parley.WithAutoRefresh(tok, nil), faultyLink(func(ev *chatv1.ServerEvent) []*chatv1.ServerEvent {
		if ev.GetMessage().GetConversation().GetRoom() != "club" {
			return []*chatv1.ServerEvent{ev}
		}
		switch ev.GetMessage().GetText() {
		case "one":
			return []*chatv1.ServerEvent{ev, ev}
		case "two":
			held = ev
			return nil
		case "three":
			return []*chatv1.ServerEvent{ev, held}
		case "four":
			return nil
		}
		return []*chatv1.ServerEvent{ev}
	}))

	r, err := alice.ConnectResilient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, rec := collect(r)
	if _, err := r.Join(ctx, "club"); err != nil {
		t.Fatal(err)
	}
	bs := connect(t, bob)
	go func() {
		for range bs.Events() {
		}
	}()
	if _, err := bs.Join(ctx, "club"); err != nil {
		t.Fatal(err)
	}
	texts := []string{"one", "two", "three", "four", "five"}
	for _, text := range texts {
		if _, err := bs.Send(ctx, "club", text); err != nil {
			t.Fatal(err)
		}
	}
	rec.waitTexts(t, texts...)
	if _, err := r.Ping(ctx); err != nil { // the late "two" has been read
		t.Fatal(err)
	}
	r.Close()
	<-rec.done
	rec.checkOnce(t)
	want := []delivery{{"one", true}, {"two", false}, {"three", true}, {"four", false}, {"five", true}}
	if o := got.order("club"); !slices.Equal(o, want) {
		t.Fatalf("delivered %v, want %v", o, want)
	}
	if i := slices.IndexFunc(r.Cursors(), func(c *chatv1.ConversationCursor) bool { return c.GetConversation().GetRoom() == "club" }); i < 0 || r.Cursors()[i].GetLastSeq() != 5 {
		t.Fatalf("cursors %v, want club at 5", r.Cursors())
	}
}

// TestResilientFillsServerGap provokes a gap on a real server: two nodes
// share one SQLite file without a cluster bus, so a message stored
// through node B is never delivered live on node A, and A delivers the
// next one (after its sequencer's gap timeout) past it. The application
// on A still gets every message of general once, in seq order: the SDK
// reads the one A skipped from history first (or, were A to fill it
// itself, gets it live).
func TestResilientFillsServerGap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := servertest.Start(t, servertest.Options{DataDir: dir})
	b := servertest.Start(t, servertest.Options{DataDir: dir})
	ctx := t.Context()
	alice, carol := register(t, a, "alice"), register(t, a, "carol")
	bob := register(t, b, "bob")

	r, err := alice.ConnectResilient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, rec := collect(r)
	cs, bs := connect(t, carol), connect(t, bob)
	for _, s := range []*parley.Session{cs, bs} {
		go func() {
			for range s.Events() {
			}
		}()
	}
	if _, err := r.Ping(ctx); err != nil { // past the connect-time restore
		t.Fatal(err)
	}
	if _, err := cs.Send(ctx, "general", "one"); err != nil {
		t.Fatal(err)
	}
	rec.waitTexts(t, "one")
	if _, err := bs.Send(ctx, "general", "two"); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Send(ctx, "general", "three"); err != nil {
		t.Fatal(err)
	}
	rec.waitTexts(t, "one", "two", "three")
	if _, err := r.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	r.Close()
	<-rec.done
	rec.checkOnce(t)
	o := got.order("general")
	var texts []string
	for _, d := range o {
		texts = append(texts, d.text)
	}
	if !slices.Equal(texts, []string{"one", "two", "three"}) {
		t.Fatalf("delivered %v, want one, two, three in order", o)
	}
	t.Logf("delivered %s", fmt.Sprint(o)) // "two" live: node A filled it; replayed: the SDK did
}
