// Package groupcommit is the queue behind both stores' group commit:
// callers hand in a request and wait for its answer, and one writer takes
// what is waiting as a batch, commits it in one transaction and answers
// every request. A caller whose context ends while its request is still
// queued abandons it (it is never written); a taken request is always
// answered.
//
// Each batch's commit is timed for the metrics (SetObserver) and traced:
// StartCommit opens one span per batch, linked to the span of every
// request in it, so that a message's trace leads to the commit that
// stored it and the commit to every message it carried.
package groupcommit

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/tracing"
)

// Request states, guarded by Queue.mu.
const (
	queued = iota
	taken
	abandoned
)

// Slot is what the queue keeps of a request; a store's request type
// embeds it.
type Slot[R any] struct {
	state int
	done  chan R            // buffered: the writer never blocks on it
	span  trace.SpanContext // the caller's, for the commit span's link
}

func (s *Slot[R]) slot() *Slot[R] { return s }

// Answer gives a taken request its result.
func (s *Slot[R]) Answer(r R) { s.done <- r }

// Request is a pointer to a store's request type, which embeds Slot[R].
type Request[R any] interface{ slot() *Slot[R] }

// Queue holds requests P, answered with R, until the writer takes them.
type Queue[P Request[R], R any] struct {
	mu       sync.Mutex
	cond     sync.Cond
	items    []P
	closed   bool
	maxBatch int
	taken    atomic.Int64
	obs      atomic.Pointer[Observer]
}

// Observer is told of every batch commit: its size, how long it took and
// its error (nil when committed). It runs on the writer between the
// commit and the answers, so it must be quick.
type Observer interface {
	BatchCommitted(size int, took time.Duration, err error)
}

// SetObserver makes o the queue's Observer (nil for none); safe to call
// while the writer runs.
func (q *Queue[P, R]) SetObserver(o Observer) {
	if o == nil {
		q.obs.Store(nil)
		return
	}
	q.obs.Store(&o)
}

// Commit times and traces one batch's commit; End it once the batch
// is written.
type Commit struct {
	start time.Time
	size  int
	span  trace.Span
	obs   Observer
}

// StartCommit starts the commit of batch: the returned context carries
// its span ("store.commit"), linked to each request's span.
func (q *Queue[P, R]) StartCommit(batch []P) (context.Context, Commit) {
	ctx, span := tracing.Start(context.Background(), "store.commit",
		trace.WithSpanKind(trace.SpanKindInternal))
	if span.IsRecording() {
		span.SetAttributes(attribute.Int("parley.batch_size", len(batch)))
		for _, p := range batch {
			if sc := p.slot().span; sc.IsValid() {
				span.AddLink(trace.Link{SpanContext: sc})
			}
		}
	}
	c := Commit{start: time.Now(), size: len(batch), span: span}
	if o := q.obs.Load(); o != nil {
		c.obs = *o
	}
	return ctx, c
}

// End records the commit's outcome (err nil when it committed).
func (c Commit) End(err error) {
	if c.obs != nil {
		c.obs.BatchCommitted(c.size, time.Since(c.start), err)
	}
	if err != nil {
		c.span.SetStatus(codes.Error, err.Error())
	}
	c.span.End()
}

// New returns a queue whose batches hold at most maxBatch requests.
func New[P Request[R], R any](maxBatch int) *Queue[P, R] {
	q := &Queue[P, R]{maxBatch: maxBatch}
	q.cond.L = &q.mu
	return q
}

// Do queues p and waits for its answer. It returns store.ErrClosed once
// Close was called, and ctx.Err() when ctx ends while p is still queued;
// once taken, p is waited for whatever ctx does.
func (q *Queue[P, R]) Do(ctx context.Context, p P) (R, error) {
	// The request's own span (its wait and its commit), in the caller's
	// trace; the batch's commit span links to it.
	ctx, span := tracing.Start(ctx, "store.append")
	defer span.End()
	s := p.slot()
	s.done = make(chan R, 1)
	s.span = span.SpanContext()
	var zero R
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return zero, store.ErrClosed
	}
	q.items = append(q.items, p)
	q.cond.Signal()
	q.mu.Unlock()

	select {
	case r := <-s.done:
		return r, nil
	case <-ctx.Done():
		q.mu.Lock()
		if s.state == queued {
			s.state = abandoned
			q.mu.Unlock()
			return zero, ctx.Err()
		}
		q.mu.Unlock()
		return <-s.done, nil
	}
}

// Take blocks until there is work, then appends up to maxBatch live
// requests to batch; waited reports whether it had to wait for the
// first. It returns an empty batch only when closed and drained.
func (q *Queue[P, R]) Take(batch []P) (_ []P, waited bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		for len(q.items) == 0 && !q.closed {
			waited = true
			q.cond.Wait()
		}
		batch = q.grabLocked(batch)
		if len(batch) > 0 || (q.closed && len(q.items) == 0) {
			return batch, waited
		}
	}
}

// TakeMore appends what is waiting to batch, up to maxBatch, without
// blocking.
func (q *Queue[P, R]) TakeMore(batch []P) []P {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.grabLocked(batch)
}

func (q *Queue[P, R]) grabLocked(batch []P) []P {
	n0 := len(batch)
	i := 0
	for ; i < len(q.items) && len(batch) < q.maxBatch; i++ {
		p := q.items[i]
		if s := p.slot(); s.state != abandoned {
			s.state = taken
			batch = append(batch, p)
		}
	}
	q.taken.Add(int64(len(batch) - n0))
	n := copy(q.items, q.items[i:])
	clear(q.items[n:])
	q.items = q.items[:n]
	return batch
}

// Close refuses new requests; Take still hands out the queued ones.
func (q *Queue[P, R]) Close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.cond.Broadcast()
}

// Queued counts the requests waiting to be taken (not abandoned).
func (q *Queue[P, R]) Queued() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, p := range q.items {
		if p.slot().state == queued {
			n++
		}
	}
	return n
}

// Taken counts the requests the writer has taken, ever.
func (q *Queue[P, R]) Taken() int64 { return q.taken.Load() }
