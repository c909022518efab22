package server_test

import (
	"bytes"
	"context"
	"errors"

	"github.com/parleychat/parley/internal/testenv"

	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/servertest"
)

// tcpProxy forwards to target and can stop forwarding (pause: a database
// that hangs, like one stopped with SIGSTOP) or drop every connection and
// refuse new ones (down: an outage), without touching the machine's
// PostgreSQL.
type tcpProxy struct {
	target, addr string

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
	gate   chan struct{} // closed while forwarding
	wg     sync.WaitGroup
	closed bool
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	p := &tcpProxy{target: target, conns: map[net.Conn]struct{}{}, gate: make(chan struct{})}
	close(p.gate)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		p.down()
		p.resume()
		p.wg.Wait()
	})
	return p
}

func (p *tcpProxy) serve(ln net.Listener) {
	p.ln = ln
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() { defer p.wg.Done(); p.forward(c) }()
		}
	}()
}

func (p *tcpProxy) forward(c net.Conn) {
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[s] = struct{}{}, struct{}{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				p.mu.Lock()
				gate := p.gate
				p.mu.Unlock()
				<-gate
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		dst.Close()
		src.Close()
	}
	wg.Add(2)
	go pipe(s, c)
	go pipe(c, s)
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, s)
	p.mu.Unlock()
}

func (p *tcpProxy) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
		p.gate = make(chan struct{})
	default:
	}
}

func (p *tcpProxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
}

// down closes the listener and every connection: connecting is refused.
func (p *tcpProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
}

// up listens again on the same address.
func (p *tcpProxy) up(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.serve(ln)
}

// lockedBuffer is a log sink the server writes from many goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) errorLines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range strings.Split(b.buf.String(), "\n") {
		if strings.Contains(l, "level=ERROR") {
			out = append(out, l)
		}
	}
	return out
}

// proxiedSchema is postgresSchema reached through a proxy of the test's own.
func proxiedSchema(t *testing.T) (string, *tcpProxy) {
	t.Helper()
	u, err := url.Parse(testenv.PostgresSchema(t, "parley_test_"))
	if err != nil {
		t.Fatal(err)
	}
	p := newTCPProxy(t, u.Host)
	u.Host = p.addr
	return u.String(), p
}

// unavailable checks an in-band answer is ERROR_CODE_UNAVAILABLE with a
// retry hint.
func unavailable(t *testing.T, what string, ev *chatv1.ServerEvent) {
	t.Helper()
	if errorCode(ev) != chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE || ev.GetError().GetRetryAfter().AsDuration() <= 0 {
		t.Fatalf("%s: got %v, want ERROR_CODE_UNAVAILABLE with retry_after", what, ev)
	}
}

// unaryUnavailable checks a unary error is codes.Unavailable with a
// RetryInfo detail.
func unaryUnavailable(t *testing.T, what string, err error) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.Unavailable {
		t.Fatalf("%s: got %v, want Unavailable", what, err)
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay().AsDuration() > 0 {
			return
		}
	}
	t.Fatalf("%s: %v has no RetryInfo", what, err)
}

// sendUntilAcked resends the same client_msg_id, as a client told
// Unavailable does, until it is acknowledged.
func sendUntilAcked(t *testing.T, c *client, room, text, cmid string) *chatv1.Ack {
	t.Helper()
	for end := time.Now().Add(waitFor); time.Now().Before(end); {
		ev := c.next(replyTo(c.send(sendRoom(room, text, cmid))))
		if ack := ev.GetAck(); ack != nil {
			return ack
		}
		unavailable(t, "retry of "+text, ev)
		time.Sleep(ev.GetError().GetRetryAfter().AsDuration() / 4)
	}
	t.Fatalf("%s was never acknowledged", text)
	return nil
}

func historyTexts(t *testing.T, srv *servertest.Server, tok, room string) []string {
	t.Helper()
	chat := chatv1.NewChatClient(srv.Dial(t))
	var resp *chatv1.GetHistoryResponse
	var err error
	// A pooled connection that died in the outage fails its next call
	// (Unavailable); a client retries, as told.
	for end := time.Now().Add(waitFor); ; time.Sleep(100 * time.Millisecond) {
		resp, err = chat.GetHistory(servertest.WithToken(context.Background(), tok), &chatv1.GetHistoryRequest{Conversation: roomConv(room), Limit: 100})
		if status.Code(err) != codes.Unavailable || time.Now().After(end) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range resp.GetMessages() {
		out = append(out, m.GetText())
	}
	return out
}

// TestPostgresOutage: with PostgreSQL unreachable, every refused command
// is answered Unavailable with a retry hint (unary calls: codes.Unavailable
// with RetryInfo), the log holds a few lines rather than one or two per
// command, and once it is back a retried send is stored once.
func TestPostgresOutage(t *testing.T) {
	t.Parallel()
	dbURL, proxy := proxiedSchema(t)
	logs := &lockedBuffer{}
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
		c.DatabaseURL = dbURL
		c.StoreTimeout = time.Second
		c.RateLimits = "message=unlimited,other=unlimited"
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	}})
	aliceTok, bobTok := srv.Token(t, "alice", auth.RoleUser), srv.Token(t, "bob", auth.RoleUser)
	alice := connect(t, srv.Dial(t), "alice", aliceTok)
	alice.next(replyTo(alice.send(join("lobby"))))
	sendUntilAcked(t, alice, "lobby", "before", "c-before")

	proxy.down()
	const refused = 30
	for range refused {
		unavailable(t, "send during outage", alice.next(replyTo(alice.send(sendRoom("lobby", "during", "c-during")))))
	}
	chat := chatv1.NewChatClient(srv.Dial(t))
	_, err := chat.GetHistory(servertest.WithToken(context.Background(), bobTok), &chatv1.GetHistoryRequest{Conversation: roomConv("lobby")})
	unaryUnavailable(t, "GetHistory during outage", err)
	_, err = chatv1.NewAuthClient(srv.Dial(t)).Login(context.Background(), &chatv1.LoginRequest{Username: "carol", Password: "a password long enough"})
	unaryUnavailable(t, "Login during outage", err)
	if lines := logs.errorLines(); len(lines) == 0 || len(lines) > 4 {
		t.Fatalf("%d ERROR lines for %d refused commands, want 1 to 4 (one per kind per period):\n%s", len(lines), refused, strings.Join(lines, "\n"))
	}

	proxy.up(t)
	sendUntilAcked(t, alice, "lobby", "during", "c-during")
	if got := historyTexts(t, srv, aliceTok, "lobby"); strings.Join(got, ",") != "before,during" {
		t.Fatalf("history after the outage = %q, want [before during]", got)
	}
}

// TestPostgresHang: a database that stops answering (its connections
// stalled, as under SIGSTOP) fails a send as Unavailable within the store
// deadline instead of holding it; the send retried with its client_msg_id
// once the database answers again is stored exactly once.
func TestPostgresHang(t *testing.T) {
	t.Parallel()
	dbURL, proxy := proxiedSchema(t)
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
		c.DatabaseURL = dbURL
		c.StoreTimeout = 500 * time.Millisecond
		c.RateLimits = "message=unlimited,other=unlimited"
	}})
	tok := srv.Token(t, "alice", auth.RoleUser)
	alice := connect(t, srv.Dial(t), "alice", tok)
	alice.next(replyTo(alice.send(join("lobby"))))
	sendUntilAcked(t, alice, "lobby", "before", "h-before")

	proxy.pause()
	// waitFor (10s) bounds the answer; before the deadline existed it came
	// only after the append writer's 30s.
	unavailable(t, "send while the database hangs", alice.next(replyTo(alice.send(sendRoom("lobby", "stalled", "h-stalled")))))
	proxy.resume()
	sendUntilAcked(t, alice, "lobby", "stalled", "h-stalled")
	if got := historyTexts(t, srv, tok, "lobby"); strings.Join(got, ",") != "before,stalled" {
		t.Fatalf("history after the hang = %q, want [before stalled]", got)
	}
}

// TestSQLiteDiskFull runs the SQLite store on a 4 MiB tmpfs, fills it,
// and checks that sends are refused as Unavailable (not Internal) and
// logged in aggregate, then stored again once space is freed. Mounting
// needs root; without it the test says so and skips (scripts/faults runs
// the same fault against a real parleyd).
func TestSQLiteDiskFull(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small tmpfs here (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() }) // after the server stops (cleanups run last first)
	logs := &lockedBuffer{}
	srv := servertest.Start(t, servertest.Options{DataDir: dir, Configure: func(c *server.Config) {
		c.RateLimits = "message=unlimited,other=unlimited"
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	}})
	tok := srv.Token(t, "alice", auth.RoleUser)
	alice := connect(t, srv.Dial(t), "alice", tok)
	alice.next(replyTo(alice.send(join("lobby"))))
	sendUntilAcked(t, alice, "lobby", "before", "f-before")

	fill := filepath.Join(dir, "fill")
	if err := fillDisk(fill); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 3000) // a few WAL pages each, so the full disk is hit at once
	const refused = 30
	for range refused {
		unavailable(t, "send on a full disk", alice.next(replyTo(alice.send(sendRoom("lobby", big, "f-full")))))
	}
	if lines := logs.errorLines(); len(lines) == 0 || len(lines) > 4 {
		t.Fatalf("%d ERROR lines for %d refused commands, want 1 to 4:\n%s", len(lines), refused, strings.Join(lines, "\n"))
	}
	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	sendUntilAcked(t, alice, "lobby", "after", "f-after")
	if got := historyTexts(t, srv, tok, "lobby"); strings.Join(got, ",") != "before,after" {
		t.Fatalf("history after the full disk = %q, want [before after]", got)
	}
}

// fillDisk writes path until the filesystem has no room left.
func fillDisk(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return nil
			}
			return err
		}
	}
}
