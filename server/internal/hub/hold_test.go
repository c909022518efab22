package hub

import (
	"testing"
)

// TestSessionHoldKeepsLiveBehindReplay: frames fanned out while a restore
// or Resume replays wait behind the replay's own, in their order, and a
// hold still counts toward the queue's bound.
func TestSessionHoldKeepsLiveBehindReplay(t *testing.T) {
	s := newSession("s", "u", 4)
	live1, live2, replay1, replay2 := &Frame{Data: []byte("l1")}, &Frame{Data: []byte("l2")}, &Frame{Data: []byte("r1")}, &Frame{Data: []byte("r2")}
	s.hold()
	s.Send(live1)
	s.sendNow(replay1)
	s.hold() // nested: a Resume during the connect-time restore
	s.Send(live2)
	s.release()
	if q := s.Queued(); q != 1 {
		t.Fatalf("queued %d while still held, want the replay's 1", q)
	}
	s.sendNow(replay2)
	s.release()
	var got []string
	for _, f := range s.Take(nil) {
		got = append(got, string(f.Data))
	}
	if want := "[r1 r2 l1 l2]"; fmtStrings(got) != want {
		t.Fatalf("order %v, want %s", got, want)
	}
	s.hold()
	for range 4 {
		s.Send(live1)
	}
	if s.Reason() != ReasonNone {
		t.Fatal("closed at the bound")
	}
	s.Send(live1)
	if s.Reason() != ReasonSlowConsumer {
		t.Fatalf("held past the bound: reason %v", s.Reason())
	}
}

func fmtStrings(ss []string) string {
	out := "["
	for i, s := range ss {
		if i > 0 {
			out += " "
		}
		out += s
	}
	return out + "]"
}
