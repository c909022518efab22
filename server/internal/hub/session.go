package hub

import (
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// Frame is one ServerEvent encoded once and shared, read-only, by every
// session it is queued to: a message to 1,000 members is marshalled once.
type Frame struct {
	Data []byte
}

// Encode marshals ev into a Frame.
func Encode(ev *chatv1.ServerEvent) *Frame {
	b, err := proto.Marshal(ev)
	if err != nil {
		// Only invalid UTF-8 in a string field can fail here. Every string
		// the hub sends should have been validated on the way in or
		// generated, but a slip there (an error message quoting a client's
		// bytes, say) must cost one replacement character, not a panic
		// reachable from the wire.
		ev = proto.Clone(ev).(*chatv1.ServerEvent)
		scrubUTF8(ev.ProtoReflect())
		if b, err = proto.Marshal(ev); err != nil {
			panic("hub: encode ServerEvent: " + err.Error()) // not UTF-8: a bug in the contract's types
		}
	}
	return &Frame{Data: b}
}

// scrubUTF8 replaces invalid UTF-8 in every string field of m, nested
// messages, lists and maps included, with U+FFFD.
func scrubUTF8(m protoreflect.Message) {
	fix := func(s string) (string, bool) {
		if utf8.ValidString(s) {
			return s, false
		}
		return strings.ToValidUTF8(s, "\uFFFD"), true
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				if fd.Kind() == protoreflect.StringKind {
					if s, bad := fix(l.Get(i).String()); bad {
						l.Set(i, protoreflect.ValueOfString(s))
					}
				} else if fd.Message() != nil {
					scrubUTF8(l.Get(i).Message())
				}
			}
		case fd.IsMap():
			mp := v.Map()
			var bad []protoreflect.MapKey
			mp.Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				if fd.MapValue().Kind() == protoreflect.StringKind {
					if s, b := fix(mv.String()); b {
						mp.Set(k, protoreflect.ValueOfString(s))
					}
				} else if fd.MapValue().Message() != nil {
					scrubUTF8(mv.Message())
				}
				if fd.MapKey().Kind() == protoreflect.StringKind && !utf8.ValidString(k.String()) {
					bad = append(bad, k)
				}
				return true
			})
			for _, k := range bad {
				s, _ := fix(k.String())
				mv := mp.Get(k)
				mp.Clear(k)
				mp.Set(protoreflect.ValueOfString(s).MapKey(), mv)
			}
		case fd.Kind() == protoreflect.StringKind:
			if s, bad := fix(v.String()); bad {
				m.Set(fd, protoreflect.ValueOfString(s))
			}
		case fd.Message() != nil:
			scrubUTF8(v.Message())
		}
		return true
	})
}

// CloseReason says why a session ended.
type CloseReason int

// Close reasons; the transport maps them to a status.
const (
	ReasonNone CloseReason = iota
	ReasonSlowConsumer
	ReasonDisconnectedByAdmin
	ReasonShutdown
	ReasonReplaced
	// ReasonEnded: the transport's own rule ended the session (its call
	// was cancelled, its token expired); the transport knows the status.
	ReasonEnded
)

func (r CloseReason) String() string {
	switch r {
	case ReasonSlowConsumer:
		return "slow consumer: outbound queue full"
	case ReasonDisconnectedByAdmin:
		return "disconnected by an administrator"
	case ReasonShutdown:
		return "server shutting down"
	}
	return "closed"
}

// Session is one connected stream of a user, whatever its transport. The
// hub and the session's own reader put frames on its bounded queue; exactly
// one writer (the transport's) takes them when Ready. Safe for concurrent
// use.
//
// The queue is a slice, not a channel of its bound: an idle session holds
// a few words instead of a 2 KiB buffer, and the writer takes everything
// queued at once, to write as one burst.
type Session struct {
	ID       string
	Username string

	mu    sync.Mutex
	queue []*Frame
	// While a restore or Resume replays history (holds > 0), frames the
	// hub fans out wait in held, behind the replay: a live message must not
	// reach the client before the older ones the replay brings.
	held      []*Frame
	holds     int
	limit     int
	ready     chan struct{} // holds a token while the queue is not empty; made by Ready
	urgent    chan struct{} // gets a token when the queue reaches half its bound; made by Urgent
	done      chan struct{}
	closeOnce sync.Once
	reason    atomic.Int32
	detail    atomic.Pointer[string] // set by CloseWithDetail
	drain     atomic.Bool
	onClose   atomic.Pointer[func()]
	onReady   atomic.Pointer[func()]
	slow      *atomic.Int64 // the hub's slow-consumer count; nil in tests
}

func newSession(id, username string, queue int) *Session {
	return &Session{ID: id, Username: username, limit: queue, done: make(chan struct{})}
}

// Ready receives when frames are queued, and when the session closes: a
// writer needs to wait on this channel only, then look at Done. It is
// made on first use (a writer started by OnReady never waits on it, and
// an idle session should not keep it).
func (s *Session) Ready() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ready == nil {
		s.ready = make(chan struct{}, 1)
		if len(s.queue) > 0 || s.closedLocked() {
			s.ready <- struct{}{}
		}
	}
	return s.ready
}

// Urgent receives when the queue has filled to half its bound: a writer
// holding frames back to write them together must write now, or the
// session would be closed as a slow consumer for the wait. It is made on
// first use.
func (s *Session) Urgent() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.urgent == nil {
		s.urgent = make(chan struct{}, 1)
		if len(s.queue) >= s.half() {
			s.urgent <- struct{}{}
		}
	}
	return s.urgent
}

func (s *Session) half() int { return max(s.limit/2, 1) }

func (s *Session) closedLocked() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// signal puts a token in c unless it holds one; c may be nil.
func signal(c chan struct{}) {
	if c == nil {
		return
	}
	select {
	case c <- struct{}{}:
	default:
	}
}

// Take returns every queued frame, oldest first, and empties the queue.
// buf, the slice Take returned last time, is reused for the queue.
func (s *Session) Take(buf []*Frame) []*Frame {
	clear(buf)
	if cap(buf) > 64 {
		buf = nil // a burst's buffer is not kept by an idle session
	}
	s.mu.Lock()
	q := s.queue
	s.queue = buf[:0]
	s.mu.Unlock()
	return q
}

// Queued is how many frames wait for the writer.
func (s *Session) Queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// Done is closed when the session must end.
func (s *Session) Done() <-chan struct{} { return s.done }

// CloseDetail is the text the session was closed with, or reason's own
// words when none was given.
func (s *Session) CloseDetail() string {
	if d := s.detail.Load(); d != nil {
		return *d
	}
	return s.Reason().String()
}

// Reason says why Done was closed.
func (s *Session) Reason() CloseReason { return CloseReason(s.reason.Load()) }

// DrainOnClose reports whether the writer should still send what is queued
// after Done (true for a notice-then-close, false for a slow consumer).
func (s *Session) DrainOnClose() bool { return s.drain.Load() }

// Send queues f without blocking. A full queue means the client cannot keep
// up: the session is closed as a slow consumer rather than stall the sender.
func (s *Session) Send(f *Frame) bool { return s.send(f, false) }

// sendNow is Send for the replay itself, ahead of what is held.
func (s *Session) sendNow(f *Frame) bool { return s.send(f, true) }

func (s *Session) send(f *Frame, now bool) bool {
	select {
	case <-s.done:
		return false
	default:
	}
	s.mu.Lock()
	if len(s.queue)+len(s.held) >= s.limit {
		s.mu.Unlock()
		s.Close(ReasonSlowConsumer, false)
		return false
	}
	if s.holds > 0 && !now {
		s.held = append(s.held, f)
		s.mu.Unlock()
		return true
	}
	s.queue = append(s.queue, f)
	first, half := len(s.queue) == 1, len(s.queue) == s.half()
	ready, urgent := s.ready, s.urgent
	s.mu.Unlock()
	if half {
		signal(urgent)
	}
	if first {
		signal(ready) // a no-op when the writer has not taken the last token yet
		if f := s.onReady.Load(); f != nil {
			(*f)()
		}
	}
	return true
}

// SendEvent encodes and queues one event for this session only.
func (s *Session) SendEvent(ev *chatv1.ServerEvent) bool { return s.Send(Encode(ev)) }

// sendEventNow is SendEvent for a replay's own events (see hold).
func (s *Session) sendEventNow(ev *chatv1.ServerEvent) bool { return s.sendNow(Encode(ev)) }

// hold makes fan-out frames wait until release, while the caller replays
// history with sendNow; holds nest.
func (s *Session) hold() {
	s.mu.Lock()
	s.holds++
	s.mu.Unlock()
}

// release queues what was held, after the replay.
func (s *Session) release() {
	s.mu.Lock()
	s.holds--
	if s.holds > 0 || len(s.held) == 0 {
		s.mu.Unlock()
		return
	}
	first := len(s.queue) == 0
	s.queue = append(s.queue, s.held...)
	s.held = nil
	half := len(s.queue) >= s.half()
	ready, urgent := s.ready, s.urgent
	s.mu.Unlock()
	if half {
		signal(urgent)
	}
	if first {
		signal(ready)
		if f := s.onReady.Load(); f != nil {
			(*f)()
		}
	}
}

// Close ends the session once; with drain the writer flushes what is queued
// (such as a final notice) before it stops.
func (s *Session) Close(reason CloseReason, drain bool) {
	s.CloseWithDetail(reason, "", drain)
}

// CloseWithDetail is Close with a text saying more than reason does (an
// admin's words, say); CloseDetail returns it. Only the first close counts.
func (s *Session) CloseWithDetail(reason CloseReason, detail string, drain bool) {
	s.closeOnce.Do(func() {
		if detail != "" {
			s.detail.Store(&detail)
		}
		if reason == ReasonSlowConsumer && s.slow != nil {
			s.slow.Add(1)
		}
		s.reason.Store(int32(reason))
		s.drain.Store(drain)
		s.mu.Lock()
		close(s.done)
		ready := s.ready
		s.mu.Unlock()
		signal(ready) // a writer waiting for frames wakes to see Done
		if f := s.onReady.Load(); f != nil {
			(*f)()
		}
		if f := s.onClose.Swap(nil); f != nil {
			go (*f)()
		}
	})
}

// OnReady arranges for f to be called whenever the queue stops being
// empty and when the session closes, on the goroutine that queued or
// closed (often the hub's, under its lock): f must not block. It lets a
// transport start a writer only when there is something to write, so that
// an idle session keeps no writer goroutine. Calls may be spurious; f
// should look at the queue (Queued, Take) and Done.
func (s *Session) OnReady(f func()) { s.onReady.Store(&f) }

// OnClose arranges for f to run in its own goroutine when the session
// closes (at once if it has). It lets a transport whose writer may be
// blocked on a client that stopped reading be torn down by whoever closes
// the session (often the hub, under its lock, which must not block) without
// a goroutine per session waiting for that. Only the last f registered
// runs.
func (s *Session) OnClose(f func()) {
	s.onClose.Store(&f)
	select {
	case <-s.done:
		if s.onClose.CompareAndSwap(&f, nil) {
			go f()
		}
	default:
	}
}
