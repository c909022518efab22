package parley

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// ReconnectOption configures a ResilientSession.
type ReconnectOption func(*reconnectConfig)

type reconnectConfig struct {
	min, max time.Duration
	cursors  []*chatv1.ConversationCursor
	hook     func(err error, wait time.Duration)
	noRepair bool
}

// WithBackoff sets the reconnect delays: the first retry waits about min,
// each failed attempt doubles it up to max, and each delay is drawn at
// random from its upper half. Default 500ms and 30s.
func WithBackoff(min, max time.Duration) ReconnectOption {
	return func(c *reconnectConfig) { c.min, c.max = min, max }
}

// WithResumeFrom starts from cursors saved earlier (see
// [ResilientSession.Cursors]): the first session resumes from them as a
// reconnect would.
func WithResumeFrom(cursors []*chatv1.ConversationCursor) ReconnectOption {
	return func(c *reconnectConfig) { c.cursors = cursors }
}

// WithReconnectHook calls fn each time the session is lost (or a reconnect
// attempt fails) and another attempt will be made after wait. fn runs on
// the session's event goroutine and must return quickly.
func WithReconnectHook(fn func(err error, wait time.Duration)) ReconnectOption {
	return func(c *reconnectConfig) { c.hook = fn }
}

// WithoutGapRepair turns off the filling and repair of gaps in the live
// stream (both below): a session then delivers what the server sends, in
// the order it sends it, dropping only what it already delivered. It is
// for tools that measure the server's own ordering (parley-check); an
// application wants the repair.
func WithoutGapRepair() ReconnectOption {
	return func(c *reconnectConfig) { c.noRepair = true }
}

// ResilientSession is a live session that survives lost connections and
// server restarts. When its stream ends it reconnects with exponential
// backoff and jitter (or after the server's ServerNotice.reconnect_after),
// then resumes every conversation from the last sequence it delivered, and
// drops messages it has already delivered, so Events carries each message
// once.
//
// It stops, closing Events, when ctx ends, on Close, when a reconnect is
// refused as Unauthenticated or PermissionDenied, or when the server ends
// the session with a notice that carries no reconnect_after (an
// administrator's disconnect); Err then says why.
//
// Events delivers what each underlying [Session] delivers, with the same
// slow-consumer caveat: a Welcome opens each (re)connection. After a
// reconnect, the server's connect-time copy of a conversation the session
// already tracks is dropped in favour of the resumed replay.
//
// Each conversation it has a cursor for comes in seq order, each message
// once: a live message whose seq jumps past the cursor (seq > last+1, and
// above any seq already delivered beyond an earlier gap) is held while the
// missing ones are read from history ([Client.History], at most 1,000 of
// them), which are delivered first as one RecentMessages; then the live
// message. A message at or below the cursor is a duplicate and dropped,
// except where the cursor is a guess: below the first message seen of a
// conversation it had no cursor for, and up to a room's latest seq read
// when it was joined; there only messages already delivered (by id) are
// dropped. When history cannot be read, or lacks some of the missing
// messages, the live message is delivered anyway and the rest follow
// later, out of order, by a Resume (once the gap has lasted 2s): so an
// application that must never show a message out of order still sorts by
// Message.seq.
//
// Commands wait for a live session (bounded by their ctx). Send, SendPrivate
// and SendFile are retried on the next session when the stream is lost
// before their answer, with the same client_msg_id, so they post once.
// Safe for concurrent use.
type ResilientSession struct {
	c      *Client
	cfg    reconnectConfig
	log    *slog.Logger
	parent context.Context
	ctx    context.Context
	cancel context.CancelFunc
	events chan *chatv1.ServerEvent
	done   chan struct{}
	err    error // written before done is closed

	mu      sync.Mutex
	cur     *Session
	changed chan struct{} // closed and replaced when cur changes
	track   *tracker
}

// ConnectResilient opens a ResilientSession. The first connection is made
// before it returns, and its failure is returned as is; later ones are
// retried. ctx bounds the session's whole life.
func (c *Client) ConnectResilient(ctx context.Context, opts ...ReconnectOption) (*ResilientSession, error) {
	cfg := reconnectConfig{min: 500 * time.Millisecond, max: 30 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.min <= 0 {
		cfg.min = 500 * time.Millisecond
	}
	cfg.max = max(cfg.max, cfg.min)
	rctx, cancel := context.WithCancel(ctx)
	s, err := c.Connect(rctx)
	if err != nil {
		cancel()
		return nil, err
	}
	r := &ResilientSession{
		c: c, cfg: cfg, log: c.log, parent: ctx, ctx: rctx, cancel: cancel,
		events: make(chan *chatv1.ServerEvent, c.eventBuffer), done: make(chan struct{}),
		changed: make(chan struct{}), track: newTracker(cfg.cursors),
	}
	r.setCurrent(s)
	go r.run(s)
	return r, nil
}

// Events delivers the events of every underlying session; see
// [ResilientSession]. It is closed when the ResilientSession stops.
func (r *ResilientSession) Events() <-chan *chatv1.ServerEvent { return r.events }

// Done is closed when the ResilientSession has stopped.
func (r *ResilientSession) Done() <-chan struct{} { return r.done }

// Err returns nil while running and after Close; otherwise why it stopped:
// the refusal of a reconnect, the status of a session the server said not
// to reconnect, or ctx's error.
func (r *ResilientSession) Err() error {
	select {
	case <-r.done:
		return r.err
	default:
		return nil
	}
}

// Close stops reconnecting, ends the current session and waits for the
// event goroutine. Safe to call more than once.
func (r *ResilientSession) Close() error {
	r.cancel()
	<-r.done
	return nil
}

// Current returns the live session, or nil while reconnecting.
func (r *ResilientSession) Current() *Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

// Cursors returns the last sequence delivered in each conversation seen so
// far, in a stable order; save them to resume later with [WithResumeFrom].
func (r *ResilientSession) Cursors() []*chatv1.ConversationCursor {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.track.cursors(nil)
}

func (r *ResilientSession) setCurrent(s *Session) {
	r.mu.Lock()
	r.cur = s
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// run owns the session loop: it forwards events, and reconnects.
func (r *ResilientSession) run(s *Session) {
	// Deferred calls run last first: done closes before events, so that a
	// caller that has drained Events finds Err set.
	defer close(r.events)
	defer close(r.done)
	defer r.cancel()
	attempt := 0
	for {
		r.pump(s)
		<-s.Done()
		err := s.Err()
		hint, final := reconnectRule(s.Disconnect(), err)
		s.Close() // wait for its goroutines
		r.setCurrent(nil)
		if r.ctx.Err() != nil {
			r.err = r.parent.Err() // nil after Close
			return
		}
		if final {
			if err == nil {
				err = errors.New("parley: the server ended the session and asked not to reconnect")
			}
			r.err = err
			r.log.Info("parley: session ended; not reconnecting", "err", err)
			return
		}
		for {
			wait := r.delay(attempt)
			if hint > 0 {
				wait, hint = hint+rand.N(hint/4+1), 0
			}
			attempt++
			r.log.Info("parley: session lost; reconnecting", "err", err, "in", wait)
			if r.cfg.hook != nil {
				r.cfg.hook(err, wait)
			}
			select {
			case <-r.ctx.Done():
				r.err = r.parent.Err()
				return
			case <-time.After(wait):
			}
			next, cerr := r.c.Connect(r.ctx)
			if cerr == nil {
				s, attempt = next, 0
				break
			}
			if r.ctx.Err() != nil {
				r.err = r.parent.Err()
				return
			}
			if permanent(cerr) {
				r.err = cerr
				r.log.Info("parley: reconnect refused; giving up", "err", cerr)
				return
			}
			err = cerr
		}
		r.log.Info("parley: reconnected", "session", s.Welcome().GetSessionId())
		r.setCurrent(s)
	}
}

// reconnectRule is the one rule of reconnecting (chat.proto's Disconnect
// table): the server's Disconnect event says whether and after how long;
// without one (the connection dropped, or an older server) the stream's
// status decides, as the table maps it. It returns the least wait before
// reconnecting and final when the session must not be reconnected.
func reconnectRule(d *chatv1.Disconnect, err error) (wait time.Duration, final bool) {
	if d != nil {
		return d.GetRetryAfter().AsDuration(), !d.GetReconnect()
	}
	switch status.Code(err) {
	case codes.PermissionDenied, codes.Aborted, codes.InvalidArgument:
		return 0, true // 4403, 4409, 4400: retrying cannot fix it
	}
	return 0, false
}

// permanent reports a refusal that retrying cannot fix.
func permanent(err error) bool {
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied:
		return true
	}
	return false
}

// delay is the backoff before attempt n (0-based): min·2ⁿ capped at max,
// drawn from its upper half.
func (r *ResilientSession) delay(n int) time.Duration {
	d := r.cfg.max
	if n < 30 {
		d = min(r.cfg.min<<n, r.cfg.max)
	}
	return d/2 + rand.N(d/2+1)
}

// pump forwards one session's events until it ends. It reports the
// server's reconnect hint, and final when the server said not to return.
//
// The server opens every session with a restore (recent messages of
// general, missed direct messages) ending in StateRestored. When this
// ResilientSession already tracks conversations, their part of that
// restore is dropped and, after it, one Resume asks for exactly what was
// missed since the last delivered sequence. A restore or Resume the
// server's cap cut short (complete=false) is followed by another Resume
// from the new cursors; the server replays each conversation from the
// oldest missed message, so every such round makes progress.
func (r *ResilientSession) pump(s *Session) {
	me := s.Welcome().GetUser().GetUsername()
	r.mu.Lock()
	tracked := r.track.keys()
	r.mu.Unlock()
	restoring := true // until the connect-time StateRestored
	resumes := 0
	tick := time.NewTicker(gapCheckEvery)
	defer tick.Stop()
	gaps := map[string]*gapState{}
	events := s.Events()
	// After a reconnect, live messages wait behind the Resume's replay
	// (until its StateRestored): they are newer than what it brings back.
	var held []*chatv1.ServerEvent
	holding := false
	var holdUntil time.Time
	deliver := func(ev *chatv1.ServerEvent) bool {
		if fill := r.fillGap(me, ev.GetMessage()); fill != nil {
			select {
			case r.events <- fill:
			case <-r.ctx.Done():
				return false
			}
		}
		r.mu.Lock()
		fresh := r.track.see(me, ev.GetMessage())
		r.mu.Unlock()
		if !fresh {
			return true
		}
		select {
		case r.events <- ev:
			return true
		case <-r.ctx.Done():
			return false
		}
	}
	release := func() bool {
		holding = false
		for _, h := range held {
			if !deliver(h) {
				return false
			}
		}
		held = nil
		return true
	}
	for {
		var ev *chatv1.ServerEvent
		select {
		case e, ok := <-events:
			if !ok {
				return
			}
			ev = e
		case now := <-tick.C:
			if holding && now.After(holdUntil) && !release() {
				return // the Resume went unanswered: let the held ones go
			}
			if r.cfg.noRepair {
				continue
			}
			r.mu.Lock()
			cursors := r.track.gapCursors(gaps, now)
			r.mu.Unlock()
			if len(cursors) > 0 {
				if err := s.Resume(r.ctx, cursors); err != nil {
					r.log.Debug("parley: gap resume not sent", "err", err)
				}
			}
			continue
		}
		switch e := ev.GetEvent().(type) {
		case *chatv1.ServerEvent_Message:
			if holding && len(held) < maxHeld {
				held = append(held, ev)
				continue
			}
			if !deliver(ev) {
				return
			}
			continue
		case *chatv1.ServerEvent_RecentMessages:
			if ev = r.filterRecent(me, ev, restoring, tracked); ev == nil {
				continue
			}
		case *chatv1.ServerEvent_StateRestored:
			if restoring {
				restoring = false
				for _, room := range e.StateRestored.GetRooms() {
					r.baseline(r.ctx, room)
				}
				if len(tracked) > 0 {
					if r.resume(s, true, e.StateRestored.GetRooms()) {
						holding, holdUntil = true, time.Now().Add(holdFor)
					}
				} else if !e.StateRestored.GetComplete() {
					// The server cut the missed direct messages short:
					// resume the conversations they came from, from the
					// last one delivered.
					resumes++
					r.resume(s, false, nil)
				}
			} else if !e.StateRestored.GetComplete() && resumes < 100 {
				resumes++
				r.resume(s, false, nil)
			} else if holding {
				// The replay is in: forward its end, then what waited.
				select {
				case r.events <- ev:
				case <-r.ctx.Done():
					return
				}
				if !release() {
					return
				}
				continue
			}
		}
		select {
		case r.events <- ev:
		case <-r.ctx.Done():
			return
		}
	}
}

// A live stream can skip a message: one whose commit the server could not
// confirm (its database connection failed mid-commit) is answered with an
// error and not delivered, yet it may be stored, and the sender's retry is
// then acknowledged as a duplicate. A gap in a conversation's sequence that
// outlasts gapRepairAfter is asked for with a Resume from the last
// sequence before it, up to gapRepairTries times per gap.
const (
	gapCheckEvery  = time.Second
	gapRepairAfter = 2 * time.Second // the server holds out-of-order deliveries for 1s
	gapRepairTries = 3
)

// A live message that jumps past a conversation's cursor is held while
// the missing messages are read from history: at most maxGapFill of them,
// within gapFillTimeout (the session's events wait meanwhile). What that
// does not bring is left to the gap repair above.
const (
	maxGapFill     = 1000 // the server's default replay cap
	gapFillTimeout = 5 * time.Second
)

// fillGap returns, when m jumps past the cursor of a conversation already
// tracked, the missing messages not yet delivered, read from history, as
// one RecentMessages to deliver before m (and marks them delivered); nil
// when there is no jump or nothing new was found. Called from pump only.
func (r *ResilientSession) fillGap(me string, m *chatv1.Message) *chatv1.ServerEvent {
	if r.cfg.noRepair {
		return nil
	}
	key, seq := convKey(me, m), m.GetSeq()
	r.mu.Lock()
	c := r.track.convs[key]
	if c == nil || seq <= c.top()+1 {
		r.mu.Unlock()
		return nil
	}
	conv, after := c.conv, c.last
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.ctx, gapFillTimeout)
	defer cancel()
	var missing []*chatv1.Message
	for len(missing) < maxGapFill {
		page, more, err := r.c.History(ctx, conv, HistoryOptions{Forward: true, AfterSeq: after, Limit: 100})
		if err != nil {
			r.log.Debug("parley: gap not filled from history", "conversation", key, "after", after, "before", seq, "err", err)
			break
		}
		for _, pm := range page {
			if pm.GetSeq() < seq {
				missing = append(missing, pm)
			}
		}
		if !more || len(page) == 0 || page[len(page)-1].GetSeq() >= seq-1 {
			break
		}
		after = page[len(page)-1].GetSeq()
	}
	r.mu.Lock()
	kept := missing[:0]
	for _, pm := range missing {
		if r.track.see(me, pm) {
			kept = append(kept, pm)
		}
	}
	r.mu.Unlock()
	if len(kept) == 0 {
		return nil
	}
	return &chatv1.ServerEvent{Event: &chatv1.ServerEvent_RecentMessages{RecentMessages: &chatv1.RecentMessages{
		Conversation: conv, Messages: kept,
	}}}
}

type gapState struct {
	last  int64 // the cursor when the gap was seen
	since time.Time
	tries int
}

// gapCursors returns cursors for the conversations whose gap has lasted
// gapRepairAfter since it was seen (or last asked for); gaps is the
// caller's record, updated here.
func (t *tracker) gapCursors(gaps map[string]*gapState, now time.Time) []*chatv1.ConversationCursor {
	var out []*chatv1.ConversationCursor
	for key, g := range gaps {
		if c := t.convs[key]; c == nil || len(c.ahead) == 0 || c.last != g.last {
			delete(gaps, key) // filled, or moved on to another gap
		}
	}
	keys := make([]string, 0, len(t.convs))
	for key, c := range t.convs {
		if len(c.ahead) > 0 {
			keys = append(keys, key)
		}
	}
	sort.Strings(keys)
	for _, key := range keys {
		c := t.convs[key]
		g := gaps[key]
		switch {
		case g == nil:
			gaps[key] = &gapState{last: c.last, since: now}
		case g.tries < gapRepairTries && now.Sub(g.since) >= gapRepairAfter:
			g.tries++
			g.since = now
			out = append(out, &chatv1.ConversationCursor{Conversation: c.conv, LastSeq: c.last})
		}
	}
	return out
}

// filterRecent drops messages already delivered and, during the
// connect-time restore, whole conversations a Resume will bring back.
func (r *ResilientSession) filterRecent(me string, ev *chatv1.ServerEvent, restoring bool, tracked map[string]bool) *chatv1.ServerEvent {
	rm := ev.GetRecentMessages()
	msgs := rm.GetMessages()
	if restoring && len(msgs) > 0 && tracked[convKey(me, msgs[0])] {
		return nil
	}
	r.mu.Lock()
	kept := make([]*chatv1.Message, 0, len(msgs))
	for _, m := range msgs {
		if r.track.see(me, m) {
			kept = append(kept, m)
		}
	}
	r.mu.Unlock()
	if len(kept) == len(msgs) {
		return ev
	}
	if len(kept) == 0 {
		return nil
	}
	return &chatv1.ServerEvent{Event: &chatv1.ServerEvent_RecentMessages{RecentMessages: &chatv1.RecentMessages{
		Conversation: rm.GetConversation(), Messages: kept,
	}}}
}

// resume asks s for everything after the tracked cursors. With filter,
// members are the user's stored rooms (from the connect-time
// StateRestored): rooms outside them and general were left and are
// forgotten, since the server refuses a Resume that names them.
// maxHeld and holdFor bound the live messages held behind a reconnect's
// replay, and for how long.
const (
	maxHeld = 10000
	holdFor = 5 * time.Second
)

// resume sends one Resume from the tracked cursors (only general and
// members' rooms, with filter); it reports whether one was sent.
func (r *ResilientSession) resume(s *Session, filter bool, members []string) bool {
	r.mu.Lock()
	var keep map[string]bool
	if filter {
		keep = map[string]bool{"#general": true}
		for _, room := range members {
			keep["#"+room] = true
		}
	}
	cursors := r.track.cursors(keep)
	r.mu.Unlock()
	if len(cursors) == 0 {
		return false
	}
	if err := s.Resume(r.ctx, cursors); err != nil {
		r.log.Debug("parley: resume not sent", "err", err)
		return false
	}
	return true
}

// session waits for a live session.
func (r *ResilientSession) session(ctx context.Context) (*Session, error) {
	for {
		r.mu.Lock()
		s, changed := r.cur, r.changed
		r.mu.Unlock()
		if s != nil {
			select {
			case <-s.Done():
			default:
				return s, nil
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-r.done:
			if r.err != nil {
				return nil, errors.Join(ErrClosed, r.err)
			}
			return nil, ErrClosed
		}
	}
}

// retry runs f on the live session, again on the next one when the
// session ends before f is answered.
func retry[T any](ctx context.Context, r *ResilientSession, f func(*Session) (T, error)) (T, error) {
	for {
		s, err := r.session(ctx)
		if err != nil {
			var zero T
			return zero, err
		}
		v, err := f(s)
		if errors.Is(err, ErrClosed) {
			continue
		}
		return v, err
	}
}

// Send is [Session.Send] on the live session, retried with the same
// client_msg_id if the session is lost before the Ack.
func (r *ResilientSession) Send(ctx context.Context, room, text string) (*chatv1.Ack, error) {
	id := NewClientMsgID()
	return retry(ctx, r, func(s *Session) (*chatv1.Ack, error) { return s.SendWithID(ctx, room, text, id) })
}

// SendPrivate is [Session.SendPrivate], retried like Send.
func (r *ResilientSession) SendPrivate(ctx context.Context, to, text string) (*chatv1.Ack, error) {
	id := NewClientMsgID()
	return retry(ctx, r, func(s *Session) (*chatv1.Ack, error) { return s.sendPrivate(ctx, to, text, id) })
}

// SendFile is [Session.SendFile], retried like Send.
func (r *ResilientSession) SendFile(ctx context.Context, conv *chatv1.Conversation, fileID string) (*chatv1.Ack, error) {
	id := NewClientMsgID()
	return retry(ctx, r, func(s *Session) (*chatv1.Ack, error) { return s.sendFile(ctx, conv, fileID, id) })
}

// Join is [Session.Join] on the live session. The room is resumed after a
// reconnect even if no message arrived in it before.
func (r *ResilientSession) Join(ctx context.Context, room string) (*chatv1.RoomJoined, error) {
	j, err := retry(ctx, r, func(s *Session) (*chatv1.RoomJoined, error) { return s.Join(ctx, room) })
	if err == nil {
		r.baseline(ctx, room)
	}
	return j, err
}

// baseline starts tracking a room the user is in but has seen no message
// of, from its latest sequence, so messages missed there while
// disconnected are resumed too. Messages seen meanwhile take precedence.
func (r *ResilientSession) baseline(ctx context.Context, room string) {
	key := "#" + room
	r.mu.Lock()
	_, known := r.track.convs[key]
	r.mu.Unlock()
	if known {
		return
	}
	msgs, _, err := r.c.History(ctx, Room(room), HistoryOptions{Limit: 1})
	if err != nil {
		r.log.Debug("parley: no baseline for room", "room", room, "err", err)
		return
	}
	var last int64
	if len(msgs) > 0 {
		last = msgs[len(msgs)-1].GetSeq()
	}
	r.mu.Lock()
	if _, known := r.track.convs[key]; !known {
		r.track.convs[key] = &convState{conv: Room(room), last: last, floor: last}
	}
	r.mu.Unlock()
}

// Leave is [Session.Leave] on the live session; the room is no longer
// resumed.
func (r *ResilientSession) Leave(ctx context.Context, room string) error {
	_, err := retry(ctx, r, func(s *Session) (struct{}, error) { return struct{}{}, s.Leave(ctx, room) })
	if err == nil {
		r.mu.Lock()
		delete(r.track.convs, "#"+room)
		r.mu.Unlock()
	}
	return err
}

// Typing is [Session.Typing] on the live session; it is not retried.
func (r *ResilientSession) Typing(ctx context.Context, conv *chatv1.Conversation, typing bool) error {
	s, err := r.session(ctx)
	if err != nil {
		return err
	}
	return s.Typing(ctx, conv, typing)
}

// ListRooms is [Session.ListRooms] on the live session.
func (r *ResilientSession) ListRooms(ctx context.Context) ([]*chatv1.RoomInfo, error) {
	return retry(ctx, r, func(s *Session) ([]*chatv1.RoomInfo, error) { return s.ListRooms(ctx) })
}

// Ping is [Session.Ping] on the live session.
func (r *ResilientSession) Ping(ctx context.Context) (*chatv1.Pong, error) {
	return retry(ctx, r, func(s *Session) (*chatv1.Pong, error) { return s.Ping(ctx) })
}

// tracker remembers, per conversation, the last sequence delivered with no
// gap before it, and the ids of recently delivered messages. Not safe for
// concurrent use.
type tracker struct {
	convs map[string]*convState // by convKey
	seen  map[string]struct{}   // ids of the last len(ring) messages
	ring  []string
	next  int
}

type convState struct {
	conv  *chatv1.Conversation // as a request names it (peer for direct)
	last  int64                // every seq ≤ last was delivered or predates tracking
	ahead map[int64]struct{}   // delivered seqs beyond a gap
	// floor: seqs ≤ floor are below a guess, not known delivered: the seq
	// before the first message seen, or a room's latest seq when it was
	// joined (a message sent around the join may still be on its way).
	// There only ids already seen are dropped; above it, every seq ≤ last.
	floor int64
}

// top is the highest seq delivered (or assumed) in the conversation.
func (c *convState) top() int64 {
	top := c.last
	for s := range c.ahead {
		top = max(top, s)
	}
	return top
}

// dedupeWindow is how many message ids are remembered: more than a restore
// (50) plus a full replay (1,000) can overlap.
const dedupeWindow = 4096

// maxAhead bounds the seqs kept beyond a gap; past it the gap is given up.
const maxAhead = 4096

func newTracker(seed []*chatv1.ConversationCursor) *tracker {
	t := &tracker{convs: map[string]*convState{}, seen: map[string]struct{}{}, ring: make([]string, dedupeWindow)}
	for _, c := range seed {
		key := cursorKey(c.GetConversation())
		if key != "" {
			t.convs[key] = &convState{conv: c.GetConversation(), last: c.GetLastSeq()}
		}
	}
	return t
}

// convKey names m's conversation from me's point of view: "#room", or
// "@peer" for a direct message (in events, a direct conversation names the
// recipient).
func convKey(me string, m *chatv1.Message) string {
	if room := m.GetConversation().GetRoom(); room != "" {
		return "#" + room
	}
	peer := m.GetConversation().GetUser()
	if peer == me {
		peer = m.GetSender()
	}
	return "@" + peer
}

func cursorKey(c *chatv1.Conversation) string {
	if room := c.GetRoom(); room != "" {
		return "#" + room
	}
	if u := c.GetUser(); u != "" {
		return "@" + u
	}
	return ""
}

// see records m and reports whether it is new: not delivered before by
// id, nor by seq (at or below the cursor, above its floor, or beyond a
// gap).
func (t *tracker) see(me string, m *chatv1.Message) bool {
	key := convKey(me, m)
	seq := m.GetSeq()
	c := t.convs[key]
	id := m.GetId()
	if _, dup := t.seen[id]; dup && id != "" {
		return false
	}
	if c != nil {
		if _, dup := c.ahead[seq]; dup {
			return false
		}
		if seq <= c.last && seq > c.floor {
			return false
		}
	}
	if id != "" {
		if old := t.ring[t.next]; old != "" {
			delete(t.seen, old)
		}
		t.ring[t.next] = id
		t.next = (t.next + 1) % len(t.ring)
		t.seen[id] = struct{}{}
	}
	if c == nil {
		conv := Room(m.GetConversation().GetRoom())
		if key[0] == '@' {
			conv = Direct(key[1:])
		}
		c = &convState{conv: conv, last: seq - 1, floor: seq - 1}
		t.convs[key] = c
	}
	switch {
	case seq == c.last+1:
		c.last = seq
		c.advance()
	case seq > c.last+1:
		if c.ahead == nil {
			c.ahead = map[int64]struct{}{}
		}
		c.ahead[seq] = struct{}{}
		if len(c.ahead) > maxAhead {
			lowest := seq
			for s := range c.ahead {
				lowest = min(lowest, s)
			}
			delete(c.ahead, lowest)
			c.last = lowest
			c.advance()
		}
	}
	return true
}

func (c *convState) advance() {
	for {
		if _, ok := c.ahead[c.last+1]; !ok {
			return
		}
		delete(c.ahead, c.last+1)
		c.last++
	}
}

func (t *tracker) keys() map[string]bool {
	out := make(map[string]bool, len(t.convs))
	for k := range t.convs {
		out[k] = true
	}
	return out
}

// cursors lists the tracked conversations, sorted by key. keep, when not
// nil, filters rooms (direct conversations are always kept); rooms it
// rejects are forgotten.
func (t *tracker) cursors(keep map[string]bool) []*chatv1.ConversationCursor {
	keys := make([]string, 0, len(t.convs))
	for k := range t.convs {
		if keep != nil && k[0] == '#' && !keep[k] {
			delete(t.convs, k)
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]*chatv1.ConversationCursor, len(keys))
	for i, k := range keys {
		c := t.convs[k]
		out[i] = &chatv1.ConversationCursor{Conversation: c.conv, LastSeq: c.last}
	}
	return out
}
