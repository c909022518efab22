package check

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"

	"github.com/parleychat/parley/clients/go/parley"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// nodeSet is the run's node addresses, and which node each open TCP
// connection went to (by its remote address), so that a session can be
// told apart by the connection it came on.
type nodeSet struct {
	addrs []string

	mu       sync.Mutex
	byRemote map[string]int
}

func newNodeSet(addrs []string) *nodeSet {
	return &nodeSet{addrs: addrs, byRemote: map[string]int{}}
}

func (n *nodeSet) dialed(c net.Conn, node int) {
	n.mu.Lock()
	n.byRemote[c.RemoteAddr().String()] = node
	n.mu.Unlock()
}

// of returns the node a connection's remote address was dialed as, -1 if
// none.
func (n *nodeSet) of(remote net.Addr) int {
	if remote == nil {
		return -1
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if i, ok := n.byRemote[remote.String()]; ok {
		return i
	}
	return -1
}

// member is one user with its resilient session.
type member struct {
	name  string
	nodes *nodeSet
	home  int          // the node it starts on
	next  atomic.Int32 // the node its connections dial first

	client *parley.Client
	rs     *parley.ResilientSession

	mu       sync.Mutex
	sessions map[string]int // session id -> node, noted as each is welcomed
	welcomes int
	at       int // node of the current connection; -1 before the first
	byNode   []nodeCounts

	delivered map[string]int            // message id -> deliveries
	top       map[string]int64          // conv -> highest seq delivered (the cursor)
	seqs      map[string]map[int64]bool // conv -> seqs delivered
	conn      connState                 // the current connection's
	live      int
	replayed  int
	reordered int
	liveGaps  int
	filled    int
	late      map[string]bool // ids delivered after the final resume began
	final     bool            // the final resume began
}

// nodeCounts is one member's share of one node.
type nodeCounts struct {
	sessions, reconnects, failedOver int
	acked                            int
	live, replayed                   int
}

// connState is what the checker knows of one connection (one underlying
// session, from its Welcome to the next).
type connState struct {
	hi    map[string]int64 // conv -> highest seq delivered on it
	lived map[string]bool  // convs with a live delivery on it
	jumps []jump
}

// jump is a live delivery of seq to in conv while from..to-1 were not
// delivered.
type jump struct {
	conv     string
	from, to int64
}

func newMember(name string, nodes *nodeSet, home int) *member {
	m := &member{
		name: name, nodes: nodes, home: home, at: -1,
		sessions: map[string]int{}, byNode: make([]nodeCounts, len(nodes.addrs)),
		delivered: map[string]int{}, top: map[string]int64{}, seqs: map[string]map[int64]bool{},
		late: map[string]bool{}, conn: newConnState(),
	}
	m.next.Store(int32(home))
	return m
}

// dial opens a TCP connection for m's gRPC clients: to the node it is on,
// else to the next address in the list that accepts, where it then stays.
// gRPC calls it for every new transport, so a node killed under a member
// makes the member's reconnect land on the next one.
func (m *member) dial(ctx context.Context, _ string) (net.Conn, error) {
	var d net.Dialer
	var errs []error
	n := int32(len(m.nodes.addrs))
	for range n {
		i := m.next.Load()
		c, err := d.DialContext(ctx, "tcp", m.nodes.addrs[i])
		if err == nil {
			m.nodes.dialed(c, int(i))
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
		m.next.CompareAndSwap(i, (i+1)%n)
	}
	return nil, errors.Join(errs...)
}

// noteSession is a stream interceptor: it notes which node each of m's
// Connect streams is on, by the welcome's session id, before the SDK
// hands the Welcome on.
func (m *member) noteSession(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil || method != chatv1.Chat_Connect_FullMethodName {
		return cs, err
	}
	return &notedStream{ClientStream: cs, m: m}, nil
}

type notedStream struct {
	grpc.ClientStream
	m    *member
	done bool
}

func (s *notedStream) RecvMsg(v any) error {
	err := s.ClientStream.RecvMsg(v)
	if s.done || err != nil {
		return err
	}
	if w := v.(*chatv1.ServerEvent).GetWelcome(); w != nil {
		s.done = true
		node := -1
		if p, ok := peer.FromContext(s.Context()); ok {
			node = s.m.nodes.of(p.Addr)
		}
		s.m.mu.Lock()
		s.m.sessions[w.GetSessionId()] = node
		s.m.mu.Unlock()
	}
	return err
}

// clientOptions are the options of both of m's clients: its dialer and
// the interceptor noting its sessions' nodes.
func (m *member) clientOptions() []parley.Option {
	return []parley.Option{parley.WithDialOptions(
		grpc.WithContextDialer(m.dial),
		grpc.WithChainStreamInterceptor(m.noteSession),
	)}
}

// connectMember registers m, opens its resilient session, starts
// recording its events and joins the rooms, retrying while the server is
// down or unavailable.
func connectMember(ctx context.Context, cfg Config, m *member, rooms []string, retries *atomic.Int64) error {
	// passthrough: the dialer chooses the address; the target is only the
	// authority the server sees.
	target := "passthrough:///" + cfg.Addrs[m.home]
	anon, err := parley.Dial(ctx, target, m.clientOptions()...)
	if err != nil {
		return err
	}
	defer anon.Close()
	var tok parley.Tokens
	if err := again(ctx, retries, func() (err error) { tok, err = anon.Register(ctx, m.name, password); return err }); err != nil {
		return fmt.Errorf("register %s: %w", m.name, err)
	}
	opts := append(m.clientOptions(), parley.WithToken(tok.AccessToken), parley.WithEventBuffer(4096))
	if m.client, err = parley.Dial(ctx, target, opts...); err != nil {
		return err
	}
	if err := again(ctx, retries, func() (err error) {
		ropts := []parley.ReconnectOption{parley.WithBackoff(100*time.Millisecond, time.Second)}
		if cfg.ServerOnly {
			ropts = append(ropts, parley.WithoutGapRepair())
		}
		m.rs, err = m.client.ConnectResilient(ctx, ropts...)
		return err
	}); err != nil {
		return fmt.Errorf("connect %s: %w", m.name, err)
	}
	go m.record()
	for _, r := range rooms {
		if err := again(ctx, retries, func() error { _, err := m.rs.Join(ctx, r); return err }); err != nil {
			return fmt.Errorf("%s join %s: %w", m.name, r, err)
		}
		// A room joined is one the SDK has a cursor for (its baseline):
		// fresh, so at 0.
		m.mu.Lock()
		if _, ok := m.top["r:"+r]; !ok {
			m.top["r:"+r] = 0
		}
		m.mu.Unlock()
	}
	return nil
}

// record notes every delivery of m's sessions until they stop.
func (m *member) record() {
	for ev := range m.rs.Events() {
		m.mu.Lock()
		switch e := ev.GetEvent().(type) {
		case *chatv1.ServerEvent_Welcome:
			m.endConn()
			m.welcome(e.Welcome)
		case *chatv1.ServerEvent_Message:
			m.deliver(e.Message, true)
		case *chatv1.ServerEvent_RecentMessages:
			for _, msg := range e.RecentMessages.GetMessages() {
				m.deliver(msg, false)
			}
		}
		m.mu.Unlock()
	}
}

// welcome starts a connection; m.mu is held.
func (m *member) welcome(w *chatv1.Welcome) {
	node, ok := m.sessions[w.GetSessionId()]
	if !ok {
		node = -1
	}
	m.welcomes++
	if node >= 0 {
		n := &m.byNode[node]
		n.sessions++
		if m.welcomes > 1 {
			n.reconnects++
			if m.at >= 0 && m.at != node {
				n.failedOver++
			}
		}
	}
	m.at = node
}

// endConn settles the current connection's jumps: one whose missing seqs
// were not all delivered by now is a live gap. m.mu is held.
func (m *member) endConn() {
	for _, j := range m.conn.jumps {
		for seq := j.from; seq < j.to; seq++ {
			if !m.seqs[j.conv][seq] {
				m.liveGaps++
				break
			}
		}
	}
	m.conn = newConnState()
}

func newConnState() connState {
	return connState{hi: map[string]int64{}, lived: map[string]bool{}}
}

// acked counts an acknowledgement received on s.
func (m *member) acked(s *parley.Session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if node, ok := m.sessions[s.Welcome().GetSessionId()]; ok && node >= 0 {
		m.byNode[node].acked++
	}
}

func (m *member) convOf(msg *chatv1.Message) string {
	if r := msg.GetConversation().GetRoom(); r != "" {
		return "r:" + r
	}
	peer := msg.GetConversation().GetUser()
	if peer == m.name {
		peer = msg.GetSender()
	}
	return dmKey(m.name, peer)
}

// deliver counts one delivery (see Report for the definitions); m.mu is
// held.
func (m *member) deliver(msg *chatv1.Message, live bool) {
	id, key, seq := msg.GetId(), m.convOf(msg), msg.GetSeq()
	if live {
		m.live++
	} else {
		m.replayed++
	}
	if m.at >= 0 {
		if live {
			m.byNode[m.at].live++
		} else {
			m.byNode[m.at].replayed++
		}
	}
	dup := m.delivered[id] > 0
	m.delivered[id]++
	if m.final && !dup {
		m.late[id] = true
	}
	if !dup {
		if hi, ok := m.conn.hi[key]; ok && seq <= hi {
			m.reordered++
		}
		if !live && m.conn.lived[key] {
			m.filled++
		}
		if top, ok := m.top[key]; ok && live && seq > top+1 {
			m.conn.jumps = append(m.conn.jumps, jump{conv: key, from: top + 1, to: seq})
		}
	}
	if live {
		m.conn.lived[key] = true
	}
	if hi, ok := m.conn.hi[key]; !ok || seq > hi {
		m.conn.hi[key] = seq
	}
	if top, ok := m.top[key]; !ok || seq > top {
		m.top[key] = seq
	}
	if m.seqs[key] == nil {
		m.seqs[key] = map[int64]bool{}
	}
	m.seqs[key][seq] = true
}
