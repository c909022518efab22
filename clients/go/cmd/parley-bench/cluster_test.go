package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/servertest"
)

// testCluster starts two parleyd nodes of one cluster in this process:
// one SQLite data directory, the machine's NATS (or PARLEY_TEST_NATS_URL)
// on a subject of their own, one token secret (also written to the
// returned file), and a metrics listener each. It makes the accounts
// bench-c-0 .. bench-c-(users-1).
func testCluster(t *testing.T, users int) (nodes []*servertest.Server, secretFile string) {
	t.Helper()
	natsURL := os.Getenv("PARLEY_TEST_NATS_URL")
	if natsURL == "" {
		natsURL = "nats://127.0.0.1:4222"
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	sub := make([]byte, 6)
	rand.Read(sub)
	dir := t.TempDir()
	secretFile = filepath.Join(t.TempDir(), "jwt.secret")
	if err := os.WriteFile(secretFile, []byte(hex.EncodeToString(secret)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		nodes = append(nodes, servertest.Start(t, servertest.Options{DataDir: dir, Configure: func(c *server.Config) {
			c.RateLimits = unlimitedRates
			c.NATSURL, c.NATSSubject = natsURL, "parley.benchtest."+hex.EncodeToString(sub)
			c.JWTSecret = secret
			c.MetricsAddr = "127.0.0.1:0"
		}}))
	}
	for i := range users {
		nodes[0].TokenAs(t, fmt.Sprintf("bench-c-%d", i), chatv1.Role_ROLE_USER) // makes the account
	}
	return nodes, secretFile
}

// clusterArgs are the address, pid and metrics lists of nodes, and the
// minted tokens' flags.
func clusterArgs(nodes []*servertest.Server, secretFile string) []string {
	var g, h, m, p []string
	for _, n := range nodes {
		g, h, m = append(g, n.GRPCAddr()), append(h, n.HTTPAddr()), append(m, n.MetricsAddr())
		p = append(p, strconv.Itoa(os.Getpid()))
	}
	return []string{"--grpc-addr", strings.Join(g, ","), "--http-addr", strings.Join(h, ","), "--metrics-addr", strings.Join(m, ","),
		"--server-pid", strings.Join(p, ","), "--jwt-secret-file", secretFile, "--users-prefix", "bench-c-", "--quiet"}
}

func runJSON(t *testing.T, args ...string) report {
	t.Helper()
	var out, errb bytes.Buffer
	if code := run(args, &out, &errb); code != 0 {
		t.Fatalf("parley-bench %v exited %d\n%s\n%s", args, code, out.String(), errb.String())
	}
	var r report
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("%v: %q", err, out.String())
	}
	return r
}

// TestClusterRooms runs the rooms workload on two nodes with both
// placements: every message arrives once, a local room's deliveries are
// all made on its node, a cross one's partly on the other, and each node
// reports its NATS counters and its share.
func TestClusterRooms(t *testing.T) {
	nodes, secretFile := testCluster(t, 8)
	for _, placement := range []string{placeLocal, placeCross} {
		t.Run(placement, func(t *testing.T) {
			args := append([]string{"rooms", "--transport", "ws-binary", "--rooms", "2", "--members", "4", "--publishers", "2",
				"--rate", "50", "--messages", "50", "--p99", "0", "--settle", "300ms", "--deadline", "40s", "--placement", placement},
				clusterArgs(nodes, secretFile)...)
			r := runJSON(t, args...)
			if !r.OK || r.Received != r.Expected || r.Expected != 2*2*50*4 {
				t.Fatalf("report %+v", r)
			}
			if len(r.Nodes) != 2 || r.Server == nil || len(r.Server.PIDs) != 2 {
				t.Fatalf("nodes %+v, server %+v", r.Nodes, r.Server)
			}
			var received int64
			for _, n := range r.Nodes {
				received += n.Received
				p := n.Phase
				if p == nil || p.Error != "" || p.NATSMsgs <= 0 || p.NATSBytes <= 0 || p.Subscriptions <= 0 {
					t.Fatalf("node %d phase %+v", n.Node, p)
				}
				if p.Commits <= 0 || p.MsgsPerCommit <= 0 || p.CommitMeanMs <= 0 {
					t.Errorf("node %d: no store commits in %+v", n.Node, *p)
				}
				if n.Conns != 4 || n.Sent+r.Nodes[1-n.Node].Sent != r.Sent {
					t.Errorf("node %d: %d connections, sent %d of %d", n.Node, n.Conns, n.Sent, r.Sent)
				}
			}
			if received != r.Received || r.ReceivedSameNode+r.ReceivedCrossNode != r.Received {
				t.Errorf("received %d: per node sum %d, same node %d + cross %d", r.Received, received, r.ReceivedSameNode, r.ReceivedCrossNode)
			}
			switch placement {
			case placeLocal:
				// Room r is node r's alone: no delivery crosses, and a node
				// gets from NATS at most its own rooms' events (its echoes)
				// and the cluster's heartbeats, not the other room's.
				if r.ReceivedCrossNode != 0 {
					t.Errorf("local: %d cross-node deliveries", r.ReceivedCrossNode)
				}
				for _, n := range r.Nodes {
					if n.Rooms != 1 || n.SentElsewhere != 100 || n.Phase.NATSMsgs >= float64(n.SentOwnRooms+n.SentElsewhere/2) {
						t.Errorf("local: node %d: %d rooms; NATS %v msgs, its rooms' messages %d, the other's %d", n.Node, n.Rooms, n.Phase.NATSMsgs, n.SentOwnRooms, n.SentElsewhere)
					}
				}
			case placeCross:
				// Each room's two receivers are on the other node.
				if r.ReceivedCrossNode != 2*2*50*2 {
					t.Errorf("cross: %d cross-node deliveries, want %d", r.ReceivedCrossNode, 2*2*50*2)
				}
				for _, n := range r.Nodes {
					if n.Rooms != 2 || n.SentElsewhere != 0 {
						t.Errorf("cross: node %d: %d rooms, %d messages elsewhere", n.Node, n.Rooms, n.SentElsewhere)
					}
				}
			}
		})
	}
}

// TestClusterIdle holds connections spread over two nodes, as two bench
// processes would (the second is stood in for by a file in the sync
// directory), and reports each node's connect and rest phases.
func TestClusterIdle(t *testing.T) {
	nodes, secretFile := testCluster(t, 4)
	sync := t.TempDir()
	for _, name := range []string{"connected", "held"} {
		if err := os.WriteFile(filepath.Join(sync, name+".other"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	args := append([]string{"idle", "--transport", "ws-binary", "--conns", "4", "--duration", "1200ms", "--deadline", "30s",
		"--sync-dir", sync, "--sync-n", "2"}, clusterArgs(nodes, secretFile)...)
	r := runJSON(t, args...)
	if !r.OK || r.Conns != 4 || len(r.Nodes) != 2 {
		t.Fatalf("report %+v", r)
	}
	for _, n := range r.Nodes {
		if n.Conns != 2 || n.Connect == nil || n.Phase == nil || n.Phase.Error != "" || n.Phase.Seconds < 1.2 {
			t.Fatalf("node %+v", n)
		}
		// Every node heartbeats every second: the other's reach it at rest.
		if n.Phase.NATSMsgs <= 0 || n.Phase.Subscriptions <= 0 {
			t.Errorf("node %d at rest: %+v", n.Node, *n.Phase)
		}
	}
	if r.Server == nil || r.Server.RSSPerConnKiB != 0 {
		t.Errorf("per-connection RSS with other processes' connections on the nodes: %+v", r.Server)
	}
	// One process alone does not pass a barrier of two.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if err := barrier(ctx, sync, "alone", 2); err == nil {
		t.Error("a barrier of 2 passed with one process")
	}
}

func TestMemberNode(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		placement             string
		nodes, r, k, pubs, is int
	}{
		{placeLocal, 1, 5, 3, 2, 0}, {placeCross, 1, 5, 3, 2, 0},
		{placeLocal, 3, 4, 0, 2, 1}, {placeLocal, 3, 4, 9, 2, 1},
		{placeCross, 3, 4, 1, 2, 1}, {placeCross, 3, 4, 2, 2, 2}, {placeCross, 3, 5, 9, 2, 0},
	} {
		if got := memberNode(tc.placement, tc.nodes, tc.r, tc.k, tc.pubs); got != tc.is {
			t.Errorf("memberNode(%+v) = %d", tc, got)
		}
	}
}

func TestClusterFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"rooms", "--grpc-addr", "127.0.0.1:1,127.0.0.1:2", "--http-addr", "127.0.0.1:3"},
		{"rooms", "--grpc-addr", "127.0.0.1:1,127.0.0.1:2", "--http-addr", "127.0.0.1:3,127.0.0.1:4", "--server-pid", "1"},
		{"rooms", "--grpc-addr", "127.0.0.1:1,127.0.0.1:2", "--http-addr", "127.0.0.1:3,127.0.0.1:4", "--placement", "cross"},
		{"idle", "--grpc-addr", "127.0.0.1:1,127.0.0.1:2", "--http-addr", "127.0.0.1:3,127.0.0.1:4", "--connect-nodes", "2"},
		{"rooms", "--grpc-addr", "127.0.0.1:1,10.0.0.1:2", "--http-addr", "127.0.0.1:3,127.0.0.1:4"},
	} {
		var errb bytes.Buffer
		if code := run(args, &bytes.Buffer{}, &errb); code != 2 {
			t.Errorf("%v exited %d: %s", args, code, errb.String())
		}
	}
}

// TestMintParley connects with tokens parley-bench signs with the
// server's secret file, and not with another secret's.
func TestMintParley(t *testing.T) {
	t.Parallel()
	secret := make([]byte, 32)
	rand.Read(secret)
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
		c.RateLimits, c.JWTSecret = unlimitedRates, secret
	}})
	for i := range 2 {
		srv.TokenAs(t, fmt.Sprintf("bench-m-%d", i), chatv1.Role_ROLE_USER)
	}
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good"), filepath.Join(dir, "bad")
	if err := os.WriteFile(good, []byte(hex.EncodeToString(secret)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte(strings.Repeat("ab", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	args := func(file string) []string {
		return []string{"idle", "--transport", "ws-binary,grpc", "--conns", "2", "--duration", "10ms", "--deadline", "10s", "--quiet",
			"--grpc-addr", srv.GRPCAddr(), "--http-addr", srv.HTTPAddr(), "--jwt-secret-file", file, "--users-prefix", "bench-m-"}
	}
	var errb bytes.Buffer
	if code := run(args(good), &bytes.Buffer{}, &errb); code != 0 {
		t.Fatalf("tokens signed with the server's secret: exit %d: %s", code, errb.String())
	}
	if code := run(args(bad), &bytes.Buffer{}, &bytes.Buffer{}); code != 1 {
		t.Fatalf("tokens signed with another secret: exit %d, want 1", code)
	}
}

// TestAuxSample measures this process by pid and by command name while
// it burns some CPU.
func TestAuxSample(t *testing.T) {
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	tg := target{auxPIDs: map[string]int{"me": os.Getpid()}, auxComms: []string{strings.TrimSpace(string(comm))}}
	a := auxSample(tg)
	for end := time.Now().Add(150 * time.Millisecond); time.Now().Before(end); {
	}
	d := diffAux(a, auxSample(tg))
	// The two samples are read one after the other, so the name's sum may
	// trail the pid's by a clock tick or two (/proc counts 10 ms ticks).
	if d["me"] <= 0 || d[strings.TrimSpace(string(comm))] < d["me"]-0.03 {
		t.Fatalf("aux CPU %v", d)
	}
	if diffAux(nil, a) != nil || auxSample(target{}) != nil {
		t.Fatal("aux figures without aux processes")
	}
}
