package hub

import (
	"context"
	"fmt"
	"testing"
)

// lastSeq is a Store stand-in for the one method the sequencer calls.
type lastSeq struct {
	Store
	n int64
}

func (l lastSeq) LastSeq(context.Context, string) (int64, error) { return l.n, nil }

func TestSequencerOrders(t *testing.T) {
	var q sequencer
	q.convs = map[string]*convOrder{}
	var got []int64
	rec := func(n int64) func() { return func() { got = append(got, n) } }
	begin := func() *convOrder {
		co, err := q.begin(context.Background(), lastSeq{n: 10}, "r:x")
		if err != nil {
			t.Fatal(err)
		}
		return co
	}

	// Three appends in flight finish as 13, 11, 12: delivered 11, 12, 13.
	a, b, c := begin(), begin(), begin()
	q.end(a, "r:x", 13, rec(13))
	q.end(b, "r:x", 11, rec(11))
	if fmt.Sprint(got) != "[11]" {
		t.Fatalf("after 13 and 11: %v", got)
	}
	q.end(c, "r:x", 12, rec(12))
	if fmt.Sprint(got) != "[11 12 13]" {
		t.Fatalf("delivered %v", got)
	}
	// Quiet, it keeps its number (no store query for the next message)
	// while few conversations are tracked, and drops it beyond that.
	if co := q.convs["r:x"]; co == nil || co.next != 14 {
		t.Fatalf("idle conversation: %+v", co)
	}
	for i := range maxIdleConvs {
		q.convs[fmt.Sprint("r:other", i)] = &convOrder{next: 1, pending: map[int64]func(){}}
	}
	q.end(begin(), "r:x", 14, rec(14))
	if q.convs["r:x"] != nil {
		t.Fatal("an idle conversation was kept beyond maxIdleConvs")
	}
	q.convs = map[string]*convOrder{}

	// Another node's message fills a gap between this node's own.
	got = nil
	a, b = begin(), begin()
	q.end(a, "r:x", 13, rec(13)) // 11 and 12 are not here yet
	q.remote("r:x", 11, rec(11))
	q.remote("r:x", 12, rec(12))
	q.end(b, "r:x", 14, rec(14))
	if fmt.Sprint(got) != "[11 12 13 14]" {
		t.Fatalf("with remote: %v", got)
	}

	// A number nobody here will report is skipped once nothing is in flight.
	got = nil
	q.convs = map[string]*convOrder{}
	a = begin()
	q.end(a, "r:x", 12, rec(12)) // 11 went to a writer this node never hears from
	if fmt.Sprint(got) != "[12]" {
		t.Fatalf("gap: %v", got)
	}

	// A failed append uses no number.
	got = nil
	q.convs = map[string]*convOrder{}
	a, b = begin(), begin()
	q.end(a, "r:x", 0, nil)
	q.end(b, "r:x", 11, rec(11))
	if fmt.Sprint(got) != "[11]" {
		t.Fatalf("after a failure: %v", got)
	}
}
