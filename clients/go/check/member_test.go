package check

import (
	"fmt"
	"testing"

	"github.com/parleychat/parley/clients/go/parley"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// TestDeliveryCounts pins the definitions of duplicated, reordered and
// live_gaps (see Report) on one subscriber's event stream.
func TestDeliveryCounts(t *testing.T) {
	t.Parallel()
	room := func(seq int64) *chatv1.Message {
		return &chatv1.Message{Id: fmt.Sprint("r", seq), Seq: seq, Sender: "p", Conversation: parley.Room("club")}
	}
	type step struct {
		welcome bool   // a new connection
		live    int64  // a live message of this seq
		id      string // its id, when not the seq's usual one
		replay  []int64
	}
	tests := []struct {
		name                       string
		joined                     bool // the room has a cursor at 0
		steps                      []step
		dup, reordered, gaps, live int
		filled                     int
	}{
		{"in order", true, []step{{live: 1}, {live: 2}, {replay: []int64{3, 4}}, {live: 5}}, 0, 0, 0, 3, 2},
		{"duplicate is not also reordered", true, []step{{live: 1}, {live: 2}, {live: 2}, {replay: []int64{1, 2}}}, 3, 0, 0, 3, 0},
		{"late older message is reordered", true, []step{{live: 1}, {live: 3}, {live: 2}}, 0, 1, 0, 3, 0},
		{"equal seq, another message", true, []step{{live: 1}, {live: 1, id: "other"}}, 0, 1, 0, 2, 0},
		{"replay out of order", true, []step{{replay: []int64{1, 3, 2}}}, 0, 1, 0, 0, 0},
		{"fill before the jump", true, []step{{live: 1}, {replay: []int64{2, 3}}, {live: 4}}, 0, 0, 0, 2, 2},
		// A jump filled later on the same connection is no live gap, but
		// the fill comes after a higher seq: reordered.
		{"jump filled later", true, []step{{live: 1}, {live: 4}, {replay: []int64{2, 3}}}, 0, 2, 0, 2, 2},
		{"jump never filled", true, []step{{live: 1}, {live: 4}, {live: 5}}, 0, 0, 1, 3, 0},
		{"jump at the first message of a joined room", true, []step{{live: 2}}, 0, 0, 1, 1, 0},
		{"no cursor: the first message cannot jump", false, []step{{live: 2}, {live: 3}}, 0, 0, 0, 2, 0},
		// The next connection's fill is not this connection's: the jump
		// counts, and the new connection may go back without reordering.
		{"filled on the next connection", true, []step{{live: 1}, {live: 4}, {welcome: true}, {replay: []int64{2, 3}}}, 0, 0, 1, 2, 0},
		{"cursor carries over connections", true, []step{{live: 1}, {welcome: true}, {live: 3}}, 0, 0, 1, 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMember("s", newNodeSet([]string{"a"}), 0)
			if tt.joined {
				m.top["r:club"] = 0
			}
			m.welcome(&chatv1.Welcome{})
			for _, s := range tt.steps {
				switch {
				case s.welcome:
					m.endConn()
					m.welcome(&chatv1.Welcome{})
				case s.live > 0:
					msg := room(s.live)
					if s.id != "" {
						msg.Id = s.id
					}
					m.deliver(msg, true)
				default:
					for _, seq := range s.replay {
						m.deliver(room(seq), false)
					}
				}
			}
			m.endConn()
			dup := 0
			for _, n := range m.delivered {
				dup += n - 1
			}
			if dup != tt.dup || m.reordered != tt.reordered || m.liveGaps != tt.gaps || m.live != tt.live || m.filled != tt.filled {
				t.Fatalf("duplicated %d, reordered %d, live gaps %d, live %d, filled live %d; want %d, %d, %d, %d, %d",
					dup, m.reordered, m.liveGaps, m.live, m.filled, tt.dup, tt.reordered, tt.gaps, tt.live, tt.filled)
			}
		})
	}
}
