package hub

import (
	"context"
	"sync"
	"time"
)

// sequencer delivers each conversation's messages in sequence order while
// their appends run concurrently. The store assigns sequence numbers at
// commit; whoever finishes holds its delivery until every lower number of
// the conversation has been delivered.
type sequencer struct {
	mu    sync.Mutex // guards convs; taken before any convOrder.mu
	convs map[string]*convOrder
}

type convOrder struct {
	mu       sync.Mutex
	next     int64 // next sequence to deliver; 0 until read from the store
	inflight int   // appends begun and not yet ended
	pending  map[int64]func()
	gapSince time.Time // when the head of pending started waiting for next
}

// gapTimeout bounds how long deliveries wait for a sequence number that
// may never come (a cluster event lost in transit).
const gapTimeout = time.Second

// begin registers an append to conv. The first append to a conversation
// not tracked reads its last sequence; no append of it is in flight then,
// so the number is exact.
func (q *sequencer) begin(ctx context.Context, st Store, conv string) (*convOrder, error) {
	q.mu.Lock()
	co := q.convs[conv]
	if co == nil {
		co = &convOrder{pending: map[int64]func(){}}
		q.convs[conv] = co
	}
	co.mu.Lock()
	co.inflight++
	q.mu.Unlock()
	defer co.mu.Unlock()
	if co.next == 0 {
		last, err := st.LastSeq(ctx, conv)
		if err != nil {
			co.inflight--
			return nil, err
		}
		co.next = last + 1
	}
	return co, nil
}

// end reports an append's outcome: seq 0 for a failed or duplicate append
// (no number was used), else the number and the delivery to run in order.
func (q *sequencer) end(co *convOrder, conv string, seq int64, deliver func()) {
	co.mu.Lock()
	co.inflight--
	co.add(seq, deliver)
	idle := co.inflight == 0
	co.mu.Unlock()
	if idle {
		q.mu.Lock()
		co.mu.Lock()
		if co.inflight == 0 && len(co.pending) == 0 && q.convs[conv] == co && len(q.convs) > maxIdleConvs {
			delete(q.convs, conv) // bounded memory: re-read when it is next used
		}
		co.mu.Unlock()
		q.mu.Unlock()
	}
}

// maxIdleConvs is how many conversations keep their next sequence number
// while quiet. Re-reading it costs a store query per message in a
// conversation that gets a message now and then (most of them); a number
// kept is still exact on one node, and in a cluster other nodes' messages
// reach it through remote, while a lost one is skipped as a gap.
const maxIdleConvs = 4096

// remote orders a message another node stored: it is delivered with this
// node's own, in sequence order, when the conversation is being ordered
// here, and at once otherwise.
func (q *sequencer) remote(conv string, seq int64, deliver func()) {
	q.mu.Lock()
	co := q.convs[conv]
	if co == nil {
		q.mu.Unlock()
		deliver()
		return
	}
	co.mu.Lock()
	q.mu.Unlock()
	if seq < co.next {
		deliver() // late: its turn has passed
	} else {
		co.add(seq, deliver)
	}
	co.mu.Unlock()
}

// add queues a delivery and runs every one whose turn has come. When
// nothing in flight here can fill a gap (another writer used the number),
// or the gap has lasted gapTimeout, it skips the gap rather than hold the
// rest forever. co.mu is held.
func (co *convOrder) add(seq int64, deliver func()) {
	if seq > 0 {
		co.pending[seq] = deliver
	}
	for {
		for {
			d, ok := co.pending[co.next]
			if !ok {
				break
			}
			delete(co.pending, co.next)
			co.next++
			d()
		}
		if len(co.pending) == 0 {
			co.gapSince = time.Time{}
			return
		}
		if co.gapSince.IsZero() {
			co.gapSince = time.Now()
		}
		if co.inflight > 0 && time.Since(co.gapSince) < gapTimeout {
			return
		}
		lowest := int64(-1)
		for s := range co.pending {
			if lowest < 0 || s < lowest {
				lowest = s
			}
		}
		co.next, co.gapSince = lowest, time.Time{}
	}
}
