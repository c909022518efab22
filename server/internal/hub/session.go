package hub

import (
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

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
		// Only invalid UTF-8 in a string field can fail here, and every
		// string the hub sends was validated on the way in or generated.
		panic("hub: encode ServerEvent: " + err.Error())
	}
	return &Frame{Data: b}
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
// one writer (the transport's) drains Frames. Safe for concurrent use.
type Session struct {
	ID       string
	Username string

	out       chan *Frame
	done      chan struct{}
	closeOnce sync.Once
	reason    atomic.Int32
	drain     atomic.Bool
}

func newSession(id, username string, queue int) *Session {
	return &Session{ID: id, Username: username, out: make(chan *Frame, queue), done: make(chan struct{})}
}

// Frames is the queue the writer drains.
func (s *Session) Frames() <-chan *Frame { return s.out }

// Done is closed when the session must end.
func (s *Session) Done() <-chan struct{} { return s.done }

// Reason says why Done was closed.
func (s *Session) Reason() CloseReason { return CloseReason(s.reason.Load()) }

// DrainOnClose reports whether the writer should still send what is queued
// after Done (true for a notice-then-close, false for a slow consumer).
func (s *Session) DrainOnClose() bool { return s.drain.Load() }

// Send queues f without blocking. A full queue means the client cannot keep
// up: the session is closed as a slow consumer rather than stall the sender.
func (s *Session) Send(f *Frame) bool {
	select {
	case <-s.done:
		return false
	default:
	}
	select {
	case s.out <- f:
		return true
	default:
		s.Close(ReasonSlowConsumer, false)
		return false
	}
}

// SendEvent encodes and queues one event for this session only.
func (s *Session) SendEvent(ev *chatv1.ServerEvent) bool { return s.Send(Encode(ev)) }

// Close ends the session once; with drain the writer flushes what is queued
// (such as a final notice) before it stops.
func (s *Session) Close(reason CloseReason, drain bool) {
	s.closeOnce.Do(func() {
		s.reason.Store(int32(reason))
		s.drain.Store(drain)
		close(s.done)
	})
}
