package hub_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/hub"
	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/store/sqlite"
)

func isMemberEvent(ev *chatv1.ServerEvent) bool {
	return ev.GetMemberJoined() != nil || ev.GetMemberLeft() != nil || ev.GetRoomMembersChanged() != nil
}

// memberEvents returns the member events queued to s now.
func memberEvents(tb testing.TB, s *hub.Session) []*chatv1.ServerEvent {
	tb.Helper()
	var out []*chatv1.ServerEvent
	for _, ev := range events(tb, s) {
		if isMemberEvent(ev) {
			out = append(out, ev)
		}
	}
	return out
}

func join(tb testing.TB, h *hub.Hub, s *hub.Session, r string) *chatv1.RoomJoined {
	tb.Helper()
	j, err := h.Join(context.Background(), s, r)
	if err != nil {
		tb.Fatal(err)
	}
	return j
}

func leave(tb testing.TB, h *hub.Hub, s *hub.Session, r string) {
	tb.Helper()
	if err := h.Leave(context.Background(), s, r); err != nil {
		tb.Fatal(err)
	}
}

// settleMembers lets a window flush, then empties the queues.
func settleMembers(window time.Duration, ss ...*hub.Session) {
	time.Sleep(window + 100*time.Millisecond)
	for _, s := range ss {
		drain(s)
	}
}

// TestMemberLoneChange: one change in a window still goes out as
// MemberJoined or MemberLeft, to the other members only, whether it comes
// from JoinRoom/LeaveRoom or from the user going offline and coming back
// online with its stored rooms.
func TestMemberLoneChange(t *testing.T) {
	t.Parallel()
	const window = 20 * time.Millisecond
	h := newHubWith(t, 2, hub.Config{PresenceWindow: window, QueueSize: 256})
	alice := attach(t, h, "user00000")
	join(t, h, alice, "lobby")
	bob := attach(t, h, "user00001")
	settleMembers(window, alice, bob)

	if j := join(t, h, bob, "lobby"); !slices.Equal(j.GetMembers(), []string{"user00000", "user00001"}) {
		t.Fatalf("RoomJoined = %v", j)
	}
	mj := nextEvent(t, alice, isMemberEvent).GetMemberJoined()
	if mj.GetRoom() != "lobby" || mj.GetUsername() != "user00001" || mj.GetMemberCount() != 2 {
		t.Fatalf("alice got %v, want MemberJoined of user00001", mj)
	}
	// The flush queued to every member at once: bob would have it by now.
	if evs := memberEvents(t, bob); len(evs) != 0 {
		t.Fatalf("the joiner heard of its own join: %v", evs)
	}

	leave(t, h, bob, "lobby")
	if ml := nextEvent(t, alice, isMemberEvent).GetMemberLeft(); ml.GetUsername() != "user00001" || ml.GetMemberCount() != 1 {
		t.Fatalf("alice got %v, want MemberLeft of user00001", ml)
	}

	// Going offline leaves the live room; coming back restores it.
	join(t, h, bob, "lobby")
	settleMembers(window, alice, bob)
	h.Detach(bob)
	if ml := nextEvent(t, alice, isMemberEvent).GetMemberLeft(); ml.GetUsername() != "user00001" || ml.GetMemberCount() != 1 {
		t.Fatalf("on detach alice got %v, want MemberLeft", ml)
	}
	bob = attach(t, h, "user00001")
	if mj := nextEvent(t, alice, isMemberEvent).GetMemberJoined(); mj.GetUsername() != "user00001" || mj.GetMemberCount() != 2 {
		t.Fatalf("on attach alice got %v, want MemberJoined", mj)
	}
	h.Detach(bob)
	h.Detach(alice)
}

// TestMemberBurstIsOneEvent: the changes of a window reach every member
// session as one RoomMembersChanged: names sorted, the last change of each
// user winning, the count as of the flush. A user who joined and left in
// the window is reported as left.
func TestMemberBurstIsOneEvent(t *testing.T) {
	t.Parallel()
	// Long enough that the burst's joins (each a stored membership) fall
	// in one window even on a busy machine.
	const window = time.Second
	h := newHubWith(t, 6, hub.Config{PresenceWindow: window, QueueSize: 256})
	alice1 := attach(t, h, "user00000")
	alice2 := attach(t, h, "user00000") // a second session of the same member
	join(t, h, alice1, "lobby")
	leaver := attach(t, h, "user00001")
	join(t, h, leaver, "lobby")
	var ss []*hub.Session
	for i := 2; i < 6; i++ {
		ss = append(ss, attach(t, h, fmt.Sprintf("user%05d", i)))
	}
	settleMembers(window, append(ss, alice1, alice2, leaver)...)

	for _, s := range ss {
		join(t, h, s, "lobby")
	}
	leave(t, h, leaver, "lobby")
	leave(t, h, ss[3], "lobby") // user00005: joined and left in the window

	want := &chatv1.RoomMembersChanged{Room: "lobby", Joined: userNames(2, 5), Left: []string{"user00001", "user00005"}, MemberCount: 4}
	for _, s := range []*hub.Session{alice1, alice2, ss[0]} {
		got := nextEvent(t, s, isMemberEvent).GetRoomMembersChanged()
		if got.GetRoom() != want.Room || !slices.Equal(got.GetJoined(), want.Joined) || !slices.Equal(got.GetLeft(), want.Left) ||
			got.GetMemberCount() != want.MemberCount || got.GetNamesOmitted() {
			t.Fatalf("session of %s got %v, want %v", s.Username, got, want)
		}
		if more := memberEvents(t, s); len(more) != 0 {
			t.Fatalf("session of %s got more member events: %v", s.Username, more)
		}
	}
	if evs := memberEvents(t, leaver); len(evs) != 0 {
		t.Fatalf("a user no longer in the room heard: %v", evs)
	}
	for _, s := range append(ss, alice1, alice2, leaver) {
		h.Detach(s)
	}
}

// TestMemberListStaysRightWithinWindow: a session that joins during a
// window gets the member list as it is then; the window's changes, sent
// after, bring it to the list as it is at the flush, even for a user who
// joined before that session's RoomJoined and left after it.
func TestMemberListStaysRightWithinWindow(t *testing.T) {
	t.Parallel()
	const window = time.Second
	h := newHubWith(t, 3, hub.Config{PresenceWindow: window, QueueSize: 256})
	alice := attach(t, h, "user00000")
	join(t, h, alice, "lobby")
	x, y := attach(t, h, "user00001"), attach(t, h, "user00002")
	settleMembers(window, alice, x, y)

	join(t, h, x, "lobby")
	members := map[string]bool{}
	for _, m := range join(t, h, y, "lobby").GetMembers() {
		members[m] = true
	}
	leave(t, h, x, "lobby")
	ev := nextEvent(t, y, isMemberEvent).GetRoomMembersChanged()
	for _, m := range ev.GetJoined() {
		members[m] = true
	}
	for _, m := range ev.GetLeft() {
		delete(members, m)
	}
	if want := map[string]bool{"user00000": true, "user00002": true}; len(members) != len(want) || !members["user00000"] || !members["user00002"] {
		t.Fatalf("y's member list after the window: %v (event %v), want %v", members, ev, want)
	}
	if ev.GetMemberCount() != 2 {
		t.Fatalf("member_count = %d, want 2", ev.GetMemberCount())
	}
	for _, s := range []*hub.Session{alice, x, y} {
		h.Detach(s)
	}
}

// TestMemberNamesOmittedAboveLimit: in a room with more members than
// PresenceNamesLimit, even a lone change goes out as a count, to every
// member (the one who joined too).
func TestMemberNamesOmittedAboveLimit(t *testing.T) {
	t.Parallel()
	const window = 20 * time.Millisecond
	h := newHubWith(t, 4, hub.Config{PresenceNamesLimit: 2, PresenceWindow: window, QueueSize: 256})
	var ss []*hub.Session
	for i := range 4 {
		ss = append(ss, attach(t, h, fmt.Sprintf("user%05d", i)))
	}
	join(t, h, ss[0], "lobby")
	join(t, h, ss[1], "lobby")
	settleMembers(window, ss...)

	join(t, h, ss[2], "lobby") // 3 members: over the limit of 2
	for _, s := range ss[:3] {
		got := nextEvent(t, s, isMemberEvent).GetRoomMembersChanged()
		if !got.GetNamesOmitted() || got.GetMemberCount() != 3 || len(got.GetJoined())+len(got.GetLeft()) != 0 || got.GetRoom() != "lobby" {
			t.Fatalf("session of %s got %v, want a count of 3 with names omitted", s.Username, got)
		}
	}
	if evs := memberEvents(t, ss[3]); len(evs) != 0 {
		t.Fatalf("a non-member heard: %v", evs)
	}

	// Back at the limit, names come back.
	leave(t, h, ss[2], "lobby")
	if ml := nextEvent(t, ss[0], isMemberEvent).GetMemberLeft(); ml.GetUsername() != "user00002" || ml.GetMemberCount() != 2 {
		t.Fatalf("at the limit: %v", ml)
	}
	for _, s := range ss {
		h.Detach(s)
	}
}

// TestMemberWindowNegativeSendsAtOnce: with a negative window each change
// is queued before Join returns, one MemberJoined per change.
func TestMemberWindowNegativeSendsAtOnce(t *testing.T) {
	t.Parallel()
	h := newHubWith(t, 3, hub.Config{PresenceWindow: -1, QueueSize: 256})
	ss := []*hub.Session{attach(t, h, "user00000"), attach(t, h, "user00001"), attach(t, h, "user00002")}
	join(t, h, ss[0], "lobby")
	drain(ss[0])
	join(t, h, ss[1], "lobby")
	join(t, h, ss[2], "lobby")
	evs := memberEvents(t, ss[0])
	if len(evs) != 2 || evs[0].GetMemberJoined().GetUsername() != "user00001" || evs[0].GetMemberJoined().GetMemberCount() != 2 ||
		evs[1].GetMemberJoined().GetUsername() != "user00002" || evs[1].GetMemberJoined().GetMemberCount() != 3 {
		t.Fatalf("member events = %v, want two MemberJoined", evs)
	}
	for _, s := range ss {
		h.Detach(s)
	}
}

// TestMemberBurstAcrossNodes: a node gathers its own users' changes and
// publishes the batch to the room; the other node's members get it as
// they would a local one, and the membership itself reaches that node at
// once.
func TestMemberBurstAcrossNodes(t *testing.T) {
	t.Parallel()
	st, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "hub.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i := range 4 {
		if err := st.CreateUser(context.Background(), store.User{Username: fmt.Sprintf("user%05d", i), PasswordHash: "x", Role: store.RoleUser, Active: true}); err != nil {
			t.Fatal(err)
		}
	}
	br := natsBrokers(t, 2)
	const window = time.Second
	a, err := hub.New(hub.Config{Store: st, Broker: br[0], NodeID: "a", PresenceWindow: window})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(time.Second)
	b, err := hub.New(hub.Config{Store: st, Broker: br[1], NodeID: "b", PresenceWindow: window})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown(time.Second)

	alice := attach(t, a, "user00000")
	join(t, a, alice, "lobby")
	bob1 := attach(t, b, "user00001")
	bob2 := attach(t, a, "user00001") // bob is on both nodes
	ss := []*hub.Session{attach(t, b, "user00002"), attach(t, b, "user00003")}
	eventually(t, "node b counts alice in lobby", func() bool {
		return slices.ContainsFunc(b.Rooms("user00002"), func(r *chatv1.RoomInfo) bool { return r.GetName() == "lobby" && r.GetMemberCount() == 1 })
	})
	settleMembers(window, alice, bob1, bob2, ss[0], ss[1])

	// A lone join on b: a's members hear MemberJoined; bob's session on a
	// is in the room before the window ends, and does not hear of its own
	// join.
	join(t, b, bob1, "lobby")
	eventually(t, "bob's join reaches node a", func() bool { return a.IsMember("user00001", "lobby") })
	if mj := nextEvent(t, alice, isMemberEvent).GetMemberJoined(); mj.GetUsername() != "user00001" || mj.GetMemberCount() != 2 {
		t.Fatalf("alice got %v, want MemberJoined of user00001", mj)
	}
	if evs := memberEvents(t, bob2); len(evs) != 0 {
		t.Fatalf("bob's session on a heard of its own join: %v", evs)
	}

	// A burst on b: one RoomMembersChanged on a.
	join(t, b, ss[0], "lobby")
	join(t, b, ss[1], "lobby")
	leave(t, b, bob1, "lobby")
	eventually(t, "bob's leave reaches node a", func() bool { return !a.IsMember("user00001", "lobby") })
	got := nextEvent(t, alice, isMemberEvent).GetRoomMembersChanged()
	if !slices.Equal(got.GetJoined(), []string{"user00002", "user00003"}) || !slices.Equal(got.GetLeft(), []string{"user00001"}) || got.GetRoom() != "lobby" {
		t.Fatalf("alice got %v", got)
	}
	// The count is b's at the flush, and b learns of a's members from
	// a's announcements; alice and the two joiners are in lobby.
	if got.GetMemberCount() != 3 {
		t.Fatalf("member_count = %d, want 3", got.GetMemberCount())
	}
	for _, s := range []*hub.Session{bob1, ss[0], ss[1]} {
		b.Detach(s)
	}
	a.Detach(alice)
	a.Detach(bob2)
}

// eventually waits up to 5s for cond.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("not within 5s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkMemberStorm connects the 1,000 members of one room (their
// membership stored, so each connect joins the live room) and reports the
// member events each received: changes sent one by one (window -1) against
// gathered per window (the default). One by one, every member hears of
// every later arrival; gathered, of one batch per window.
func BenchmarkMemberStorm(b *testing.B) {
	const n = 1000
	for _, tt := range []struct {
		name   string
		window time.Duration
	}{{"each", -1}, {"gathered", 0}} {
		b.Run(tt.name, func(b *testing.B) {
			h, st := newHubConfig(b, n, hub.Config{QueueSize: 1 << 16, PresenceWindow: tt.window})
			for i := range n {
				if err := st.AddMembership(context.Background(), fmt.Sprintf("user%05d", i), "big"); err != nil {
					b.Fatal(err)
				}
			}
			var received atomic.Int64
			for b.Loop() {
				var wg sync.WaitGroup
				var ss []*hub.Session
				for i := range n {
					s := attach(b, h, fmt.Sprintf("user%05d", i))
					ss = append(ss, s)
					wg.Go(func() { // a writer that counts member events
						for {
							select {
							case <-s.Ready():
								for _, f := range s.Take(nil) {
									ev := new(chatv1.ServerEvent)
									if proto.Unmarshal(f.Data, ev) == nil && isMemberEvent(ev) {
										received.Add(1)
									}
								}
							case <-s.Done():
								return
							}
						}
					})
				}
				time.Sleep(300 * time.Millisecond) // the last window flushes
				for _, s := range ss {
					s.Close(hub.ReasonNone, false)
				}
				wg.Wait()
				for _, s := range ss {
					h.Detach(s)
				}
			}
			b.ReportMetric(float64(received.Load())/float64(b.N*n), "member-events/user")
		})
	}
}
