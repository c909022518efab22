package check_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testenv"

	"github.com/parleychat/parley/clients/go/check"
	"github.com/parleychat/parley/clients/go/parley"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// clusterEnv is what the nodes of one test cluster share: a fresh
// PostgreSQL schema, a NATS subject prefix and the token secret.
type clusterEnv struct {
	dbURL, natsURL, subject, secretFile string
}

func newClusterEnv(t *testing.T) clusterEnv {
	t.Helper()
	secret := make([]byte, 32)
	rand.Read(secret)
	secretFile := filepath.Join(t.TempDir(), "jwt.secret")
	if err := os.WriteFile(secretFile, []byte(hex.EncodeToString(secret)), 0o600); err != nil {
		t.Fatal(err)
	}
	return clusterEnv{dbURL: testenv.PostgresSchema(t, "parley_check_"), natsURL: testenv.NATSURL(), subject: testenv.Unique("parley.test.check."), secretFile: secretFile}
}

func (e clusterEnv) args() []string {
	return []string{"--database-url", e.dbURL, "--nats-url", e.natsURL, "--nats-subject", e.subject, "--jwt-secret-file", e.secretFile}
}

// TestClusterNodeKill9: one of three nodes is killed with SIGKILL under
// load and stays down. Its clients fail over to the others and resume;
// nothing acknowledged is lost, duplicated or reordered, with the SDK's
// repair of live gaps off (the server's stream itself). A user of the dead
// node is out of the others' presence within 5 s.
func TestClusterNodeKill9(t *testing.T) {
	env := newClusterEnv(t)
	nodes := make([]*parleyd, 3)
	var addrs []string
	for i := range nodes {
		nodes[i] = newParleydArgs(t, env.args()...)
		addrs = append(addrs, nodes[i].addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// A watcher on node 0 and a user on node 2, which will die.
	watch := connectUser(ctx, t, nodes[0].addr, "watcher")
	ghost := connectUser(ctx, t, nodes[2].addr, "ghost")
	_ = ghost
	waitPresence(t, watch, "ghost", true, 10*time.Second)

	killed := make(chan time.Time, 1)
	gone := make(chan time.Duration, 1)
	go func() {
		at := <-killed
		waitPresence(t, watch, "ghost", false, 30*time.Second)
		gone <- time.Since(at)
	}()
	rep, err := check.Check(ctx, check.Config{
		Addrs: addrs, Publishers: 6, Subscribers: 3, Rooms: 2, DMs: true,
		Duration: 6 * time.Second, Rate: 40, SendTimeout: 30 * time.Second, Settle: 10 * time.Second,
		ServerOnly: true,
		Published: func() {
			time.Sleep(time.Second)
			if _, err := nodes[2].signal(syscall.SIGKILL, 5*time.Second); err != nil {
				t.Logf("kill: %v", err)
			}
			killed <- time.Now()
		},
	})
	if err != nil {
		t.Fatalf("check: %v (report %+v)", err, rep)
	}
	t.Logf("%+v", *rep)
	failedOver := 0
	for _, n := range rep.Nodes {
		failedOver += n.FailedOver
	}
	if failedOver == 0 {
		t.Error("no client failed over: the kill did not reach them")
	}
	if !rep.OK {
		t.Errorf("after kill -9 of a node: acked lost %d (deliveries %d, history %d), duplicated %d, reordered %d, live gaps %d, history gaps %d",
			rep.AckedLost, rep.LostDeliveries, rep.LostFromHistory, rep.Duplicated, rep.Reordered, rep.LiveGaps, rep.HistoryGaps)
	}
	select {
	case d := <-gone:
		t.Logf("the dead node's user left presence after %v", d.Round(10*time.Millisecond))
		if d > 5*time.Second {
			t.Errorf("the dead node's user stayed online %v, want under 5s", d)
		}
	case <-ctx.Done():
		t.Fatal("the dead node's user never went offline")
	}
}

func connectUser(ctx context.Context, t *testing.T, addr, name string) *parley.Session {
	t.Helper()
	anon, err := parley.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { anon.Close() })
	tok, err := anon.Register(ctx, name, "parley-check-password")
	if err != nil {
		t.Fatal(err)
	}
	c, err := parley.Dial(ctx, addr, parley.WithToken(tok.AccessToken))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := c.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitPresence reads s's events until name comes online (or goes
// offline), in either the lone or the gathered form.
func waitPresence(t *testing.T, s *parley.Session, name string, online bool, limit time.Duration) {
	deadline := time.After(limit)
	has := func(us []*chatv1.User) bool {
		for _, u := range us {
			if u.GetUsername() == name {
				return true
			}
		}
		return false
	}
	for {
		select {
		case ev, ok := <-s.Events():
			if !ok {
				t.Errorf("session ended waiting for %s online=%v", name, online)
				return
			}
			if online && (ev.GetUserOnline().GetUser().GetUsername() == name || has(ev.GetPresenceChanged().GetOnline()) || has(ev.GetOnlineUsers().GetUsers())) {
				return
			}
			if !online && (ev.GetUserOffline().GetUser().GetUsername() == name || has(ev.GetPresenceChanged().GetOffline())) {
				return
			}
		case <-deadline:
			t.Errorf("%s online=%v not seen within %v", name, online, limit)
			return
		}
	}
}

// natsServer is a private nats-server process on a port of its own, which
// the test may kill and start again (the machine's NATS is not touched).
type natsServer struct {
	t    *testing.T
	port string
	cmd  *exec.Cmd
}

func startNATS(t *testing.T, port string) *natsServer {
	t.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		bin = "/usr/sbin/nats-server"
	}
	n := &natsServer{t: t, port: port}
	n.cmd = exec.Command(bin, "-a", "127.0.0.1", "-p", port)
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
			c.Close()
			break
		}
		if time.Now().After(end) {
			t.Fatal("nats-server did not listen")
		}
	}
	t.Cleanup(n.kill)
	return n
}

func (n *natsServer) kill() {
	if n.cmd != nil {
		n.cmd.Process.Kill()
		n.cmd.Wait()
		n.cmd = nil
	}
}

// TestClusterNATSOutage: the NATS server that joins three nodes is killed
// under load and started again 4 s later. Each node serves its own
// clients meanwhile; once back, every node catches up from the store, so
// nothing acknowledged is lost, duplicated or reordered, with the SDK's
// repair of live gaps off, and no healthy client is dropped.
func TestClusterNATSOutage(t *testing.T) {
	env := newClusterEnv(t)
	_, port, _ := net.SplitHostPort(freePort(t))
	nats := startNATS(t, port)
	env.natsURL = "nats://127.0.0.1:" + port
	var addrs []string
	for range 3 {
		addrs = append(addrs, newParleydArgs(t, env.args()...).addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rep, err := check.Check(ctx, check.Config{
		Addrs: addrs, Publishers: 6, Subscribers: 3, Rooms: 2, DMs: true,
		Duration: 8 * time.Second, Rate: 40, SendTimeout: 30 * time.Second, Settle: 10 * time.Second,
		ServerOnly: true,
		Published: func() {
			time.Sleep(time.Second)
			nats.kill()
			time.Sleep(4 * time.Second)
			startNATS(t, port)
		},
	})
	if err != nil {
		t.Fatalf("check: %v (report %+v)", err, rep)
	}
	t.Logf("%+v", *rep)
	if !rep.OK {
		t.Errorf("across a NATS outage: acked lost %d (deliveries %d, history %d), duplicated %d, reordered %d, live gaps %d, history gaps %d",
			rep.AckedLost, rep.LostDeliveries, rep.LostFromHistory, rep.Duplicated, rep.Reordered, rep.LiveGaps, rep.HistoryGaps)
	}
	if rep.Reconnects != 0 {
		t.Errorf("%d sessions were lost across the outage; a NATS outage must not drop clients", rep.Reconnects)
	}
	if rep.ReplayedDeliveries == 0 {
		t.Error("nothing was caught up: the outage did not cut the nodes off")
	}
}
