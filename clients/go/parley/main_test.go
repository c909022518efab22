package parley_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parleychat/parley/clients/go/parley"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/servertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Started by the server side (the SQLite pool and improbable-eng's
		// grpc-web timer), not by the SDK.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
		goleak.IgnoreTopFunction("github.com/desertbit/timer.timerRoutine"),
	)
}

// waitFor bounds how long a test waits for something that must happen; a
// liveness guard, not a performance assertion.
const waitFor = 15 * time.Second

const password = "correct horse battery"

// dial returns a client for srv, closed when the test ends.
func dial(t testing.TB, addr string, opts ...parley.Option) *parley.Client {
	t.Helper()
	c, err := parley.Dial(t.Context(), addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// register creates a user through the SDK and returns a client that keeps
// its tokens fresh.
func register(t testing.TB, srv *servertest.Server, name string) *parley.Client {
	t.Helper()
	tok, err := dial(t, srv.GRPCAddr()).Register(t.Context(), name, password)
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	return dial(t, srv.GRPCAddr(), parley.WithAutoRefresh(tok, nil))
}

// connect opens a session, closed when the test ends, and reads past the
// connect-time restore.
func connect(t testing.TB, c *parley.Client) *parley.Session {
	t.Helper()
	s, err := c.Connect(context.Background())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	next(t, s.Events(), isRestored)
	return s
}

// next returns the first event on ch that matches, discarding the others.
func next(t testing.TB, ch <-chan *chatv1.ServerEvent, match func(*chatv1.ServerEvent) bool) *chatv1.ServerEvent {
	t.Helper()
	timeout := time.After(waitFor)
	var seen []string
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("events closed while waiting; saw %v", seen)
			}
			if match(ev) {
				return ev
			}
			seen = append(seen, fmt.Sprintf("%T", ev.GetEvent()))
		case <-timeout:
			t.Fatalf("no matching event within %s; saw %v", waitFor, seen)
		}
	}
}

func isRestored(ev *chatv1.ServerEvent) bool { return ev.GetStateRestored() != nil }

func textIs(text string) func(*chatv1.ServerEvent) bool {
	return func(ev *chatv1.ServerEvent) bool { return ev.GetMessage().GetText() == text }
}
