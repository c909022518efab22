package hub

import (
	"context"
	"encoding/json"
	"sort"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/tracing"
)

// Broker carries events between the nodes of a cluster. Publish reaches
// every node, this one included; Subscribe's handler sees each
// publisher's events one at a time, in order.
type Broker interface {
	Publish(data []byte) error
	Subscribe(handler func(data []byte)) error
}

// Cluster timings: a node announces its presence on every change (at most
// every presenceDebounce) and at least every presenceEvery; a node not
// heard from for presenceTTL is taken as gone.
const (
	presenceDebounce = 100 * time.Millisecond
	presenceEvery    = 2 * time.Second
	presenceTTL      = 3 * presenceEvery
)

// envelope is one event between nodes. Frames travel as the origin encoded
// them; each node routes them to its own sessions with the same rules as
// its own events. A join or leave carries a membership change at once; its
// member event follows as a room frame when the window closes (members.go).
type envelope struct {
	Node     string        `json:"n"`
	Kind     string        `json:"k"` // room, users, all, disconnect, join, leave, presence, bye
	Room     string        `json:"r,omitempty"`
	Users    []string      `json:"u,omitempty"`
	Skip     string        `json:"x,omitempty"`
	Frame    []byte        `json:"f,omitempty"`
	Conv     string        `json:"c,omitempty"` // a stored message's conversation
	Seq      int64         `json:"q,omitempty"` // and its sequence number
	Presence *nodePresence `json:"p,omitempty"`
	// The W3C trace context of a stored message's publish, so the
	// receiving node's fan-out joins the message's trace.
	TraceParent string `json:"tp,omitempty"`
	TraceState  string `json:"ts,omitempty"`
}

// nodePresence is a node's full view of its own sessions.
type nodePresence struct {
	Users map[string]presentUser `json:"u"`
	Stats Stats                  `json:"s"`
	at    time.Time
}

type presentUser struct {
	Role  chatv1.Role `json:"r"`
	Rooms []string    `json:"m"`
}

// cluster is the hub's view of the other nodes. Lock order: Hub.mu, then
// cluster.mu.
type cluster struct {
	h      *Hub
	broker Broker

	mu     sync.Mutex
	remote map[string]*nodePresence

	changed chan struct{}
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

func newCluster(h *Hub, b Broker) (*cluster, error) {
	c := &cluster{h: h, broker: b, remote: map[string]*nodePresence{}, changed: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if err := b.Subscribe(c.handle); err != nil {
		return nil, err
	}
	go c.loop()
	return c, nil
}

func (c *cluster) publish(e envelope) {
	e.Node = c.h.cfg.NodeID
	b, err := json.Marshal(e)
	if err == nil {
		err = c.broker.Publish(b)
	}
	if err != nil {
		c.h.log.Warn("cluster publish", "kind", e.Kind, "err", err)
	}
}

// presenceChanged asks the loop to announce this node's presence soon.
func (c *cluster) presenceChanged() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *cluster) loop() {
	defer close(c.done)
	beat := time.NewTicker(presenceEvery)
	defer beat.Stop()
	c.announce()
	for {
		select {
		case <-c.stop:
			c.publish(envelope{Kind: "bye"})
			return
		case <-c.changed:
			select { // coalesce a burst of changes into one announcement
			case <-time.After(presenceDebounce):
			case <-c.stop:
				c.publish(envelope{Kind: "bye"})
				return
			}
			c.announce()
		case <-beat.C:
			c.announce()
			c.expire()
		}
	}
}

func (c *cluster) close() {
	c.once.Do(func() { close(c.stop) })
	<-c.done
}

// announce publishes this node's presence snapshot.
func (c *cluster) announce() {
	h := c.h
	p := &nodePresence{Users: map[string]presentUser{}}
	h.mu.RLock()
	for name, us := range h.users {
		rooms := make([]string, 0, len(us.rooms))
		for r := range us.rooms {
			rooms = append(rooms, r)
		}
		p.Users[name] = presentUser{Role: us.role, Rooms: rooms}
	}
	h.mu.RUnlock()
	p.Stats = h.localStats()
	c.publish(envelope{Kind: "presence", Presence: p})
}

// expire forgets nodes not heard from within presenceTTL.
func (c *cluster) expire() {
	h := c.h
	h.mu.Lock() // replaceLocked updates Hub.online
	defer h.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	for node, p := range c.remote {
		if time.Since(p.at) > presenceTTL {
			h.log.Warn("cluster node gone quiet", "node", node)
			c.replaceLocked(node, nil)
		}
	}
}

// handle routes one event from another node to this node's sessions.
func (c *cluster) handle(data []byte) {
	var e envelope
	if err := json.Unmarshal(data, &e); err != nil {
		c.h.log.Warn("cluster: bad event", "err", err)
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
	case "room", "users":
		// Only a stored message's envelope carries a trace; typing and
		// notices are not traced.
		var traced context.Context
		if e.TraceParent != "" {
			var span trace.Span
			traced, span = tracing.Start(tracing.Extract(context.Background(), e.TraceParent, e.TraceState), "nats.receive", trace.WithSpanKind(trace.SpanKindConsumer))
			span.End()
		}
		route := func() {
			var span trace.Span
			if traced != nil {
				_, span = tracing.Start(traced, "hub.fanout")
			}
			h.mu.RLock()
			var n int
			if e.Kind == "room" {
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
		if e.Seq > 0 { // a stored message: in order with this node's own
			h.seq.remote(e.Conv, e.Seq, route)
		} else {
			route()
		}
	case "all":
		h.mu.RLock()
		h.toAllLocked(f, e.Skip)
		h.mu.RUnlock()
	case "disconnect":
		for _, u := range e.Users {
			h.disconnectLocal(u, f)
		}
	case "join", "leave":
		h.mu.Lock()
		for _, u := range e.Users {
			if us := h.users[u]; us != nil {
				if e.Kind == "join" {
					h.joinLocked(us, e.Room)
				} else {
					h.leaveLocked(us, e.Room)
				}
			}
		}
		if f != nil { // a node from before member events were gathered sends its MemberJoined/MemberLeft here
			h.toRoomLocked(e.Room, f, e.Skip)
		}
		h.mu.Unlock()
	case "presence", "bye":
		if e.Presence != nil {
			e.Presence.at = time.Now()
		}
		h.mu.Lock() // replaceLocked updates Hub.online
		c.mu.Lock()
		c.replaceLocked(e.Node, e.Presence)
		c.mu.Unlock()
		h.mu.Unlock()
	}
}

// replaceLocked installs node's new presence (nil: gone) and tells this
// node's sessions about users who came online or went offline in the
// cluster as a result, and keeps Hub.online in step. Hub.mu (write) and
// c.mu are held.
func (c *cluster) replaceLocked(node string, next *nodePresence) {
	prev := c.remote[node]
	if next == nil {
		delete(c.remote, node)
	} else {
		c.remote[node] = next
	}
	h := c.h
	seen := map[string]bool{}
	check := func(name string, role chatv1.Role) {
		if seen[name] {
			return
		}
		seen[name] = true
		if h.users[name] != nil || c.onOtherNodeLocked(name, node) {
			return // online before and after, whatever node changed
		}
		_, was := prev.lookup(name)
		_, is := next.lookup(name)
		switch {
		case !was && is:
			h.online.add(name)
			h.notePresence(name, role, true)
		case was && !is:
			h.online.remove(name)
			h.notePresence(name, role, false)
		}
	}
	if next != nil {
		for name, u := range next.Users {
			check(name, u.Role)
		}
	}
	if prev != nil {
		for name, u := range prev.Users {
			check(name, u.Role)
		}
	}
}

func (p *nodePresence) lookup(name string) (presentUser, bool) {
	if p == nil {
		return presentUser{}, false
	}
	u, ok := p.Users[name]
	return u, ok
}

// onOtherNodeLocked reports whether name is online on a remote node other
// than except.
func (c *cluster) onOtherNodeLocked(name, except string) bool {
	for node, p := range c.remote {
		if node == except {
			continue
		}
		if _, ok := p.Users[name]; ok {
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
	for _, p := range c.remote {
		if u, ok := p.Users[name]; ok {
			return u.Role
		}
	}
	return chatv1.Role_ROLE_UNSPECIFIED
}

// remoteRoomMembers returns, per room, the users in it on other nodes
// only; with only set, just that room's (a member event needs one room,
// not all of them).
func (c *cluster) remoteRoomMembers(local map[string]*user, only string) map[string]map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]map[string]bool{}
	for _, p := range c.remote {
		for name, u := range p.Users {
			if local[name] != nil {
				continue
			}
			for _, r := range u.Rooms {
				if only != "" && r != only {
					continue
				}
				if out[r] == nil {
					out[r] = map[string]bool{}
				}
				out[r][name] = true
			}
		}
	}
	return out
}

// nodes returns the other nodes' stats, sorted by node id.
func (c *cluster) nodes() []NodeStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]NodeStats, 0, len(c.remote))
	for node, p := range c.remote {
		out = append(out, NodeStats{NodeID: node, Stats: p.Stats})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].NodeID < out[j].NodeID })
	return out
}

// peers counts the nodes heard from within presenceTTL.
func (c *cluster) peers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.remote)
}
