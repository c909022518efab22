package hub_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/hub"
	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/store/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newHub(tb testing.TB, users int, queue int) (*hub.Hub, *sqlite.Store) {
	return newHubConfig(tb, users, hub.Config{QueueSize: queue, TypingTimeout: time.Second})
}

// newHubConfig opens a hub on a new SQLite store with users user00000….
func newHubConfig(tb testing.TB, users int, cfg hub.Config) (*hub.Hub, *sqlite.Store) {
	tb.Helper()
	st, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(tb.TempDir(), "hub.db")})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	for i := range users {
		// The hash is never checked here; hashing 10,000 passwords would
		// only slow the benchmark's setup.
		if err := st.CreateUser(context.Background(), store.User{Username: fmt.Sprintf("user%05d", i), PasswordHash: "x", Role: store.RoleUser, Active: true}); err != nil {
			tb.Fatal(err)
		}
	}
	cfg.Store = st
	h, err := hub.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Shutdown(time.Second) })
	return h, st
}

func attach(tb testing.TB, h *hub.Hub, name string) *hub.Session {
	tb.Helper()
	s, err := h.Attach(context.Background(), hub.Identity{Username: name, Role: chatv1.Role_ROLE_USER}, time.Time{})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func drain(s *hub.Session) { s.Take(nil) }

// next waits for s's next frame.
func next(s *hub.Session, wait time.Duration) *hub.Frame {
	deadline := time.After(wait)
	for {
		if q := s.Take(nil); len(q) > 0 {
			return q[0]
		}
		select {
		case <-s.Ready():
		case <-deadline:
			return nil
		}
	}
}

// TestSlowSessionIsClosedNotWaitedFor fills one session's queue: it is
// closed as a slow consumer and the others keep receiving.
func TestSlowSessionIsClosedNotWaitedFor(t *testing.T) {
	h, _ := newHub(t, 2, 8)
	slow, fast := attach(t, h, "user00000"), attach(t, h, "user00001")
	drain(fast)
	for i := range 20 {
		h.Broadcast("test", fmt.Sprint(i), "")
		if next(fast, time.Second) == nil {
			t.Fatalf("fast session missed broadcast %d", i)
		}
	}
	select {
	case <-slow.Done():
	default:
		t.Fatal("slow session was not closed")
	}
	if slow.Reason() != hub.ReasonSlowConsumer || slow.DrainOnClose() {
		t.Fatalf("reason %v, drain %v", slow.Reason(), slow.DrainOnClose())
	}
	h.Detach(slow)
	h.Detach(fast)
	if st := h.Stats(); st.Connections != 0 || st.OnlineUsers != 0 {
		t.Fatalf("stats after detach = %+v", st)
	}
}

// TestFanoutEncodesOnce: every recipient gets the very same frame.
func TestFanoutEncodesOnce(t *testing.T) {
	h, _ := newHub(t, 3, 64)
	var ss []*hub.Session
	for i := range 3 {
		s := attach(t, h, fmt.Sprintf("user%05d", i))
		ss = append(ss, s)
	}
	for _, s := range ss {
		drain(s)
	}
	if n := h.Broadcast("test", "hi", ""); n != 3 {
		t.Fatalf("queued to %d sessions", n)
	}
	var first *hub.Frame
	for _, s := range ss {
		f := next(s, time.Second)
		if first == nil {
			first = f
		} else if f != first {
			t.Fatal("a recipient got its own copy of the frame")
		}
	}
	for _, s := range ss {
		h.Detach(s)
	}
}

// BenchmarkBroadcast measures one fan-out (encode once, queue to every
// member) at several room sizes; drainers stand in for the writers.
func BenchmarkBroadcast(b *testing.B) {
	for _, n := range []int{1, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			h, _ := newHub(b, n, 1024)
			_, stop := drained(b, h, n)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				h.Broadcast("bench", "a 128-byte payload .........................................................................................", "")
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
			stop()
		})
	}
}

// BenchmarkPostRoom measures a stored room message (group-committed append
// plus fan-out to 100 members) from parallel senders.
func BenchmarkPostRoom(b *testing.B) {
	const members = 100
	h, _ := newHub(b, members, 4096)
	ss, stop := drained(b, h, members)
	b.ReportAllocs()
	b.ResetTimer()
	var mu sync.Mutex
	next := 0
	// Many concurrent senders, as many clients would be: they share commits.
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		s := ss[next%members]
		next++
		mu.Unlock()
		for pb.Next() {
			if _, err := h.SendRoom(context.Background(), s, "general", "benchmark message", ""); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	stop()
}

// drained attaches n users whose queues a goroutine each drains, standing
// in for the writers; stop closes and detaches them.
func drained(tb testing.TB, h *hub.Hub, n int) (ss []*hub.Session, stop func()) {
	var wg sync.WaitGroup
	for i := range n {
		s := attach(tb, h, fmt.Sprintf("user%05d", i))
		ss = append(ss, s)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []*hub.Frame
			for {
				select {
				case <-s.Ready():
					buf = s.Take(buf) // handed back, as a writer does
				case <-s.Done():
					return
				}
			}
		}()
	}
	return ss, func() {
		for _, s := range ss {
			s.Close(hub.ReasonNone, false)
		}
		wg.Wait()
		for _, s := range ss {
			h.Detach(s)
		}
	}
}

// BenchmarkFanoutEncoding shows what encoding once saves: the cost of
// preparing one room message for 1,000 recipients, once versus per
// recipient (what a naive per-connection Send(proto) does).
func BenchmarkFanoutEncoding(b *testing.B) {
	const recipients = 1000
	ev := &chatv1.ServerEvent{Event: &chatv1.ServerEvent_Message{Message: hub.MessageProto(store.Message{
		ID: "01a2172179550e0dd8670e1896875c42", Conversation: store.RoomKey("general"), Seq: 42, Sender: "alice",
		Text: strings.Repeat("x", 128), SentAt: time.Now(),
	})}}
	sink := make([]*hub.Frame, recipients)
	b.Run("once", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			f := hub.Encode(ev)
			for i := range sink {
				sink[i] = f
			}
		}
	})
	b.Run("per-recipient", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for i := range sink {
				sink[i] = hub.Encode(ev)
			}
		}
	})
}

// TestSessionQueue: frames come out in order, all at once; the queue
// signals Urgent at half its bound and closes the session as a slow
// consumer at the bound; OnClose runs once, also when registered late.
func TestSessionQueue(t *testing.T) {
	h, _ := newHub(t, 2, 8)
	s := attach(t, h, "user00000")
	defer h.Detach(s)
	s.Take(nil) // Welcome and the rest
	select {
	case <-s.Urgent(): // left from the attach burst
	default:
	}
	frames := make([]*hub.Frame, 6)
	for i := range frames {
		frames[i] = &hub.Frame{Data: []byte{byte(i)}}
	}
	for _, f := range frames[:3] {
		if !s.Send(f) {
			t.Fatal("send refused")
		}
	}
	select {
	case <-s.Urgent():
		t.Fatal("urgent below half the bound")
	default:
	}
	s.Send(frames[3]) // 4 of 8
	select {
	case <-s.Urgent():
	default:
		t.Fatal("no urgent at half the bound")
	}
	got := s.Take(nil)
	if len(got) != 4 || got[0] != frames[0] || got[3] != frames[3] {
		t.Fatalf("took %v", got)
	}
	if s.Queued() != 0 {
		t.Fatalf("queued after take: %d", s.Queued())
	}

	ran := make(chan struct{}, 2)
	s.OnClose(func() { ran <- struct{}{} })
	for range 8 {
		s.Send(frames[4])
	}
	if s.Send(frames[5]) { // the ninth frame: over the bound
		t.Fatal("ninth frame queued")
	}
	if s.Reason() != hub.ReasonSlowConsumer {
		t.Fatalf("reason %v", s.Reason())
	}
	<-ran
	s.OnClose(func() { ran <- struct{}{} }) // after the close: runs at once
	<-ran
	select {
	case <-ran:
		t.Fatal("a hook ran twice")
	case <-time.After(50 * time.Millisecond):
	}
}
