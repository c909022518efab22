package interceptor

import (
	"context"
	"log/slog"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/internal/ratelimit"
	"github.com/parleychat/parley/server/internal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// replayStream hands the same decoded event to every RecvMsg, so the
// benchmark measures the wrappers and not a transport.
type replayStream struct {
	grpc.ServerStream
	ctx context.Context
	ev  *chatv1.ClientEvent
}

func (r *replayStream) Context() context.Context { return r.ctx }
func (r *replayStream) RecvMsg(m any) error {
	*m.(*chatv1.ClientEvent) = chatv1.ClientEvent{RequestId: r.ev.RequestId, Event: r.ev.Event}
	return nil
}

type oneUser struct{}

func (oneUser) GetUser(context.Context, string) (store.User, error) {
	return store.User{Username: "alice", Role: "user", Active: true}, nil
}

// BenchmarkStreamMessageChain is the per-message cost of the Connect
// RecvMsg wrapper (rate limit + validation) on a decoded ClientEvent.
func BenchmarkStreamMessageChain(b *testing.B) {
	v, err := auth.NewVerifier(auth.VerifierConfig{HMACSecret: make([]byte, 32)})
	if err != nil {
		b.Fatal(err)
	}
	lim := ratelimit.New(ratelimit.Config{Rates: map[ratelimit.Kind]ratelimit.Rate{
		ratelimit.KindMessage: {PerSecond: 1e12, Burst: 1 << 30},
		ratelimit.KindTyping:  {PerSecond: 1e12, Burst: 1 << 30},
	}})
	b.Cleanup(func() { lim.Close() })
	c, err := New(Config{Verifier: v, Users: oneUser{}, Limiter: lim, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	p := &auth.Principal{Username: "alice", Role: auth.RoleUser}
	ctx := auth.NewContext(context.Background(), p)
	for _, bc := range []struct {
		name string
		ev   *chatv1.ClientEvent
	}{
		{"send_message", &chatv1.ClientEvent{RequestId: "r1", Event: &chatv1.ClientEvent_SendMessage{SendMessage: &chatv1.SendMessage{
			Room: "general", Text: "hello, world — a typical short chat line", ClientMsgId: "c-123"}}}},
		{"typing", &chatv1.ClientEvent{RequestId: "r2", Event: &chatv1.ClientEvent_Typing{Typing: &chatv1.Typing{
			Conversation: &chatv1.Conversation{Kind: &chatv1.Conversation_Room{Room: "general"}}, Typing: true}}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := &messageStream{ServerStream: &replayStream{ctx: ctx, ev: bc.ev}, Events: &Events{c: c, ctx: ctx, p: p, key: "u:alice"}}
			var ev chatv1.ClientEvent
			b.ReportAllocs()
			for b.Loop() {
				if err := s.RecvMsg(&ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestReplayStream keeps the benchmark honest: the harness delivers the
// event it was given.
func TestReplayStream(t *testing.T) {
	t.Parallel()
	want := &chatv1.ClientEvent{RequestId: "x", Event: &chatv1.ClientEvent_Ping{Ping: &chatv1.Ping{}}}
	var got chatv1.ClientEvent
	if err := (&replayStream{ev: want}).RecvMsg(&got); err != nil || !proto.Equal(&got, want) {
		t.Fatalf("got %v, %v", &got, err)
	}
}
