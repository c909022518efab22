package session

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/apierr"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/internal/hub"
)

// Handler runs one command of a session and returns the event that
// answers it, if any (package chatsvc dispatches them). It must not panic
// past a command; the engine recovers anyway.
type Handler func(ctx context.Context, sess *hub.Session, ev *chatv1.ClientEvent) *chatv1.ServerEvent

// Config configures an Engine. Zero values mean the defaults.
type Config struct {
	Hub    *hub.Hub // required
	Handle Handler  // required
	Logger *slog.Logger
	// TokenWarning is how long before its token expires a session is told
	// to refresh in band; default 30s.
	TokenWarning time.Duration
	// Coalesce is the least time between two writes to a busy connection
	// (see writer.linger); default 20ms, negative for none.
	Coalesce time.Duration
	// Observer is told of each session's start and end and of each burst
	// its writer drains; nil means none.
	Observer Observer
}

// Observer watches sessions for the metrics. Its methods must be cheap and
// safe for concurrent use: QueueDrained runs on every write burst.
type Observer interface {
	SessionStarted(ctx context.Context)
	// SessionEnded: the session opened with ctx ended, for reason (one of
	// EndReasons).
	SessionEnded(ctx context.Context, reason string)
	// QueueDrained: the writer took frames from the queue at once.
	QueueDrained(frames int)
}

type nopObserver struct{}

func (nopObserver) SessionStarted(context.Context)       {}
func (nopObserver) SessionEnded(context.Context, string) {}
func (nopObserver) QueueDrained(int)                     {}

// EndReasons lists the reasons SessionEnded reports.
func EndReasons() []string {
	return []string{"client_closed", "cancelled", "slow_consumer", "admin", "shutdown", "token_expired", "rate_limited", "bad_request", "error"}
}

func endReason(sess *hub.Session, final error) string {
	switch sess.Reason() {
	case hub.ReasonSlowConsumer:
		return "slow_consumer"
	case hub.ReasonDisconnectedByAdmin:
		return "admin"
	case hub.ReasonShutdown:
		return "shutdown"
	}
	switch status.Code(final) {
	case codes.OK:
		return "client_closed"
	case codes.Canceled, codes.DeadlineExceeded:
		return "cancelled"
	case codes.Unauthenticated:
		return "token_expired"
	case codes.ResourceExhausted:
		return "rate_limited"
	case codes.InvalidArgument:
		return "bad_request"
	}
	return "error"
}

// Engine runs sessions. Safe for concurrent use.
type Engine struct {
	cfg Config
	hub *hub.Hub
	log *slog.Logger
}

// New returns an engine.
func New(cfg Config) (*Engine, error) {
	if cfg.Hub == nil || cfg.Handle == nil {
		return nil, errors.New("session: Hub and Handle are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.TokenWarning <= 0 {
		cfg.TokenWarning = 30 * time.Second
	}
	if cfg.Coalesce == 0 {
		cfg.Coalesce = 20 * time.Millisecond
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	return &Engine{cfg: cfg, hub: cfg.Hub, log: cfg.Logger}, nil
}

// Open registers a session for p with the hub (Welcome, snapshot and
// replay queued); Start must follow. It is split from Start so that a
// caller may open on a short-lived goroutine: the lookups grow a deep
// stack, which the session's long-lived reader would otherwise keep. The
// error is a gRPC status.
func (e *Engine) Open(ctx context.Context, p *auth.Principal) (*hub.Session, error) {
	sess, err := e.hub.Attach(ctx, hub.Identity{Username: p.Username, Role: p.Role.Proto(), LastSeenAt: p.LastSeenAt}, p.ExpiresAt())
	if err != nil {
		// apierr's one mapping at a call boundary; the cause of an
		// internal error is logged, never sent.
		return nil, apierr.StatusLog(e.log, "opening a chat session failed", err)
	}
	e.cfg.Observer.SessionStarted(ctx)
	return sess, nil
}

// Start serves an opened session on t and returns at once: the session
// reads t on a goroutine of its own and writes it from a goroutine that
// exists only while frames wait. Whoever ends the session first gives its
// Disconnect; a session the server ends writes d.Event() last, then the
// session is detached from the hub and t is closed with d. t is then no
// longer used.
func (e *Engine) Start(ctx context.Context, p *auth.Principal, sess *hub.Session, t Transport) {
	go e.begin(ctx, p, sess, t).read(ctx)
}

// Serve is Start with the caller's goroutine as the session's reader: it
// returns the session's final status once the session has ended, been
// detached and t closed. An attached transport runs it inside the policy
// gate, whose interceptors then see the session as a gRPC stream.
func (e *Engine) Serve(ctx context.Context, p *auth.Principal, sess *hub.Session, t Transport) error {
	r := e.begin(ctx, p, sess, t)
	r.read(ctx)
	return r.final.Err()
}

func (e *Engine) begin(ctx context.Context, p *auth.Principal, sess *hub.Session, t Transport) *started {
	// One struct holds what the session's goroutines share, rather than a
	// closure and a heap cell per variable: an idle connection keeps it.
	r := &started{e: e, ctx: ctx, sess: sess, t: t, exited: make(chan struct{})}
	r.d.w = newWriter(t, sess, e.cfg.Coalesce)
	r.d.w.obs = e.cfg.Observer
	r.d.finish = r.writerEnded
	r.stopWatch = e.watch(ctx, p, sess, &r.ended)
	sess.OnReady(r.d.kick)
	r.d.kick() // Open queued the welcome and the snapshot
	sess.OnClose(r.closed)
	return r
}

// started is one running session.
type started struct {
	e         *Engine
	ctx       context.Context
	sess      *hub.Session
	t         Transport
	d         demandWriter
	stopWatch func()
	ended     atomic.Pointer[error] // the status when the engine's own rule ended it

	first  atomic.Int32 // readerFirst or writerFirst: who ended the session
	rfinal error        // the reader's status, written before it claims first
	final  Disconnect   // written by the last writer before exited closes
	exited chan struct{}
}

const (
	readerFirst = 1
	writerFirst = 2
)

// read is the session's reader, until the client goes or the session
// ends; then it waits for the writer to finish the session.
func (r *started) read(ctx context.Context) {
	r.rfinal = readStatus(r.e.safeReadLoop(ctx, r.t, r.sess))
	if r.first.CompareAndSwap(0, readerFirst) {
		// The client half-closed (or its read failed): send what its last
		// commands produced, then end.
		r.sess.Close(hub.ReasonNone, true)
	}
	<-r.exited
}

// writerEnded runs once, on the writer that saw the session end: it
// tells the client why (when the server ended it), detaches the session
// and closes the transport.
func (r *started) writerEnded(err error) {
	defer close(r.exited)
	serverEnded := r.first.CompareAndSwap(0, writerFirst)
	var d Disconnect
	switch {
	case !serverEnded:
		d = FromStatus(r.rfinal)
	case err != nil:
		d = FromStatus(err)
	default:
		d = r.disconnect()
	}
	if serverEnded && err == nil {
		_ = r.t.Write(hub.Encode(d.Event())) // best effort: the close carries d too
	}
	r.final = d
	r.stopWatch()
	r.e.hub.Detach(r.sess)
	r.e.cfg.Observer.SessionEnded(r.ctx, endReason(r.sess, d.Err()))
	r.t.Close(d)
}

// disconnect is the Disconnect of a session the server closed.
func (r *started) disconnect() Disconnect {
	return forReason(r.sess.Reason(), r.sess.CloseDetail(), endStatus(r.sess, &r.ended), r.e.hub.ReconnectAfter())
}

// closed runs when the session closes. The writer may be blocked on a
// client that stopped reading and not see it (the hub closes a slow
// consumer without waiting): close the transport under it, after the
// grace a draining close gets, or a short one in which a writer that is
// not stuck writes the Disconnect event itself.
func (r *started) closed() {
	wait := closeGrace
	if r.sess.DrainOnClose() {
		wait = drainTimeout
	}
	grace := time.NewTimer(wait)
	defer grace.Stop()
	select {
	case <-r.exited:
		return
	case <-grace.C:
	}
	if r.first.Load() == readerFirst {
		r.t.Close(FromStatus(r.rfinal))
		return
	}
	r.t.Close(r.disconnect())
}

// demandWriter runs a session's writer on a goroutine of its own only
// while the queue holds frames: the goroutine exits when the queue runs
// empty and kick starts another at the next frame. Most connections are
// idle most of the time, and a parked writer would keep a stack each.
type demandWriter struct {
	w       *writer
	finish  func(err error) // called once, by the writer that sees the end
	running atomic.Bool     // a writer goroutine owns w; it hands w over through this flag
}

// kick starts a writer unless one is running; it never blocks (the hub
// calls it under its lock).
func (d *demandWriter) kick() {
	if d.running.CompareAndSwap(false, true) {
		go d.run()
	}
}

func (d *demandWriter) run() {
	for {
		if done, err := d.w.step(); done {
			d.finish(err) // running stays set: no writer starts again
			return
		}
		d.running.Store(false)
		// A frame queued before the store found running set and started
		// nothing, so look again before leaving.
		if d.w.sess.Queued() == 0 && !isClosed(d.w.sess) {
			return
		}
		if !d.running.CompareAndSwap(false, true) {
			return // a kick started the next writer
		}
	}
}

// watch closes sess, recording why in ended, when the call's context ends
// or the token expires (after a warning in band); the returned func
// disarms it. Timers, not a goroutine: a writer then waits on the
// session alone.
func (e *Engine) watch(ctx context.Context, p *auth.Principal, sess *hub.Session, ended *atomic.Pointer[error]) (stop func()) {
	endWith := func(err error) {
		ended.CompareAndSwap(nil, &err)
		sess.Close(hub.ReasonEnded, false)
	}
	stopCtx := context.AfterFunc(ctx, func() { endWith(status.FromContextError(ctx.Err()).Err()) })
	exp := &expiry{warning: e.cfg.TokenWarning, p: p, sess: sess}
	var (
		timer   *time.Timer
		mu      sync.Mutex // orders the callback's re-arm against the stop
		stopped bool
	)
	mu.Lock()
	defer mu.Unlock()
	timer = time.AfterFunc(exp.next(), func() {
		if err := exp.check(); err != nil {
			endWith(err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			timer.Reset(exp.next())
		}
	})
	return func() {
		stopCtx()
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		timer.Stop()
	}
}

// endStatus is the status of a closed session; ended holds it when the
// engine's own rule closed it.
func endStatus(sess *hub.Session, ended *atomic.Pointer[error]) error {
	if sess.Reason() == hub.ReasonEnded {
		if err := ended.Load(); err != nil {
			return *err
		}
	}
	return closeStatus(sess.Reason())
}

func closeStatus(r hub.CloseReason) error {
	switch r {
	case hub.ReasonSlowConsumer:
		return status.Error(codes.ResourceExhausted, r.String())
	case hub.ReasonDisconnectedByAdmin:
		return status.Error(codes.Aborted, r.String())
	case hub.ReasonShutdown:
		return status.Error(codes.Unavailable, r.String())
	case hub.ReasonNone:
		return nil
	}
	return status.Error(codes.Canceled, r.String())
}

// expiry warns a session in band before its token expires and ends it
// when it has.
type expiry struct {
	warning time.Duration
	p       *auth.Principal
	sess    *hub.Session
	warned  bool
}

// check runs when the timer fires: it returns the final status once the
// token has expired, and queues the warning once when it is near.
func (e *expiry) check() error {
	exp := e.p.ExpiresAt()
	left := time.Until(exp)
	if left <= 0 {
		return status.Error(codes.Unauthenticated, "token expired; reconnect with a new token or refresh in band before expiry")
	}
	if left <= e.warning && !e.warned {
		e.warned = true
		e.sess.SendEvent(&chatv1.ServerEvent{Event: &chatv1.ServerEvent_ServerNotice{ServerNotice: &chatv1.ServerNotice{
			Kind: chatv1.NoticeKind_NOTICE_KIND_TOKEN_EXPIRING, Message: "access token expires at " + exp.UTC().Format(time.RFC3339) + "; send refresh_token",
		}}})
	} else if left > e.warning {
		e.warned = false // refreshed in band
	}
	return nil
}

// next is how long until the timer should look again.
func (e *expiry) next() time.Duration {
	left := time.Until(e.p.ExpiresAt())
	if !e.warned {
		return max(left-e.warning, 0)
	}
	return max(left, time.Millisecond)
}

// readStatus is the session's status when its reader ended it.
func readStatus(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// drainTimeout bounds how long a closing session may take to flush.
const drainTimeout = 2 * time.Second

// closeGrace is how long a session closed without draining (a slow
// consumer, a cancelled call) waits for its writer to write the Disconnect
// event before the transport is closed under it.
const closeGrace = 100 * time.Millisecond

// safeReadLoop is readLoop outside the interceptors' recovery: a panic
// ends this session with Internal, not the process.
func (e *Engine) safeReadLoop(ctx context.Context, t Transport, sess *hub.Session) (err error) {
	defer func() {
		if r := recover(); r != nil {
			e.log.Error("panic in chat session", "panic", r, "user", sess.Username, "stack", string(debug.Stack()))
			err = status.Error(codes.Internal, "internal error")
		}
	}()
	return e.readLoop(ctx, t, sess)
}

func (e *Engine) readLoop(ctx context.Context, t Transport, sess *hub.Session) error {
	for {
		ev := new(chatv1.ClientEvent)
		err := t.Recv(ev)
		var ie *InBandError
		if errors.As(err, &ie) {
			sess.SendEvent(apierr.New(ie.Code, "%s", ie.Message).Event(ie.RequestID))
			continue
		}
		if ib, ok := apierr.AsInBand(err); ok {
			sess.SendEvent(ib.Err.Event(ib.RequestID))
			continue
		}
		if err != nil {
			return err
		}
		if reply := e.cfg.Handle(ctx, sess, ev); reply != nil {
			reply.RequestId = ev.GetRequestId()
			sess.SendEvent(reply)
		}
	}
}
