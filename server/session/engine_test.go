package session_test

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/internal/hub"
	"github.com/parleychat/parley/server/internal/store/sqlite"
	"github.com/parleychat/parley/server/session"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"))
}

// waitFor bounds how long a test waits for something that must happen; a
// liveness guard, not a performance assertion.
const waitFor = 10 * time.Second

// memTransport is an in-memory Transport: commands go in on in (closing
// it is the client going away), bursts come out decoded.
type memTransport struct {
	in     chan *chatv1.ClientEvent
	block  chan struct{} // when set, Write waits for it to close (a client that stopped reading)
	closed chan struct{}
	once   sync.Once
	final  session.Disconnect

	mu     sync.Mutex
	bursts [][]*chatv1.ServerEvent
	wrote  chan struct{} // poked after each Write
}

func newMem() *memTransport {
	return &memTransport{in: make(chan *chatv1.ClientEvent, 64), closed: make(chan struct{}), wrote: make(chan struct{}, 1)}
}

func (m *memTransport) Recv(ev *chatv1.ClientEvent) error {
	select {
	case c, ok := <-m.in:
		if !ok {
			return io.EOF
		}
		proto.Merge(ev, c)
		return nil
	case <-m.closed:
		return io.EOF
	}
}

func (m *memTransport) Write(frames ...*session.Frame) error {
	if m.block != nil {
		select {
		case <-m.block:
		case <-m.closed:
			return errors.New("closed")
		}
	}
	burst := make([]*chatv1.ServerEvent, len(frames))
	for i, f := range frames {
		burst[i] = new(chatv1.ServerEvent)
		if err := proto.Unmarshal(f.Data, burst[i]); err != nil {
			return err
		}
	}
	m.mu.Lock()
	m.bursts = append(m.bursts, burst)
	m.mu.Unlock()
	select {
	case m.wrote <- struct{}{}:
	default:
	}
	return nil
}

func (m *memTransport) Close(d session.Disconnect) {
	m.once.Do(func() { m.final = d; close(m.closed) })
}

func (m *memTransport) events() []*chatv1.ServerEvent {
	m.mu.Lock()
	defer m.mu.Unlock()
	var all []*chatv1.ServerEvent
	for _, b := range m.bursts {
		all = append(all, b...)
	}
	return all
}

// waitClosed waits for the session to close the transport and returns
// its Disconnect.
func (m *memTransport) waitClosed(t *testing.T) session.Disconnect {
	t.Helper()
	select {
	case <-m.closed:
		return m.final
	case <-time.After(waitFor):
		t.Fatal("the session did not close its transport")
		return session.Disconnect{}
	}
}

// waitFor waits until some written event satisfies ok.
func (m *memTransport) waitEvent(t *testing.T, ok func(*chatv1.ServerEvent) bool) *chatv1.ServerEvent {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		for _, ev := range m.events() {
			if ok(ev) {
				return ev
			}
		}
		select {
		case <-m.wrote:
		case <-deadline:
			t.Fatalf("no such event; saw %v", m.events())
		}
	}
}

type env struct {
	hub    *hub.Hub
	engine *session.Engine
}

// newEnv is an engine on a hub on a new SQLite store; it answers pings
// with a pong, as chatsvc does.
func newEnv(t *testing.T, queue int, warning time.Duration) *env {
	t.Helper()
	st, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "s.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h, err := hub.New(hub.Config{Store: st, QueueSize: queue})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Shutdown(time.Second) })
	handle := func(_ context.Context, _ *hub.Session, ev *chatv1.ClientEvent) *chatv1.ServerEvent {
		if ev.GetPing() != nil {
			return &chatv1.ServerEvent{Event: &chatv1.ServerEvent_Pong{Pong: &chatv1.Pong{ServerTime: timestamppb.Now()}}}
		}
		return nil
	}
	e, err := session.New(session.Config{Hub: h, Handle: handle, TokenWarning: warning})
	if err != nil {
		t.Fatal(err)
	}
	return &env{hub: h, engine: e}
}

func (e *env) start(t *testing.T, ctx context.Context, user string, expires time.Time, m *memTransport) *hub.Session {
	t.Helper()
	p := &auth.Principal{Username: user, Role: auth.RoleUser}
	p.SetExpiresAt(expires)
	sess, err := e.engine.Open(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	e.engine.Start(ctx, p, sess, m)
	return sess
}

func ping(id string) *chatv1.ClientEvent {
	return &chatv1.ClientEvent{RequestId: id, Event: &chatv1.ClientEvent_Ping{Ping: &chatv1.Ping{}}}
}

// TestOrderAndBursts: the Welcome comes first, commands are answered in
// the order sent, what was queued at open goes out as one Write, and a
// client that goes away ends the session normally without a Disconnect
// event.
func TestOrderAndBursts(t *testing.T) {
	e := newEnv(t, 256, 0)
	m := newMem()
	e.start(t, context.Background(), "alice", time.Now().Add(time.Hour), m)
	m.waitEvent(t, func(ev *chatv1.ServerEvent) bool { return ev.GetStateRestored() != nil })
	m.mu.Lock()
	first := m.bursts[0]
	m.mu.Unlock()
	if first[0].GetWelcome() == nil {
		t.Fatalf("first event %v, want Welcome", first[0])
	}
	if len(first) < 2 {
		t.Fatalf("the open's %d events went out as %d-event bursts, want one Write", len(m.events()), len(first))
	}
	ids := []string{"1", "2", "3", "4", "5", "6", "7", "8"}
	for _, id := range ids {
		m.in <- ping(id)
	}
	m.waitEvent(t, func(ev *chatv1.ServerEvent) bool { return ev.GetRequestId() == "8" })
	var got []string
	for _, ev := range m.events() {
		if ev.GetPong() != nil {
			got = append(got, ev.GetRequestId())
		}
	}
	if len(got) != len(ids) {
		t.Fatalf("pongs %v, want %v", got, ids)
	}
	for i := range ids {
		if got[i] != ids[i] {
			t.Fatalf("pongs %v, want %v", got, ids)
		}
	}
	close(m.in)
	d := m.waitClosed(t)
	if d.Code != session.CodeNormal || d.Err() != nil || d.Reconnect() {
		t.Fatalf("client gone: %+v (err %v)", d, d.Err())
	}
	for _, ev := range m.events() {
		if ev.GetDisconnect() != nil {
			t.Fatalf("a Disconnect event for a session the client ended: %v", ev)
		}
	}
}

// TestSlowConsumer: a transport whose Write blocks (a client that stopped
// reading) while events keep coming is closed as a slow consumer once the
// bounded queue is full, without waiting for the stuck Write.
func TestSlowConsumer(t *testing.T) {
	e := newEnv(t, 8, 0)
	m := newMem()
	m.block = make(chan struct{}) // never closed: the client never reads
	sess := e.start(t, context.Background(), "slow", time.Now().Add(time.Hour), m)
	for range 64 {
		if !sess.SendEvent(&chatv1.ServerEvent{Event: &chatv1.ServerEvent_Pong{Pong: &chatv1.Pong{}}}) {
			break
		}
	}
	d := m.waitClosed(t)
	if d.Code != session.CodeSlowConsumer || !d.Reconnect() || status.Code(d.Err()) != codes.ResourceExhausted {
		t.Fatalf("slow consumer: %+v (err %v)", d, d.Err())
	}
	if sess.Reason() != hub.ReasonSlowConsumer {
		t.Fatalf("hub reason %v", sess.Reason())
	}
}

// TestTokenExpiry: a session is warned in band before its token expires,
// then ended with a Disconnect event (4401, reconnect with a new token)
// and the same Disconnect on the transport.
func TestTokenExpiry(t *testing.T) {
	e := newEnv(t, 256, 200*time.Millisecond)
	m := newMem()
	e.start(t, context.Background(), "short", time.Now().Add(400*time.Millisecond), m)
	m.waitEvent(t, func(ev *chatv1.ServerEvent) bool {
		return ev.GetServerNotice().GetKind() == chatv1.NoticeKind_NOTICE_KIND_TOKEN_EXPIRING
	})
	d := m.waitClosed(t)
	if d.Code != session.CodeUnauthenticated || !d.Reconnect() || status.Code(d.Err()) != codes.Unauthenticated {
		t.Fatalf("expired: %+v (err %v)", d, d.Err())
	}
	evs := m.events()
	last := evs[len(evs)-1].GetDisconnect()
	if last.GetCode() != uint32(session.CodeUnauthenticated) || !last.GetReconnect() {
		t.Fatalf("last event %v, want Disconnect 4401", evs[len(evs)-1])
	}
}

// TestServerEndsTable: each way the server ends a session gives the
// table's Disconnect, sent as the last event and handed to Close, and the
// gRPC status the streams have always ended with.
func TestServerEndsTable(t *testing.T) {
	for _, tc := range []struct {
		name      string
		end       func(e *env, cancel context.CancelFunc)
		code      session.Code
		reconnect bool
		status    codes.Code
		retry     time.Duration
		event     bool // a Disconnect event is written (the transport is still there)
	}{
		{"admin", func(e *env, _ context.CancelFunc) { e.hub.DisconnectUser("u", "spam") }, session.CodeAdmin, false, codes.Aborted, 0, true},
		{"shutdown", func(e *env, _ context.CancelFunc) { e.hub.Shutdown(3 * time.Second) }, session.CodeUnavailable, true, codes.Unavailable, 3 * time.Second, true},
		{"cancelled", func(_ *env, cancel context.CancelFunc) { cancel() }, session.CodeServerError, true, codes.Canceled, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 256, 0)
			m := newMem()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			e.start(t, ctx, "u", time.Now().Add(time.Hour), m)
			m.waitEvent(t, func(ev *chatv1.ServerEvent) bool { return ev.GetStateRestored() != nil })
			tc.end(e, cancel)
			d := m.waitClosed(t)
			if tc.event {
				m.waitEvent(t, func(ev *chatv1.ServerEvent) bool { return ev.GetDisconnect() != nil })
			}
			if d.Code != tc.code || d.Reconnect() != tc.reconnect || status.Code(d.Err()) != tc.status || d.RetryAfter != tc.retry {
				t.Fatalf("Disconnect %+v (err %v), want code %d reconnect %v status %v retry %s", d, d.Err(), tc.code, tc.reconnect, tc.status, tc.retry)
			}
			evs := m.events()
			ev := evs[len(evs)-1].GetDisconnect()
			if (ev != nil) != tc.event {
				t.Fatalf("last event %v", evs[len(evs)-1])
			}
			if ev != nil && (ev.GetCode() != uint32(tc.code) || ev.GetReconnect() != tc.reconnect || ev.GetRetryAfter().AsDuration() != tc.retry) {
				t.Fatalf("Disconnect event %v, want %+v", ev, d)
			}
		})
	}
}

// TestServeReturnsTheStatus: Serve reads on the caller's goroutine and
// returns once the session has ended and the transport is closed.
func TestServeReturnsTheStatus(t *testing.T) {
	e := newEnv(t, 256, 0)
	m := newMem()
	p := &auth.Principal{Username: "g", Role: auth.RoleUser}
	p.SetExpiresAt(time.Now().Add(time.Hour))
	sess, err := e.engine.Open(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	go e.hub.DisconnectUser("g", "bye")
	if err := e.engine.Serve(context.Background(), p, sess, m); status.Code(err) != codes.Aborted {
		t.Fatalf("Serve = %v, want Aborted", err)
	}
	select {
	case <-m.closed:
	default:
		t.Fatal("Serve returned before closing the transport")
	}
}

// TestFromStatus: the table maps every final status a stream can end
// with; the status itself, details included, is what gRPC returns.
func TestFromStatus(t *testing.T) {
	st, _ := status.New(codes.ResourceExhausted, "too many").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(2 * time.Second)})
	for _, tc := range []struct {
		err       error
		code      session.Code
		reconnect bool
		retry     time.Duration
	}{
		{nil, session.CodeNormal, false, 0},
		{status.Error(codes.Unauthenticated, "x"), session.CodeUnauthenticated, true, 0},
		{status.Error(codes.PermissionDenied, "x"), session.CodePermission, false, 0},
		{st.Err(), session.CodeLimited, true, 2 * time.Second},
		{status.Error(codes.Unavailable, "x"), session.CodeUnavailable, true, 0},
		{status.Error(codes.Internal, "x"), session.CodeServerError, true, 0},
		{errors.New("plain"), session.CodeServerError, true, 0},
	} {
		d := session.FromStatus(tc.err)
		if d.Code != tc.code || d.Reconnect() != tc.reconnect || d.RetryAfter != tc.retry {
			t.Errorf("FromStatus(%v) = %+v, want %d reconnect %v retry %s", tc.err, d, tc.code, tc.reconnect, tc.retry)
		}
		if status.Code(d.Err()) != status.Code(tc.err) {
			t.Errorf("FromStatus(%v).Err() = %v", tc.err, d.Err())
		}
	}
	if d := session.FromStatus(st.Err()); len(status.Convert(d.Err()).Details()) != 1 {
		t.Errorf("the RetryInfo detail was lost: %v", d.Err())
	}
}
