// Package hub owns Parley's live state: sessions, presence, rooms, typing,
// and the routing of every event to the sessions that may see it. It stores
// through a Store it declares and knows nothing of gRPC: transports attach
// a Session and drain its queue.
//
// With a Broker (Config.Broker) several nodes form one cluster: each
// publishes the events it routes on the subject of the room or user they
// are for, subscribes to the subjects its own sessions need, and delivers
// what arrives to them; presence, room members, stats and admin commands
// span the nodes (cluster.go). Stored messages reach every session in
// sequence order with no gap, whichever node stored them: a gap is filled
// from the store, and a node that may have lost events catches up from it
// (sequencer.go).
//
// Concurrency: a Hub is safe for concurrent use. One RWMutex guards the maps;
// fan-out under it only queues pre-encoded frames without blocking, so no
// disk or network wait happens under the lock: a cluster event is handed to
// a bounded queue that another goroutine encodes and publishes, and a slow
// session cannot stall a room.
package hub

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	clusterv1 "github.com/parleychat/parley/proto/gen/go/cluster/v1"
	"github.com/parleychat/parley/server/internal/apierr"
	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/tracing"
)

// GeneralRoom is the global room every user is in; it cannot be left.
const GeneralRoom = "general"

// Store is what the hub needs from storage.
type Store interface {
	GetUser(ctx context.Context, username string) (store.User, error)
	AppendMessage(ctx context.Context, m store.Message) (store.Message, bool, error)
	LastSeq(ctx context.Context, conversation string) (int64, error)
	History(ctx context.Context, conversation string, q store.HistoryQuery) ([]store.Message, bool, error)
	Memberships(ctx context.Context, username string) ([]string, error)
	RoomSummaries(ctx context.Context, username, everyone string) ([]store.RoomSummary, error)
	AddMembership(ctx context.Context, username, room string) error
	RemoveMembership(ctx context.Context, username, room string) error
	DirectMessagesSince(ctx context.Context, username string, since time.Time, limit int) ([]store.Message, bool, error)
	TouchLastSeen(ctx context.Context, username string, t time.Time) error
	GetFile(ctx context.Context, id string) (store.File, error)
	TouchFile(ctx context.Context, id string, t time.Time) (store.File, error)
	IsFileUploader(ctx context.Context, id, username string) (bool, error)
	FileConversations(ctx context.Context, fileID string) ([]string, error)
}

// Config configures a Hub. Zero values mean the documented defaults.
type Config struct {
	Store  Store
	Logger *slog.Logger
	// NodeID names this node in Welcome and stats; default a random id.
	NodeID string
	// QueueSize bounds each session's outbound queue; default 256 frames.
	QueueSize int
	// RecentLimit is how many general messages a new session gets; default 50.
	RecentLimit int
	// ReplayCap bounds the messages one restore or Resume replays (a store
	// may cap a restore lower: StateRestored then says complete=false all
	// the same); default 1000.
	ReplayCap int
	// TypingTimeout ends a typing indicator without a stop; default 5s.
	TypingTimeout time.Duration
	// PresenceWindow is how long online/offline changes, and each room's
	// member changes, are gathered before they go out: a burst as one
	// PresenceChanged or RoomMembersChanged (per room), a lone change as
	// UserOnline/UserOffline or MemberJoined/MemberLeft. Default 100ms;
	// negative sends each change at once, as the lone ones.
	PresenceWindow time.Duration
	// OnlineSnapshotLimit is how many online users, the first ones by
	// username, a new session's OnlineUsers snapshot lists (the rest are
	// paged with OnlinePage); it is also OnlinePage's default page size.
	// Default 100.
	OnlineSnapshotLimit int
	// PresenceNamesLimit: while more users than this are online, presence
	// changes go out as counts only (PresenceChanged with names_omitted),
	// since naming every arrival to every session costs O(N²) bytes; and
	// while a room has more members than this, its member changes go out
	// as counts only (RoomMembersChanged with names_omitted), for the same
	// reason. Default 1000; negative always sends names.
	PresenceNamesLimit int
	// ClusterQueue bounds the cluster events waiting to be published;
	// default 16,384. When it is full an event is dropped and counted, and
	// a stored message among them is announced as a tail for the other
	// nodes to read from the store.
	ClusterQueue int
	// Broker, when set, joins this node to a cluster: events reach the
	// sessions of every node sharing the broker (and the database), and
	// presence, rooms and stats span the cluster. Nil runs one node.
	Broker Broker
}

// Hub routes live events. Create it with New.
type Hub struct {
	cfg     Config
	log     *slog.Logger
	store   Store
	started time.Time
	// reconnectAfter is Shutdown's hint, for the transports' Disconnect.
	reconnectAfter atomic.Int64

	mu       sync.RWMutex
	users    map[string]*user
	rooms    map[string]*room
	sessions int
	closing  bool        // set by Shutdown: Attach refuses from then on
	online   onlineIndex // users online on any node, sorted

	typing typingTable

	seq sequencer

	cluster  *cluster // nil on a single node
	presence gathered[string, presenceChange]
	members  gathered[memberKey, bool]

	msgsIn, msgsOut atomic.Int64
	dropped         atomic.Int64 // frames not queued: the session was closed or full
	slowConsumers   atomic.Int64 // sessions closed because their queue was full
	filled          atomic.Int64 // messages delivered from the store to fill a gap
}

// count records a fan-out's n queued and d dropped frames.
func (h *Hub) count(n, d int) {
	h.msgsOut.Add(int64(n))
	if d > 0 {
		h.dropped.Add(int64(d))
	}
}

type user struct {
	name     string
	role     chatv1.Role
	sessions map[*Session]struct{}
	rooms    map[string]struct{}
}

type room struct {
	name    string
	members map[string]*user
}

// New returns a Hub.
func New(cfg Config) (*Hub, error) {
	if cfg.Store == nil {
		return nil, errors.New("hub: Config.Store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.NodeID == "" {
		cfg.NodeID = "node-" + randomID(4)
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 256
	}
	if cfg.RecentLimit <= 0 {
		cfg.RecentLimit = 50
	}
	if cfg.ReplayCap <= 0 {
		cfg.ReplayCap = 1000
	}
	if cfg.TypingTimeout <= 0 {
		cfg.TypingTimeout = 5 * time.Second
	}
	if cfg.PresenceWindow == 0 {
		cfg.PresenceWindow = defaultPresenceWindow
	}
	if cfg.OnlineSnapshotLimit <= 0 {
		cfg.OnlineSnapshotLimit = defaultOnlineSnapshotLimit
	}
	if cfg.ClusterQueue <= 0 {
		cfg.ClusterQueue = outboundSize
	}
	if cfg.PresenceNamesLimit == 0 {
		cfg.PresenceNamesLimit = defaultPresenceNamesLimit
	}
	h := &Hub{
		cfg: cfg, log: cfg.Logger, store: cfg.Store, started: time.Now(),
		users: map[string]*user{}, rooms: map[string]*room{},
	}
	h.seq.init(h)
	h.typing.init(h)
	if cfg.Broker != nil {
		c, err := newCluster(h, cfg.Broker)
		if err != nil {
			return nil, err
		}
		h.cluster = c
	}
	return h, nil
}

// toRoomSubject sends e to the other nodes with members in room r.
func (h *Hub) toRoomSubject(r string, e *clusterv1.Envelope) {
	if h.cluster != nil {
		h.cluster.publish(h.cluster.roomSubject(r), e)
	}
}

// toUserSubjects sends e to the other nodes where any of users is online.
func (h *Hub) toUserSubjects(e *clusterv1.Envelope, users ...string) {
	if h.cluster == nil {
		return
	}
	for i, u := range users {
		if !slices.Contains(users[:i], u) {
			h.cluster.publish(h.cluster.userSubject(u), e)
		}
	}
}

// traced sets a stored message's envelope's trace context, under a span
// for the publish, so the receiving nodes' fan-out joins its trace.
func (h *Hub) traced(ctx context.Context, e *clusterv1.Envelope) *clusterv1.Envelope {
	ctx, span := tracing.Start(ctx, "nats.publish", trace.WithSpanKind(trace.SpanKindProducer))
	e.TraceParent, e.TraceState = tracing.Inject(ctx)
	span.End()
	return e
}

// onlineElsewhere reports whether name has a session on another node.
func (h *Hub) onlineElsewhere(name string) bool {
	return h.cluster != nil && h.cluster.onlineRemote(name)
}

// onlineCountLocked counts users online on any node; h.mu is held.
func (h *Hub) onlineCountLocked() int { return h.online.len() }

// NodeID names this node.
func (h *Hub) NodeID() string { return h.cfg.NodeID }

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Identity is who a session belongs to.
type Identity struct {
	Username string
	Role     chatv1.Role
	// LastSeenAt is the user's stored last-seen time (zero if never),
	// which the caller has just read: the auth check looks every user up,
	// so Attach does not read the user again. Attach replays the direct
	// messages since then.
	LastSeenAt time.Time
}

// Attach registers a new session for id and queues, in this order, Welcome,
// the first page of online users (Config.OnlineSnapshotLimit, with the
// count and the next page's token), the last messages of general, the
// direct messages the user missed while offline, and StateRestored. The caller must Detach it.
func (h *Hub) Attach(ctx context.Context, id Identity, tokenExpiry time.Time) (*Session, error) {
	rooms, err := h.store.Memberships(ctx, id.Username)
	if err != nil {
		return nil, err
	}
	s := newSession(randomID(8), id.Username, h.cfg.QueueSize)
	s.slow = &h.slowConsumers
	// Live events wait behind the restore below (its history is read after
	// registration), so none reaches the client ahead of older messages.
	s.hold()
	defer s.release()
	welcome := &chatv1.Welcome{
		SessionId:  s.ID,
		User:       &chatv1.User{Username: id.Username, Role: id.Role},
		ServerTime: timestamppb.Now(),
		Recovered:  len(rooms) > 0,
		NodeId:     h.cfg.NodeID,
	}
	if !tokenExpiry.IsZero() {
		welcome.TokenExpiresAt = timestamppb.New(tokenExpiry)
	}
	s.sendEventNow(&chatv1.ServerEvent{Event: &chatv1.ServerEvent_Welcome{Welcome: welcome}})

	var joined []string
	h.mu.Lock()
	if h.closing {
		// Shutdown has told every session to go: one attached now would
		// never hear it and would hold the drain open.
		h.mu.Unlock()
		return nil, apierr.New(chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE, "server shutting down; reconnect shortly")
	}
	us := h.users[id.Username]
	first := us == nil
	if first {
		us = &user{name: id.Username, role: id.Role, sessions: map[*Session]struct{}{}, rooms: map[string]struct{}{}}
		h.users[id.Username] = us
		h.online.add(id.Username) // a no-op when online on another node
		h.joinLocked(us, GeneralRoom)
		for _, r := range rooms {
			if h.joinLocked(us, r) {
				joined = append(joined, r)
			}
		}
	}
	us.role = id.Role
	us.sessions[s] = struct{}{}
	h.sessions++
	// The snapshot is taken under the same lock that orders later
	// online/offline events, so the client's view stays consistent. It is
	// the first page only, so a connect costs the same however many users
	// are online.
	users, next, count := h.onlinePageLocked("", h.cfg.OnlineSnapshotLimit)
	s.sendEventNow(&chatv1.ServerEvent{Event: &chatv1.ServerEvent_OnlineUsers{OnlineUsers: &chatv1.OnlineUsers{
		Users: users, OnlineCount: int32(count), NextPageToken: next,
	}}})
	if first && !h.onlineElsewhere(id.Username) {
		h.notePresence(id.Username, id.Role, true)
		for _, r := range joined {
			h.noteMember(r, id.Username, true)
		}
	}
	if first && h.cluster != nil {
		h.cluster.presenceChanged(id.Username, id.Role, true)
		h.cluster.want(h.cluster.userSubject(id.Username), true)
	}
	h.mu.Unlock()
	if first && h.cluster != nil {
		// Subscribed before the history below is read, so a message
		// committed after that read arrives live.
		h.cluster.reconcile(ctx)
		for _, r := range joined {
			h.toRoomSubject(r, &clusterv1.Envelope{Kind: clusterv1.Kind_KIND_JOIN, Room: r, Users: []string{id.Username}})
		}
	}

	// Fetched after registration: a message committed meanwhile may arrive
	// both live and here (clients dedupe by id) but none is missed.
	recent, _, err := h.store.History(ctx, store.RoomKey(GeneralRoom), store.HistoryQuery{Limit: h.cfg.RecentLimit})
	if err != nil {
		h.Detach(s)
		return nil, err
	}
	s.sendEventNow(recentEvent(&chatv1.Conversation{Kind: &chatv1.Conversation_Room{Room: GeneralRoom}}, recent))

	// A user who never had a session (LastSeenAt zero) has missed every
	// direct message sent to it: zero reads from the start.
	dms, more, err := h.store.DirectMessagesSince(ctx, id.Username, id.LastSeenAt, h.cfg.ReplayCap)
	if err != nil {
		h.Detach(s)
		return nil, err
	}
	replayed, complete := len(dms), !more
	h.sendGrouped(s, dms)
	if h.cluster != nil && complete {
		// Every direct message committed after the subscription began and
		// before that read is in the replay, and every later one arrives
		// live: each replayed conversation starts after its last one.
		last := map[string]int64{}
		for _, m := range dms {
			last[m.Conversation] = max(last[m.Conversation], m.Seq)
		}
		for conv, seq := range last {
			h.seq.track(conv, seq)
		}
	}
	s.sendEventNow(&chatv1.ServerEvent{Event: &chatv1.ServerEvent_StateRestored{StateRestored: &chatv1.StateRestored{
		Rooms: rooms, MessagesReplayed: int32(replayed), Complete: complete,
	}}})
	return s, nil
}

// Detach removes a session. When it was the user's last one the user goes
// offline: its rooms hear it left, everyone hears it went offline (both
// gathered per Config.PresenceWindow), and its last-seen time is stored so
// missed direct messages reach it next time.
func (h *Hub) Detach(s *Session) {
	s.Close(ReasonNone, false)
	h.mu.Lock()
	us := h.users[s.Username]
	if us == nil {
		h.mu.Unlock()
		return
	}
	if _, ok := us.sessions[s]; !ok {
		h.mu.Unlock()
		return
	}
	delete(us.sessions, s)
	h.sessions--
	last := len(us.sessions) == 0
	var left []string // the rooms it leaves, but general
	if last {
		delete(h.users, us.name)
		elsewhere := h.onlineElsewhere(us.name)
		if h.cluster != nil {
			h.cluster.presenceChanged(us.name, us.role, false)
			h.cluster.want(h.cluster.userSubject(us.name), false)
		}
		for r := range us.rooms {
			if r != GeneralRoom {
				left = append(left, r)
			}
		}
		for _, r := range append(left, GeneralRoom) {
			h.leaveLocked(us, r)
			if r != GeneralRoom && !elsewhere {
				h.noteMember(r, us.name, false)
			}
		}
		if !elsewhere {
			h.online.remove(us.name)
			h.notePresence(us.name, us.role, false)
		}
	}
	h.mu.Unlock()
	if last && h.cluster != nil {
		for _, r := range left {
			h.toRoomSubject(r, &clusterv1.Envelope{Kind: clusterv1.Kind_KIND_LEAVE, Room: r, Users: []string{us.name}})
		}
		go h.cluster.reconcile(context.Background())
		h.seq.forgetUser(us.name, h.isLocal)
	}
	if last {
		h.typing.clearUser(s.Username)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := h.store.TouchLastSeen(ctx, s.Username, time.Now().UTC()); err != nil {
			h.log.Warn("store last seen", "user", s.Username, "err", err)
		}
	}
}

// joinLocked adds us to room r; it reports whether us was not yet a member.
func (h *Hub) joinLocked(us *user, r string) bool {
	if _, ok := us.rooms[r]; ok {
		return false
	}
	rm := h.rooms[r]
	if rm == nil {
		rm = &room{name: r, members: map[string]*user{}}
		h.rooms[r] = rm
		if h.cluster != nil {
			h.cluster.want(h.cluster.roomSubject(r), true)
		}
	}
	rm.members[us.name] = us
	us.rooms[r] = struct{}{}
	return true
}

func (h *Hub) leaveLocked(us *user, r string) {
	delete(us.rooms, r)
	if rm := h.rooms[r]; rm != nil {
		delete(rm.members, us.name)
		if len(rm.members) == 0 {
			delete(h.rooms, r) // empty rooms live only in storage
			if h.cluster != nil {
				h.cluster.want(h.cluster.roomSubject(r), false)
			}
		}
	}
}

// toAllLocked queues f to every session except those of user skip.
func (h *Hub) toAllLocked(f *Frame, skip string) int {
	n, d := 0, 0
	for name, us := range h.users {
		if name == skip {
			continue
		}
		for s := range us.sessions {
			if s.Send(f) {
				n++
			} else {
				d++
			}
		}
	}
	h.count(n, d)
	return n
}

// toRoomLocked queues f to every session of every member of room r except
// the sessions of user skip.
func (h *Hub) toRoomLocked(r string, f *Frame, skip string) int {
	rm := h.rooms[r]
	if rm == nil {
		return 0
	}
	n, d := 0, 0
	for name, us := range rm.members {
		if name == skip {
			continue
		}
		for s := range us.sessions {
			if s.Send(f) {
				n++
			} else {
				d++
			}
		}
	}
	h.count(n, d)
	return n
}

// toUsersLocked queues f to every session of the named users.
func (h *Hub) toUsersLocked(f *Frame, names ...string) int {
	n, d := 0, 0
	for i, name := range names {
		if slices.Contains(names[:i], name) {
			continue
		}
		if us := h.users[name]; us != nil {
			for s := range us.sessions {
				if s.Send(f) {
					n++
				} else {
					d++
				}
			}
		}
	}
	h.count(n, d)
	return n
}

// IsMember reports whether user is live in room.
func (h *Hub) IsMember(username, r string) bool {
	if r == GeneralRoom {
		return true
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	us := h.users[username]
	if us == nil {
		return false
	}
	_, ok := us.rooms[r]
	return ok
}

// Join adds the session's user to room r (all of its sessions), stores the
// membership and tells the other members.
func (h *Hub) Join(ctx context.Context, s *Session, r string) (*chatv1.RoomJoined, error) {
	if err := h.store.AddMembership(ctx, s.Username, r); err != nil {
		return nil, err
	}
	h.mu.Lock()
	us := h.users[s.Username]
	if us == nil {
		h.mu.Unlock()
		return nil, apierr.FailedPrecondition("session is closed")
	}
	joined := h.joinLocked(us, r)
	if joined {
		h.noteMember(r, us.name, true)
	}
	h.mu.Unlock()
	if joined && h.cluster != nil {
		// In place before RoomJoined goes back, so the history the client
		// reads next and the live messages after it leave no gap.
		h.cluster.reconcile(ctx)
		e := &clusterv1.Envelope{Kind: clusterv1.Kind_KIND_JOIN, Room: r, Users: []string{us.name}}
		h.toRoomSubject(r, e)
		h.toUserSubjects(e, us.name)
	}
	h.mu.RLock()
	members := h.roomMembersLocked(r)
	h.mu.RUnlock()
	return &chatv1.RoomJoined{Room: r, Members: members, MemberCount: int32(len(members))}, nil
}

// roomMembersLocked lists room r's members on every node, sorted.
func (h *Hub) roomMembersLocked(r string) []string {
	var members []string
	if r == GeneralRoom {
		names, _ := h.online.page("", h.online.len())
		return slices.Clone(names)
	}
	if rm := h.rooms[r]; rm != nil {
		for name := range rm.members {
			members = append(members, name)
		}
	}
	if h.cluster != nil {
		for name := range h.cluster.remoteRoomMembers(h.users, r)[r] {
			members = append(members, name)
		}
	}
	sort.Strings(members)
	return members
}

// roomCountLocked counts r's live members on every node without listing
// them: every join and leave, and every connect of a member, reports it.
func (h *Hub) roomCountLocked(r string) int {
	if r == GeneralRoom {
		return h.online.len()
	}
	n := 0
	if rm := h.rooms[r]; rm != nil {
		n = len(rm.members)
	}
	if h.cluster != nil {
		n += len(h.cluster.remoteRoomMembers(h.users, r)[r])
	}
	return n
}

// Leave removes the session's user from room r and its stored membership.
func (h *Hub) Leave(ctx context.Context, s *Session, r string) error {
	if r == GeneralRoom {
		return apierr.FailedPrecondition("the general room cannot be left")
	}
	if !h.IsMember(s.Username, r) {
		return apierr.FailedPrecondition("not a member of room %q", r)
	}
	if err := h.store.RemoveMembership(ctx, s.Username, r); err != nil {
		return err
	}
	h.mu.Lock()
	left := false
	if us := h.users[s.Username]; us != nil {
		if _, ok := us.rooms[r]; ok {
			h.leaveLocked(us, r)
			h.noteMember(r, us.name, false)
			left = true
		}
	}
	h.mu.Unlock()
	if left && h.cluster != nil {
		e := &clusterv1.Envelope{Kind: clusterv1.Kind_KIND_LEAVE, Room: r, Users: []string{s.Username}, Membership: true}
		h.toRoomSubject(r, e)
		h.toUserSubjects(e, s.Username)
		go h.cluster.reconcile(context.Background())
	}
	h.typing.stop(store.RoomKey(r), s.Username)
	return nil
}

// Rooms lists the live rooms (those with a member online) with their
// online member counts, marking those user is in; ListRooms lists every
// stored room.
func (h *Hub) Rooms(username string) []*chatv1.RoomInfo {
	h.mu.RLock()
	names := map[string]bool{}
	for name := range h.rooms {
		names[name] = true
	}
	var remote map[string]map[string]bool
	var counts map[string]int
	if h.cluster != nil {
		remote = h.cluster.remoteRoomMembers(h.users, "")
		counts = h.cluster.remoteRoomCounts(h.rooms)
		for name := range counts {
			names[name] = true
		}
	}
	out := make([]*chatv1.RoomInfo, 0, len(names))
	for name := range names {
		n, joined := len(remote[name])+counts[name], remote[name][username]
		if rm := h.rooms[name]; rm != nil {
			_, in := rm.members[username]
			n, joined = n+len(rm.members), joined || in
		}
		out = append(out, &chatv1.RoomInfo{Name: name, MemberCount: int32(n), Joined: joined})
	}
	h.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ListRooms lists every room, stored members or not online, sorted by
// name: member_count is the stored member count (general counts every
// user), online_count the members online on any node, and joined marks
// the rooms username is in. It costs one store query however many rooms
// there are, and one pass over the live rooms under the read lock.
func (h *Hub) ListRooms(ctx context.Context, username string) ([]*chatv1.RoomInfo, error) {
	stored, err := h.store.RoomSummaries(ctx, username, GeneralRoom)
	if err != nil {
		return nil, err
	}
	out := make([]*chatv1.RoomInfo, len(stored))
	h.mu.RLock()
	var remote map[string]map[string]bool
	var counts map[string]int
	if h.cluster != nil {
		remote = h.cluster.remoteRoomMembers(h.users, "")
		counts = h.cluster.remoteRoomCounts(h.rooms)
	}
	for i, r := range stored {
		online, joined := len(remote[r.Name])+counts[r.Name], r.Joined || remote[r.Name][username]
		if rm := h.rooms[r.Name]; rm != nil {
			_, in := rm.members[username]
			online, joined = online+len(rm.members), joined || in
		}
		if r.Name == GeneralRoom {
			online = h.onlineCountLocked() // everyone online is in it
		}
		// A member who joined since the store was read is counted once.
		members := max(r.Members, online)
		out[i] = &chatv1.RoomInfo{Name: r.Name, MemberCount: int32(members), OnlineCount: int32(online), Joined: joined}
	}
	h.mu.RUnlock()
	return out, nil
}

// Sent is the result of storing a message.
type Sent struct {
	Message   *chatv1.Message
	Duplicate bool
}

// SendRoom stores a text message to room r and delivers it to the room's
// members (the sender's sessions included). Only members may send.
func (h *Hub) SendRoom(ctx context.Context, s *Session, r, text, clientMsgID string) (Sent, error) {
	if !h.IsMember(s.Username, r) {
		return Sent{}, apierr.PermissionDenied("not a member of room %q", r)
	}
	return h.post(ctx, store.Message{Conversation: store.RoomKey(r), Sender: s.Username, ClientMsgID: clientMsgID, Text: text})
}

// SendDirect stores a private message and delivers it to every session of
// the recipient and of the sender.
func (h *Hub) SendDirect(ctx context.Context, s *Session, to, text, clientMsgID string) (Sent, error) {
	if err := h.checkRecipient(ctx, to); err != nil {
		return Sent{}, err
	}
	return h.post(ctx, store.Message{Conversation: store.DirectKey(s.Username, to), Sender: s.Username, Recipient: to, ClientMsgID: clientMsgID, Text: text})
}

func (h *Hub) checkRecipient(ctx context.Context, to string) error {
	u, err := h.store.GetUser(ctx, to)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !u.Active) {
		return apierr.NotFound("user %q not found", to)
	}
	return err
}

// SendFile posts a file message. The sender must have uploaded the file or
// be able to read a conversation it was posted in.
func (h *Hub) SendFile(ctx context.Context, s *Session, conv *chatv1.Conversation, fileID, clientMsgID string) (Sent, error) {
	f, err := h.store.GetFile(ctx, fileID)
	if errors.Is(err, store.ErrNotFound) {
		return Sent{}, apierr.NotFound("file %s not found", fileID)
	} else if err != nil {
		return Sent{}, err
	}
	if ok, err := h.CanReadFile(ctx, s.Username, fileID); err != nil {
		return Sent{}, err
	} else if !ok {
		return Sent{}, apierr.NotFound("file %s not found", fileID)
	}
	m := store.Message{Sender: s.Username, ClientMsgID: clientMsgID, FileID: f.ID, FileName: f.Name, FileSize: f.Size, FileType: f.ContentType}
	switch k := conv.GetKind().(type) {
	case *chatv1.Conversation_Room:
		if !h.IsMember(s.Username, k.Room) {
			return Sent{}, apierr.PermissionDenied("not a member of room %q", k.Room)
		}
		m.Conversation = store.RoomKey(k.Room)
	case *chatv1.Conversation_User:
		if err := h.checkRecipient(ctx, k.User); err != nil {
			return Sent{}, err
		}
		m.Conversation, m.Recipient = store.DirectKey(s.Username, k.User), k.User
	default:
		return Sent{}, apierr.InvalidArgument("conversation is required")
	}
	// Mark the file used before the message that references it is stored:
	// the file garbage collector keeps a recently used file, and if it
	// deleted this one since the lookup above, the post fails here rather
	// than referencing a file that is gone.
	if _, err := h.store.TouchFile(ctx, f.ID, time.Now()); errors.Is(err, store.ErrNotFound) {
		return Sent{}, apierr.NotFound("file %s not found", fileID)
	} else if err != nil {
		return Sent{}, err
	}
	return h.post(ctx, m)
}

// post stores m and, once committed, delivers it. Appends to the same
// conversation run concurrently (so they share group commits); the
// sequencer releases them to the members in sequence order.
func (h *Hub) post(ctx context.Context, m store.Message) (Sent, error) {
	co, err := h.seq.begin(ctx, h.store, m.Conversation)
	if err != nil {
		return Sent{}, err
	}
	stored, dup, err := h.store.AppendMessage(ctx, m)
	if err != nil || dup {
		h.seq.end(co, m.Conversation, 0, nil)
		if err != nil {
			return Sent{}, err
		}
		h.msgsIn.Add(1)
		return Sent{Message: MessageProto(stored), Duplicate: true}, nil
	}
	h.msgsIn.Add(1)
	pm := MessageProto(stored)
	f := Encode(&chatv1.ServerEvent{Event: &chatv1.ServerEvent_Message{Message: pm}})
	if !h.seq.end(co, m.Conversation, stored.Seq, func() { h.deliver(ctx, stored, f) }) {
		// Already delivered here from the store (a gap fill overtook this
		// append): the other nodes must still hear of it.
		h.publishStored(ctx, stored, f)
	}
	return Sent{Message: pm}, nil
}

// deliver fans a stored message out to whoever may see it; ctx is its
// command's, for the trace.
func (h *Hub) deliver(ctx context.Context, m store.Message, f *Frame) {
	ctx, span := tracing.Start(ctx, "hub.fanout")
	var n int
	room, _, _, _ := store.ParseKey(m.Conversation)
	h.mu.RLock()
	if room != "" {
		n = h.toRoomLocked(room, f, "")
	} else {
		n = h.toUsersLocked(f, m.Sender, m.Recipient)
	}
	h.mu.RUnlock()
	h.publishStored(ctx, m, f)
	if span.IsRecording() {
		span.SetAttributes(attribute.Int("parley.sessions", n), attribute.String("parley.message_id", m.ID))
	}
	span.End()
	h.typing.stop(m.Conversation, m.Sender)
}

// publishStored sends a stored message to the other nodes that need it.
func (h *Hub) publishStored(ctx context.Context, m store.Message, f *Frame) {
	if h.cluster == nil {
		return
	}
	if room, _, _, _ := store.ParseKey(m.Conversation); room != "" {
		h.toRoomSubject(room, h.traced(ctx, &clusterv1.Envelope{Kind: clusterv1.Kind_KIND_ROOM, Room: room, Frame: f.Data, Conversation: m.Conversation, Seq: m.Seq}))
	} else {
		h.toUserSubjects(h.traced(ctx, &clusterv1.Envelope{Kind: clusterv1.Kind_KIND_USERS, Users: []string{m.Sender, m.Recipient}, Frame: f.Data, Conversation: m.Conversation, Seq: m.Seq}), m.Sender, m.Recipient)
	}
}

// Typing starts or stops username's typing indicator in conv.
func (h *Hub) Typing(s *Session, conv *chatv1.Conversation, on bool) error {
	var key string
	switch k := conv.GetKind().(type) {
	case *chatv1.Conversation_Room:
		if !h.IsMember(s.Username, k.Room) {
			return apierr.PermissionDenied("not a member of room %q", k.Room)
		}
		key = store.RoomKey(k.Room)
	case *chatv1.Conversation_User:
		if k.User == s.Username {
			return apierr.InvalidArgument("cannot type to yourself")
		}
		key = store.DirectKey(s.Username, k.User)
	default:
		return apierr.InvalidArgument("conversation is required")
	}
	if on {
		h.typing.start(key, s.Username)
	} else {
		h.typing.stop(key, s.Username)
	}
	return nil
}

// deliverTyping fans a typing change out; called by the typing table
// without its own lock held.
func (h *Hub) deliverTyping(key, username string, on bool) {
	room, a, b, _ := store.ParseKey(key)
	ev := &chatv1.TypingEvent{Username: username, Typing: on}
	h.mu.RLock()
	defer h.mu.RUnlock()
	if room != "" {
		ev.Conversation = &chatv1.Conversation{Kind: &chatv1.Conversation_Room{Room: room}}
		f := Encode(&chatv1.ServerEvent{Event: &chatv1.ServerEvent_Typing{Typing: ev}})
		h.toRoomLocked(room, f, username)
		h.toRoomSubject(room, &clusterv1.Envelope{Kind: clusterv1.Kind_KIND_ROOM, Room: room, Frame: f.Data, Skip: username})
		return
	}
	peer := a
	if peer == username {
		peer = b
	}
	ev.Conversation = &chatv1.Conversation{Kind: &chatv1.Conversation_User{User: peer}}
	f := Encode(&chatv1.ServerEvent{Event: &chatv1.ServerEvent_Typing{Typing: ev}})
	h.toUsersLocked(f, peer)
	h.toUserSubjects(&clusterv1.Envelope{Kind: clusterv1.Kind_KIND_USERS, Users: []string{peer}, Frame: f.Data}, peer)
}

// ConversationKey resolves conv as seen by username to a storage key and
// checks that username may read it.
func (h *Hub) ConversationKey(ctx context.Context, username string, conv *chatv1.Conversation) (string, error) {
	switch k := conv.GetKind().(type) {
	case *chatv1.Conversation_Room:
		if ok, err := h.CanReadRoom(ctx, username, k.Room); err != nil {
			return "", err // the store failed: not a refusal
		} else if !ok {
			return "", apierr.PermissionDenied("not a member of room %q", k.Room)
		}
		return store.RoomKey(k.Room), nil
	case *chatv1.Conversation_User:
		return store.DirectKey(username, k.User), nil
	}
	return "", apierr.InvalidArgument("conversation is required")
}

// CanReadRoom reports whether username is a member of room r, live or
// stored. A store failure is returned as such, never as "not a member":
// the caller would otherwise refuse a member as PermissionDenied.
func (h *Hub) CanReadRoom(ctx context.Context, username, r string) (bool, error) {
	if h.IsMember(username, r) {
		return true, nil
	}
	rooms, err := h.store.Memberships(ctx, username)
	if err != nil {
		return false, err
	}
	return slices.Contains(rooms, r), nil
}

// CanReadFile reports whether username uploaded the file or can read a
// conversation it was posted in.
func (h *Hub) CanReadFile(ctx context.Context, username, fileID string) (bool, error) {
	if ok, err := h.store.IsFileUploader(ctx, fileID, username); err != nil || ok {
		return ok, err
	}
	convs, err := h.store.FileConversations(ctx, fileID)
	if err != nil {
		return false, err
	}
	for _, c := range convs {
		room, a, b, ok := store.ParseKey(c)
		switch {
		case !ok:
		case room != "":
			if ok, err := h.CanReadRoom(ctx, username, room); err != nil || ok {
				return ok, err
			}
		case room == "" && (a == username || b == username):
			return true, nil
		}
	}
	return false, nil
}

// Resume replays, for each cursor in turn, the messages after its
// last_seq, oldest first (from the first message for 0), up to ReplayCap
// in all, then queues StateRestored: complete is false when the cap left
// any message after a cursor unreplayed, so the client knows to go on from
// the last sequence it got. Every event it queues carries requestID. A
// cursor the user may not read refuses the whole Resume before anything is
// replayed.
func (h *Hub) Resume(ctx context.Context, s *Session, requestID string, cursors []*chatv1.ConversationCursor) error {
	keys := make([]string, len(cursors))
	var rooms []string
	for i, c := range cursors {
		key, err := h.ConversationKey(ctx, s.Username, c.GetConversation())
		if err != nil {
			return err
		}
		keys[i] = key
		if r := c.GetConversation().GetRoom(); r != "" {
			rooms = append(rooms, r)
		}
	}
	// Live events wait behind the replay (see Session.hold).
	s.hold()
	defer s.release()
	budget, replayed, complete := h.cfg.ReplayCap, 0, true
	for i, c := range cursors {
		after := max(c.GetLastSeq(), 0)
		for {
			if budget == 0 {
				// The cap is spent: only say incomplete when something is
				// left here.
				rest, _, err := h.store.History(ctx, keys[i], store.HistoryQuery{AfterSeq: store.After(after), Limit: 1})
				if err != nil {
					return err
				}
				complete = complete && len(rest) == 0
				break
			}
			msgs, more, err := h.store.History(ctx, keys[i], store.HistoryQuery{AfterSeq: store.After(after), Limit: min(replayPage, budget)})
			if err != nil {
				return err
			}
			if len(msgs) > 0 {
				ev := recentEvent(c.GetConversation(), msgs)
				ev.RequestId = requestID
				s.sendEventNow(ev)
				after = msgs[len(msgs)-1].Seq
				budget -= len(msgs)
				replayed += len(msgs)
			}
			if !more || len(msgs) == 0 {
				break
			}
		}
	}
	s.sendEventNow(&chatv1.ServerEvent{RequestId: requestID, Event: &chatv1.ServerEvent_StateRestored{StateRestored: &chatv1.StateRestored{
		Rooms: rooms, MessagesReplayed: int32(replayed), Complete: complete,
	}}})
	return nil
}

// replayPage is the most messages one RecentMessages event of a replay
// carries, so that one replay cannot overflow a session's queue.
const replayPage = 100

// sendGrouped queues messages as RecentMessages, one event per conversation
// and at most replayPage messages per event, each conversation's in
// sequence order (sent_at, which the query orders by, comes from the
// clocks of several nodes in a cluster).
func (h *Hub) sendGrouped(s *Session, msgs []store.Message) {
	byConv := map[string][]store.Message{}
	var order []string
	for _, m := range msgs {
		if _, ok := byConv[m.Conversation]; !ok {
			order = append(order, m.Conversation)
		}
		byConv[m.Conversation] = append(byConv[m.Conversation], m)
	}
	for _, key := range order {
		ms := byConv[key]
		slices.SortStableFunc(ms, func(a, b store.Message) int { return cmp.Compare(a.Seq, b.Seq) })
		conv := conversationProto(ms[0])
		if u := conv.GetUser(); u == s.Username {
			conv = &chatv1.Conversation{Kind: &chatv1.Conversation_User{User: ms[0].Sender}}
		}
		for len(ms) > 0 {
			n := min(replayPage, len(ms))
			s.sendEventNow(recentEvent(conv, ms[:n]))
			ms = ms[n:]
		}
	}
}

// Broadcast queues an AdminBroadcast to everyone, or to room when set, on
// every node, and returns the number of sessions it was queued to in the
// cluster (a node that does not answer within a second is not counted).
func (h *Hub) Broadcast(from, text, room string) int {
	f := Encode(&chatv1.ServerEvent{Event: &chatv1.ServerEvent_AdminBroadcast{AdminBroadcast: &chatv1.AdminBroadcast{
		From: from, Text: text, Room: room, SentAt: timestamppb.Now(),
	}}})
	h.mu.RLock()
	var n int
	if room != "" {
		n = h.toRoomLocked(room, f, "")
	} else {
		n = h.toAllLocked(f, "")
	}
	h.mu.RUnlock()
	if h.cluster != nil {
		n += h.cluster.gather(&clusterv1.Envelope{Kind: clusterv1.Kind_KIND_BROADCAST, Room: room, Frame: f.Data})
	}
	return n
}

// DisconnectUser sends a notice to every session of username and closes them.
func (h *Hub) DisconnectUser(username, reason string) int {
	msg := "disconnected by an administrator"
	if reason != "" {
		msg += ": " + reason
	}
	f := Encode(&chatv1.ServerEvent{Event: &chatv1.ServerEvent_ServerNotice{ServerNotice: &chatv1.ServerNotice{
		Kind: chatv1.NoticeKind_NOTICE_KIND_DISCONNECTED, Message: msg,
	}}})
	n := h.disconnectLocal(username, f)
	if h.cluster != nil {
		// On the user's own subject: only the nodes it is online on hear it.
		n += h.cluster.gatherUser(username, &clusterv1.Envelope{Kind: clusterv1.Kind_KIND_DISCONNECT, Users: []string{username}, Frame: f.Data})
	}
	return n
}

// disconnectLocal closes this node's sessions of username after notice f.
func (h *Hub) disconnectLocal(username string, f *Frame) int {
	h.mu.RLock()
	var ss []*Session
	if us := h.users[username]; us != nil {
		for s := range us.sessions {
			ss = append(ss, s)
		}
	}
	h.mu.RUnlock()
	// The notice's text (with the admin's reason) is also the session's
	// close detail, so the Disconnect event that ends it says the same.
	var detail string
	if f != nil {
		var ev chatv1.ServerEvent
		if proto.Unmarshal(f.Data, &ev) == nil {
			detail = ev.GetServerNotice().GetMessage()
		}
	}
	for _, s := range ss {
		if f != nil {
			s.Send(f)
		}
		s.CloseWithDetail(ReasonDisconnectedByAdmin, detail, true)
	}
	return len(ss)
}

// ReconnectAfter is the hint Shutdown gave (0 before it): a session
// closed for ReasonShutdown tells its client to wait that long.
func (h *Hub) ReconnectAfter() time.Duration { return time.Duration(h.reconnectAfter.Load()) }

// Shutdown tells every session the server is going away, with a reconnect
// hint, and closes them so their writers flush the notice and end.
func (h *Hub) Shutdown(reconnectAfter time.Duration) int {
	f := Encode(&chatv1.ServerEvent{Event: &chatv1.ServerEvent_ServerNotice{ServerNotice: &chatv1.ServerNotice{
		Kind: chatv1.NoticeKind_NOTICE_KIND_SHUTDOWN, Message: "server shutting down; reconnect shortly",
		ReconnectAfter: durationpb.New(reconnectAfter),
	}}})
	h.reconnectAfter.Store(int64(reconnectAfter))
	h.mu.Lock()
	h.closing = true
	var ss []*Session
	for _, us := range h.users {
		for s := range us.sessions {
			ss = append(ss, s)
		}
	}
	h.mu.Unlock()
	for _, s := range ss {
		s.Send(f)
		s.Close(ReasonShutdown, true)
	}
	h.typing.close()
	h.presence.close()
	h.members.close()
	if h.cluster != nil {
		h.cluster.close() // says goodbye, so the others drop our users at once
	}
	return len(ss)
}

// WaitIdle waits until every session has detached, or ctx ends.
func (h *Hub) WaitIdle(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		h.mu.RLock()
		n := h.sessions
		h.mu.RUnlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Stats are the hub's live counters.
type Stats struct {
	Connections, OnlineUsers, Rooms int
	MessagesIn, MessagesOut         int64
	Uptime                          time.Duration
	// Dropped counts frames fan-out could not queue (the session was
	// closing, or its queue was full); SlowConsumers counts the sessions
	// closed for a full queue. Neither goes to the other nodes.
	Dropped       int64 `json:"-"`
	SlowConsumers int64 `json:"-"`
}

// Stats returns this node's live counters.
func (h *Hub) Stats() Stats { return h.localStats() }

func (h *Hub) localStats() Stats {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return Stats{
		Connections: h.sessions, OnlineUsers: len(h.users), Rooms: len(h.rooms),
		MessagesIn: h.msgsIn.Load(), MessagesOut: h.msgsOut.Load(), Uptime: time.Since(h.started),
		Dropped: h.dropped.Load(), SlowConsumers: h.slowConsumers.Load(),
	}
}

// NodeStats are one node's counters.
type NodeStats struct {
	NodeID string
	Stats
}

// Nodes returns this node's counters first, then those the other nodes
// last announced (at most a couple of seconds old).
func (h *Hub) Nodes() []NodeStats {
	out := []NodeStats{{NodeID: h.cfg.NodeID, Stats: h.localStats()}}
	if h.cluster != nil {
		out = append(out, h.cluster.nodes()...)
	}
	return out
}

// Peers counts the other nodes this node has heard from lately (0 on a
// single node).
func (h *Hub) Peers() int {
	if h.cluster == nil {
		return 0
	}
	return h.cluster.peerCount()
}

// OnlineCount counts users online on any node.
func (h *Hub) OnlineCount() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.onlineCountLocked()
}

// ClusterDropped counts cluster events not published because the
// outbound queue was full (0 on a single node).
func (h *Hub) ClusterDropped() int64 {
	if h.cluster == nil {
		return 0
	}
	return h.cluster.dropped.Load()
}

// Filled counts messages delivered from the store to fill gaps.
func (h *Hub) Filled() int64 { return h.filled.Load() }

// isLocal reports whether name has a session on this node.
func (h *Hub) isLocal(name string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.users[name] != nil
}

// deliverStored delivers messages of conv read from the store (a gap or a
// catch-up), in sequence order, to this node's sessions only: a few as
// Message events, more as RecentMessages pages, each of which is one frame
// in a session's queue.
func (h *Hub) deliverStored(conv string, msgs []store.Message) {
	room, a, b, ok := store.ParseKey(conv)
	if !ok || len(msgs) == 0 {
		return
	}
	h.filled.Add(int64(len(msgs)))
	h.mu.RLock()
	defer h.mu.RUnlock()
	if len(msgs) <= smallFill {
		for _, m := range msgs {
			f := Encode(&chatv1.ServerEvent{Event: &chatv1.ServerEvent_Message{Message: MessageProto(m)}})
			if room != "" {
				h.toRoomLocked(room, f, "")
			} else {
				h.toUsersLocked(f, a, b)
			}
		}
		return
	}
	for len(msgs) > 0 {
		page := msgs[:min(replayPage, len(msgs))]
		msgs = msgs[len(page):]
		if room != "" {
			h.toRoomLocked(room, Encode(recentEvent(&chatv1.Conversation{Kind: &chatv1.Conversation_Room{Room: room}}, page)), "")
			continue
		}
		// A direct conversation is named by the other participant.
		h.toUsersLocked(Encode(recentEvent(&chatv1.Conversation{Kind: &chatv1.Conversation_User{User: b}}, page)), a)
		h.toUsersLocked(Encode(recentEvent(&chatv1.Conversation{Kind: &chatv1.Conversation_User{User: a}}, page)), b)
	}
}

// MessageProto converts a stored message for the wire.
func MessageProto(m store.Message) *chatv1.Message {
	pm := &chatv1.Message{
		Id: m.ID, Conversation: conversationProto(m), Seq: m.Seq, Sender: m.Sender,
		SentAt: timestamppb.New(m.SentAt), ClientMsgId: m.ClientMsgID,
	}
	if m.FileID != "" {
		pm.Body = &chatv1.Message_File{File: &chatv1.FileRef{Id: m.FileID, Name: m.FileName, Size: m.FileSize, ContentType: m.FileType}}
	} else {
		pm.Body = &chatv1.Message_Text{Text: m.Text}
	}
	return pm
}

func conversationProto(m store.Message) *chatv1.Conversation {
	if room, _, _, ok := store.ParseKey(m.Conversation); ok && room != "" {
		return &chatv1.Conversation{Kind: &chatv1.Conversation_Room{Room: room}}
	}
	return &chatv1.Conversation{Kind: &chatv1.Conversation_User{User: m.Recipient}}
}

func recentEvent(conv *chatv1.Conversation, msgs []store.Message) *chatv1.ServerEvent {
	out := make([]*chatv1.Message, len(msgs))
	for i, m := range msgs {
		out[i] = MessageProto(m)
	}
	return &chatv1.ServerEvent{Event: &chatv1.ServerEvent_RecentMessages{RecentMessages: &chatv1.RecentMessages{Conversation: conv, Messages: out}}}
}
