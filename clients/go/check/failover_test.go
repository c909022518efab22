package check_test

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/clients/go/check"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/servertest"
)

// door is a TCP forwarder to one server that can be shut: its listener
// and every connection through it close, and new connections are refused,
// as if the node behind it had been killed.
type door struct {
	ln net.Listener

	mu    sync.Mutex
	conns []net.Conn
	shut  bool
}

func openDoor(t *testing.T, target string) *door {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &door{ln: ln}
	t.Cleanup(d.close)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			d.mu.Lock()
			if d.shut {
				d.mu.Unlock()
				c.Close()
				s.Close()
				return
			}
			d.conns = append(d.conns, c, s)
			d.mu.Unlock()
			go func() { io.Copy(s, c); s.Close() }()
			go func() { io.Copy(c, s); c.Close() }()
		}
	}()
	return d
}

func (d *door) addr() string { return d.ln.Addr().String() }

func (d *door) close() {
	d.ln.Close()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.shut = true
	for _, c := range d.conns {
		c.Close()
	}
	d.conns = nil
}

// TestFailover: members spread over two addresses (two doors to one
// server, so that delivery does not depend on a cluster) move to the
// other when theirs is shut under load, resume there and lose nothing.
// A third address that never answers leaves its members to start on the
// next one.
func TestFailover(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
		c.RateLimits = "message=unlimited,join=unlimited,connect=unlimited,other=unlimited"
	}})
	a, b := openDoor(t, srv.GRPCAddr()), openDoor(t, srv.GRPCAddr())
	dead := openDoor(t, srv.GRPCAddr())
	dead.close()

	cfg := check.Config{
		Addrs:      []string{a.addr(), b.addr(), dead.addr()},
		Publishers: 3, Subscribers: 3, Rooms: 2, DMs: true,
		Duration: 3 * time.Second, Rate: 20, SendTimeout: 20 * time.Second, Settle: 10 * time.Second,
		Published: func() {
			time.Sleep(300 * time.Millisecond)
			a.close()
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	rep, err := check.Check(ctx, cfg)
	if err != nil {
		t.Fatalf("check: %v (report %+v)", err, rep)
	}
	t.Logf("%+v", *rep)
	if !rep.OK {
		t.Errorf("acked lost %d, duplicated %d, reordered %d, live gaps %d, history gaps %d, stored duplicates %d",
			rep.AckedLost, rep.Duplicated, rep.Reordered, rep.LiveGaps, rep.HistoryGaps, rep.StoredDuplicates)
	}
	na, nb, nd := rep.Nodes[0], rep.Nodes[1], rep.Nodes[2]
	// Subscribers start on a, b, dead; publishers on b, dead, a.
	if na.Members != 2 || nb.Members != 2 || nd.Members != 2 {
		t.Errorf("members per node %d, %d, %d; want 2 each", na.Members, nb.Members, nd.Members)
	}
	// The dead address's members start on a; a's (its own and those) all
	// move to b, the next address that answers.
	if nd.Sessions != 0 || na.Sessions != 4 || na.Reconnects != 0 {
		t.Errorf("sessions on dead %d, on a %d (reconnects %d); want 0, 4 (0)", nd.Sessions, na.Sessions, na.Reconnects)
	}
	if nb.FailedOver < 4 {
		t.Errorf("%d sessions failed over to b; want the 4 from a", nb.FailedOver)
	}
	if na.Acked == 0 || nb.Acked == 0 || na.LiveDeliveries == 0 || nb.LiveDeliveries == 0 {
		t.Errorf("acks %d, %d, live deliveries %d, %d; want some on both", na.Acked, nb.Acked, na.LiveDeliveries, nb.LiveDeliveries)
	}
	if rep.Reconnects < 4 {
		t.Errorf("%d reconnects; want at least the 4 from a", rep.Reconnects)
	}
}
