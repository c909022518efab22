package session

import (
	"time"

	"github.com/parleychat/parley/server/internal/hub"
)

// writer is a session's only writer: it sends the queue in bursts, one
// Transport.Write each.
type writer struct {
	t        Transport
	sess     *hub.Session
	batch    []*hub.Frame
	coalesce time.Duration
	last     time.Time   // when the last burst was written
	timer    *time.Timer // linger's, made on first use
	window   time.Time   // start of the window counting events (inWindow)
	inWindow int
	busy     bool     // the last window counted more than busyFrames
	obs      Observer // never nil once the writer runs
}

// newWriter returns t's writer. A gRPC stream lingers too: grpc's own
// writer gathers only the frames handed to it while it writes, so
// without it a busy stream costs a flush and two wakes per event.
func newWriter(t Transport, sess *hub.Session, coalesce time.Duration) *writer {
	return &writer{t: t, sess: sess, coalesce: coalesce, obs: nopObserver{}}
}

// step writes what is queued, as one burst. It reports done once the
// session has closed (after sending what was queued, when asked to
// drain), with the error of a write that failed while the session was
// open.
func (w *writer) step() (done bool, err error) {
	closed := isClosed(w.sess)
	if closed && !w.sess.DrainOnClose() {
		return true, nil
	}
	if !closed {
		w.linger()
	}
	if err := w.burst(); err != nil && !isClosed(w.sess) {
		return true, err
	}
	return closed, nil
}

func isClosed(sess *hub.Session) bool {
	select {
	case <-sess.Done():
		return true
	default:
		return false
	}
}

// linger holds a burst back until coalesce has passed since the last one
// on a busy connection (more than busyFrames events in the last
// busyWindow): it is then written a few events at a time, at most once per
// coalesce, instead of once per event (one syscall each on the server and
// on the client). A connection receiving a few events a second is written
// at once, so its latency is not traded away; a queue half full cuts the
// wait short.
func (w *writer) linger() {
	if w.coalesce <= 0 {
		return
	}
	now := time.Now()
	if now.Sub(w.window) >= busyWindow {
		w.busy = w.inWindow > busyFrames
		w.window, w.inWindow = now, 0
	}
	if wait := w.coalesce - now.Sub(w.last); w.busy && wait > 0 {
		if w.timer == nil {
			w.timer = time.NewTimer(wait)
		} else {
			w.timer.Reset(wait)
		}
		select {
		case <-w.timer.C:
		case <-w.sess.Urgent():
			w.timer.Stop()
		case <-w.sess.Done():
			w.timer.Stop()
		}
		now = time.Now()
	}
	w.last = now
}

// A connection that got more than busyFrames events in busyWindow (50 a
// second) lingers.
const (
	busyWindow = 100 * time.Millisecond
	busyFrames = 5
)

// burst writes everything queued as one Write: a burst of events costs
// one write(2) on a transport that can gather them.
func (w *writer) burst() error {
	w.batch = w.sess.Take(w.batch)
	w.inWindow += len(w.batch)
	if len(w.batch) == 0 {
		return nil
	}
	w.obs.QueueDrained(len(w.batch))
	return w.t.Write(w.batch...)
}
