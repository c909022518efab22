package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/servertest"
)

// holdHTTP opens a request to the bridge that the server cannot finish
// (its body never comes), so a shutdown stays in progress until release.
func holdHTTP(t *testing.T, addr string) (release func()) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "POST /api/auth/login HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", addr)
	var once sync.Once
	release = func() { once.Do(func() { c.Close() }) }
	t.Cleanup(release)
	return release
}

func getStatus(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestConnectDuringShutdownIsRefused starts a shutdown and, while it is in
// progress, connects again: the listeners are closed and a new stream on a
// connection opened before is refused, never welcomed; every health
// service and /readyz say so.
func TestConnectDuringShutdownIsRefused(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) { c.MetricsAddr = "127.0.0.1:0" }})
	conn := srv.Dial(t)
	tok := srv.Token(t, "alice", auth.RoleUser)
	alice := connect(t, conn, "alice", tok)
	health := healthpb.NewHealthClient(conn)
	for _, svc := range []string{"", "chat.v1.Chat", "chat.v1.Auth", "chat.v1.Admin"} {
		r, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health %q before shutdown = %v, %v", svc, r, err)
		}
	}
	metrics := "http://" + srv.MetricsAddr()
	if code, body := getStatus(t, metrics+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz before shutdown = %d %q", code, body)
	}

	release := holdHTTP(t, srv.HTTPAddr())
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		defer cancel()
		stopped <- srv.Shutdown(ctx)
	}()
	n := alice.next(func(ev *chatv1.ServerEvent) bool { return ev.GetServerNotice() != nil }).GetServerNotice()
	if n.GetKind() != chatv1.NoticeKind_NOTICE_KIND_SHUTDOWN {
		t.Fatalf("notice = %v", n)
	}
	alice.ended()

	// A client reconnecting at once, on its open connection.
	again, err := tryConnect(t, conn, "alice-again", tok)
	if err == nil {
		ev, ok := <-again.events
		if ok {
			t.Fatalf("a client connecting during shutdown got %v", ev)
		}
		err = <-again.end
	}
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("connect during shutdown: %v, want Unavailable: shutting down", err)
	}
	// New connections find the listeners closed.
	for _, addr := range []string{srv.GRPCAddr(), srv.HTTPAddr()} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts during shutdown", addr)
		}
	}
	for _, svc := range []string{"", "chat.v1.Chat", "chat.v1.Auth", "chat.v1.Admin"} {
		r, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("health %q during shutdown = %v, %v", svc, r, err)
		}
	}
	if code, body := getStatus(t, metrics+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "shutting down") {
		t.Errorf("/readyz during shutdown = %d %q", code, body)
	}
	if code, _ := getStatus(t, metrics+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz during shutdown = %d (the process is alive)", code)
	}

	release()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("shutdown did not finish")
	}
}

// TestShutdownUnderLoadFinishesWithinGrace stops a server while many
// clients send as fast as they can and reconnect the moment their stream
// ends, ignoring the notice's hint: none may hold the stop past the grace.
func TestShutdownUnderLoadFinishesWithinGrace(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
		c.RateLimits = "message=unlimited,connect=unlimited,other=unlimited"
	}})
	const clients = 40
	const grace = 5 * time.Second
	conn := srv.Dial(t)
	toks := make([]string, clients)
	for i := range toks {
		toks[i] = srv.Token(t, fmt.Sprintf("user%02d", i), auth.RoleUser)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	welcomes := 0
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				stream, err := chatv1.NewChatClient(conn).Connect(servertest.WithToken(ctx, toks[i]))
				if err != nil {
					continue
				}
				if ev, err := stream.Recv(); err != nil || ev.GetWelcome() == nil {
					continue
				}
				mu.Lock()
				welcomes++
				mu.Unlock()
				go func() { // the sender: as fast as the stream takes it
					for j := 0; stream.Send(sendRoom("general", fmt.Sprintf("load %d", j), "")) == nil; j++ {
					}
				}()
				for {
					if _, err := stream.Recv(); err != nil {
						break
					}
				}
			}
		}()
	}
	deadline := time.Now().Add(waitFor)
	for {
		mu.Lock()
		n := welcomes
		mu.Unlock()
		if n >= clients {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d clients connected", n, clients)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // let the load build

	sctx, scancel := context.WithTimeout(context.Background(), grace)
	defer scancel()
	start := time.Now()
	err := srv.Shutdown(sctx)
	took := time.Since(start)
	t.Logf("shutdown took %s", took)
	cancel()
	wg.Wait()
	if err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	// The bound is the contract (a process supervisor kills at the grace),
	// not a performance figure.
	if took >= grace {
		t.Fatalf("shutdown took %s, more than its grace of %s", took, grace)
	}
	if errors.Is(sctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("shutdown returned after its deadline (%s)", took)
	}
}
