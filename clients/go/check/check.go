package check

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/parleychat/parley/clients/go/parley"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// Config is one checker run.
type Config struct {
	// Addrs are the native gRPC addresses of parleyd's nodes (one address
	// for a single node). Members are spread over them round-robin:
	// subscriber j starts on Addrs[j mod N], publisher i on
	// Addrs[(i+1) mod N], so that with more than one node publisher i's
	// direct messages to subscriber i (mod M) cross nodes. A member whose
	// node refuses a connection moves on to the next address in the list
	// (and stays there until that one fails), resuming as after any
	// reconnect.
	Addrs []string
	// Publishers and Subscribers are how many users of each kind; every
	// publisher and subscriber joins every room.
	Publishers, Subscribers int
	// Rooms is how many fresh rooms the run uses.
	Rooms int
	// DMs makes every publisher send one in Rooms+1 of its messages as a
	// direct message to a subscriber (publisher i to subscriber i mod M).
	DMs bool
	// Duration is how long the publishers publish.
	Duration time.Duration
	// Rate is each publisher's messages per second (a send waits for its
	// ack, so fewer go out while the server is down).
	Rate float64
	// SendTimeout is how long one message is retried before it is counted
	// as unacknowledged.
	SendTimeout time.Duration
	// Settle is how long, after publishing, deliveries may take to arrive
	// (twice: before and after the final resume).
	Settle time.Duration
	// ServerOnly turns the SDK's repair of live gaps off
	// (parley.WithoutGapRepair), so that the counts measure the server's
	// own stream: a message it skipped live counts as lost until the final
	// resume, and one it sent out of order as reordered.
	ServerOnly bool
	// Run names this run's users and rooms; default random.
	Run string
	// Log receives progress; nil discards.
	Log *slog.Logger
	// Published, when set, is called once every publisher has sent its
	// first acknowledged message: the moment a fault script may strike.
	Published func()
}

// Report is what a run found. The counts from AckedLost on, except the
// break-downs LostDeliveries and LostFromHistory, are failures: each must
// be 0.
//
// Deliveries are counted for subscribers. A connection is one underlying
// session of a subscriber's ResilientSession: it begins with a Welcome and
// ends with the next one (or the run). A conversation is a room or the
// direct conversation of two users.
type Report struct {
	Run         string `json:"run"`
	Publishers  int    `json:"publishers"`
	Subscribers int    `json:"subscribers"`
	Rooms       int    `json:"rooms"`
	// Acked counts messages acknowledged to their publisher (a retried
	// send acknowledged as a duplicate counts once).
	Acked int `json:"acked"`
	// Unacked counts messages never acknowledged within SendTimeout (not a
	// failure: the publisher was told nothing was stored).
	Unacked int `json:"unacked"`
	// Refused counts sends answered with a permanent error.
	Refused int `json:"refused"`
	// Retries counts sends retried after Unavailable, a lost session or a
	// timeout.
	Retries int64 `json:"retries"`
	// Reconnects counts sessions of subscribers and publishers
	// re-established after the first (every Welcome but each member's
	// first), including the checker's own final reconnects.
	Reconnects int `json:"reconnects"`
	// LiveDeliveries and ReplayedDeliveries count what subscribers got as
	// live Message events and as RecentMessages (connect-time restore,
	// Resume replays and the SDK's gap fills).
	LiveDeliveries     int `json:"live_deliveries"`
	ReplayedDeliveries int `json:"replayed_deliveries"`
	// RepairedByResume counts (message, subscriber) pairs that arrived only
	// after the checker's final reconnect-and-resume.
	RepairedByResume int `json:"repaired_by_resume"`
	// FilledLive counts replayed deliveries of new messages in a
	// conversation that had already had a live delivery on the same
	// connection: messages the server's live stream skipped or delayed,
	// which the SDK then read from history (its gap fill) or asked for (its
	// gap repair). Not a failure, as the application got them in order or
	// once, but a measure of the server's live ordering.
	FilledLive int `json:"filled_live"`
	// Nodes breaks sessions, acknowledgements and deliveries down by the
	// node they happened on, in Config.Addrs order.
	Nodes []NodeReport `json:"nodes"`

	// AckedLost counts acknowledged messages missing from history or from
	// some member subscriber's deliveries.
	AckedLost int `json:"acked_lost"`
	// LostDeliveries counts (acknowledged message, member subscriber) pairs
	// never delivered; LostFromHistory acknowledged messages not in
	// history at their acknowledged seq.
	LostDeliveries  int `json:"lost_deliveries"`
	LostFromHistory int `json:"lost_from_history"`
	// Duplicated counts deliveries of a message (by id) a subscriber had
	// already been delivered, on any connection.
	Duplicated int `json:"duplicated"`
	// Reordered counts deliveries, live or replayed, of a message new to
	// the subscriber whose seq is lower than or equal to one already
	// delivered in the same conversation on the same connection. (A
	// delivery of a message the subscriber already had is Duplicated
	// instead, so no delivery counts twice.)
	Reordered int `json:"reordered"`
	// LiveGaps counts live deliveries that jumped: seq s in a conversation
	// the subscriber has a cursor for (a room it joined, or one it was
	// delivered a message of before, on any connection) while some seq
	// between its highest delivered one and s had not been delivered, and
	// was still not delivered when the connection ended (the SDK did not
	// fill it on that connection).
	LiveGaps int `json:"live_gaps"`
	// HistoryGaps counts seqs missing between 1 and a conversation's last.
	HistoryGaps int `json:"history_gaps"`
	// StoredDuplicates counts client_msg_ids stored more than once.
	StoredDuplicates int `json:"stored_duplicates"`

	OK bool `json:"ok"`
}

// NodeReport is one node's share of a run.
type NodeReport struct {
	Addr string `json:"addr"`
	// Members counts the members (publishers and subscribers) that started
	// on this node.
	Members int `json:"members"`
	// Sessions counts sessions of members welcomed here; Reconnects those
	// of them that replaced a lost one, FailedOver those whose lost one was
	// on another node.
	Sessions   int `json:"sessions"`
	Reconnects int `json:"reconnects"`
	FailedOver int `json:"failed_over"`
	// Acked counts acknowledgements publishers got from this node.
	Acked int `json:"acked"`
	// LiveDeliveries and ReplayedDeliveries count deliveries to
	// subscribers on sessions of this node.
	LiveDeliveries     int `json:"live_deliveries"`
	ReplayedDeliveries int `json:"replayed_deliveries"`
}

// Failures is the sum of the counts that must be 0.
func (r *Report) Failures() int {
	return r.AckedLost + r.Duplicated + r.Reordered + r.LiveGaps + r.HistoryGaps + r.StoredDuplicates
}

const password = "parley-check-password"

// ack is one acknowledged message.
type ack struct {
	id, cmid, conv string // conv: "r:room" or "d:a:b"
	seq            int64
	to             string // DM recipient; "" for rooms
}

func newRun() string {
	b := make([]byte, 4)
	rand.Read(b)
	return "chk" + hex.EncodeToString(b)
}

func dmKey(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return "d:" + a + ":" + b
}

// Check runs publishers and subscribers against cfg.Addrs and reports what
// was lost, duplicated, reordered or missing from history.
func Check(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Run == "" {
		cfg.Run = newRun()
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("no server address")
	}
	if cfg.Publishers < 1 || cfg.Subscribers < 1 || cfg.Rooms < 0 || (cfg.Rooms == 0 && !cfg.DMs) {
		return nil, errors.New("need at least one publisher, one subscriber and a room or DMs")
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 10
	}
	rep := &Report{Run: cfg.Run, Publishers: cfg.Publishers, Subscribers: cfg.Subscribers, Rooms: cfg.Rooms}
	for _, a := range cfg.Addrs {
		rep.Nodes = append(rep.Nodes, NodeReport{Addr: a})
	}
	var retries atomic.Int64
	defer func() { rep.Retries = retries.Load() }()

	rooms := make([]string, cfg.Rooms)
	for i := range rooms {
		rooms[i] = fmt.Sprintf("%s-r%d", cfg.Run, i)
	}
	nodes := newNodeSet(cfg.Addrs)
	var all, pubs, subs []*member
	for i := range cfg.Publishers {
		pubs = append(pubs, newMember(fmt.Sprintf("%s-p%d", cfg.Run, i), nodes, (i+1)%len(cfg.Addrs)))
	}
	for j := range cfg.Subscribers {
		subs = append(subs, newMember(fmt.Sprintf("%s-s%d", cfg.Run, j), nodes, j%len(cfg.Addrs)))
	}
	all = append(append(all, subs...), pubs...)
	for _, m := range all {
		rep.Nodes[m.home].Members++
	}
	// Sessions and reconnects are summed even when the run fails.
	defer func() {
		for _, m := range all {
			m.mu.Lock()
			rep.Reconnects += max(m.welcomes-1, 0)
			for i, n := range m.byNode {
				rep.Nodes[i].Sessions += n.sessions
				rep.Nodes[i].Reconnects += n.reconnects
				rep.Nodes[i].FailedOver += n.failedOver
				rep.Nodes[i].Acked += n.acked
			}
			m.mu.Unlock()
		}
	}()
	defer func() {
		for _, m := range all {
			if m.rs != nil {
				m.rs.Close()
			}
			if m.client != nil {
				m.client.Close()
			}
		}
	}()

	// Register and connect everyone, subscribers first, and join the rooms.
	// Not errgroup.WithContext: its context, which ends with Wait, would
	// end the sessions too.
	var g errgroup.Group
	g.SetLimit(4) // registration costs the server an argon2 hash each
	for _, m := range all {
		g.Go(func() error { return connectMember(ctx, cfg, m, rooms, &retries) })
	}
	if err := g.Wait(); err != nil {
		return rep, err
	}
	cfg.Log.Info("connected", "publishers", len(pubs), "subscribers", len(subs), "rooms", len(rooms), "nodes", len(cfg.Addrs))

	// Publish.
	var mu sync.Mutex
	var acks []ack
	var first sync.WaitGroup
	first.Add(len(pubs))
	pctx, stop := context.WithTimeout(ctx, cfg.Duration)
	defer stop()
	var pg errgroup.Group
	for i, p := range pubs {
		pg.Go(func() error {
			firstDone := false
			defer func() {
				if !firstDone {
					first.Done()
				}
			}()
			tick := time.NewTicker(time.Duration(float64(time.Second) / cfg.Rate))
			defer tick.Stop()
			targets := len(rooms)
			if cfg.DMs {
				targets++
			}
			for k := 0; ; k++ {
				select {
				case <-pctx.Done():
					return nil
				case <-tick.C:
				}
				t := k % targets
				to, room := "", ""
				if t < len(rooms) {
					room = rooms[t]
				} else {
					to = subs[i%len(subs)].name
				}
				cmid := fmt.Sprintf("%s-%d", p.name, k)
				text := fmt.Sprintf("check %s %d", p.name, k)
				// The send outlives the publishing window: a message begun
				// is retried until acknowledged or SendTimeout.
				a, err := send(ctx, cfg, p, room, to, text, cmid, &retries)
				mu.Lock()
				switch {
				case err == nil:
					conv := "r:" + room
					if to != "" {
						conv = dmKey(p.name, to)
					}
					acks = append(acks, ack{id: a.GetMessageId(), cmid: cmid, conv: conv, seq: a.GetSeq(), to: to})
				case errors.Is(err, errUnacked):
					rep.Unacked++
				case ctx.Err() != nil:
					mu.Unlock()
					return ctx.Err()
				default:
					rep.Refused++
					cfg.Log.Warn("send refused", "publisher", p.name, "err", err)
				}
				mu.Unlock()
				if err == nil && !firstDone {
					firstDone = true
					first.Done()
				}
			}
		})
	}
	if cfg.Published != nil {
		go func() {
			first.Wait()
			if pctx.Err() == nil {
				cfg.Published()
			}
		}()
	}
	if err := pg.Wait(); err != nil {
		return rep, err
	}
	rep.Acked = len(acks)
	if rep.Acked == 0 {
		return rep, errors.New("no message was acknowledged: nothing was checked")
	}
	cfg.Log.Info("published", "acked", len(acks), "unacked", rep.Unacked, "refused", rep.Refused)

	// Wait for deliveries; then reconnect the subscribers still missing
	// some, so that Resume brings back what they missed, and wait again.
	missing := func() map[*member]int {
		out := map[*member]int{}
		for _, s := range subs {
			s.mu.Lock()
			for _, a := range acks {
				if (a.to == "" || a.to == s.name) && s.delivered[a.id] == 0 {
					out[s]++
				}
			}
			s.mu.Unlock()
		}
		return out
	}
	waitDelivered := func() {
		for end := time.Now().Add(cfg.Settle); time.Now().Before(end) && len(missing()) > 0 && ctx.Err() == nil; {
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitDelivered()
	if miss := missing(); len(miss) > 0 {
		for s, n := range miss {
			cfg.Log.Info("final resume", "subscriber", s.name, "missing", n)
			s.mu.Lock()
			s.final = true
			s.mu.Unlock()
			if cur := s.rs.Current(); cur != nil {
				cur.Close()
			}
		}
		waitDelivered()
	}

	// Deliveries.
	lostIDs := map[string]bool{}
	for _, s := range subs {
		s.mu.Lock()
		s.endConn()
		for _, a := range acks {
			if a.to != "" && a.to != s.name {
				continue
			}
			switch {
			case s.delivered[a.id] == 0:
				rep.LostDeliveries++
				lostIDs[a.id] = true
			case s.late[a.id]:
				rep.RepairedByResume++
			}
		}
		for _, n := range s.delivered {
			if n > 1 {
				rep.Duplicated += n - 1
			}
		}
		rep.Reordered += s.reordered
		rep.LiveGaps += s.liveGaps
		rep.FilledLive += s.filled
		rep.LiveDeliveries += s.live
		rep.ReplayedDeliveries += s.replayed
		for i, n := range s.byNode {
			rep.Nodes[i].LiveDeliveries += n.live
			rep.Nodes[i].ReplayedDeliveries += n.replayed
		}
		s.mu.Unlock()
	}

	// History, read as a member of each conversation.
	convs := map[string]*member{}
	for _, r := range rooms {
		convs["r:"+r] = subs[0]
	}
	for _, a := range acks {
		if a.to != "" {
			for _, s := range subs {
				if s.name == a.to {
					convs[a.conv] = s
				}
			}
		}
	}
	byConv := map[string][]ack{}
	for _, a := range acks {
		byConv[a.conv] = append(byConv[a.conv], a)
	}
	keys := make([]string, 0, len(convs))
	for k := range convs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		reader := convs[key]
		conv := parley.Room(strings.TrimPrefix(key, "r:"))
		if strings.HasPrefix(key, "d:") {
			a, b, _ := strings.Cut(key[2:], ":")
			peer := a
			if peer == reader.name {
				peer = b
			}
			conv = parley.Direct(peer)
		}
		msgs, err := readHistory(ctx, reader.client, conv, &retries)
		if err != nil {
			return rep, fmt.Errorf("history of %s: %w", key, err)
		}
		bySeq := map[int64]*chatv1.Message{}
		cmids := map[string]int{}
		var last int64
		for _, m := range msgs {
			bySeq[m.GetSeq()] = m
			last = max(last, m.GetSeq())
			if c := m.GetClientMsgId(); c != "" {
				cmids[c]++
			}
		}
		for seq := int64(1); seq <= last; seq++ {
			if bySeq[seq] == nil {
				rep.HistoryGaps++
			}
		}
		for _, n := range cmids {
			if n > 1 {
				rep.StoredDuplicates += n - 1
			}
		}
		for _, a := range byConv[key] {
			if m := bySeq[a.seq]; m == nil || m.GetId() != a.id {
				rep.LostFromHistory++
				lostIDs[a.id] = true
			}
		}
	}
	rep.AckedLost = len(lostIDs)
	rep.OK = rep.Failures() == 0
	return rep, nil
}

var errUnacked = errors.New("not acknowledged within the send timeout")

// retryable reports whether a failed command may succeed if sent again:
// the server said Unavailable or rate limited, or the session, the
// connection or the attempt's deadline ended first.
func retryable(err error) (wait time.Duration, ok bool) {
	var pe *parley.Error
	if errors.As(err, &pe) {
		switch pe.Code {
		case chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE, chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED:
			return min(max(pe.RetryAfter, 50*time.Millisecond), 2*time.Second), true
		}
		return 0, false
	}
	if errors.Is(err, parley.ErrClosed) || errors.Is(err, context.DeadlineExceeded) {
		return 100 * time.Millisecond, true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Aborted, codes.ResourceExhausted:
		return 100 * time.Millisecond, true
	}
	return 0, false
}

// send posts one message with cmid until it is acknowledged, retrying
// with the same client_msg_id, so the server stores it once.
func send(ctx context.Context, cfg Config, p *member, room, to, text, cmid string, retries *atomic.Int64) (*chatv1.Ack, error) {
	end := time.Now().Add(cfg.SendTimeout)
	for try := 0; ; try++ {
		if try > 0 {
			retries.Add(1)
		}
		var err error
		if s := p.rs.Current(); s != nil {
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			var a *chatv1.Ack
			if to == "" {
				a, err = s.SendWithID(actx, room, text, cmid)
			} else {
				a, err = s.SendPrivateWithID(actx, to, text, cmid)
			}
			cancel()
			if err == nil {
				p.acked(s)
				return a, nil
			}
		} else {
			err = parley.ErrClosed
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		wait, ok := retryable(err)
		if !ok {
			return nil, err
		}
		cfg.Log.Debug("send retried", "publisher", p.name, "cmid", cmid, "err", err)
		if time.Now().Add(wait).After(end) {
			return nil, errUnacked
		}
		sleep(ctx, wait)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// again runs f until it succeeds, fails for good, or a minute passes.
func again(ctx context.Context, retries *atomic.Int64, f func() error) error {
	end := time.Now().Add(time.Minute)
	for {
		err := f()
		if err == nil {
			return nil
		}
		wait, ok := retryable(err)
		if !ok || time.Now().After(end) || ctx.Err() != nil {
			return err
		}
		retries.Add(1)
		sleep(ctx, max(wait, 200*time.Millisecond))
	}
}

// readHistory reads a whole conversation, newest page first (before_seq
// paging works on every server version; after_seq 0 did not always mean
// "from the start"), and returns it oldest first.
func readHistory(ctx context.Context, c *parley.Client, conv *chatv1.Conversation, retries *atomic.Int64) ([]*chatv1.Message, error) {
	var pages [][]*chatv1.Message
	var before int64
	for {
		var page []*chatv1.Message
		var more bool
		err := again(ctx, retries, func() (err error) {
			page, more, err = c.History(ctx, conv, parley.HistoryOptions{BeforeSeq: before, Limit: 100})
			return err
		})
		if err != nil {
			return nil, err
		}
		pages = append(pages, page)
		if !more || len(page) == 0 {
			break
		}
		before = page[0].GetSeq()
	}
	var out []*chatv1.Message
	for i := len(pages) - 1; i >= 0; i-- {
		out = append(out, pages[i]...)
	}
	return out, nil
}
