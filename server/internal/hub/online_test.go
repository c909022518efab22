package hub_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testenv"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/broker/natsbroker"
	"github.com/parleychat/parley/server/internal/hub"
	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/store/sqlite"
	"google.golang.org/protobuf/proto"
)

// newHubWith is newHub with cfg (Store filled in); users are user00000…
func newHubWith(tb testing.TB, users int, cfg hub.Config) *hub.Hub {
	h, _ := newHubConfig(tb, users, cfg)
	return h
}

// events decodes what is queued to s now.
func events(tb testing.TB, s *hub.Session) []*chatv1.ServerEvent {
	tb.Helper()
	var out []*chatv1.ServerEvent
	for _, f := range s.Take(nil) {
		ev := new(chatv1.ServerEvent)
		if err := proto.Unmarshal(f.Data, ev); err != nil {
			tb.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

// nextEvent waits for s's next event matching keep.
func nextEvent(tb testing.TB, s *hub.Session, keep func(*chatv1.ServerEvent) bool) *chatv1.ServerEvent {
	tb.Helper()
	deadline := time.After(5 * time.Second)
	var pending []*hub.Frame
	for {
		if len(pending) == 0 {
			pending = s.Take(nil)
		}
		if len(pending) > 0 {
			f := pending[0]
			pending = pending[1:]
			ev := new(chatv1.ServerEvent)
			if err := proto.Unmarshal(f.Data, ev); err != nil {
				tb.Fatal(err)
			}
			if keep(ev) {
				return ev
			}
			continue
		}
		select {
		case <-s.Ready():
		case <-deadline:
			tb.Fatal("no matching event within 5s")
			return nil
		}
	}
}

func names(us []*chatv1.User) []string {
	out := make([]string, len(us))
	for i, u := range us {
		out[i] = u.GetUsername()
	}
	return out
}

func userNames(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("user%05d", i))
	}
	return out
}

// TestOnlineSnapshotIsFirstPage: a new session's snapshot lists only the
// first OnlineSnapshotLimit users by name, with the count and a token, and
// OnlinePage walks the rest.
func TestOnlineSnapshotIsFirstPage(t *testing.T) {
	t.Parallel()
	const n = 12
	h := newHubWith(t, n+1, hub.Config{OnlineSnapshotLimit: 5, PresenceWindow: -1, QueueSize: 256})
	// Attach in reverse so the index's order is not the arrival order.
	var ss []*hub.Session
	for i := n - 1; i >= 0; i-- {
		ss = append(ss, attach(t, h, fmt.Sprintf("user%05d", i)))
	}
	last := ss[len(ss)-1] // user00000: saw everyone in its snapshot
	var snap *chatv1.OnlineUsers
	for _, ev := range events(t, last) {
		if ev.GetOnlineUsers() != nil {
			snap = ev.GetOnlineUsers()
		}
	}
	if snap == nil {
		t.Fatal("no OnlineUsers snapshot")
	}
	if got, want := names(snap.GetUsers()), userNames(0, 5); !slices.Equal(got, want) {
		t.Fatalf("snapshot users = %v, want %v", got, want)
	}
	if snap.GetOnlineCount() != n || snap.GetNextPageToken() != "user00004" {
		t.Fatalf("snapshot count %d token %q", snap.GetOnlineCount(), snap.GetNextPageToken())
	}
	if snap.GetUsers()[0].GetRole() != chatv1.Role_ROLE_USER {
		t.Fatalf("role = %v", snap.GetUsers()[0].GetRole())
	}

	var all []string
	token, pages := "", 0
	for {
		users, next, count := h.OnlinePage(token, 5)
		if count != n {
			t.Fatalf("count = %d", count)
		}
		all = append(all, names(users)...)
		pages++
		if next == "" {
			break
		}
		token = next
	}
	if want := userNames(0, n); !slices.Equal(all, want) || pages != 3 {
		t.Fatalf("paged %d pages: %v, want %v", pages, all, want)
	}
	// The default page size is the snapshot limit; a token that is not an
	// online user still pages from its place in the order.
	if users, _, _ := h.OnlinePage("", 0); len(users) != 5 {
		t.Fatalf("default page has %d users", len(users))
	}
	if users, next, _ := h.OnlinePage("user00009x", 10); !slices.Equal(names(users), userNames(10, 12)) || next != "" {
		t.Fatalf("page after a non-user token = %v, next %q", names(users), next)
	}

	// Departures leave the index; a second session of a user does not add
	// it twice.
	extra := attach(t, h, "user00003")
	h.Detach(ss[0]) // user00011
	h.Detach(extra)
	users, next, count := h.OnlinePage("user00008", 10)
	if !slices.Equal(names(users), userNames(9, 11)) || next != "" || count != n-1 {
		t.Fatalf("after detach: %v next %q count %d", names(users), next, count)
	}
	for _, s := range ss[1:] {
		h.Detach(s)
	}
	if users, next, count := h.OnlinePage("", 10); len(users) != 0 || next != "" || count != 0 {
		t.Fatalf("after all detached: %v %q %d", names(users), next, count)
	}
}

// TestPresenceNamesOmittedAboveLimit: below PresenceNamesLimit presence
// names users; above it every change (a lone one too) goes out as a count
// with names_omitted, to everyone.
func TestPresenceNamesOmittedAboveLimit(t *testing.T) {
	t.Parallel()
	h := newHubWith(t, 10, hub.Config{PresenceNamesLimit: 3, PresenceWindow: 20 * time.Millisecond, QueueSize: 256})
	isPresence := func(ev *chatv1.ServerEvent) bool {
		return ev.GetUserOnline() != nil || ev.GetUserOffline() != nil || ev.GetPresenceChanged() != nil
	}
	settle := func(ss ...*hub.Session) { // lets the window flush, then empties the queues
		time.Sleep(100 * time.Millisecond)
		for _, s := range ss {
			drain(s)
		}
	}
	watcher := attach(t, h, "user00000")
	settle(watcher)
	b := attach(t, h, "user00001")
	if ev := nextEvent(t, watcher, isPresence); ev.GetUserOnline().GetUser().GetUsername() != "user00001" || ev.GetUserOnline().GetOnlineCount() != 2 {
		t.Fatalf("below the limit: %v", ev)
	}
	c := attach(t, h, "user00002")
	if ev := nextEvent(t, watcher, isPresence); ev.GetUserOnline().GetUser().GetUsername() != "user00002" || ev.GetUserOnline().GetOnlineCount() != 3 {
		t.Fatalf("at the limit: %v", ev)
	}

	// A lone arrival above the limit: a count, to everyone (the newcomer
	// too).
	settle(watcher, b, c)
	d := attach(t, h, "user00003")
	for _, s := range []*hub.Session{watcher, d} {
		ev := nextEvent(t, s, isPresence)
		pc := ev.GetPresenceChanged()
		if pc == nil || !pc.GetNamesOmitted() || pc.GetOnlineCount() != 4 || len(pc.GetOnline()) != 0 || len(pc.GetOffline()) != 0 {
			t.Fatalf("lone arrival above the limit: %v", ev)
		}
	}

	// A burst above the limit: one count per window.
	var burst []*hub.Session
	for i := 4; i < 10; i++ {
		burst = append(burst, attach(t, h, fmt.Sprintf("user%05d", i)))
	}
	ev := nextEvent(t, watcher, isPresence)
	if pc := ev.GetPresenceChanged(); pc == nil || !pc.GetNamesOmitted() || len(pc.GetOnline()) != 0 {
		t.Fatalf("burst above the limit: %v", ev)
	}
	for pc := ev.GetPresenceChanged(); pc.GetOnlineCount() != 10; pc = nextEvent(t, watcher, isPresence).GetPresenceChanged() {
		if !pc.GetNamesOmitted() {
			t.Fatalf("names sent above the limit: %v", pc)
		}
	}

	// Back under the limit, names come back.
	for _, s := range append(burst, d) {
		h.Detach(s)
	}
	for {
		ev := nextEvent(t, watcher, isPresence)
		if n := ev.GetUserOffline().GetOnlineCount() + ev.GetPresenceChanged().GetOnlineCount(); n == 3 {
			break
		}
	}
	drain(watcher)
	h.Detach(c)
	if ev := nextEvent(t, watcher, isPresence); ev.GetUserOffline().GetUser().GetUsername() != "user00002" || ev.GetUserOffline().GetOnlineCount() != 2 {
		t.Fatalf("back under the limit: %v", ev)
	}
	h.Detach(b)
	h.Detach(watcher)
}

// natsBrokers connects n brokers to this machine's NATS (or
// PARLEY_TEST_NATS_URL's) under a prefix of their own, so tests running at
// once do not hear each other.
func natsBrokers(t *testing.T, n int) []hub.Broker {
	t.Helper()
	url, prefix := testenv.NATSURL(), testenv.Unique("parleytest.")
	out := make([]hub.Broker, n)
	for i := range out {
		br, err := natsbroker.New(natsbroker.Config{URL: url, Subject: prefix, Name: t.Name()})
		if err != nil {
			t.Fatalf("NATS (set PARLEY_TEST_NATS_URL): %v", err)
		}
		t.Cleanup(func() { br.Close() })
		out[i] = br
	}
	return out
}

// TestOnlinePageAcrossNodes: two hubs on one broker page the union of
// their users, a user on both nodes once, with the remote users' roles.
func TestOnlinePageAcrossNodes(t *testing.T) {
	t.Parallel()
	st, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "hub.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i := range 6 {
		if err := st.CreateUser(context.Background(), store.User{Username: fmt.Sprintf("user%05d", i), PasswordHash: "x", Role: store.RoleUser, Active: true}); err != nil {
			t.Fatal(err)
		}
	}
	br := natsBrokers(t, 2)
	a, err := hub.New(hub.Config{Store: st, Broker: br[0], NodeID: "a", OnlineSnapshotLimit: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(time.Second)
	b, err := hub.New(hub.Config{Store: st, Broker: br[1], NodeID: "b", OnlineSnapshotLimit: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown(time.Second)

	var ss []*hub.Session
	on := func(h *hub.Hub, name string, role chatv1.Role) {
		s, err := h.Attach(context.Background(), hub.Identity{Username: name, Role: role}, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		ss = append(ss, s)
	}
	on(a, "user00000", chatv1.Role_ROLE_USER)
	on(a, "user00002", chatv1.Role_ROLE_USER)
	on(b, "user00001", chatv1.Role_ROLE_ADMIN)
	on(b, "user00002", chatv1.Role_ROLE_USER) // on both nodes
	on(b, "user00004", chatv1.Role_ROLE_USER)

	all := func(h *hub.Hub) ([]*chatv1.User, int) {
		var out []*chatv1.User
		token := ""
		for {
			users, next, count := h.OnlinePage(token, 2)
			out = append(out, users...)
			if next == "" {
				return out, count
			}
			token = next
		}
	}
	want := []string{"user00000", "user00001", "user00002", "user00004"}
	for _, h := range []*hub.Hub{a, b} {
		deadline := time.Now().Add(5 * time.Second)
		for {
			users, count := all(h)
			if slices.Equal(names(users), want) && count == 4 {
				if users[1].GetRole() != chatv1.Role_ROLE_ADMIN {
					t.Fatalf("node %s: remote role = %v", h.NodeID(), users[1].GetRole())
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %s: online %v (count %d), want %v", h.NodeID(), names(users), count, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// user00002 leaves node a: still online (on b); user00004 leaves b:
	// gone from a's view too.
	a.Detach(ss[1])
	b.Detach(ss[4])
	want = []string{"user00000", "user00001", "user00002"}
	deadline := time.Now().Add(5 * time.Second)
	for {
		users, count := all(a)
		if slices.Equal(names(users), want) && count == 3 && a.OnlineCount() == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after leaving: online %v (count %d), want %v", names(users), count, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, s := range []*hub.Session{ss[0], ss[2], ss[3]} {
		if s == ss[0] {
			a.Detach(s)
		} else {
			b.Detach(s)
		}
	}
}

// BenchmarkAttachWithOnline measures one connect (Attach, then Detach) with
// many users already online. The snapshot is the first page, so the cost
// should not grow with the number online.
func BenchmarkAttachWithOnline(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprintf("online=%d", n), func(b *testing.B) {
			h := newHubWith(b, n+1, hub.Config{QueueSize: 4096})
			_, stop := drained(b, h, n)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				s := attach(b, h, fmt.Sprintf("user%05d", n))
				h.Detach(s)
			}
			b.StopTimer()
			stop()
		})
	}
}

// TestClusterQueueFullIsHealed: a node whose outbound queue is too small
// for a burst drops cluster events rather than stall its fan-out, and the
// stored messages among them still reach the other node's members, in
// order and once: it announces their conversations as tails, and the
// other node reads them from the store.
func TestClusterQueueFullIsHealed(t *testing.T) {
	t.Parallel()
	st, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "hub.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i := range 2 {
		if err := st.CreateUser(context.Background(), store.User{Username: fmt.Sprintf("user%05d", i), PasswordHash: "x", Role: store.RoleUser, Active: true}); err != nil {
			t.Fatal(err)
		}
	}
	br := natsBrokers(t, 2)
	a, err := hub.New(hub.Config{Store: st, Broker: br[0], NodeID: "a", ClusterQueue: 1, QueueSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(time.Second)
	b, err := hub.New(hub.Config{Store: st, Broker: br[1], NodeID: "b", QueueSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown(time.Second)
	sender := attach(t, a, "user00000")
	reader := attach(t, b, "user00001")
	drain(reader)
	const n = 300
	var wg sync.WaitGroup
	for w := range 6 { // concurrent senders, so the queue overflows
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 6 {
				if _, err := a.SendRoom(context.Background(), sender, hub.GeneralRoom, fmt.Sprint("m", i), fmt.Sprint("c", i)); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if a.ClusterDropped() == 0 {
		t.Fatal("nothing was dropped: the queue of 1 held the burst")
	}
	var seqs []int64
	deadline := time.Now().Add(10 * time.Second)
	for len(seqs) < n && time.Now().Before(deadline) {
		for _, ev := range events(t, reader) {
			if m := ev.GetMessage(); m != nil {
				seqs = append(seqs, m.GetSeq())
			}
			for _, m := range ev.GetRecentMessages().GetMessages() {
				seqs = append(seqs, m.GetSeq())
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	want := make([]int64, n)
	for i := range want {
		want[i] = int64(i + 1)
	}
	if !slices.Equal(seqs, want) {
		t.Fatalf("node b's member got %d messages (dropped on a: %d), want 1..%d in order once; first %v", len(seqs), a.ClusterDropped(), n, seqs[:min(20, len(seqs))])
	}
	t.Logf("%d cluster events dropped on a; %d messages filled from the store on b", a.ClusterDropped(), b.Filled())
}
