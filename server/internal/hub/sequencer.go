package hub

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/parleychat/parley/server/internal/store"
)

// sequencer delivers each conversation's messages in sequence order, never
// skipping one. The store is the source of truth: it assigns sequence
// numbers at commit, per conversation and without gaps (a failed append
// uses no number), so a delivery waiting for a number that has not come
// is fetched from the store rather than given up on.
//
// Messages reach it from this node's appends (begin/end, which run
// concurrently so they share group commits) and, in a cluster, from the
// other nodes (remote). Whoever holds seq N waits until N-1 has been
// delivered; a gap that lasts gapWait is filled from the store (catchUp);
// a number already delivered (a late or duplicate copy) is dropped.
//
// Lock order: sequencer.mu, then convOrder.mu, then Hub.mu (deliveries run
// under convOrder.mu and take Hub.mu to queue frames). No store I/O runs
// under any of them.
type sequencer struct {
	h *Hub

	mu    sync.Mutex // guards convs and byUser; taken before any convOrder.mu
	convs map[string]*convOrder
	// byUser indexes the direct conversations a cluster node tracks by
	// participant, to forget them when neither is online here any more.
	byUser map[string]map[string]struct{}
}

type convOrder struct {
	key string

	mu       sync.Mutex
	next     int64 // next sequence to deliver; 0 until known
	inflight int   // appends begun and not yet ended
	pending  map[int64]func()
	timer    *time.Timer // armed while a gap waits to be filled
	fetching bool        // a store read for this conversation is running
	// establishing: a cluster node is finding where a direct conversation
	// it has not tracked starts for its sessions (establish).
	establishing bool
}

// gapWait is how long a delivery waits for a lower number (another node's
// message still in transit, or this node's append finishing) before the
// gap is read from the store.
const gapWait = 100 * time.Millisecond

// smallFill is the most messages a fill delivers as single Message events;
// more go out as RecentMessages pages, one frame per replayPage messages,
// so a catch-up cannot overflow a healthy session's queue.
const smallFill = 8

func (q *sequencer) init(h *Hub) {
	q.h = h
	q.convs = map[string]*convOrder{}
	q.byUser = map[string]map[string]struct{}{}
}

func (q *sequencer) clustered() bool { return q.h.cluster != nil }

// getLocked returns conv's order, creating it; q.mu is held.
func (q *sequencer) getLocked(conv string) (*convOrder, bool) {
	co := q.convs[conv]
	if co != nil {
		return co, false
	}
	co = &convOrder{key: conv, pending: map[int64]func(){}}
	q.convs[conv] = co
	if q.clustered() {
		if room, a, b, ok := store.ParseKey(conv); ok && room == "" {
			for _, u := range []string{a, b} {
				if q.byUser[u] == nil {
					q.byUser[u] = map[string]struct{}{}
				}
				q.byUser[u][conv] = struct{}{}
			}
		}
	}
	return co, true
}

// begin registers an append to conv. On one node, the first append to a
// conversation not tracked reads its last sequence: no append of it is in
// flight then, so the number is exact. A cluster node cannot know that
// (another node may have committed a message still in transit), so it
// finds the start the way it does for a remote message (establish).
func (q *sequencer) begin(ctx context.Context, st Store, conv string) (*convOrder, error) {
	q.mu.Lock()
	co, _ := q.getLocked(conv)
	co.mu.Lock()
	co.inflight++
	q.mu.Unlock()
	if co.next != 0 || co.establishing {
		co.mu.Unlock()
		return co, nil
	}
	if q.clustered() && isDirect(conv) {
		co.establishing = true
		co.mu.Unlock()
		go q.establish(co)
		return co, nil
	}
	co.mu.Unlock()
	last, err := st.LastSeq(ctx, conv)
	co.mu.Lock()
	defer co.mu.Unlock()
	if err != nil {
		co.inflight--
		return nil, err
	}
	if co.next == 0 {
		co.next = last + 1
		co.runLocked(q)
	}
	return co, nil
}

// end reports an append's outcome: seq 0 for a failed or duplicate append
// (no number was used), else the number and the delivery to run in order.
// It returns false when the delivery was dropped because the number was
// already delivered (a fill from the store overtook the append).
func (q *sequencer) end(co *convOrder, conv string, seq int64, deliver func()) bool {
	co.mu.Lock()
	co.inflight--
	queued := true
	if seq > 0 {
		queued = co.addLocked(q, seq, deliver)
	}
	idle := co.inflight == 0 && len(co.pending) == 0 && !co.establishing
	co.mu.Unlock()
	if idle && !q.clustered() {
		q.mu.Lock()
		co.mu.Lock()
		if co.inflight == 0 && len(co.pending) == 0 && q.convs[conv] == co && len(q.convs) > maxIdleConvs {
			delete(q.convs, conv) // bounded memory: re-read when it is next used
		}
		co.mu.Unlock()
		q.mu.Unlock()
	}
	return queued
}

// maxIdleConvs is how many conversations a single node keeps the next
// sequence number of while quiet. Re-reading it costs a store query per
// message in a conversation that gets a message now and then; on one node
// the number re-read is exact. A cluster node keeps the number of every
// conversation its sessions need for as long as they need it (forget,
// forgetUser), since re-reading it could drop a message in transit.
const maxIdleConvs = 4096

// remote orders a message another node stored. A room's order exists from
// the moment this node subscribed to it (track); a direct conversation not
// tracked yet is established from the store first.
func (q *sequencer) remote(conv string, seq int64, deliver func()) {
	q.mu.Lock()
	co, created := q.getLocked(conv)
	co.mu.Lock()
	q.mu.Unlock()
	defer co.mu.Unlock()
	if co.next == 0 {
		co.pending[seq] = deliver
		if created && !co.establishing && isDirect(conv) {
			co.establishing = true
			go q.establish(co)
		}
		return
	}
	co.addLocked(q, seq, deliver)
}

// track sets where a room's deliveries start on this node: last is the
// room's last sequence read once this node's subscription was in place, so
// every later message reaches it, and every earlier one is history.
func (q *sequencer) track(conv string, last int64) {
	q.mu.Lock()
	co, _ := q.getLocked(conv)
	co.mu.Lock()
	q.mu.Unlock()
	defer co.mu.Unlock()
	if co.next != 0 {
		return
	}
	co.next = last + 1
	co.runLocked(q)
}

// ensure starts tracking a direct conversation this node has not tracked
// (a catch-up found messages in it), establishing where it starts.
func (q *sequencer) ensure(conv string) {
	q.mu.Lock()
	co, created := q.getLocked(conv)
	co.mu.Lock()
	q.mu.Unlock()
	defer co.mu.Unlock()
	if created && co.next == 0 && !co.establishing && isDirect(conv) {
		co.establishing = true
		go q.establish(co)
	}
}

// catchUpKey reads conv from the store up to at least seq (another node
// said it has messages up to there that it could not publish).
func (q *sequencer) catchUpKey(conv string, seq int64) {
	q.mu.Lock()
	co := q.convs[conv]
	q.mu.Unlock()
	if co != nil {
		q.catchUp(co, seq)
	}
}

// tracked reports whether conv's order is known here.
func (q *sequencer) tracked(conv string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	co := q.convs[conv]
	return co != nil
}

// forget drops conv's order once no session here needs it (the room's
// subscription ended).
func (q *sequencer) forget(conv string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if co := q.convs[conv]; co != nil {
		co.mu.Lock()
		if co.inflight == 0 {
			delete(q.convs, conv)
			if co.timer != nil {
				co.timer.Stop()
			}
		}
		co.mu.Unlock()
	}
}

// forgetUser drops the direct conversations of user that have no
// participant online here, once user's last session here has gone.
func (q *sequencer) forgetUser(user string, local func(string) bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for conv := range q.byUser[user] {
		_, a, b, _ := store.ParseKey(conv)
		peer := a
		if peer == user {
			peer = b
		}
		if local(peer) {
			continue
		}
		if co := q.convs[conv]; co != nil {
			co.mu.Lock()
			busy := co.inflight > 0 || co.establishing
			co.mu.Unlock()
			if busy {
				continue
			}
			delete(q.convs, conv)
		}
		delete(q.byUser[user], conv)
		if m := q.byUser[peer]; m != nil {
			delete(m, conv)
			if len(m) == 0 {
				delete(q.byUser, peer)
			}
		}
	}
	if len(q.byUser[user]) == 0 {
		delete(q.byUser, user)
	}
}

// all returns every tracked conversation, for a catch-up.
func (q *sequencer) all() []*convOrder {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]*convOrder, 0, len(q.convs))
	for _, co := range q.convs {
		out = append(out, co)
	}
	return out
}

// addLocked queues a delivery and runs every one whose turn has come. A
// number already delivered is dropped: a gap is filled from the store,
// never skipped, so it was delivered from there or by another copy.
// co.mu is held.
func (co *convOrder) addLocked(q *sequencer, seq int64, deliver func()) bool {
	if seq < co.next {
		return false
	}
	co.pending[seq] = deliver
	co.runLocked(q)
	return true
}

// runLocked delivers what is in order and arms the gap timer when a gap
// is left. co.mu is held.
func (co *convOrder) runLocked(q *sequencer) {
	if co.next == 0 {
		return
	}
	for {
		d, ok := co.pending[co.next]
		if !ok {
			break
		}
		delete(co.pending, co.next)
		co.next++
		d()
	}
	for s := range co.pending {
		if s < co.next {
			delete(co.pending, s)
		}
	}
	if len(co.pending) == 0 {
		if co.timer != nil {
			co.timer.Stop()
			co.timer = nil
		}
		return
	}
	if co.timer == nil && !co.fetching {
		co.timer = time.AfterFunc(gapWait, func() { q.catchUp(co, 0) })
	}
}

// lowestLocked is the lowest pending number, 0 when none; co.mu is held.
func (co *convOrder) lowestLocked() int64 {
	var low int64
	for s := range co.pending {
		if low == 0 || s < low {
			low = s
		}
	}
	return low
}

// catchUp reads the messages after the last one delivered from the store
// and delivers them in order: up to the lowest pending number (a gap), and
// on to upto when it is higher (after events may have been lost: upto is
// math.MaxInt64, read to the end). The reads run with no lock held; a
// failed read is retried, since the store is the only way to fill a gap.
func (q *sequencer) catchUp(co *convOrder, upto int64) {
	co.mu.Lock()
	co.timer = nil
	if co.next == 0 || co.fetching {
		co.mu.Unlock()
		return
	}
	co.fetching = true
	co.mu.Unlock()
	retry := false
	defer func() {
		co.mu.Lock()
		co.fetching = false
		if retry {
			if co.timer == nil {
				co.timer = time.AfterFunc(time.Second, func() { q.catchUp(co, upto) })
			}
		} else {
			co.runLocked(q) // re-arms the gap timer if a gap is left
		}
		co.mu.Unlock()
	}()
	for {
		co.mu.Lock()
		from, low := co.next, co.lowestLocked()
		co.mu.Unlock()
		if low == 0 && from > upto {
			return // nothing waits and nothing more is known to exist
		}
		limit := replayPage
		if low > 0 && upto < low {
			limit = int(min(low-from, replayPage))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		msgs, _, err := q.h.store.History(ctx, co.key, store.HistoryQuery{AfterSeq: store.After(from - 1), Limit: limit})
		cancel()
		if err != nil {
			q.h.log.Warn("sequencer: fill from store", "conversation", co.key, "err", err)
			retry = true
			return
		}
		full := len(msgs) == limit
		co.mu.Lock()
		msgs = slices.DeleteFunc(msgs, func(m store.Message) bool { return m.Seq < co.next })
		slices.SortFunc(msgs, func(a, b store.Message) int { return cmp.Compare(a.Seq, b.Seq) })
		if len(msgs) > 0 && msgs[0].Seq > co.next {
			co.next = msgs[0].Seq // the numbers between were never used
		}
		var run []store.Message
		for _, m := range msgs {
			if m.Seq != co.next {
				break
			}
			delete(co.pending, m.Seq)
			run = append(run, m)
			co.next++
		}
		if len(run) > 0 {
			q.h.deliverStored(co.key, run)
		}
		if !full && len(run) == len(msgs) {
			// The store has nothing more now: any number below the lowest
			// waiting one that it lacks was never used.
			if low := co.lowestLocked(); low > co.next {
				co.next = low
			}
		}
		co.runLocked(q)
		co.mu.Unlock()
		if !full && len(run) == len(msgs) {
			co.mu.Lock()
			low := co.lowestLocked()
			co.mu.Unlock()
			if low == 0 {
				return
			}
		}
	}
}

// establish finds where a direct conversation starts for this node's
// sessions when it has not tracked it: every message committed after its
// participants' subscription here began (since, less a margin for the
// clocks of the nodes that stamped them) is theirs to get live, and the
// earlier ones reached them as history. It reads the conversation's
// latest page, delivers what is theirs, and orders the rest from there.
func (q *sequencer) establish(co *convOrder) {
	_, a, b, _ := store.ParseKey(co.key)
	since := q.h.cluster.since(a, b).Add(-establishMargin)
	var msgs []store.Message
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var err error
		msgs, _, err = q.h.store.History(ctx, co.key, store.HistoryQuery{Limit: replayPage})
		cancel()
		if err == nil {
			break
		}
		q.h.log.Warn("sequencer: establish from store", "conversation", co.key, "err", err)
		time.Sleep(min(time.Duration(attempt+1)*200*time.Millisecond, 2*time.Second))
	}
	slices.SortFunc(msgs, func(x, y store.Message) int { return cmp.Compare(x.Seq, y.Seq) })
	var base int64
	for _, m := range msgs {
		if m.SentAt.Before(since) {
			base = m.Seq
		}
	}
	if base == 0 && len(msgs) == replayPage {
		base = msgs[0].Seq - 1 // a full page since: start with it
	}
	co.mu.Lock()
	defer co.mu.Unlock()
	co.establishing = false
	if co.next != 0 {
		// Tracked meanwhile (the user's restore replayed it): that start
		// is exact, and what this read found is before it or pending.
		co.runLocked(q)
		return
	}
	co.next = base + 1
	for _, m := range msgs {
		if m.Seq <= base {
			continue
		}
		if _, ok := co.pending[m.Seq]; !ok {
			m := m
			co.pending[m.Seq] = func() { q.h.deliverStored(co.key, []store.Message{m}) }
		}
	}
	co.runLocked(q)
}

// establishMargin allows for the clocks of the nodes that stamp sent_at.
const establishMargin = 2 * time.Second

func isDirect(conv string) bool {
	room, _, _, ok := store.ParseKey(conv)
	return ok && room == ""
}
