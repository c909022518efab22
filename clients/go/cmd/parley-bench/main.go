// Command parley-bench is Parley's load generator. It speaks native gRPC,
// gRPC-Web over WebSocket, /ws (JSON and binary) and, for comparison, the
// Socket.IO reference server in clients/go/bench/socketio, and runs the
// workloads of issue 4: fan-out, many small rooms, idle connections and a
// connect storm, plus a smoke check for CI.
//
// Every message carries its publisher, a per-publisher sequence and the
// time it was due; receivers count loss, duplicates, reordering and
// latency. With the server's pid, /proc gives its CPU time and memory.
// Each run prints one JSON line on stdout and a summary on stderr.
//
// It only connects to loopback addresses, and every run ends by its
// --deadline.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"
)

const usage = `parley-bench: load generator for Parley (and the Socket.IO reference)

usage: parley-bench <workload> [flags]

workloads:
  fanout   R rooms x N members; the first P members of each room publish M msg/s
           each. --rate takes a list (100,200,400): one step per rate on the
           same connections, to find the knee (p99 <= --p99, no loss).
  rooms    many small rooms, every member publishing (200 x 10 at 1 msg/s)
  idle     hold C connections for D; server RSS per connection (--server-pid)
  storm    W users connect, wait for the first server event, disconnect, again
           and again: connections per second including token verification
  smoke    CI check: 1 room x 20 members, 1 publisher, 200 messages over every
           Parley transport; exits 1 unless every message arrived exactly once,
           in order. No timing assertions.
  tokens   register N users (--n) and write them to --tokens for later runs

--transport takes one or more of grpc, grpcweb, ws-json, ws-binary, socketio;
with several, the same workload runs on each in turn and a side-by-side table
follows.

The server must not rate-limit the benchmark. Start parleyd with
  --rate-limits message=unlimited,join=unlimited,connect=unlimited,other=unlimited,typing=unlimited
(the connect limit is per client IP, and every bench connection comes from
127.0.0.1). Users are registered with Auth.Register (an argon2 hash each,
about 30 ms of server CPU), before the measured phase and reported apart as
setup; --tokens FILE keeps them for later runs (tokens last --access-ttl).
For RSS figures, register first (parley-bench tokens), restart the server,
then run with --tokens, so that hashing memory does not count.

Several nodes of one cluster: list them in --grpc-addr and --http-addr (and
--server-pid, --metrics-addr) in the same order. fanout and rooms place room
r's members by --placement (local: all on node r mod N; cross: its publishers
there, its other members on the next node) and report latency for
deliveries on the sender's node and across nodes; idle and storm spread the
users round-robin (--connect-nodes: over some of them). Every report then
has each node's connections, CPU-us per delivery and, from its /metrics
before and after the phase, the NATS events and bytes it received. With
--jwt-secret-file (the nodes' secret), tokens are signed for existing
accounts PREFIX<i> (--users-prefix, --users-offset) instead of registering.

The Socket.IO reference verifies HS256 tokens signed with its JWT_SECRET:
pass the same secret in --sio-secret or PARLEY_BENCH_SIO_SECRET.

flags:
`

// options are the parsed flags.
type options struct {
	ep                      endpoints // the first node, and the Socket.IO server
	grpcAddrs, httpAddrs    []string  // every node
	nodes                   []endpoints
	transports              []string
	serverPIDs              []int
	sioPID                  int
	metricsAddrs            []string
	placement               string
	connectNodes            []int
	syncDir                 string
	syncN                   int
	secretFile, usersPrefix string
	usersOffset             int
	auxPIDs                 map[string]int
	auxComms                []string
	sioSecret               string
	tokensFile              string
	registerConc, connConc  int
	deadline                time.Duration
	quiet                   bool
	cpuProfile              string
	rooms, members, pubs    int
	rates                   []float64
	size, messages          int
	duration, settle, drain time.Duration
	p99                     time.Duration
	keepGoing               bool
	conns, workers, n       int
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, usage)
		newFlags("fanout", &options{}).PrintDefaults()
		return 2
	}
	workload := args[0]
	var o options
	fs := newFlags(workload, &o)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if err := o.finish(fs, workload); err != nil {
		fmt.Fprintln(stderr, "parley-bench:", err)
		return 2
	}

	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(stderr, "parley-bench:", err)
			return 2
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.deadline)
	defer cancel()

	runID := newRunID()
	reg := &registrar{addr: o.ep.grpcAddr, run: runID, concurrency: o.registerConc, file: o.tokensFile}
	var tokens tokenSource = reg
	if o.secretFile != "" {
		secret, err := readSecretFile(o.secretFile)
		if err != nil {
			fmt.Fprintln(stderr, "parley-bench:", err)
			return 2
		}
		tokens = parleyMinter{secret: secret, prefix: o.usersPrefix, offset: o.usersOffset, ttl: 12 * time.Hour, issuer: "parley", audience: "parley"}
	}
	targetFor := func(tr string) target {
		t := target{transport: tr, nodes: o.nodes, pids: o.serverPIDs, tokens: tokens, run: runID, concurrency: o.connConc,
			metricsAddrs: o.metricsAddrs, placement: o.placement, connectNodes: o.connectNodes, syncDir: o.syncDir, syncN: o.syncN,
			auxPIDs: o.auxPIDs, auxComms: o.auxComms}
		if tr == trSocketIO {
			t.nodes, t.pids, t.metricsAddrs = []endpoints{o.ep}, []int{o.sioPID}, nil
			t.tokens, t.connectNodes = minter{secret: []byte(o.sioSecret), run: runID}, nil
		}
		return t
	}
	emit := func(r report) {
		b, _ := json.Marshal(r)
		fmt.Fprintln(stdout, string(b))
		if !o.quiet {
			fmt.Fprintln(stderr, summary(r))
		}
	}

	if workload == "tokens" {
		start := time.Now()
		us, err := reg.users(ctx, o.n)
		if err != nil {
			fmt.Fprintln(stderr, "parley-bench:", err)
			return 1
		}
		fmt.Fprintf(stderr, "%d users in %s (%.1f s)\n", len(us), o.tokensFile, time.Since(start).Seconds())
		return 0
	}

	var results [][]report
	ok := true
	for _, tr := range o.transports {
		t := targetFor(tr)
		var reps []report
		switch workload {
		case "fanout", "rooms":
			reps = runFanout(ctx, t, o.fanoutSpec(workload), emit)
			if k := knee(reps); k != nil && len(reps) > 1 {
				fmt.Fprintf(stderr, "%s knee: %.0f msg/s per publisher, %.0f deliveries/s (p99 %.1f ms, no loss)\n",
					tr, k.Rate, k.DeliveredPerS, k.Latency.P99)
			}
		case "idle":
			reps = []report{runIdle(ctx, t, o.conns, o.duration, emit)}
		case "storm":
			reps = []report{runStorm(ctx, t, o.workers, o.conns, o.duration, emit)}
		case "smoke":
			sp := smokeSpec(o.members, o.messages)
			reps = runFanout(ctx, t, sp, emit)
			if err := smokeCheck(reps, sp); err != nil {
				fmt.Fprintf(stderr, "SMOKE FAIL %s: %v\n", tr, err)
				ok = false
			} else {
				fmt.Fprintf(stderr, "smoke ok %s: %d of %d delivered exactly once, in order\n", tr, reps[0].Received, reps[0].Expected)
			}
		}
		results = append(results, reps)
		if workload == "fanout" && len(o.rates) > 1 {
			ok = ok && knee(reps) != nil // a sweep is meant to end in a failed step
		} else {
			for _, r := range reps {
				ok = ok && r.OK
			}
		}
		if ctx.Err() != nil {
			break
		}
	}
	if len(results) > 1 {
		fmt.Fprint(stderr, sideBySide(results))
	}
	if !ok {
		return 1
	}
	return 0
}

func newFlags(workload string, o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("parley-bench "+workload, flag.ContinueOnError)
	o.grpcAddrs, o.httpAddrs = []string{"127.0.0.1:50051"}, []string{"127.0.0.1:8080"}
	list := func(dst *[]string) func(string) error {
		return func(s string) error { *dst = splitList(s); return nil }
	}
	fs.Func("grpc-addr", "Parley native gRPC address (loopback only); a comma-separated list for the nodes of a cluster (default 127.0.0.1:50051)", list(&o.grpcAddrs))
	fs.Func("http-addr", "Parley HTTP address, gRPC-Web and /ws (loopback only); a list for a cluster, in the order of --grpc-addr (default 127.0.0.1:8080)", list(&o.httpAddrs))
	fs.StringVar(&o.placement, "placement", placeLocal, "fanout, rooms on several nodes: local (room r's members all on node r mod N) or cross (its publishers on node r mod N, its other members on the next node)")
	fs.Func("connect-nodes", "idle, storm: connect only to these nodes (indices into the address lists), while every listed node is measured", func(s string) error {
		o.connectNodes = nil
		for _, f := range splitList(s) {
			v, err := strconv.Atoi(f)
			if err != nil || v < 0 {
				return fmt.Errorf("bad node index %q", f)
			}
			o.connectNodes = append(o.connectNodes, v)
		}
		return nil
	})
	fs.Func("aux-pids", "NAME=PID,...: processes around the servers (e.g. nats-server=1234) whose CPU each phase reports", func(s string) error {
		o.auxPIDs = map[string]int{}
		for _, f := range splitList(s) {
			name, v, ok := strings.Cut(f, "=")
			pid, err := strconv.Atoi(v)
			if !ok || name == "" || err != nil || pid <= 0 {
				return fmt.Errorf("bad NAME=PID %q", f)
			}
			o.auxPIDs[name] = pid
		}
		return nil
	})
	fs.Func("aux-comms", "command names (e.g. postgres): every process of that name, at each sample, counts in the phase's aux CPU", list(&o.auxComms))
	fs.StringVar(&o.syncDir, "sync-dir", "", "idle: with --sync-n, a directory where several bench processes meet: they start the hold once all are connected, and close once all held")
	fs.IntVar(&o.syncN, "sync-n", 0, "idle: the number of bench processes meeting in --sync-dir")
	fs.StringVar(&o.secretFile, "jwt-secret-file", "", "sign tokens with the nodes' HS256 secret file instead of registering users; the accounts --users-prefix N must exist")
	fs.StringVar(&o.usersPrefix, "users-prefix", "bench-", "with --jwt-secret-file: accounts are named PREFIX<i>")
	fs.IntVar(&o.usersOffset, "users-offset", 0, "with --jwt-secret-file: the first account's index")
	fs.StringVar(&o.ep.sioAddr, "sio-addr", "127.0.0.1:3000", "Socket.IO reference server address (loopback only)")
	fs.Func("transport", "comma-separated: grpc, grpcweb, ws-json, ws-binary, socketio (default ws-binary; smoke: the four Parley ones)", func(s string) error {
		o.transports = splitList(s)
		return nil
	})
	fs.Func("server-pid", "parleyd's pid, for CPU and RSS figures from /proc; a list for a cluster, in node order (sums and per-node figures)", func(s string) error {
		o.serverPIDs = nil
		for _, f := range splitList(s) {
			v, err := strconv.Atoi(f)
			if err != nil || v <= 0 {
				return fmt.Errorf("bad pid %q", f)
			}
			o.serverPIDs = append(o.serverPIDs, v)
		}
		return nil
	})
	fs.Func("metrics-addr", "parleyd's metrics listener (e.g. 127.0.0.1:9090), a list for a cluster: NATS events received per node before and after each phase; idle on one node: live heap and goroutines per connection (forces a GC)", list(&o.metricsAddrs))
	fs.IntVar(&o.sioPID, "sio-pid", 0, "the Socket.IO server's pid (node), for its CPU and RSS figures")
	fs.StringVar(&o.sioSecret, "sio-secret", os.Getenv("PARLEY_BENCH_SIO_SECRET"), "the Socket.IO server's JWT_SECRET (default $PARLEY_BENCH_SIO_SECRET)")
	fs.StringVar(&o.tokensFile, "tokens", "", "file of registered users to reuse (and to add newly registered ones to)")
	fs.IntVar(&o.registerConc, "register-concurrency", 4, "parallel Auth.Register calls during setup")
	fs.IntVar(&o.connConc, "concurrency", 32, "parallel connection attempts")
	fs.DurationVar(&o.deadline, "deadline", 60*time.Second, "hard deadline for the whole invocation, setup included")
	fs.BoolVar(&o.quiet, "quiet", false, "print only the JSON lines")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write the bench's own CPU profile to this file")

	d := defaultsFor(workload)
	fs.IntVar(&o.rooms, "rooms", d.rooms, "fanout, rooms: number of rooms")
	fs.IntVar(&o.members, "members", d.members, "fanout, rooms, smoke: members per room (each its own user and connection)")
	fs.IntVar(&o.pubs, "publishers", d.pubs, "fanout, rooms: publishers per room, among its members (0: all)")
	fs.Func("rate", fmt.Sprintf("fanout, rooms, smoke: msg/s per publisher; a list runs one step per rate (default %g)", d.rate), func(s string) error {
		for _, f := range splitList(s) {
			v, err := strconv.ParseFloat(f, 64)
			if err != nil || v <= 0 {
				return fmt.Errorf("bad rate %q", f)
			}
			o.rates = append(o.rates, v)
		}
		return nil
	})
	fs.IntVar(&o.size, "size", 128, "fanout, rooms: message text size in bytes")
	fs.IntVar(&o.messages, "messages", d.messages, "fanout, rooms, smoke: messages per publisher and step (0: rate x duration)")
	fs.DurationVar(&o.duration, "duration", d.duration, "fanout, rooms: publishing time per step; idle: hold time; storm: time limit")
	fs.DurationVar(&o.settle, "settle", time.Second, "fanout, rooms: pause before each step (lets join traffic pass)")
	fs.DurationVar(&o.drain, "drain", 5*time.Second, "fanout, rooms: after publishing, wait this long without new deliveries before counting the rest lost")
	fs.DurationVar(&o.p99, "p99", d.p99, "fanout, rooms: a step with a higher p99 latency fails (0: no limit)")
	fs.BoolVar(&o.keepGoing, "keep-going", false, "fanout: continue the rate sweep after a failed step")
	fs.IntVar(&o.conns, "conns", d.conns, "idle: connections to hold; storm: connections to make in total")
	fs.IntVar(&o.workers, "workers", 50, "storm: users connecting in parallel")
	fs.IntVar(&o.n, "n", 1000, "tokens: users to register")
	return fs
}

// workloadDefaults are the flag defaults that differ by workload.
type workloadDefaults struct {
	rooms, members, pubs, messages, conns int
	rate                                  float64
	duration, p99                         time.Duration
}

func defaultsFor(workload string) workloadDefaults {
	switch workload {
	case "rooms":
		return workloadDefaults{rooms: 200, members: 10, pubs: 0, rate: 1, duration: 20 * time.Second, p99: 20 * time.Millisecond, conns: 1000}
	case "smoke":
		return workloadDefaults{rooms: 1, members: 20, pubs: 1, rate: 200, messages: 200, duration: 10 * time.Second, conns: 1000}
	case "storm":
		return workloadDefaults{rooms: 1, members: 1000, pubs: 1, rate: 100, duration: 20 * time.Second, p99: 250 * time.Millisecond, conns: 2000}
	}
	return workloadDefaults{rooms: 1, members: 1000, pubs: 1, rate: 100, duration: 10 * time.Second, p99: 250 * time.Millisecond, conns: 1000}
}

// finish checks the flags and fills in the workload's defaults.
func (o *options) finish(fs *flag.FlagSet, workload string) error {
	switch workload {
	case "fanout", "rooms", "idle", "storm", "smoke", "tokens":
	default:
		return fmt.Errorf("unknown workload %q (fanout, rooms, idle, storm, smoke, tokens)", workload)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if len(o.transports) == 0 {
		o.transports = []string{trWSBinary}
		if workload == "smoke" {
			o.transports = parleyTransports
		}
	}
	if len(o.rates) == 0 {
		o.rates = []float64{defaultsFor(workload).rate}
	}
	if o.pubs == 0 || o.pubs > o.members {
		o.pubs = o.members
	}
	if len(o.grpcAddrs) != len(o.httpAddrs) || len(o.grpcAddrs) == 0 {
		return fmt.Errorf("--grpc-addr lists %d nodes and --http-addr %d: give both for every node, in the same order", len(o.grpcAddrs), len(o.httpAddrs))
	}
	o.nodes = nil
	for i := range o.grpcAddrs {
		o.nodes = append(o.nodes, endpoints{grpcAddr: o.grpcAddrs[i], httpAddr: o.httpAddrs[i], sioAddr: o.ep.sioAddr})
	}
	o.ep.grpcAddr, o.ep.httpAddr = o.grpcAddrs[0], o.httpAddrs[0]
	n := len(o.nodes)
	switch {
	case len(o.serverPIDs) > 0 && len(o.serverPIDs) != n:
		return fmt.Errorf("--server-pid lists %d pids for %d nodes", len(o.serverPIDs), n)
	case len(o.metricsAddrs) > 0 && len(o.metricsAddrs) != n:
		return fmt.Errorf("--metrics-addr lists %d addresses for %d nodes", len(o.metricsAddrs), n)
	case o.placement != placeLocal && o.placement != placeCross:
		return fmt.Errorf("--placement %q: local or cross", o.placement)
	case o.placement == placeCross && n > 1 && o.pubs >= o.members:
		return errors.New("--placement cross puts a room's publishers on one node and its other members on the next: --publishers must be below --members")
	case o.syncN > 1 && o.syncDir == "":
		return errors.New("--sync-n needs --sync-dir")
	}
	for _, c := range o.connectNodes {
		if c >= n {
			return fmt.Errorf("--connect-nodes %d: only %d nodes", c, n)
		}
	}
	switch {
	case o.rooms < 1 || o.members < 1 || o.conns < 1 || o.workers < 1 || o.n < 1:
		return errors.New("--rooms, --members, --conns, --workers and --n must be positive")
	case o.size < 64 || o.size > 4000:
		return errors.New("--size must be 64..4000 bytes (Parley's limit is 4000)")
	case o.deadline <= 0:
		return errors.New("--deadline must be positive")
	case workload == "tokens" && o.tokensFile == "":
		return errors.New("tokens needs --tokens FILE")
	}
	needParley, needSIO := workload == "tokens", false
	for _, tr := range o.transports {
		if !knownTransport(tr) {
			return fmt.Errorf("unknown transport %q", tr)
		}
		if tr == trSocketIO {
			needSIO = true
		} else {
			needParley = true
		}
	}
	if needParley {
		addrs := append(append(append([]string(nil), o.grpcAddrs...), o.httpAddrs...), o.metricsAddrs...)
		for _, a := range addrs {
			if err := loopbackOnly(a); err != nil {
				return err
			}
		}
	}
	if needSIO {
		if err := loopbackOnly(o.ep.sioAddr); err != nil {
			return err
		}
	}
	return nil
}

func (o *options) fanoutSpec(workload string) fanoutSpec {
	return fanoutSpec{
		workload: workload, rooms: o.rooms, members: o.members, publishers: o.pubs,
		rates: o.rates, size: o.size, duration: o.duration, messages: o.messages,
		settle: o.settle, drain: o.drain, p99Limit: o.p99, keepGoing: o.keepGoing,
	}
}

// smokeSpec is the CI fan-out: one room, one publisher, a fixed count.
func smokeSpec(members, messages int) fanoutSpec {
	return fanoutSpec{
		workload: "smoke", rooms: 1, members: members, publishers: 1, rates: []float64{200},
		size: 128, messages: messages, settle: 200 * time.Millisecond, drain: 5 * time.Second,
	}
}

// smokeCheck passes only exact delivery: every message to every member,
// once, in order, with no errors or dropped connections.
func smokeCheck(reps []report, sp fanoutSpec) error {
	if len(reps) != 1 {
		return fmt.Errorf("%d reports", len(reps))
	}
	r := reps[0]
	want := int64(sp.messages * sp.members)
	switch {
	case r.Problem != "":
		return errors.New(r.Problem)
	case r.Sent != int64(sp.messages):
		return fmt.Errorf("sent %d of %d", r.Sent, sp.messages)
	case r.Expected != want || r.Received != want:
		return fmt.Errorf("received %d, expected %d, want %d", r.Received, r.Expected, want)
	case r.Lost != 0 || r.Dups != 0 || r.OOO != 0 || r.Late != 0 || r.Alien != 0:
		return fmt.Errorf("lost %d, duplicates %d, out of order %d, late %d, foreign %d", r.Lost, r.Dups, r.OOO, r.Late, r.Alien)
	case r.Errors != 0 || r.Dropped != 0:
		return fmt.Errorf("%d in-band errors (%s), %d dropped connections (%s)", r.Errors, r.LastError, r.Dropped, r.DropReason)
	}
	return nil
}

// loopbackOnly refuses an address whose host is not a loopback address
// (or a name resolving only to loopback addresses).
func loopbackOnly(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	ips := []net.IP{net.ParseIP(host)}
	if ips[0] == nil {
		if host == "" {
			return fmt.Errorf("address %q: name a loopback host, e.g. 127.0.0.1", addr)
		}
		ips = nil
		addrs, err := net.LookupIP(host)
		if err != nil {
			return fmt.Errorf("address %q: %w", addr, err)
		}
		ips = addrs
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return fmt.Errorf("address %q is not loopback: parley-bench only loads this machine", addr)
		}
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func newRunID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// knee is the passing step with the most deliveries per second.
func knee(reps []report) *report {
	var best *report
	for i := range reps {
		if r := &reps[i]; r.OK && (best == nil || r.DeliveredPerS > best.DeliveredPerS) {
			best = r
		}
	}
	return best
}
