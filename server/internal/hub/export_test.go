package hub

import "context"

// Hooks into the sequencer for its tests (package hub_test), which drive
// it as another node would: a message stored and then heard of, or not.

func (h *Hub) SeqBegin(ctx context.Context, conv string) (any, error) {
	return h.seq.begin(ctx, h.store, conv)
}

func (h *Hub) SeqEnd(co any, conv string, seq int64, deliver func()) bool {
	return h.seq.end(co.(*convOrder), conv, seq, deliver)
}

func (h *Hub) SeqRemote(conv string, seq int64, deliver func()) { h.seq.remote(conv, seq, deliver) }

func (h *Hub) SeqTrack(conv string, last int64) { h.seq.track(conv, last) }
