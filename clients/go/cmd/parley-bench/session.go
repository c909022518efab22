package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// session is one benchmark client: a wire plus its reader goroutine.
//
// Commands (join, leave, publish) are serialised by sendMu, so the
// publisher and the setup code may share a session. The reader is the
// only caller of wire.recv; it hands messages to the tracker, if any.
type session struct {
	w      wire
	user   string
	tr     *tracker // nil when deliveries are not tracked
	sendMu sync.Mutex

	ready   chan struct{} // closed on evReady
	joined  chan string   // rooms joined or left, as the server confirmed them
	done    chan struct{} // closed when the reader ends
	err     error         // why the reader ended; read after done
	dropped bool          // the server ended it before close; read after done
	closed  atomic.Bool   // close was called: the end is expected

	acks, errs, other atomic.Int64
	lastErr           atomic.Pointer[string]
}

// openSession dials and waits for the server's first event (Welcome, or
// the Socket.IO connect). It returns the connect latency.
func openSession(ctx context.Context, transport string, ep endpoints, u user, tr *tracker) (*session, time.Duration, error) {
	start := time.Now()
	w, err := dialWire(ctx, transport, ep, u.token)
	if err != nil {
		return nil, 0, err
	}
	s := &session{w: w, user: u.name, tr: tr, ready: make(chan struct{}), joined: make(chan string, 4), done: make(chan struct{})}
	go s.read()
	select {
	case <-s.ready:
		return s, time.Since(start), nil
	case <-s.done:
		s.w.close() // the server refused: the connection (a grpc ClientConn) is still ours
		return nil, 0, fmt.Errorf("connect %s: %w", u.name, s.err)
	case <-ctx.Done():
		s.close()
		return nil, 0, ctx.Err()
	}
}

func (s *session) read() {
	defer close(s.done)
	var readyOnce sync.Once
	ctx := context.Background() // close() ends a blocked recv
	for {
		ev, err := s.w.recv(ctx)
		if err != nil {
			s.err, s.dropped = err, !s.closed.Load()
			return
		}
		switch ev.kind {
		case evReady:
			readyOnce.Do(func() { close(s.ready) })
		case evJoined, evLeft:
			select {
			case s.joined <- string(ev.room):
			default: // nobody is waiting for it
			}
		case evMessage:
			if s.tr != nil {
				s.tr.observe(ev.text, time.Now().UnixNano())
			}
		case evAck:
			s.acks.Add(1)
		case evError:
			m := string(ev.text)
			s.lastErr.Store(&m) // before the count: a reader seeing errs > 0 finds it
			s.errs.Add(1)
		default:
			s.other.Add(1)
		}
	}
}

// do runs one command under the send lock.
func (s *session) do(f func() error) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return f()
}

// joinRoom joins (or with leave, leaves) room and waits for the server to
// confirm it.
func (s *session) joinRoom(ctx context.Context, room string, leave bool) error {
	err := s.do(func() error {
		if leave {
			return s.w.leave(ctx, room)
		}
		return s.w.join(ctx, room)
	})
	if err != nil {
		return err
	}
	for {
		select {
		case r := <-s.joined:
			if r == room {
				return nil
			}
		case <-s.done:
			return fmt.Errorf("%s: connection ended: %w", s.user, s.err)
		case <-ctx.Done():
			if n := s.errs.Load(); n > 0 {
				return fmt.Errorf("%s: no confirmation for room %s; last error: %s", s.user, room, *s.lastErr.Load())
			}
			return ctx.Err()
		}
	}
}

func (s *session) publish(ctx context.Context, room, text string) error {
	return s.do(func() error { return s.w.publish(ctx, room, text) })
}

// alive reports whether the connection is still up.
func (s *session) alive() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// close ends the connection and waits for the reader.
func (s *session) close() {
	s.closed.Store(true)
	s.w.close()
	<-s.done
}

// errString is err's text, or "" for nil.
func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// errDeadline is the problem of a run cut short by --deadline.
var errDeadline = errors.New("hard deadline reached")
