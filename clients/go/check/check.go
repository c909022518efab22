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
	// Addr is parleyd's native gRPC address.
	Addr string
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
	// Run names this run's users and rooms; default random.
	Run string
	// Log receives progress; nil discards.
	Log *slog.Logger
	// Published, when set, is called once every publisher has sent its
	// first acknowledged message: the moment a fault script may strike.
	Published func()
}

// Report is what a run found. The counts after Acked are failures: each
// must be 0.
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
	// Reconnects counts subscriber and publisher sessions re-established.
	Reconnects int64 `json:"reconnects"`
	// LiveDeliveries and ReplayedDeliveries count what subscribers got as
	// live Message events and as RecentMessages (connect-time restore and
	// Resume replays).
	LiveDeliveries     int `json:"live_deliveries"`
	ReplayedDeliveries int `json:"replayed_deliveries"`
	// RepairedByResume counts (message, subscriber) pairs that arrived only
	// after the checker's final reconnect-and-resume.
	RepairedByResume int `json:"repaired_by_resume"`

	// AckedLost counts acknowledged messages missing from history or from
	// some member subscriber's deliveries.
	AckedLost int `json:"acked_lost"`
	// LostDeliveries counts (acknowledged message, member subscriber) pairs
	// never delivered; LostFromHistory acknowledged messages not in
	// history at their acknowledged seq.
	LostDeliveries  int `json:"lost_deliveries"`
	LostFromHistory int `json:"lost_from_history"`
	// Duplicated counts deliveries of a message a subscriber already had.
	Duplicated int `json:"duplicated"`
	// Reordered counts live deliveries whose seq did not exceed the last
	// one of the same conversation on the same connection, plus replays out
	// of order within one RecentMessages.
	Reordered int `json:"reordered"`
	// HistoryGaps counts seqs missing between 1 and a conversation's last.
	HistoryGaps int `json:"history_gaps"`
	// StoredDuplicates counts client_msg_ids stored more than once.
	StoredDuplicates int `json:"stored_duplicates"`

	OK bool `json:"ok"`
}

// Failures is the sum of the counts that must be 0.
func (r *Report) Failures() int {
	return r.AckedLost + r.Duplicated + r.Reordered + r.HistoryGaps + r.StoredDuplicates
}

const password = "parley-check-password"

// ack is one acknowledged message.
type ack struct {
	id, cmid, conv string // conv: "r:room" or "d:a:b"
	seq            int64
	to             string // DM recipient; "" for rooms
}

// member is one user with its resilient session.
type member struct {
	name   string
	client *parley.Client
	rs     *parley.ResilientSession

	mu        sync.Mutex
	delivered map[string]int   // message id -> deliveries
	lastLive  map[string]int64 // conv -> last live seq on this connection
	live      int
	replayed  int
	reordered int
	late      map[string]bool // ids delivered after the final resume began
	final     bool            // the final resume began
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

// Check runs publishers and subscribers against cfg.Addr and reports what
// was lost, duplicated, reordered or missing from history.
func Check(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Run == "" {
		cfg.Run = newRun()
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Publishers < 1 || cfg.Subscribers < 1 || cfg.Rooms < 0 || (cfg.Rooms == 0 && !cfg.DMs) {
		return nil, errors.New("need at least one publisher, one subscriber and a room or DMs")
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 10
	}
	rep := &Report{Run: cfg.Run, Publishers: cfg.Publishers, Subscribers: cfg.Subscribers, Rooms: cfg.Rooms}
	var retries, reconnects atomic.Int64
	defer func() { rep.Retries, rep.Reconnects = retries.Load(), reconnects.Load() }()

	rooms := make([]string, cfg.Rooms)
	for i := range rooms {
		rooms[i] = fmt.Sprintf("%s-r%d", cfg.Run, i)
	}
	var all, pubs, subs []*member
	for i := range cfg.Publishers {
		pubs = append(pubs, &member{name: fmt.Sprintf("%s-p%d", cfg.Run, i)})
	}
	for i := range cfg.Subscribers {
		subs = append(subs, &member{name: fmt.Sprintf("%s-s%d", cfg.Run, i)})
	}
	all = append(append(all, subs...), pubs...)
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
		g.Go(func() error { return connectMember(ctx, cfg, m, rooms, &reconnects, &retries) })
	}
	if err := g.Wait(); err != nil {
		return rep, err
	}
	cfg.Log.Info("connected", "publishers", len(pubs), "subscribers", len(subs), "rooms", len(rooms))

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
		rep.LiveDeliveries += s.live
		rep.ReplayedDeliveries += s.replayed
		rep.Reordered += s.reordered
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

// connectMember registers m, opens its resilient session, starts
// recording its events and joins the rooms, retrying while the server is
// down or unavailable.
func connectMember(ctx context.Context, cfg Config, m *member, rooms []string, reconnects, retries *atomic.Int64) error {
	m.delivered, m.lastLive, m.late = map[string]int{}, map[string]int64{}, map[string]bool{}
	anon, err := parley.Dial(ctx, cfg.Addr)
	if err != nil {
		return err
	}
	defer anon.Close()
	var tok parley.Tokens
	if err := again(ctx, retries, func() (err error) { tok, err = anon.Register(ctx, m.name, password); return err }); err != nil {
		return fmt.Errorf("register %s: %w", m.name, err)
	}
	if m.client, err = parley.Dial(ctx, cfg.Addr, parley.WithToken(tok.AccessToken), parley.WithEventBuffer(4096)); err != nil {
		return err
	}
	hook := parley.WithReconnectHook(func(error, time.Duration) { reconnects.Add(1) })
	if err := again(ctx, retries, func() (err error) {
		m.rs, err = m.client.ConnectResilient(ctx, parley.WithBackoff(100*time.Millisecond, time.Second), hook)
		return err
	}); err != nil {
		return fmt.Errorf("connect %s: %w", m.name, err)
	}
	go m.record()
	for _, r := range rooms {
		if err := again(ctx, retries, func() error { _, err := m.rs.Join(ctx, r); return err }); err != nil {
			return fmt.Errorf("%s join %s: %w", m.name, r, err)
		}
	}
	return nil
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

// record notes every delivery of m's sessions until they stop.
func (m *member) record() {
	for ev := range m.rs.Events() {
		m.mu.Lock()
		switch e := ev.GetEvent().(type) {
		case *chatv1.ServerEvent_Welcome:
			clear(m.lastLive) // a new connection: order is per connection
		case *chatv1.ServerEvent_Message:
			msg := e.Message
			key := m.convOf(msg)
			if last, ok := m.lastLive[key]; ok && msg.GetSeq() <= last {
				m.reordered++
			}
			m.lastLive[key] = msg.GetSeq()
			m.live++
			m.deliver(msg)
		case *chatv1.ServerEvent_RecentMessages:
			var prev int64
			for _, msg := range e.RecentMessages.GetMessages() {
				if msg.GetSeq() <= prev {
					m.reordered++
				}
				prev = msg.GetSeq()
				m.replayed++
				m.deliver(msg)
			}
		}
		m.mu.Unlock()
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

// deliver counts one delivery; m.mu is held.
func (m *member) deliver(msg *chatv1.Message) {
	id := msg.GetId()
	m.delivered[id]++
	if m.final && m.delivered[id] == 1 {
		m.late[id] = true
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
