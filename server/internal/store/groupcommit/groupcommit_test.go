package groupcommit

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/parleychat/parley/server/internal/store"
)

type req struct {
	Slot[int]
	v int
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !ok(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestQueue: batches are capped, an abandoned request is never taken, a
// taken one is answered even after its caller's context ends, and Close
// refuses new requests while Take drains the queued ones.
func TestQueue(t *testing.T) {
	q := New[*req, int](2)
	ctx := context.Background()
	results := make(chan int, 3)
	for i := range 3 {
		go func() {
			r, err := q.Do(ctx, &req{v: i})
			if err != nil {
				t.Error(err)
			}
			results <- r
		}()
	}
	gone, cancel := context.WithCancel(ctx)
	abandonedErr := make(chan error, 1)
	waitFor(t, "three queued", func() bool { return q.Queued() == 3 })
	go func() { _, err := q.Do(gone, &req{v: 99}); abandonedErr <- err }()
	waitFor(t, "four queued", func() bool { return q.Queued() == 4 })
	cancel()
	if err := <-abandonedErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("abandoned request: %v", err)
	}

	batch, waited := q.Take(nil)
	if len(batch) != 2 || waited {
		t.Fatalf("first batch %d requests, waited %v; want 2, false", len(batch), waited)
	}
	first := batch
	batch = q.TakeMore(nil)
	if len(batch) != 1 || batch[0].v == 99 {
		t.Fatalf("second batch %+v, want the last live request", batch)
	}
	if q.Taken() != 3 || q.Queued() != 0 {
		t.Fatalf("taken %d, queued %d", q.Taken(), q.Queued())
	}
	q.Close()
	if _, err := q.Do(ctx, &req{}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	for _, r := range append(first, batch...) {
		r.Answer(r.v + 10)
	}
	sum := 0
	for range 3 {
		sum += <-results
	}
	if sum != 10+11+12 {
		t.Fatalf("answers sum to %d, want each request its own", sum)
	}
	if batch, _ := q.Take(nil); len(batch) != 0 {
		t.Fatalf("closed and drained: %d", len(batch))
	}
}
