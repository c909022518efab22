// Package chatsvc implements the chat.v1.Chat service: the Connect stream
// (one reader goroutine, one writer, the hub's bounded queue between them),
// history, and file upload and download. Policy (auth, roles, limits,
// validation) has already run in the interceptors when a call gets here.
package chatsvc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/apierr"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/internal/blob"
	"github.com/parleychat/parley/server/internal/hub"
	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/tracing"
)

// Store is what the service needs from storage besides the hub.
type Store interface {
	History(ctx context.Context, conversation string, q store.HistoryQuery) ([]store.Message, bool, error)
	PutFile(ctx context.Context, f store.File) (store.File, error)
	GetFile(ctx context.Context, id string) (store.File, error)
	ListConversations(ctx context.Context, username, everyone string, q store.ConversationsQuery) ([]store.ConversationSummary, bool, error)
}

// Blobs stores file contents by SHA-256, shared by uploads of the same
// content (each upload is a store.File of its own).
type Blobs interface {
	Stage(ctx context.Context, r io.Reader) (*blob.Staged, error)
	Open(ctx context.Context, id string) (io.ReadCloser, error)
}

// Config configures the service.
type Config struct {
	Hub    *hub.Hub
	Store  Store
	Blobs  Blobs
	Logger *slog.Logger
	// MaxFileSize bounds uploads; default 10 MiB (the blob store enforces
	// its own limit too).
	MaxFileSize int64
	// TokenWarning is how long before its token expires a stream is told to
	// refresh in band; default 30s.
	TokenWarning time.Duration
	// Coalesce is the least time between two writes to a busy connection,
	// gRPC stream or bridged (see writer.linger); default 20ms, negative
	// for none.
	Coalesce time.Duration
	// Observer is told of each session's start and end and of each burst
	// its writer drains (package metrics counts them); nil means none.
	Observer Observer
	// RunDirect, when set, runs the reader of a session started by Start
	// (the bridged WebSocket) on the session's own goroutine, so that the
	// stream interceptors that observe calls see it as they see a gRPC
	// stream (interceptor.Chain.RunStream). Nil runs the reader as is.
	RunDirect func(ctx context.Context, session func(ctx context.Context) error) error
}

// Observer watches sessions for the metrics. Its methods must be cheap
// and safe for concurrent use: QueueDrained runs on every write burst.
type Observer interface {
	// SessionStarted: a session opened; ctx is its call's context.
	SessionStarted(ctx context.Context)
	// SessionEnded: the session opened with ctx ended, for reason (one of
	// the EndReason values).
	SessionEnded(ctx context.Context, reason string)
	// QueueDrained: the writer took frames from the session's queue at
	// once (the queue's depth when the writer got to it).
	QueueDrained(frames int)
}

// nopObserver is the Observer when Config.Observer is nil.
type nopObserver struct{}

func (nopObserver) SessionStarted(context.Context)       {}
func (nopObserver) SessionEnded(context.Context, string) {}
func (nopObserver) QueueDrained(int)                     {}

// EndReasons lists the reasons SessionEnded reports, for the metrics to
// make their series up front.
func EndReasons() []string {
	return []string{"client_closed", "cancelled", "slow_consumer", "admin", "shutdown", "token_expired", "rate_limited", "bad_request", "error"}
}

// endReason names why sess ended with status final.
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

// Service implements chatv1.ChatServer.
type Service struct {
	chatv1.UnimplementedChatServer
	cfg Config
	hub *hub.Hub
	log *slog.Logger
}

// New returns the service.
func New(cfg Config) (*Service, error) {
	if cfg.Hub == nil || cfg.Store == nil || cfg.Blobs == nil {
		return nil, errors.New("chatsvc: Hub, Store and Blobs are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxFileSize <= 0 {
		cfg.MaxFileSize = 10 << 20
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
	return &Service{cfg: cfg, hub: cfg.Hub, log: cfg.Logger}, nil
}

func principal(ctx context.Context) (*auth.Principal, error) {
	p, ok := auth.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "token required")
	}
	return p, nil
}

// Transport is one client connection as a session sees it: the gRPC
// stream, or a bridged WebSocket attached directly. One goroutine calls
// Recv and another calls Send. Recv may return an *apierr.InBand for a
// refused command (answered in band; the session reads on); any other
// error ends the session. After Serve returns, the caller must close the
// transport so that a Send blocked on a client that stopped reading ends.
type Transport interface {
	Recv(ev *chatv1.ClientEvent) error
	Send(f *hub.Frame) error
}

// grpcTransport is the native Chat.Connect stream.
type grpcTransport struct{ stream grpc.ServerStream }

func (t grpcTransport) Recv(ev *chatv1.ClientEvent) error { return t.stream.RecvMsg(ev) }
func (t grpcTransport) Send(f *hub.Frame) error           { return t.stream.SendMsg(f) }

// Connect runs one live session over the gRPC stream; returning ends the
// stream, which also unblocks a writer stuck on a client that stopped
// reading.
func (s *Service) Connect(stream grpc.BidiStreamingServer[chatv1.ClientEvent, chatv1.ServerEvent]) error {
	ctx := stream.Context()
	p, err := principal(ctx)
	if err != nil {
		return err
	}
	return s.Serve(ctx, p, grpcTransport{stream})
}

// Serve runs one live session for p over t and returns its final status as
// soon as the session must end (client gone, slow consumer, shutdown, token
// expired). The policy checks on p and on every command are the caller's
// (the interceptor chain).
//
// A gRPC stream needs three goroutines: a reader, a writer (the only
// caller of t.Send) and the caller's, which supervises, since only
// returning from the handler unblocks a stuck Recv or Send. A transport
// that can be aborted (an Aborter, such as a bridged WebSocket) runs as
// Start runs it, with the caller waiting: a reader, and a writer only
// while frames wait. Start itself lets the caller go.
func (s *Service) Serve(ctx context.Context, p *auth.Principal, t Transport) error {
	sess, err := s.Open(ctx, p)
	if err != nil {
		return err
	}
	return s.Run(ctx, p, sess, t)
}

// Open registers a session for p with the hub (Welcome, snapshot, replay
// queued); Run must follow. Split from Serve so that a caller may open on
// a short-lived goroutine: the lookups grow a deep stack, which the
// session's long-lived reader would otherwise keep.
func (s *Service) Open(ctx context.Context, p *auth.Principal) (*hub.Session, error) {
	sess, err := s.hub.Attach(ctx, hub.Identity{Username: p.Username, Role: p.Role.Proto(), LastSeenAt: p.LastSeenAt}, p.ExpiresAt())
	if err != nil {
		return nil, toStatus(s.log, err)
	}
	s.cfg.Observer.SessionStarted(ctx)
	return sess, nil
}

// Run serves an opened session until it ends, and detaches it.
func (s *Service) Run(ctx context.Context, p *auth.Principal, sess *hub.Session, t Transport) error {
	if a, ok := t.(Aborter); ok {
		final := make(chan error, 1)
		s.Start(ctx, p, sess, t, a, func(err error) { final <- err })
		return <-final
	}
	defer s.hub.Detach(sess)
	err := s.run(ctx, p, sess, t)
	s.cfg.Observer.SessionEnded(ctx, endReason(sess, err))
	return err
}

func (s *Service) run(ctx context.Context, p *auth.Principal, sess *hub.Session, t Transport) error {
	var ended atomic.Pointer[error]
	defer s.watch(ctx, p, sess, &ended)()
	readDone := make(chan error, 1)
	writeDone := make(chan error, 1)
	go func() { readDone <- s.safeReadLoop(ctx, t, sess) }()
	w := newWriter(t, sess, s.cfg.Coalesce)
	w.obs = s.cfg.Observer
	go func() { writeDone <- w.run() }()
	select {
	case <-sess.Done():
		if sess.DrainOnClose() {
			// Give the writer a moment to flush the final notice.
			select {
			case <-writeDone:
			case <-time.After(drainTimeout):
			}
		}
		return endStatus(sess, &ended)
	case err := <-writeDone:
		if err == nil { // the writer saw the session close first
			return endStatus(sess, &ended)
		}
		return err
	case err := <-readDone:
		// The client half-closed (or its read failed): send what its
		// last commands produced, then end.
		sess.Close(hub.ReasonNone, true)
		select {
		case <-writeDone:
		case <-time.After(drainTimeout):
		}
		return readStatus(err)
	}
}

// Aborter is a Transport that can be torn down from any goroutine: Abort
// ends the connection with the session's final status (nil for OK), so
// that a blocked Recv or Send returns. It may be called more than once,
// concurrently; the first status wins.
type Aborter interface {
	Abort(final error)
}

// Start serves an opened session on a transport that can be aborted, like
// Run, but returns at once: the session reads t on a goroutine of its own
// and writes it from a goroutine that exists only while frames wait, so
// an idle connection costs one goroutine, whose stack is only as deep as
// a read. Whoever ends the session first gives its status; the other is
// unblocked by Abort. When the session has ended and been detached, done
// gets its final status (already given to Abort); t is no longer used.
//
// The caller's goroutine, which has just opened the session (deep in the
// store and the interceptors), can then exit: a reader waiting on it
// would keep the stack it grew for as long as the connection lives.
func (s *Service) Start(ctx context.Context, p *auth.Principal, sess *hub.Session, t Transport, a Aborter, done func(final error)) {
	// One struct holds what the session's goroutines share, rather than a
	// closure and a heap cell per variable: an idle connection keeps it.
	r := &started{s: s, sess: sess, t: t, a: a, done: done, exited: make(chan struct{})}
	r.d.w = newWriter(t, sess, s.cfg.Coalesce)
	r.d.w.obs = s.cfg.Observer
	r.d.finish = r.writerEnded
	r.stopWatch = s.watch(ctx, p, sess, &r.ended)
	sess.OnReady(r.d.kick)
	r.d.kick() // Open queued the welcome and the snapshot
	sess.OnClose(r.closed)
	if s.cfg.RunDirect == nil {
		go r.read(ctx)
		return
	}
	go s.cfg.RunDirect(ctx, func(ctx context.Context) error { r.read(ctx); return r.final }) //nolint:errcheck // done has the status
}

// started is a session started by Start.
type started struct {
	s         *Service
	sess      *hub.Session
	t         Transport
	a         Aborter
	done      func(final error)
	d         demandWriter
	stopWatch func()
	ended     atomic.Pointer[error] // the status when the transport's own rule ended it

	first  atomic.Int32 // readerFirst or writerFirst: who ended the session
	rfinal error        // the reader's status, written before it claims first
	final  error        // written by the last writer before exited closes
	exited chan struct{}
}

const (
	readerFirst = 1
	writerFirst = 2
)

// read is the session's reader, until the client goes or the session
// ends; then it waits for the writer, detaches and reports.
func (r *started) read(ctx context.Context) {
	r.rfinal = readStatus(r.s.safeReadLoop(ctx, r.t, r.sess))
	if r.first.CompareAndSwap(0, readerFirst) {
		// The client half-closed (or its read failed): send what its last
		// commands produced, then end.
		r.sess.Close(hub.ReasonNone, true)
	}
	<-r.exited
	r.stopWatch()
	r.s.hub.Detach(r.sess)
	r.s.cfg.Observer.SessionEnded(ctx, endReason(r.sess, r.final))
	r.done(r.final)
}

// writerEnded runs once, on the writer that saw the session end.
func (r *started) writerEnded(err error) {
	defer close(r.exited)
	if err == nil {
		err = endStatus(r.sess, &r.ended)
	}
	if !r.first.CompareAndSwap(0, writerFirst) {
		err = r.rfinal
	}
	r.final = err
	r.a.Abort(err)
}

// closed runs when the session closes. The writer may be blocked on a
// client that stopped reading and not see it (the hub closes a slow
// consumer without waiting): abort the transport under it, after the grace
// a draining close gets.
func (r *started) closed() {
	if r.sess.DrainOnClose() {
		grace := time.NewTimer(drainTimeout)
		defer grace.Stop()
		select {
		case <-r.exited:
			return
		case <-grace.C:
		}
	}
	if r.first.Load() == readerFirst {
		r.a.Abort(r.rfinal)
		return
	}
	r.a.Abort(endStatus(r.sess, &r.ended))
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
func (s *Service) watch(ctx context.Context, p *auth.Principal, sess *hub.Session, ended *atomic.Pointer[error]) (stop func()) {
	endWith := func(err error) {
		ended.CompareAndSwap(nil, &err)
		sess.Close(hub.ReasonEnded, false)
	}
	stopCtx := context.AfterFunc(ctx, func() { endWith(status.FromContextError(ctx.Err()).Err()) })
	exp := &expiry{s: s, p: p, sess: sess}
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
// transport's own rule closed it.
func endStatus(sess *hub.Session, ended *atomic.Pointer[error]) error {
	if sess.Reason() == hub.ReasonEnded {
		if err := ended.Load(); err != nil {
			return *err
		}
	}
	return closeStatus(sess.Reason())
}

// expiry warns a session in band before its token expires and ends it
// when it has.
type expiry struct {
	s      *Service
	p      *auth.Principal
	sess   *hub.Session
	warned bool
}

// check runs when the timer fires: it returns the final status once the
// token has expired, and queues the warning once when it is near.
func (e *expiry) check() error {
	exp := e.p.ExpiresAt()
	left := time.Until(exp)
	if left <= 0 {
		return status.Error(codes.Unauthenticated, "token expired; reconnect with a new token or refresh in band before expiry")
	}
	if left <= e.s.cfg.TokenWarning && !e.warned {
		e.warned = true
		e.sess.SendEvent(&chatv1.ServerEvent{Event: &chatv1.ServerEvent_ServerNotice{ServerNotice: &chatv1.ServerNotice{
			Kind: chatv1.NoticeKind_NOTICE_KIND_TOKEN_EXPIRING, Message: "access token expires at " + exp.UTC().Format(time.RFC3339) + "; send refresh_token",
		}}})
	} else if left > e.s.cfg.TokenWarning {
		e.warned = false // refreshed in band
	}
	return nil
}

// next is how long until the timer should look again.
func (e *expiry) next() time.Duration {
	left := time.Until(e.p.ExpiresAt())
	if !e.warned {
		return max(left-e.s.cfg.TokenWarning, 0)
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

// Flusher is a Transport that may hold frames back from Send (to write a
// burst at once) until Flush; the writer flushes whenever its queue runs
// empty.
type Flusher interface {
	Flush() error
}

// writer is a session's only writer: it sends the queue in bursts.
type writer struct {
	t        Transport
	fl       Flusher
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
	w := &writer{t: t, sess: sess, coalesce: coalesce, obs: nopObserver{}}
	w.fl, _ = t.(Flusher)
	return w
}

// run sends until the session closes (then what is queued, when asked to
// drain) and returns nil, or returns the error of a send that failed while
// the session was open. It waits on Ready alone, a plain receive: Close
// also signals it.
func (w *writer) run() error {
	for range w.sess.Ready() {
		if done, err := w.step(); done {
			return err
		}
	}
	return nil // Ready is never closed
}

// step writes what is queued, as one burst. It reports done once the
// session has closed (after sending what was queued, when asked to
// drain), with the error of a send that failed while the session was
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

// burst sends everything queued, then flushes once: a burst of events
// costs one write(2) on a transport that holds them back.
func (w *writer) burst() error {
	w.batch = w.sess.Take(w.batch)
	w.inWindow += len(w.batch)
	if len(w.batch) > 0 {
		w.obs.QueueDrained(len(w.batch))
	}
	for _, f := range w.batch {
		if err := w.t.Send(f); err != nil {
			return err
		}
	}
	if w.fl != nil && len(w.batch) > 0 {
		return w.fl.Flush()
	}
	return nil
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

// safeReadLoop is readLoop on a goroutine of the session's own, outside
// the interceptors' recovery: a panic ends this session with Internal,
// not the process.
func (s *Service) safeReadLoop(ctx context.Context, t Transport, sess *hub.Session) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic in chat session", "panic", r, "user", sess.Username, "stack", string(debug.Stack()))
			err = status.Error(codes.Internal, "internal error")
		}
	}()
	return s.readLoop(ctx, t, sess)
}

func (s *Service) readLoop(ctx context.Context, t Transport, sess *hub.Session) error {
	for {
		ev := new(chatv1.ClientEvent)
		err := t.Recv(ev)
		if ib, ok := apierr.AsInBand(err); ok {
			sess.SendEvent(ib.Err.Event(ib.RequestID))
			continue
		}
		if err != nil {
			return err
		}
		if reply := s.handle(ctx, sess, ev); reply != nil {
			reply.RequestId = ev.GetRequestId()
			sess.SendEvent(reply)
		}
	}
}

// handle runs one command and returns the event that answers it, if any.
func (s *Service) handle(ctx context.Context, sess *hub.Session, ev *chatv1.ClientEvent) (reply *chatv1.ServerEvent) {
	// The command's span continues the client's trace when the event
	// carries one: a stream's context cannot, as it carries many commands.
	ctx, span := tracing.Start(tracing.Extract(ctx, ev.GetTraceParent(), ev.GetTraceState()), commandSpan(ev), trace.WithSpanKind(trace.SpanKindServer))
	defer func() {
		if e := reply.GetError(); e != nil {
			span.SetStatus(otelcodes.Error, e.GetCode().String())
		}
		span.End()
	}()
	// Commands run on the session's reader, which the interceptors'
	// recovery does not cover: a bug must cost one command, not the
	// process.
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic in chat command", "panic", r, "user", sess.Username, "stack", string(debug.Stack()))
			reply = apierr.Internal().Event("")
		}
	}()
	reply, err := s.dispatch(ctx, sess, ev)
	if err != nil {
		return s.errorEvent(err)
	}
	return reply
}

func (s *Service) dispatch(ctx context.Context, sess *hub.Session, ev *chatv1.ClientEvent) (*chatv1.ServerEvent, error) {
	switch e := ev.GetEvent().(type) {
	case *chatv1.ClientEvent_JoinRoom:
		j, err := s.hub.Join(ctx, sess, e.JoinRoom.GetRoom())
		if err != nil {
			return nil, err
		}
		return &chatv1.ServerEvent{Event: &chatv1.ServerEvent_RoomJoined{RoomJoined: j}}, nil
	case *chatv1.ClientEvent_LeaveRoom:
		if err := s.hub.Leave(ctx, sess, e.LeaveRoom.GetRoom()); err != nil {
			return nil, err
		}
		return &chatv1.ServerEvent{Event: &chatv1.ServerEvent_RoomLeft{RoomLeft: &chatv1.RoomLeft{Room: e.LeaveRoom.GetRoom()}}}, nil
	case *chatv1.ClientEvent_SendMessage:
		m := e.SendMessage
		return ack(s.hub.SendRoom(ctx, sess, m.GetRoom(), m.GetText(), m.GetClientMsgId()))
	case *chatv1.ClientEvent_SendPrivateMessage:
		m := e.SendPrivateMessage
		if m.GetTo() == sess.Username {
			return nil, apierr.InvalidArgument("cannot send a private message to yourself")
		}
		return ack(s.hub.SendDirect(ctx, sess, m.GetTo(), m.GetText(), m.GetClientMsgId()))
	case *chatv1.ClientEvent_SendFile:
		m := e.SendFile
		if m.GetConversation().GetUser() == sess.Username {
			return nil, apierr.InvalidArgument("cannot send a private message to yourself")
		}
		return ack(s.hub.SendFile(ctx, sess, m.GetConversation(), m.GetFileId(), m.GetClientMsgId()))
	case *chatv1.ClientEvent_Typing:
		return nil, s.hub.Typing(sess, e.Typing.GetConversation(), e.Typing.GetTyping())
	case *chatv1.ClientEvent_ListRooms:
		rooms, err := s.hub.ListRooms(ctx, sess.Username)
		if err != nil {
			return nil, err
		}
		return &chatv1.ServerEvent{Event: &chatv1.ServerEvent_RoomsList{RoomsList: &chatv1.RoomsList{Rooms: rooms}}}, nil
	case *chatv1.ClientEvent_Resume:
		return nil, s.hub.Resume(ctx, sess, ev.GetRequestId(), e.Resume.GetCursors())
	case *chatv1.ClientEvent_Ping:
		return &chatv1.ServerEvent{Event: &chatv1.ServerEvent_Pong{Pong: &chatv1.Pong{ServerTime: timestamppb.Now()}}}, nil
	case *chatv1.ClientEvent_RefreshToken:
		// The auth interceptor verified the token and moved the expiry.
		p, err := principal(ctx)
		if err != nil {
			return nil, err
		}
		return &chatv1.ServerEvent{Event: &chatv1.ServerEvent_TokenRefreshed{TokenRefreshed: &chatv1.TokenRefreshed{ExpiresAt: timestamppb.New(p.ExpiresAt())}}}, nil
	}
	return nil, apierr.InvalidArgument("unknown or empty event")
}

// commandSpans names each command's span after its oneof field, made
// once so that naming a span allocates nothing.
var (
	eventOneof   = (&chatv1.ClientEvent{}).ProtoReflect().Descriptor().Oneofs().ByName("event")
	commandSpans = func() map[protoreflect.Name]string {
		m := map[protoreflect.Name]string{}
		fields := eventOneof.Fields()
		for i := range fields.Len() {
			m[fields.Get(i).Name()] = "chat." + string(fields.Get(i).Name())
		}
		return m
	}()
)

func commandSpan(ev *chatv1.ClientEvent) string {
	if fd := ev.ProtoReflect().WhichOneof(eventOneof); fd != nil {
		return commandSpans[fd.Name()]
	}
	return "chat.unknown"
}

func ack(sent hub.Sent, err error) (*chatv1.ServerEvent, error) {
	if err != nil {
		return nil, err
	}
	m := sent.Message
	return &chatv1.ServerEvent{Event: &chatv1.ServerEvent_Ack{Ack: &chatv1.Ack{
		MessageId: m.GetId(), Seq: m.GetSeq(), Duplicate: sent.Duplicate, Conversation: m.GetConversation(),
	}}}, nil
}

// errorEvent maps a command's failure to its in-band error; causes of
// internal errors are logged, never sent.
func (s *Service) errorEvent(err error) *chatv1.ServerEvent {
	var e *apierr.Error
	if !errors.As(err, &e) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			e = apierr.New(chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE, "request cancelled")
		} else {
			s.log.Error("chat command failed", "err", err)
			e = apierr.Internal()
		}
	}
	return e.Event("")
}

// toStatus maps an error to a gRPC status at a call boundary.
func toStatus(log *slog.Logger, err error) error {
	var e *apierr.Error
	switch {
	case errors.As(err, &e):
		return e.GRPCStatus().Err()
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, "not found")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	if _, ok := status.FromError(err); ok && status.Code(err) != codes.Unknown {
		return err
	}
	log.Error("chat call failed", "err", err)
	return status.Error(codes.Internal, "internal error")
}
