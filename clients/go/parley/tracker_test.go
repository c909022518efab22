package parley

import (
	"fmt"
	"testing"
	"time"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

func TestTracker(t *testing.T) {
	t.Parallel()
	room := func(seq int64) *chatv1.Message {
		return &chatv1.Message{Id: fmt.Sprint("r", seq), Seq: seq, Sender: "bob", Conversation: Room("club")}
	}
	// Direct messages name the recipient; both directions are one
	// conversation with the peer.
	dm := func(seq int64, from, to string) *chatv1.Message {
		return &chatv1.Message{Id: fmt.Sprint("d", seq), Seq: seq, Sender: from, Conversation: Direct(to)}
	}
	tests := []struct {
		name  string
		seed  []*chatv1.ConversationCursor
		msgs  []*chatv1.Message
		fresh []bool
		want  string // cursors
	}{
		{"in order", nil, []*chatv1.Message{room(5), room(6), room(7)}, []bool{true, true, true}, "#club:7"},
		{"duplicates", nil, []*chatv1.Message{room(5), room(6), room(5), room(6)}, []bool{true, true, false, false}, "#club:6"},
		{"gap then fill", nil, []*chatv1.Message{room(5), room(8), room(6), room(7), room(8)}, []bool{true, true, true, true, false}, "#club:8"},
		{"gap stays at the cursor", nil, []*chatv1.Message{room(5), room(9)}, []bool{true, true}, "#club:5"},
		{"seeded", []*chatv1.ConversationCursor{{Conversation: Room("club"), LastSeq: 10}}, []*chatv1.Message{room(11), room(13), room(12)}, []bool{true, true, true}, "#club:13"},
		// Below the first message seen the cursor is a guess: only ids
		// seen are dropped there.
		{"older than first sight", nil, []*chatv1.Message{room(7), room(6), room(6)}, []bool{true, true, false}, "#club:7"},
		// At or below a cursor known from deliveries, a seq is a duplicate
		// whatever its id (the id window may have forgotten it).
		{"seeded cursor drops by seq", []*chatv1.ConversationCursor{{Conversation: Room("club"), LastSeq: 10}}, []*chatv1.Message{room(9), room(10), room(11)}, []bool{false, false, true}, "#club:11"},
		{"same seq, another id", nil, []*chatv1.Message{room(5), room(6), {Id: "x", Seq: 6, Sender: "bob", Conversation: Room("club")}}, []bool{true, true, false}, "#club:6"},
		{"direct both ways", nil, []*chatv1.Message{dm(1, "alice", "bob"), dm(2, "bob", "alice"), dm(2, "bob", "alice")}, []bool{true, true, false}, "@bob:2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTracker(tt.seed)
			for i, m := range tt.msgs {
				if got := tr.see("alice", m); got != tt.fresh[i] {
					t.Fatalf("message %d (seq %d): fresh = %v, want %v", i, m.GetSeq(), got, tt.fresh[i])
				}
			}
			var got string
			for _, c := range tr.cursors(nil) {
				got += cursorKey(c.GetConversation()) + ":" + fmt.Sprint(c.GetLastSeq())
			}
			if got != tt.want {
				t.Fatalf("cursors %s, want %s", got, tt.want)
			}
		})
	}

	// A room's baseline (its latest seq when joined) is a guess too: a
	// message at it may still be on its way, and is let through once.
	tr := newTracker(nil)
	tr.convs["#club"] = &convState{conv: Room("club"), last: 10, floor: 10}
	for i, want := range []bool{true, false, true, false} {
		seq := []int64{10, 10, 11, 11}[i]
		if got := tr.see("alice", room(seq)); got != want {
			t.Fatalf("baseline: message %d (seq %d): fresh = %v, want %v", i, seq, got, want)
		}
	}

	// Rooms outside the kept set are forgotten; direct ones stay.
	tr = newTracker(nil)
	tr.see("alice", room(1))
	tr.see("alice", dm(1, "bob", "alice"))
	if cs := tr.cursors(map[string]bool{"#general": true}); len(cs) != 1 || cs[0].GetConversation().GetUser() != "bob" {
		t.Fatalf("filtered cursors = %v", cs)
	}
	if len(tr.convs) != 1 {
		t.Fatalf("left room still tracked: %v", tr.convs)
	}

	// The id window forgets the oldest ids.
	tr = newTracker(nil)
	for i := range int64(dedupeWindow + 10) {
		tr.see("alice", room(i+1))
	}
	if len(tr.seen) != dedupeWindow {
		t.Fatalf("%d ids remembered, want %d", len(tr.seen), dedupeWindow)
	}
}

// TestGapCursors: a gap in a conversation is asked for again once it has
// lasted gapRepairAfter, at most gapRepairTries times, and forgotten once
// filled.
func TestGapCursors(t *testing.T) {
	t.Parallel()
	room := func(seq int64) *chatv1.Message {
		return &chatv1.Message{Id: fmt.Sprint("r", seq), Seq: seq, Sender: "bob", Conversation: Room("club")}
	}
	tr := newTracker(nil)
	gaps := map[string]*gapState{}
	t0 := time.Unix(1000, 0)
	for _, seq := range []int64{5, 7} {
		tr.see("alice", room(seq))
	}
	if c := tr.gapCursors(gaps, t0); len(c) != 0 {
		t.Fatalf("asked at once: %v", c)
	}
	if c := tr.gapCursors(gaps, t0.Add(gapRepairAfter/2)); len(c) != 0 {
		t.Fatalf("asked before gapRepairAfter: %v", c)
	}
	var asked int
	for i := 1; i <= gapRepairTries+2; i++ {
		c := tr.gapCursors(gaps, t0.Add(time.Duration(i)*gapRepairAfter))
		if len(c) == 1 && c[0].GetLastSeq() == 5 && c[0].GetConversation().GetRoom() == "club" {
			asked++
		} else if len(c) != 0 {
			t.Fatalf("cursors %v", c)
		}
	}
	if asked != gapRepairTries {
		t.Fatalf("asked %d times, want %d", asked, gapRepairTries)
	}
	tr.see("alice", room(6)) // the replay fills the gap
	if c := tr.gapCursors(gaps, t0.Add(time.Hour)); len(c) != 0 || len(gaps) != 0 {
		t.Fatalf("after the fill: cursors %v, gaps %v", c, gaps)
	}
}
