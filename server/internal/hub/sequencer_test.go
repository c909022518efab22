package hub_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/hub"
	"github.com/parleychat/parley/server/internal/store"
)

// record collects delivered numbers; safe for the sequencer's goroutines.
type record struct {
	mu  sync.Mutex
	got []int64
}

func (r *record) at(n int64) func() {
	return func() { r.mu.Lock(); r.got = append(r.got, n); r.mu.Unlock() }
}

func (r *record) String() string { r.mu.Lock(); defer r.mu.Unlock(); return fmt.Sprint(r.got) }

// waitFor waits up to limit for the record to read want.
func (r *record) waitFor(want string, limit time.Duration) {
	for deadline := time.Now().Add(limit); r.String() != want && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSequencerOrdersAppends: appends in flight that finish out of order
// are delivered in sequence order, and a failed append uses no number.
func TestSequencerOrdersAppends(t *testing.T) {
	t.Parallel()
	h, _ := newHub(t, 1, 0)
	ctx := context.Background()
	var r record
	begin := func() any {
		co, err := h.SeqBegin(ctx, "r:x")
		if err != nil {
			t.Fatal(err)
		}
		return co
	}
	a, b, c, d := begin(), begin(), begin(), begin()
	h.SeqEnd(a, "r:x", 3, r.at(3))
	h.SeqEnd(b, "r:x", 1, r.at(1))
	if r.String() != "[1]" {
		t.Fatalf("after 3 and 1: %v", &r)
	}
	h.SeqEnd(d, "r:x", 0, nil) // failed: no number
	h.SeqEnd(c, "r:x", 2, r.at(2))
	if r.String() != "[1 2 3]" {
		t.Fatalf("delivered %v", &r)
	}
}

// TestSequencerFillsGapFromStore: a number that never arrives is read
// from the store and delivered before the ones after it, never skipped;
// a copy of a number already delivered is dropped.
func TestSequencerFillsGapFromStore(t *testing.T) {
	t.Parallel()
	h, st := newHub(t, 2, 0)
	ctx := context.Background()
	watcher := attach(t, h, "user00001")
	join(t, h, watcher, "x")
	drain(watcher)
	// Two messages another node stored, whose events were lost.
	for i := range 2 {
		if _, _, err := st.AppendMessage(ctx, store.Message{Conversation: "r:x", Sender: "user00000", Text: fmt.Sprint("lost", i), SentAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	h.SeqTrack("r:x", 0)
	var r record
	h.SeqRemote("r:x", 3, r.at(3)) // 1 and 2 never come
	r.waitFor("[3]", 5*time.Second)
	if r.String() != "[3]" {
		t.Fatalf("after the gap: %v", &r)
	}
	var seqs []int64
	for _, ev := range events(t, watcher) {
		if m := ev.GetMessage(); m != nil {
			seqs = append(seqs, m.GetSeq())
		}
	}
	if !slices.Equal(seqs, []int64{1, 2}) {
		t.Fatalf("the member got %v from the store, want [1 2]", seqs)
	}
	h.SeqRemote("r:x", 2, r.at(2)) // late copy
	h.SeqRemote("r:x", 3, r.at(3)) // duplicate
	h.SeqRemote("r:x", 4, r.at(4))
	if r.String() != "[3 4]" {
		t.Fatalf("late and duplicate copies: %v", &r)
	}
}

// TestSequencerCatchUpPages: a long gap reaches a member as
// RecentMessages pages, not one frame per message, so its queue holds it.
func TestSequencerCatchUpPages(t *testing.T) {
	t.Parallel()
	h, st := newHub(t, 2, 64)
	ctx := context.Background()
	watcher := attach(t, h, "user00001")
	join(t, h, watcher, "x")
	drain(watcher)
	const lost = 450
	for i := range lost {
		if _, _, err := st.AppendMessage(ctx, store.Message{Conversation: "r:x", Sender: "user00000", Text: fmt.Sprint(i), SentAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	h.SeqTrack("r:x", 0)
	var r record
	h.SeqRemote("r:x", lost+1, r.at(lost+1))
	r.waitFor(fmt.Sprint([]int64{lost + 1}), 10*time.Second)
	var seqs []int64
	frames := 0
	for _, ev := range events(t, watcher) {
		var ms []*chatv1.Message
		if m := ev.GetMessage(); m != nil {
			ms = append(ms, m)
		}
		ms = append(ms, ev.GetRecentMessages().GetMessages()...)
		if len(ms) > 0 {
			frames++
		}
		for _, m := range ms {
			seqs = append(seqs, m.GetSeq())
		}
	}
	if len(seqs) != lost || seqs[0] != 1 || seqs[lost-1] != lost || !slices.IsSorted(seqs) {
		t.Fatalf("the member got %d messages (%v…), want 1..%d in order", len(seqs), seqs[:min(5, len(seqs))], lost)
	}
	if frames > lost/50 {
		t.Fatalf("%d frames for %d messages: not paged", frames, lost)
	}
	if watcher.Reason() != hub.ReasonNone {
		t.Fatal("the catch-up overflowed the member's queue")
	}
}

// TestSequencerReportsOvertakenAppend: when a fill from the store delivers
// a message before its own append reports it, end says the delivery was
// dropped, so the caller still publishes the message to the other nodes.
func TestSequencerReportsOvertakenAppend(t *testing.T) {
	t.Parallel()
	h, st := newHub(t, 1, 0)
	ctx := context.Background()
	h.SeqTrack("r:x", 0)
	co, err := h.SeqBegin(ctx, "r:x")
	if err != nil {
		t.Fatal(err)
	}
	// The append commits (seq 1), but its end is slow; seq 2 arrives and
	// the gap is filled from the store.
	if _, _, err := st.AppendMessage(ctx, store.Message{Conversation: "r:x", Sender: "user00000", Text: "slow", SentAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	var r record
	h.SeqRemote("r:x", 2, r.at(2))
	r.waitFor("[2]", 5*time.Second)
	if r.String() != "[2]" {
		t.Fatalf("after the fill: %v", &r)
	}
	if h.SeqEnd(co, "r:x", 1, r.at(1)) {
		t.Fatal("end queued a delivery the fill had already made")
	}
	if r.String() != "[2]" {
		t.Fatalf("delivered twice: %v", &r)
	}
}
