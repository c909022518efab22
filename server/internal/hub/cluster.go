package hub

import (
	"context"
	"encoding/hex"
	"math"
	"regexp"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	clusterv1 "github.com/parleychat/parley/proto/gen/go/cluster/v1"
	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/tracing"
)

// Broker carries events between the nodes of a cluster on subjects, the
// way NATS does (natsbroker): a node receives only what it subscribed to.
// Receive runs on one goroutine in arrival order; resumed reports that
// events may have been lost since lost (the node then catches up from the
// store).
type Broker interface {
	Prefix() string
	Start(receive func(subject, reply string, data []byte), resumed func(lost time.Time)) error
	Publish(subject, reply string, data []byte) error
	// Subscribe returns once events published afterwards will arrive.
	Subscribe(subjects ...string) error
	Unsubscribe(subjects ...string) error
	// Gather publishes a request and collects up to want replies.
	Gather(ctx context.Context, subject string, data []byte, want int) ([][]byte, error)
}

// Subjects, under the broker's prefix p. Each event travels on the subject
// of whoever needs it, and a node subscribes only to what its sessions
// need, so a node receives its own rooms' and users' traffic, not the
// cluster's:
//
//	p.room.<room>   a room's messages, typing, member events and joins:
//	                subscribed while a member of the room is online here
//	p.user.<user>   a user's direct messages and typing, its joins and
//	                leaves (its sessions on other nodes follow them) and
//	                an admin's disconnect of it (answered with counts):
//	                subscribed while the user has a session here
//	p.node.<id>     requests to one node (presence sync, member replies)
//	p.presence      heartbeats and presence changes: every node
//	p.admin         broadcasts, answered with counts: every node
//
// The general room is everyone's, so its messages go to p.room.general,
// which every node with a session subscribes to. Names outside
// [A-Za-z0-9_-] are hex-encoded after a "~" (a username may hold a '.',
// a subject separator).
var subjectSafe = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func token(name string) string {
	if subjectSafe.MatchString(name) {
		return name
	}
	return "~" + hex.EncodeToString([]byte(name))
}

// Cluster timings: a node sends a heartbeat every heartbeatEvery and its
// presence changes at most every presenceDebounce; a node not heard from
// for peerTTL is taken as gone (within peerTTL+expireEvery, under the 5 s
// a dead node's users may stay online).
const (
	presenceDebounce = 100 * time.Millisecond
	heartbeatEvery   = time.Second
	peerTTL          = 3 * time.Second
	expireEvery      = 500 * time.Millisecond
	gatherTimeout    = time.Second
)

// outboundSize is the default of Config.ClusterQueue, which bounds the
// events waiting to be published. When it is full
// an event is dropped rather than stall the fan-out that made it; a
// dropped stored message is announced later as a tail (the receivers read
// it from the store), typing and member events are simply lost.
const outboundSize = 1 << 14

type outbound struct {
	subject, reply string
	env            *clusterv1.Envelope
}

// cluster is the hub's view of the other nodes. Lock order: Hub.mu, then
// cluster.mu; cluster.imu (interest) is taken alone or before Hub.mu is
// read, never under it.
type cluster struct {
	h      *Hub
	broker Broker
	prefix string

	out     chan outbound
	dropped atomic.Int64
	warned  atomic.Int64 // when a publish failure was last logged (unix nanos)

	mu        sync.Mutex
	peers     map[string]*peer
	members   map[string]map[string]map[string]struct{} // room -> node -> users, for rooms subscribed here
	delta     map[string]*clusterv1.OnlineUser          // presence changes not yet published (nil value: offline)
	pseq      uint64                                    // presence deltas published
	tails     map[string]int64                          // stored messages dropped from out, by conversation
	sinceUser map[string]time.Time                      // when each local user's subscription began

	// imu serializes interest changes: want records the subjects wanted
	// (under Hub.mu, no I/O) and reconcile applies them.
	imu        sync.Mutex
	wantMu     sync.Mutex
	wanted     map[string]bool
	subscribed map[string]bool

	stop      chan struct{} // ends the loop, which says goodbye
	done      chan struct{}
	drainStop chan struct{} // then ends the drain, once the goodbye is queued
	drainDone chan struct{}
	once      sync.Once
}

type peer struct {
	at      time.Time
	pseq    uint64
	users   map[string]chatv1.Role
	stats   *clusterv1.NodeStats
	rooms   map[string]int64
	syncing bool
}

func newCluster(h *Hub, b Broker) (*cluster, error) {
	c := &cluster{
		h: h, broker: b, prefix: b.Prefix(),
		out:   make(chan outbound, h.cfg.ClusterQueue),
		peers: map[string]*peer{}, members: map[string]map[string]map[string]struct{}{},
		delta: map[string]*clusterv1.OnlineUser{}, tails: map[string]int64{}, sinceUser: map[string]time.Time{},
		wanted: map[string]bool{}, subscribed: map[string]bool{},
		stop: make(chan struct{}), done: make(chan struct{}),
		drainStop: make(chan struct{}), drainDone: make(chan struct{}),
	}
	if err := b.Start(c.receive, c.resumed); err != nil {
		return nil, err
	}
	if err := b.Subscribe(c.subject("presence"), c.subject("admin"), c.subject("node", h.cfg.NodeID)); err != nil {
		return nil, err
	}
	go c.drain()
	go c.loop()
	return c, nil
}

func (c *cluster) subject(kind string, name ...string) string {
	s := c.prefix + "." + kind
	for _, n := range name {
		s += "." + token(n)
	}
	return s
}

func (c *cluster) roomSubject(r string) string { return c.subject("room", r) }
func (c *cluster) userSubject(u string) string { return c.subject("user", u) }

// publish queues e for subject; it never blocks (see outboundSize).
func (c *cluster) publish(subject string, e *clusterv1.Envelope) {
	c.publishReply(subject, "", e)
}

// publishReply is publish with a reply subject. One envelope may be
// queued for several subjects: it is not written once queued.
func (c *cluster) publishReply(subject, reply string, e *clusterv1.Envelope) {
	if e.Node == "" {
		e.Node = c.h.cfg.NodeID
	}
	select {
	case c.out <- outbound{subject: subject, reply: reply, env: e}:
	default:
		c.dropped.Add(1)
		if e.Seq > 0 {
			c.mu.Lock()
			c.tails[e.Conversation] = max(c.tails[e.Conversation], e.Seq)
			c.mu.Unlock()
		}
	}
}

// drain publishes the queued events, outside every lock: encoding and
// the client call happen here, not under Hub.mu.
func (c *cluster) drain() {
	defer close(c.drainDone)
	for {
		select {
		case o := <-c.out:
			c.send(o)
			if len(c.out) == 0 {
				c.sendTails()
			}
		case <-c.drainStop:
			for {
				select {
				case o := <-c.out:
					c.send(o)
				default:
					return
				}
			}
		}
	}
}

func (c *cluster) send(o outbound) {
	b, err := proto.Marshal(o.env)
	if err == nil {
		err = c.broker.Publish(o.subject, o.reply, b)
	}
	if err == nil {
		return
	}
	// NATS is unreachable and the client's reconnect buffer is full: a
	// stored message is announced as a tail once the link is back, so the
	// others read it from the store.
	c.dropped.Add(1)
	if o.env.Seq > 0 && o.env.Kind != clusterv1.Kind_KIND_TAIL {
		c.mu.Lock()
		c.tails[o.env.Conversation] = max(c.tails[o.env.Conversation], o.env.Seq)
		c.mu.Unlock()
	}
	if now := time.Now().UnixNano(); now-c.warned.Load() > int64(time.Second) {
		c.warned.Store(now)
		c.h.log.Warn("cluster publish", "kind", o.env.Kind, "err", err, "dropped_total", c.dropped.Load())
	}
}

// sendTails tells the others which conversations have messages this node
// dropped from its queue.
func (c *cluster) sendTails() {
	c.mu.Lock()
	if len(c.tails) == 0 {
		c.mu.Unlock()
		return
	}
	tails := c.tails
	c.tails = map[string]int64{}
	c.mu.Unlock()
	for conv, seq := range tails {
		e := &clusterv1.Envelope{Node: c.h.cfg.NodeID, Kind: clusterv1.Kind_KIND_TAIL, Conversation: conv, Seq: seq}
		room, a, b, _ := store.ParseKey(conv)
		if room != "" {
			c.send(outbound{subject: c.roomSubject(room), env: e})
		} else {
			c.send(outbound{subject: c.userSubject(a), env: e})
			c.send(outbound{subject: c.userSubject(b), env: e})
		}
	}
}

// want records that subject is (or is no longer) needed here. Hub.mu is
// held; reconcile applies it.
func (c *cluster) want(subject string, on bool) {
	c.wantMu.Lock()
	c.wanted[subject] = on
	c.wantMu.Unlock()
}

// reconcile applies the wanted subjects. It returns once the new
// subscriptions are in place and each newly subscribed room's order is
// known (the room's last sequence, read after the subscription began), so
// a session attached or joined before it returns misses nothing. Rooms
// newly subscribed also ask the other nodes for their members.
func (c *cluster) reconcile(ctx context.Context) {
	c.imu.Lock()
	defer c.imu.Unlock()
	c.wantMu.Lock()
	wanted := c.wanted
	c.wanted = map[string]bool{}
	c.wantMu.Unlock()
	var add, drop []string
	for s, on := range wanted {
		switch {
		case on && !c.subscribed[s]:
			add = append(add, s)
			c.subscribed[s] = true
		case !on && c.subscribed[s]:
			drop = append(drop, s)
			delete(c.subscribed, s)
		}
	}
	if len(drop) > 0 {
		if err := c.broker.Unsubscribe(drop...); err != nil {
			c.h.log.Warn("cluster unsubscribe", "err", err)
		}
		for _, s := range drop {
			if r, ok := c.nameOf(s, "room"); ok {
				c.h.seq.forget(store.RoomKey(r))
				c.mu.Lock()
				delete(c.members, r)
				c.mu.Unlock()
			} else if u, ok := c.nameOf(s, "user"); ok {
				c.mu.Lock()
				delete(c.sinceUser, u)
				c.mu.Unlock()
			}
		}
	}
	if len(add) == 0 {
		return
	}
	if err := c.broker.Subscribe(add...); err != nil {
		// Registered all the same, and back when the connection is; the
		// catch-up after reconnecting delivers what was missed.
		c.h.log.Warn("cluster subscribe", "err", err)
	}
	now := time.Now()
	var who sync.WaitGroup
	for _, s := range add {
		if r, ok := c.nameOf(s, "room"); ok {
			conv := store.RoomKey(r)
			last, err := c.h.store.LastSeq(ctx, conv)
			if err != nil {
				// Without a start the room waits; the next attempt
				// (another join, or the catch-up) reads it.
				c.h.log.Warn("cluster: room start", "room", r, "err", err)
				delete(c.subscribed, s)
				c.wantMu.Lock()
				if _, again := c.wanted[s]; !again {
					c.wanted[s] = true
				}
				c.wantMu.Unlock()
				continue
			}
			c.h.seq.track(conv, last)
			who.Add(1)
			go func() { defer who.Done(); c.who(r) }()
		} else if u, ok := c.nameOf(s, "user"); ok {
			c.mu.Lock()
			c.sinceUser[u] = now
			c.mu.Unlock()
		}
	}
	who.Wait()
}

// whoTimeout bounds how long a join waits for the other nodes to list a
// room's members; a late answer still arrives, on the node's subject.
const whoTimeout = 250 * time.Millisecond

// who asks the nodes with members in room r (as their heartbeats say) for
// them, so the RoomJoined of the first member here lists everyone. When no
// node is known to have any, the question goes out all the same and the
// answers arrive as they come.
func (c *cluster) who(r string) {
	want := 0
	c.mu.Lock()
	for _, p := range c.peers {
		if p.rooms[r] > 0 {
			want++
		}
	}
	c.mu.Unlock()
	e := &clusterv1.Envelope{Kind: clusterv1.Kind_KIND_WHO, Room: r}
	if want == 0 {
		c.publishReply(c.roomSubject(r), c.subject("node", c.h.cfg.NodeID), e)
		return
	}
	e.Node = c.h.cfg.NodeID
	b, err := proto.Marshal(e)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), whoTimeout)
	defer cancel()
	replies, _ := c.broker.Gather(ctx, c.roomSubject(r), b, want)
	for _, data := range replies {
		var m clusterv1.Envelope
		if proto.Unmarshal(data, &m) == nil {
			c.membersReply(&m)
		}
	}
}

// membersReply records a node's members of a room it listed.
func (c *cluster) membersReply(e *clusterv1.Envelope) {
	h := c.h
	h.mu.RLock()
	defer h.mu.RUnlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if h.rooms[e.Room] == nil {
		return
	}
	nodes := c.members[e.Room]
	if nodes == nil {
		nodes = map[string]map[string]struct{}{}
		c.members[e.Room] = nodes
	}
	set := map[string]struct{}{}
	for _, u := range e.Users {
		set[u] = struct{}{}
	}
	nodes[e.Node] = set
}

// nameOf returns the room or user name a subject of that kind carries.
func (c *cluster) nameOf(subject, kind string) (string, bool) {
	p := c.prefix + "." + kind + "."
	if len(subject) <= len(p) || subject[:len(p)] != p {
		return "", false
	}
	t := subject[len(p):]
	if t[0] != '~' {
		return t, true
	}
	b, err := hex.DecodeString(t[1:])
	return string(b), err == nil
}

// since is when the first of users still online here began receiving
// their events here (zero when none is).
func (c *cluster) since(users ...string) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var t time.Time
	for _, u := range users {
		if s, ok := c.sinceUser[u]; ok && (t.IsZero() || s.Before(t)) {
			t = s
		}
	}
	if t.IsZero() {
		t = time.Now()
	}
	return t
}

// presenceChanged records a local user's arrival (role set) or departure;
// Hub.mu is held. The loop publishes the changes.
func (c *cluster) presenceChanged(name string, role chatv1.Role, online bool) {
	c.mu.Lock()
	if online {
		c.delta[name] = &clusterv1.OnlineUser{Username: name, Role: int32(role)}
	} else {
		c.delta[name] = nil
	}
	c.mu.Unlock()
}

func (c *cluster) loop() {
	defer close(c.done)
	beat := time.NewTicker(heartbeatEvery)
	defer beat.Stop()
	flush := time.NewTicker(presenceDebounce)
	defer flush.Stop()
	expire := time.NewTicker(expireEvery)
	defer expire.Stop()
	c.heartbeat()
	for {
		select {
		case <-c.stop:
			c.flushPresence()
			c.publish(c.subject("presence"), &clusterv1.Envelope{Kind: clusterv1.Kind_KIND_BYE})
			return
		case <-flush.C:
			c.flushPresence()
		case <-beat.C:
			c.flushPresence()
			c.heartbeat()
		case <-expire.C:
			c.expire()
		}
	}
}

func (c *cluster) close() {
	c.once.Do(func() {
		close(c.stop)
		<-c.done
		close(c.drainStop)
	})
	<-c.drainDone
}

// flushPresence publishes the presence changes gathered since the last.
func (c *cluster) flushPresence() {
	c.mu.Lock()
	if len(c.delta) == 0 {
		c.mu.Unlock()
		return
	}
	c.pseq++
	d := &clusterv1.PresenceDelta{Seq: c.pseq}
	for name, u := range c.delta {
		if u != nil {
			d.Online = append(d.Online, u)
		} else {
			d.Offline = append(d.Offline, name)
		}
	}
	c.delta = map[string]*clusterv1.OnlineUser{}
	c.mu.Unlock()
	c.publish(c.subject("presence"), &clusterv1.Envelope{Kind: clusterv1.Kind_KIND_PRESENCE, Presence: d})
}

// heartbeat says this node is alive, with its counters and room counts.
func (c *cluster) heartbeat() {
	h := c.h
	hb := &clusterv1.Heartbeat{Rooms: map[string]int64{}}
	h.mu.RLock()
	for name, rm := range h.rooms {
		if name != GeneralRoom {
			hb.Rooms[name] = int64(len(rm.members))
		}
	}
	hb.Users = int64(len(h.users))
	c.mu.Lock()
	hb.PresenceSeq = c.pseq
	// Changes not yet published are in len(h.users) but not in pseq: the
	// hearers' check waits for them.
	pendingDelta := len(c.delta) > 0
	c.mu.Unlock()
	h.mu.RUnlock()
	if pendingDelta {
		hb.Users = -1
	}
	hb.Stats = statsProto(h.localStats())
	c.publish(c.subject("presence"), &clusterv1.Envelope{Kind: clusterv1.Kind_KIND_HEARTBEAT, Heartbeat: hb})
}

func statsProto(s Stats) *clusterv1.NodeStats {
	return &clusterv1.NodeStats{
		Connections: int64(s.Connections), OnlineUsers: int64(s.OnlineUsers), Rooms: int64(s.Rooms),
		MessagesIn: s.MessagesIn, MessagesOut: s.MessagesOut, UptimeMs: s.Uptime.Milliseconds(),
	}
}

// expire forgets nodes not heard from within peerTTL.
func (c *cluster) expire() {
	h := c.h
	h.mu.Lock()
	defer h.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	for node, p := range c.peers {
		if time.Since(p.at) > peerTTL {
			h.log.Warn("cluster node gone quiet", "node", node)
			c.dropPeerLocked(node)
		}
	}
}

// dropPeerLocked forgets a node: its users go offline here unless online
// elsewhere, and it is no longer a member of any room. Hub.mu (write) and
// c.mu are held.
func (c *cluster) dropPeerLocked(node string) {
	p := c.peers[node]
	if p == nil {
		return
	}
	for name, role := range p.users {
		c.setRemoteLocked(node, name, role, false)
	}
	delete(c.peers, node)
	for _, nodes := range c.members {
		delete(nodes, node)
	}
}

// setRemoteLocked records name online or offline on node, keeping
// Hub.online in step and telling local sessions when the user's presence
// in the cluster changed. Hub.mu (write) and c.mu are held.
func (c *cluster) setRemoteLocked(node, name string, role chatv1.Role, online bool) {
	p := c.peers[node]
	if p == nil {
		return
	}
	_, was := p.users[name]
	if online == was {
		if online {
			p.users[name] = role
		}
		return
	}
	if online {
		p.users[name] = role
	} else {
		delete(p.users, name)
	}
	h := c.h
	if h.users[name] != nil || c.onOtherNodeLocked(name, node) {
		return // online before and after, whatever node changed
	}
	if online {
		h.online.add(name)
	} else {
		h.online.remove(name)
	}
	h.notePresence(name, role, online)
}

// peerLocked returns node's entry, creating it; c.mu is held.
func (c *cluster) peerLocked(node string) *peer {
	p := c.peers[node]
	if p == nil {
		p = &peer{users: map[string]chatv1.Role{}, rooms: map[string]int64{}}
		c.peers[node] = p
	}
	p.at = time.Now()
	return p
}

// receive handles one event from another node. It runs on the broker's
// one goroutine and does no I/O: replies are queued, store reads run on
// goroutines of their own.
func (c *cluster) receive(subject, reply string, data []byte) {
	e := &clusterv1.Envelope{}
	if err := proto.Unmarshal(data, e); err != nil {
		c.h.log.Warn("cluster: bad event", "subject", subject, "err", err)
		return
	}
	if e.Node == c.h.cfg.NodeID {
		return
	}
	h := c.h
	var f *Frame
	if e.Frame != nil {
		f = &Frame{Data: e.Frame}
	}
	switch e.Kind {
	case clusterv1.Kind_KIND_ROOM, clusterv1.Kind_KIND_USERS:
		c.route(e, f)
	case clusterv1.Kind_KIND_TAIL:
		if h.seq.tracked(e.Conversation) {
			go h.seq.catchUpKey(e.Conversation, e.Seq)
		}
	case clusterv1.Kind_KIND_JOIN, clusterv1.Kind_KIND_LEAVE:
		join := e.Kind == clusterv1.Kind_KIND_JOIN
		changed := false
		h.mu.Lock()
		c.mu.Lock()
		if nodes := c.members[e.Room]; nodes != nil || h.rooms[e.Room] != nil {
			if nodes == nil {
				nodes = map[string]map[string]struct{}{}
				c.members[e.Room] = nodes
			}
			if nodes[e.Node] == nil {
				nodes[e.Node] = map[string]struct{}{}
			}
			for _, u := range e.Users {
				switch {
				case join:
					nodes[e.Node][u] = struct{}{}
				case e.Membership: // left the room: on every node
					for _, users := range nodes {
						delete(users, u)
					}
				default: // went offline on that node
					delete(nodes[e.Node], u)
				}
			}
		}
		c.mu.Unlock()
		// The user's own sessions here follow its joins and leaves made
		// on another node.
		if e.Room != GeneralRoom {
			for _, u := range e.Users {
				if us := h.users[u]; us != nil && subject == c.userSubject(u) {
					if join {
						changed = h.joinLocked(us, e.Room) || changed
					} else if _, in := us.rooms[e.Room]; in {
						h.leaveLocked(us, e.Room)
						changed = true
					}
				}
			}
		}
		h.mu.Unlock()
		if changed {
			go c.reconcile(context.Background())
		}
	case clusterv1.Kind_KIND_WHO:
		var users []string
		h.mu.RLock()
		if rm := h.rooms[e.Room]; rm != nil {
			for name := range rm.members {
				users = append(users, name)
			}
		}
		h.mu.RUnlock()
		if reply != "" && len(users) > 0 {
			c.publish(reply, &clusterv1.Envelope{Kind: clusterv1.Kind_KIND_MEMBERS, Room: e.Room, Users: users})
		}
	case clusterv1.Kind_KIND_MEMBERS:
		c.membersReply(e)
	case clusterv1.Kind_KIND_HEARTBEAT:
		hb := e.Heartbeat
		c.mu.Lock()
		p := c.peerLocked(e.Node)
		p.stats, p.rooms = hb.GetStats(), hb.GetRooms()
		stale := hb.GetUsers() >= 0 && (p.pseq != hb.GetPresenceSeq() || int64(len(p.users)) != hb.GetUsers())
		c.mu.Unlock()
		if stale {
			c.sync(e.Node)
		}
	case clusterv1.Kind_KIND_PRESENCE:
		c.applyPresence(e.Node, e.Presence)
	case clusterv1.Kind_KIND_SYNC:
		if reply != "" {
			c.publish(reply, &clusterv1.Envelope{Kind: clusterv1.Kind_KIND_PRESENCE, Presence: c.snapshot()})
		}
	case clusterv1.Kind_KIND_BYE:
		h.mu.Lock()
		c.mu.Lock()
		c.dropPeerLocked(e.Node)
		c.mu.Unlock()
		h.mu.Unlock()
	case clusterv1.Kind_KIND_BROADCAST:
		h.mu.RLock()
		var n int
		if e.Room != "" {
			n = h.toRoomLocked(e.Room, f, "")
		} else {
			n = h.toAllLocked(f, "")
		}
		h.mu.RUnlock()
		if reply != "" {
			c.publish(reply, &clusterv1.Envelope{Kind: clusterv1.Kind_KIND_COUNT, Count: int64(n)})
		}
	case clusterv1.Kind_KIND_DISCONNECT:
		var n int
		for _, u := range e.Users {
			n += h.disconnectLocal(u, f)
		}
		if reply != "" {
			c.publish(reply, &clusterv1.Envelope{Kind: clusterv1.Kind_KIND_COUNT, Count: int64(n)})
		}
	}
}

// route delivers a room or user frame to this node's sessions; a stored
// message goes through the sequencer, in order with every other copy.
func (c *cluster) route(e *clusterv1.Envelope, f *Frame) {
	h := c.h
	if f == nil {
		return
	}
	var traced context.Context
	if e.TraceParent != "" {
		var span trace.Span
		traced, span = tracing.Start(tracing.Extract(context.Background(), e.TraceParent, e.TraceState), "nats.receive", trace.WithSpanKind(trace.SpanKindConsumer))
		span.End()
	}
	room := e.Kind == clusterv1.Kind_KIND_ROOM
	deliver := func() {
		var span trace.Span
		if traced != nil {
			_, span = tracing.Start(traced, "hub.fanout")
		}
		h.mu.RLock()
		var n int
		if room {
			n = h.toRoomLocked(e.Room, f, e.Skip)
		} else {
			n = h.toUsersLocked(f, e.Users...)
		}
		h.mu.RUnlock()
		if span != nil {
			span.SetAttributes(attribute.Int("parley.sessions", n))
			span.End()
		}
	}
	if e.Seq == 0 {
		deliver()
		return
	}
	h.mu.RLock()
	here := room && h.rooms[e.Room] != nil
	for _, u := range e.Users {
		here = here || (!room && h.users[u] != nil)
	}
	h.mu.RUnlock()
	if !here {
		return // a late event for a room or user no longer here: not tracked
	}
	h.seq.remote(e.Conversation, e.Seq, deliver)
}

// applyPresence applies a node's presence changes, or its whole presence
// (d.Full); a change out of sequence asks for the whole.
func (c *cluster) applyPresence(node string, d *clusterv1.PresenceDelta) {
	if d == nil {
		return
	}
	h := c.h
	h.mu.Lock()
	c.mu.Lock()
	p := c.peerLocked(node)
	resync := false
	switch {
	case d.Full:
		keep := map[string]bool{}
		for _, u := range d.Online {
			keep[u.Username] = true
			c.setRemoteLocked(node, u.Username, chatv1.Role(u.Role), true)
		}
		for name, role := range p.users {
			if !keep[name] {
				c.setRemoteLocked(node, name, role, false)
			}
		}
		p.pseq = d.Seq
		p.syncing = false
	case d.Seq == p.pseq+1:
		for _, u := range d.Online {
			c.setRemoteLocked(node, u.Username, chatv1.Role(u.Role), true)
		}
		for _, name := range d.Offline {
			c.setRemoteLocked(node, name, p.users[name], false)
		}
		p.pseq = d.Seq
	case d.Seq > p.pseq:
		resync = true
	}
	c.mu.Unlock()
	h.mu.Unlock()
	if resync {
		c.sync(node)
	}
}

// sync asks node for its whole presence, once at a time.
func (c *cluster) sync(node string) {
	c.mu.Lock()
	p := c.peers[node]
	if p == nil || p.syncing {
		c.mu.Unlock()
		return
	}
	p.syncing = true
	c.mu.Unlock()
	go func() {
		b, _ := proto.Marshal(&clusterv1.Envelope{Node: c.h.cfg.NodeID, Kind: clusterv1.Kind_KIND_SYNC})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		replies, err := c.broker.Gather(ctx, c.subject("node", node), b, 1)
		cancel()
		if err != nil || len(replies) == 0 {
			c.mu.Lock()
			if p := c.peers[node]; p != nil {
				p.syncing = false // the next heartbeat tries again
			}
			c.mu.Unlock()
			return
		}
		e := &clusterv1.Envelope{}
		if proto.Unmarshal(replies[0], e) == nil && e.Presence != nil {
			e.Presence.Full = true
			c.applyPresence(node, e.Presence)
		}
	}()
}

// snapshot is this node's whole presence, as a full delta.
func (c *cluster) snapshot() *clusterv1.PresenceDelta {
	h := c.h
	d := &clusterv1.PresenceDelta{Full: true}
	h.mu.RLock()
	for name, us := range h.users {
		d.Online = append(d.Online, &clusterv1.OnlineUser{Username: name, Role: int32(us.role)})
	}
	c.mu.Lock()
	d.Seq = c.pseq
	c.mu.Unlock()
	h.mu.RUnlock()
	return d
}

// catchUpReads bounds the store reads a catch-up runs at once.
const catchUpReads = 8

// resumed catches up after events may have been lost: every conversation
// tracked here is read from the store to its end and delivered (in pages,
// which a healthy session's queue takes), and each local user's direct
// messages since the loss are read for the conversations not tracked yet.
func (c *cluster) resumed(lost time.Time) {
	h := c.h
	h.log.Info("cluster: catching up from the store", "since", lost)
	// Subjects that failed to subscribe while disconnected get their
	// start now.
	c.reconcile(context.Background())
	c.sendTails()
	// A bounded number of reads at once: a node tracking thousands of
	// conversations must not open thousands of store queries together.
	sem := make(chan struct{}, catchUpReads)
	for _, co := range h.seq.all() {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			h.seq.catchUp(co, math.MaxInt64)
		}()
	}
	h.mu.RLock()
	users := make([]string, 0, len(h.users))
	for name := range h.users {
		users = append(users, name)
	}
	h.mu.RUnlock()
	since := lost.Add(-establishMargin)
	for _, u := range users {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		msgs, _, err := h.store.DirectMessagesSince(ctx, u, since, h.cfg.ReplayCap)
		cancel()
		if err != nil {
			h.log.Warn("cluster: catch up direct messages", "user", u, "err", err)
			continue
		}
		seen := map[string]bool{}
		for _, m := range msgs {
			if seen[m.Conversation] || h.seq.tracked(m.Conversation) {
				continue
			}
			seen[m.Conversation] = true
			h.seq.ensure(m.Conversation)
		}
	}
}

// members of room r on other nodes, not counting users online here;
// c.mu is held.
func (c *cluster) remoteMembersLocked(local map[string]*user, r string) map[string]bool {
	out := map[string]bool{}
	for _, users := range c.members[r] {
		for name := range users {
			if local[name] == nil {
				out[name] = true
			}
		}
	}
	return out
}

// remoteRoomMembers returns, per room, the users in it on other nodes
// only; with only set, just that room's. Rooms with no member here are
// known by count only (remoteRoomCounts).
func (c *cluster) remoteRoomMembers(local map[string]*user, only string) map[string]map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]map[string]bool{}
	if only != "" {
		out[only] = c.remoteMembersLocked(local, only)
		return out
	}
	for r := range c.members {
		out[r] = c.remoteMembersLocked(local, r)
	}
	return out
}

// remoteRoomCounts sums the other nodes' member counts of the rooms with
// no member here (from their heartbeats).
func (c *cluster) remoteRoomCounts(localRooms map[string]*room) map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for _, p := range c.peers {
		for r, n := range p.rooms {
			if localRooms[r] == nil {
				out[r] += int(n)
			}
		}
	}
	return out
}

// onOtherNodeLocked reports whether name is online on a node other than
// except; c.mu is held.
func (c *cluster) onOtherNodeLocked(name, except string) bool {
	for node, p := range c.peers {
		if node == except {
			continue
		}
		if _, ok := p.users[name]; ok {
			return true
		}
	}
	return false
}

// onlineRemote reports whether name is online on another node.
func (c *cluster) onlineRemote(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.onOtherNodeLocked(name, "")
}

// roleLocked returns the role name has on a remote node; c.mu is held.
func (c *cluster) roleLocked(name string) chatv1.Role {
	for _, p := range c.peers {
		if r, ok := p.users[name]; ok {
			return r
		}
	}
	return chatv1.Role_ROLE_UNSPECIFIED
}

// nodes returns the other nodes' stats, sorted by node id.
func (c *cluster) nodes() []NodeStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]NodeStats, 0, len(c.peers))
	for node, p := range c.peers {
		s := p.stats
		out = append(out, NodeStats{NodeID: node, Stats: Stats{
			Connections: int(s.GetConnections()), OnlineUsers: int(s.GetOnlineUsers()), Rooms: int(s.GetRooms()),
			MessagesIn: s.GetMessagesIn(), MessagesOut: s.GetMessagesOut(), Uptime: time.Duration(s.GetUptimeMs()) * time.Millisecond,
		}})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].NodeID < out[j].NodeID })
	return out
}

// peers counts the nodes heard from within peerTTL.
func (c *cluster) peerCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.peers)
}

// gather sends an admin command to every other node and sums their
// counts; a node that does not answer within gatherTimeout is not
// counted.
func (c *cluster) gather(e *clusterv1.Envelope) int {
	return c.gatherOn(c.subject("admin"), c.peerCount(), e)
}

// gatherUser sends a command for user to the nodes where it is online
// (its subject's subscribers, as presence counts them) and sums their
// counts.
func (c *cluster) gatherUser(user string, e *clusterv1.Envelope) int {
	c.mu.Lock()
	want := 0
	for _, p := range c.peers {
		if _, ok := p.users[user]; ok {
			want++
		}
	}
	c.mu.Unlock()
	return c.gatherOn(c.userSubject(user), want, e)
}

func (c *cluster) gatherOn(subject string, want int, e *clusterv1.Envelope) int {
	e.Node = c.h.cfg.NodeID
	b, err := proto.Marshal(e)
	if err != nil || want == 0 {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), gatherTimeout)
	defer cancel()
	replies, err := c.broker.Gather(ctx, subject, b, want)
	if err != nil {
		c.h.log.Warn("cluster gather", "kind", e.Kind, "err", err)
	}
	n := 0
	for _, r := range replies {
		var re clusterv1.Envelope
		if proto.Unmarshal(r, &re) == nil {
			n += int(re.Count)
		}
	}
	return n
}
