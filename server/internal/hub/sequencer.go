package hub

import (
	"context"
	"sync"
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
}

// begin registers an append to conv. The first append after a quiet spell
// reads the conversation's last sequence; no append of it is in flight
// then, so the number is exact.
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
	if seq > 0 {
		co.pending[seq] = deliver
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
	if co.inflight == 0 && len(co.pending) > 0 {
		// Nothing in flight can fill the gap (another writer used the
		// numbers): deliver the rest in order rather than hold it forever.
		for len(co.pending) > 0 {
			for co.pending[co.next] == nil {
				co.next++
			}
			d := co.pending[co.next]
			delete(co.pending, co.next)
			co.next++
			d()
		}
	}
	idle := co.inflight == 0
	co.mu.Unlock()
	if idle {
		q.mu.Lock()
		co.mu.Lock()
		if co.inflight == 0 && len(co.pending) == 0 && q.convs[conv] == co {
			delete(q.convs, conv) // bounded memory: re-read when it is next used
		}
		co.mu.Unlock()
		q.mu.Unlock()
	}
}
