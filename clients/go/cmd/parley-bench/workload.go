package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// target is where and how one run connects.
type target struct {
	transport string
	nodes     []endpoints // one server, or the nodes of a cluster
	// Per node, when set: the server's pid for /proc figures (0 for
	// none), and its metrics listener (NATS counters; idle on one node:
	// live heap and goroutines per connection).
	pids         []int
	metricsAddrs []string
	placement    string // placeLocal or placeCross: where a room's members connect
	connectNodes []int  // idle, storm: connect only to these nodes (nil: all)
	syncDir      string // idle: meet syncN bench processes there
	syncN        int
	auxPIDs      map[string]int // processes measured besides the servers, by name
	auxComms     []string       // and every process with these command names
	tokens       tokenSource
	run          string // unique per invocation; names users and rooms
	concurrency  int    // parallel connection attempts
}

// spreadNode is the node of the i-th user of idle and storm: round-robin
// over connectNodes (default every node).
func (t target) spreadNode(i int) int {
	if len(t.connectNodes) > 0 {
		return t.connectNodes[i%len(t.connectNodes)]
	}
	return i % max(len(t.nodes), 1)
}

// report is one run (or one step of a rate sweep). It is printed as one
// JSON line.
type report struct {
	Workload   string  `json:"workload"`
	Transport  string  `json:"transport"`
	Run        string  `json:"run"`
	Step       int     `json:"step"`
	Rooms      int     `json:"rooms,omitempty"`
	Members    int     `json:"members,omitempty"`
	Publishers int     `json:"publishers_per_room,omitempty"`
	Rate       float64 `json:"rate_per_publisher,omitempty"`
	Size       int     `json:"size,omitempty"`
	DurationS  float64 `json:"duration_s"`

	SetupS          float64  `json:"setup_s"`
	Conns           int      `json:"connections"`
	ConnectS        float64  `json:"connect_s"`
	ConnectRate     float64  `json:"connects_per_s"`
	ConnectLatency  *latency `json:"connect_latency_ms,omitempty"`
	ConnectFailures int      `json:"connect_failures"`
	ConnectError    string   `json:"connect_error,omitempty"`

	Sent          int64    `json:"sent,omitempty"`
	Expected      int64    `json:"expected,omitempty"`
	Received      int64    `json:"received,omitempty"`
	Lost          int64    `json:"lost"`
	Dups          int64    `json:"duplicates"`
	OOO           int64    `json:"out_of_order"`
	Late          int64    `json:"late,omitempty"`
	Alien         int64    `json:"alien,omitempty"`
	Errors        int64    `json:"errors"`
	LastError     string   `json:"last_error,omitempty"`
	Dropped       int      `json:"dropped_connections"`
	DropReason    string   `json:"drop_reason,omitempty"`
	OfferedPerS   float64  `json:"offered_deliveries_per_s,omitempty"`
	DeliveredPerS float64  `json:"delivered_per_s,omitempty"`
	Latency       *latency `json:"latency_ms,omitempty"`

	// Several nodes: latency of deliveries made by the node the message
	// was sent to, and of those that crossed NATS; each node's share.
	ReceivedSameNode  int64        `json:"received_same_node,omitempty"`
	ReceivedCrossNode int64        `json:"received_cross_node,omitempty"`
	LatencySameNode   *latency     `json:"latency_same_node_ms,omitempty"`
	LatencyCrossNode  *latency     `json:"latency_cross_node_ms,omitempty"`
	Nodes             []nodeReport `json:"nodes,omitempty"`
	Placement         string       `json:"placement,omitempty"`
	// CPU seconds of the processes around the servers (--aux-pids,
	// --aux-comms) during the phase, and for idle while connecting.
	AuxCPU        map[string]float64 `json:"aux_cpu_s,omitempty"`
	AuxCPUConnect map[string]float64 `json:"aux_cpu_connect_s,omitempty"`

	Server    *serverStats  `json:"server,omitempty"`
	BenchCPUS float64       `json:"bench_cpu_s"`
	Load      [2][3]float64 `json:"loadavg_start_end"`
	OK        bool          `json:"ok"`
	Problem   string        `json:"problem,omitempty"`
}

// connectAll opens one session per user, user i on node nodeOf(i),
// concurrency at a time, stopping early if ctx ends. tr gives each
// session's tracker (nil for none).
func connectAll(ctx context.Context, t target, users []user, nodeOf func(i int) int, tr func(i int) *tracker, rep *report) []*session {
	sessions := make([]*session, len(users))
	var hist histogram
	var mu sync.Mutex
	var failures int
	var firstErr error
	sem := make(chan struct{}, max(t.concurrency, 1))
	var wg sync.WaitGroup
	start := time.Now()
	for i, u := range users {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			var trk *tracker
			if tr != nil {
				trk = tr(i)
			}
			s, d, err := openSession(ctx, t.transport, t.nodes[nodeOf(i)], u, trk)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures++
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			sessions[i] = s
			hist.record(d.Microseconds())
		}()
	}
	wg.Wait()
	el := time.Since(start)
	rep.Conns = int(hist.n)
	rep.ConnectS = el.Seconds()
	rep.ConnectRate = float64(hist.n) / el.Seconds()
	l := hist.summary()
	rep.ConnectLatency = &l
	rep.ConnectFailures = len(users) - int(hist.n) // failed, or not tried before the deadline
	rep.ConnectError = errString(firstErr)
	return sessions
}

// closeAll closes every session, in parallel.
func closeAll(sessions []*session) {
	var wg sync.WaitGroup
	for _, s := range sessions {
		if s != nil {
			wg.Add(1)
			go func() { defer wg.Done(); s.close() }()
		}
	}
	wg.Wait()
}

// health sums the sessions' in-band errors and server-side drops.
func health(sessions []*session, rep *report) {
	for _, s := range sessions {
		if s == nil {
			continue
		}
		rep.Errors += s.errs.Load()
		if e := s.lastErr.Load(); e != nil {
			rep.LastError = *e
		}
		if !s.alive() && s.dropped {
			rep.Dropped++
			rep.DropReason = errString(s.err)
		}
	}
}

// fanoutSpec is the fan-out workload: rooms × members, the first
// publishers members of each room publishing rate msg/s each.
type fanoutSpec struct {
	rooms, members, publishers int
	rates                      []float64 // one step per rate, same connections
	size                       int
	duration                   time.Duration
	messages                   int           // per publisher and step; 0 means rate × duration
	settle, drain              time.Duration // before each step; after it, waiting for stragglers
	p99Limit                   time.Duration // a step with a higher p99 (or any loss) fails
	keepGoing                  bool          // continue the sweep after a failed step
	workload                   string
}

// nodeOf is the node of session i (member i%members of room i/members).
func (sp fanoutSpec) nodeOf(t target, i int) int {
	return memberNode(t.placement, len(t.nodes), i/sp.members, i%sp.members, sp.publishers)
}

// pubNodes is the node of each publisher (by publisher id), or nil on one
// node.
func (sp fanoutSpec) pubNodes(t target) []int {
	if len(t.nodes) <= 1 {
		return nil
	}
	out := make([]int, sp.rooms*sp.publishers)
	for r := range sp.rooms {
		for k := range sp.publishers {
			out[r*sp.publishers+k] = memberNode(t.placement, len(t.nodes), r, k, sp.publishers)
		}
	}
	return out
}

// runFanout runs the fan-out (or rooms) workload; it reports each step
// through emit and returns the reports.
func runFanout(ctx context.Context, t target, sp fanoutSpec, emit func(report)) []report {
	base := report{Workload: sp.workload, Transport: t.transport, Run: t.run, Rooms: sp.rooms, Members: sp.members, Publishers: sp.publishers, Size: sp.size}
	if len(t.nodes) > 1 {
		base.Placement = t.placement
	}
	fail := func(r report, problem string) []report {
		r.Problem, r.OK = problem, false
		emit(r)
		return []report{r}
	}
	n := sp.rooms * sp.members
	setup := time.Now()
	users, err := t.tokens.users(ctx, n)
	base.SetupS = time.Since(setup).Seconds()
	if err != nil {
		return fail(base, "setup: "+err.Error())
	}

	var received atomic.Int64
	trackers := make([]*tracker, n)
	pubNode := sp.pubNodes(t)
	for i := range trackers {
		trackers[i] = newTracker(t.run, &received)
		trackers[i].node, trackers[i].pubNode = sp.nodeOf(t, i), pubNode
	}
	sessions := connectAll(ctx, t, users, func(i int) int { return sp.nodeOf(t, i) }, func(i int) *tracker { return trackers[i] }, &base)
	defer closeAll(sessions)
	if base.ConnectFailures > 0 {
		health(sessions, &base)
		return fail(base, fmt.Sprintf("%d connections failed: %s", base.ConnectFailures, base.ConnectError))
	}

	// Join: every member its room, waiting for the server's confirmation.
	roomName := func(r int) string { return fmt.Sprintf("bench-%s-%s-%d", t.run, shortTransport(t.transport), r) }
	if err := forEach(ctx, sessions, t.concurrency, func(i int, s *session) error {
		return s.joinRoom(ctx, roomName(i/sp.members), false)
	}); err != nil {
		health(sessions, &base)
		return fail(base, "join: "+err.Error())
	}
	if t.transport != trSocketIO {
		// Memberships are stored: leave, so that users reused by a later
		// run (--tokens, or the next transport) are not restored into
		// this run's rooms.
		defer func() {
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			_ = forEach(lctx, sessions, t.concurrency, func(i int, s *session) error {
				return s.joinRoom(lctx, roomName(i/sp.members), true)
			})
		}()
	}

	// Connecting and joining make presence traffic (every connect tells
	// every online user, every join every member); a session dropped by
	// then fell behind on that, not on the benchmark.
	if !sleepCtx(ctx, sp.settle) {
		return fail(base, errDeadline.Error())
	}
	if health(sessions, &base); base.Dropped > 0 {
		return fail(base, fmt.Sprintf("%d connections dropped during setup (connect and join traffic): %s", base.Dropped, base.DropReason))
	}
	base.Errors, base.LastError = 0, ""

	var out []report
	for step, rate := range sp.rates {
		rep := base
		rep.Step, rep.Rate = step, rate
		if step > 0 && !sleepCtx(ctx, sp.settle) {
			return append(out, fail(rep, errDeadline.Error())...)
		}
		for _, tr := range trackers {
			tr.reset(step)
		}
		received.Store(0)
		rep = fanoutStep(ctx, t, sp, sessions, trackers, &received, roomName, rep)
		emit(rep)
		out = append(out, rep)
		if !rep.OK && !sp.keepGoing {
			break
		}
	}
	return out
}

// fanoutStep publishes at rep.Rate for one step and counts deliveries.
func fanoutStep(ctx context.Context, t target, sp fanoutSpec, sessions []*session, trackers []*tracker,
	received *atomic.Int64, roomName func(int) string, rep report) report {
	count := sp.messages
	window := sp.duration
	if count > 0 {
		window = time.Duration(float64(count)/rep.Rate*float64(time.Second)) + time.Second
	} else {
		count = int(math.Ceil(rep.Rate * sp.duration.Seconds()))
	}
	interval := max(time.Duration(float64(time.Second)/rep.Rate), time.Microsecond)

	errsBefore := int64(0)
	for _, s := range sessions {
		errsBefore += s.errs.Load()
	}
	perNode := len(t.nodes) > 1 || len(t.metricsAddrs) > 0
	var before []nodeSample
	if perNode {
		before = sampleNodes(ctx, t)
	}
	aux0 := auxSample(t)
	watch := startMultiWatch(t.pids)
	start := time.Now()
	end := start.Add(window)
	pubs := make([]int64, sp.rooms*sp.publishers) // messages sent per publisher
	var wg sync.WaitGroup
	for r := range sp.rooms {
		for k := range sp.publishers {
			id := r*sp.publishers + k
			s := sessions[r*sp.members+k]
			wg.Add(1)
			go func() {
				defer wg.Done()
				offset := time.Duration(rand.Int64N(int64(interval)))
				buf := make([]byte, 0, max(sp.size, 64))
				for seq := range int64(count) {
					due := start.Add(offset + time.Duration(seq)*interval)
					if due.After(end) || !sleepCtx(ctx, time.Until(due)) {
						return
					}
					buf = formatText(buf[:0], t.run, rep.Step, id, seq, due, sp.size)
					if s.publish(ctx, roomName(r), string(buf)) != nil {
						return
					}
					pubs[id]++
				}
			}()
		}
	}
	pubDone := make(chan struct{})
	go func() { wg.Wait(); close(pubDone) }()
	select {
	case <-pubDone:
	case <-ctx.Done():
		closeAll(sessions) // unblocks publishers stuck in a write
		<-pubDone
	}
	sendEnd := time.Now()

	for _, n := range pubs {
		rep.Sent += n
		rep.Expected += n * int64(sp.members) // every member gets it, the sender too
	}
	// Drain: wait until everything arrived, every connection dropped, or
	// nothing new came for the drain time.
	lastN, lastChange := received.Load(), time.Now()
	for received.Load() < rep.Expected && ctx.Err() == nil && anyAlive(sessions) {
		if n := received.Load(); n != lastN {
			lastN, lastChange = n, time.Now()
		} else if time.Since(lastChange) > sp.drain {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	var c counts
	for _, tr := range trackers {
		c.add(tr)
	}
	health(sessions, &rep)
	rep.Errors -= errsBefore // this step's in-band errors only
	// Busy: from the first send to the last delivery (or the last send).
	busy := max(time.Unix(0, c.lastAt).Sub(start), sendEnd.Sub(start))
	rep.DurationS = busy.Seconds()
	rep.Received, rep.Dups, rep.OOO, rep.Late, rep.Alien = c.unique, c.dups, c.ooo, c.late, c.alien
	rep.Lost = rep.Expected - c.unique
	rep.OfferedPerS = rep.Rate * float64(sp.rooms*sp.publishers*sp.members)
	rep.DeliveredPerS = float64(c.unique) / busy.Seconds()
	l := c.hist.summary()
	rep.Latency = &l
	rep.Server, rep.BenchCPUS, rep.Load = watch.finish(c.unique, 0)
	rep.AuxCPU = diffAux(aux0, auxSample(t))
	if len(t.nodes) > 1 {
		rep.ReceivedSameNode, rep.ReceivedCrossNode = int64(c.route[0].n), int64(c.route[1].n)
		l0, l1 := c.route[0].summary(), c.route[1].summary()
		rep.LatencySameNode, rep.LatencyCrossNode = &l0, &l1
	}
	if perNode {
		rep.Nodes = fanoutNodes(t, sp, trackers, pubs, before, sampleNodes(ctx, t))
	}
	switch {
	case ctx.Err() != nil:
		rep.Problem = errDeadline.Error()
	case rep.Dropped > 0:
		rep.Problem = fmt.Sprintf("%d connections dropped by the server: %s", rep.Dropped, rep.DropReason)
	case rep.Lost != 0 || rep.Dups != 0 || rep.OOO != 0:
		rep.Problem = fmt.Sprintf("lost %d, duplicates %d, out of order %d", rep.Lost, rep.Dups, rep.OOO)
	case rep.Sent < int64(count*sp.rooms*sp.publishers) && sp.messages > 0:
		rep.Problem = fmt.Sprintf("sent %d of %d", rep.Sent, count*sp.rooms*sp.publishers)
	case sp.p99Limit > 0 && l.P99 > float64(sp.p99Limit.Microseconds())/1e3:
		rep.Problem = fmt.Sprintf("p99 %.1f ms over %s", l.P99, sp.p99Limit)
	}
	rep.OK = rep.Problem == ""
	return rep
}

// fanoutNodes is each node's share of a fanout step: its sessions, rooms,
// the messages sent by its sessions and into its rooms, its deliveries,
// and its CPU and NATS counters between the samples.
func fanoutNodes(t target, sp fanoutSpec, trackers []*tracker, pubs []int64, before, after []nodeSample) []nodeReport {
	nodes := newNodeReports(t)
	var total int64
	for _, n := range pubs {
		total += n
	}
	for r := range sp.rooms {
		var inRoom int64
		for k := range sp.publishers {
			id := r*sp.publishers + k
			inRoom += pubs[id]
			nodes[memberNode(t.placement, len(t.nodes), r, k, sp.publishers)].Sent += pubs[id]
		}
		here := make([]bool, len(nodes))
		for k := range sp.members {
			i := r*sp.members + k
			nd := sp.nodeOf(t, i)
			nodes[nd].Conns++
			nodes[nd].Received += trackers[i].uniqueCount()
			here[nd] = true
		}
		for nd, h := range here {
			if h {
				nodes[nd].Rooms++
				nodes[nd].SentOwnRooms += inRoom
			}
		}
	}
	for i := range nodes {
		nodes[i].SentElsewhere = total - nodes[i].SentOwnRooms
		nodes[i].Phase = diffSample(before[i], after[i])
		if nodes[i].Received > 0 && nodes[i].Phase.CPUSeconds > 0 {
			nodes[i].CPUUsPerDeliv = nodes[i].Phase.CPUSeconds * 1e6 / float64(nodes[i].Received)
		}
	}
	return nodes
}

// runIdle holds conns connections for hold and reports the server's RSS
// per connection.
func runIdle(ctx context.Context, t target, conns int, hold time.Duration, emit func(report)) report {
	rep := report{Workload: "idle", Transport: t.transport, Run: t.run}
	setup := time.Now()
	users, err := t.tokens.users(ctx, conns)
	rep.SetupS = time.Since(setup).Seconds()
	if err != nil {
		rep.Problem = "setup: " + err.Error()
		emit(rep)
		return rep
	}
	// One node with a metrics listener: live heap and goroutines per
	// connection. Several: each node's CPU and NATS counters while the
	// connections are made (a connect storm) and while they are held.
	heap := len(t.nodes) == 1 && len(t.metricsAddrs) == 1
	perNode := len(t.nodes) > 1 || len(t.metricsAddrs) > 0
	var before goStats
	var beforeErr error
	if heap {
		before, beforeErr = scrapeGo(ctx, t.metricsAddrs[0])
	}
	var s0, s1 []nodeSample
	if perNode {
		s0 = sampleNodes(ctx, t)
	}
	aux0 := auxSample(t)
	watch := startMultiWatch(t.pids)
	sessions := connectAll(ctx, t, users, t.spreadNode, nil, &rep)
	defer closeAll(sessions)
	// Other bench processes hold the rest of the cluster's connections:
	// the hold starts when all are connected, and ends for all at once.
	if err := barrier(ctx, t.syncDir, "connected", t.syncN); err != nil {
		rep.Problem = err.Error()
	}
	if perNode {
		s1 = sampleNodes(ctx, t)
	}
	aux1 := auxSample(t)
	rep.AuxCPUConnect = diffAux(aux0, aux1)
	sleepCtx(ctx, hold)
	rep.AuxCPU = diffAux(aux1, auxSample(t))
	health(sessions, &rep)
	rep.DurationS = hold.Seconds()
	live := int64(rep.Conns - rep.Dropped)
	perConn := live
	if t.syncN > 1 {
		perConn = 0 // the nodes also hold the other processes' connections
	}
	rep.Server, rep.BenchCPUS, rep.Load = watch.finish(0, perConn)
	if perNode {
		s2 := sampleNodes(ctx, t)
		rep.Nodes = newNodeReports(t)
		for i, s := range sessions {
			if s != nil {
				rep.Nodes[t.spreadNode(i)].Conns++
			}
		}
		for i := range rep.Nodes {
			rep.Nodes[i].Connect, rep.Nodes[i].Phase = diffSample(s0[i], s1[i]), diffSample(s1[i], s2[i])
		}
	}
	if err := barrier(ctx, t.syncDir, "held", t.syncN); err != nil && rep.Problem == "" {
		rep.Problem = err.Error()
	}
	if heap && live > 0 {
		after, err := scrapeGo(ctx, t.metricsAddrs[0])
		if err = errors.Join(beforeErr, err); err != nil {
			rep.Problem = "metrics: " + err.Error()
		} else if rep.Server != nil {
			rep.Server.HeapLivePerConnKiB = float64(after.heapLive-before.heapLive) / 1024 / float64(live)
			rep.Server.GoroutinesPerConn = float64(after.goroutines-before.goroutines) / float64(live)
		}
	}
	switch {
	case rep.Problem != "":
	case ctx.Err() != nil:
		rep.Problem = errDeadline.Error()
	case rep.ConnectFailures > 0:
		rep.Problem = fmt.Sprintf("%d connections failed: %s", rep.ConnectFailures, rep.ConnectError)
	case rep.Dropped > 0:
		rep.Problem = fmt.Sprintf("%d connections dropped by the server: %s", rep.Dropped, rep.DropReason)
	}
	rep.OK = rep.Problem == ""
	emit(rep)
	return rep
}

// runStorm has workers users connect, wait for the server's first event
// and disconnect, over and over, until total connections were made or
// the time is up: connections per second including token verification.
func runStorm(ctx context.Context, t target, workers, total int, limit time.Duration, emit func(report)) report {
	rep := report{Workload: "storm", Transport: t.transport, Run: t.run}
	setup := time.Now()
	users, err := t.tokens.users(ctx, workers)
	rep.SetupS = time.Since(setup).Seconds()
	if err != nil {
		rep.Problem = "setup: " + err.Error()
		emit(rep)
		return rep
	}
	perNode := len(t.nodes) > 1 || len(t.metricsAddrs) > 0
	var s0 []nodeSample
	if perNode {
		s0 = sampleNodes(ctx, t)
	}
	aux0 := auxSample(t)
	watch := startMultiWatch(t.pids)
	sctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var next atomic.Int64
	var mu sync.Mutex
	var hist histogram
	var failures int
	var firstErr error
	start := time.Now()
	var wg sync.WaitGroup
	perWorker := make([]int, len(users))
	for w, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(total) && sctx.Err() == nil {
				s, d, err := openSession(sctx, t.transport, t.nodes[t.spreadNode(w)], u, nil)
				if err == nil {
					s.close()
				}
				mu.Lock()
				if err == nil {
					hist.record(d.Microseconds())
					perWorker[w]++
				} else if sctx.Err() == nil {
					failures++
					if firstErr == nil {
						firstErr = err
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	rep.Conns, rep.ConnectS, rep.DurationS = int(hist.n), el.Seconds(), el.Seconds()
	rep.ConnectRate = float64(hist.n) / el.Seconds()
	l := hist.summary()
	rep.ConnectLatency = &l
	rep.ConnectFailures, rep.ConnectError = failures, errString(firstErr)
	rep.Server, rep.BenchCPUS, rep.Load = watch.finish(0, 0)
	rep.AuxCPU = diffAux(aux0, auxSample(t))
	if perNode {
		s1 := sampleNodes(ctx, t)
		rep.Nodes = newNodeReports(t)
		for w, n := range perWorker {
			rep.Nodes[t.spreadNode(w)].Conns += n // connections made, one after another
		}
		for i := range rep.Nodes {
			rep.Nodes[i].Phase = diffSample(s0[i], s1[i])
		}
	}
	switch {
	case ctx.Err() != nil:
		rep.Problem = errDeadline.Error()
	case failures > 0:
		rep.Problem = fmt.Sprintf("%d connections failed: %s", failures, errString(firstErr))
	}
	rep.OK = rep.Problem == ""
	emit(rep)
	return rep
}

// forEach runs f for every live session, concurrency at a time, and
// returns the first error.
func forEach(ctx context.Context, sessions []*session, concurrency int, f func(i int, s *session) error) error {
	sem := make(chan struct{}, max(concurrency, 1))
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for i, s := range sessions {
		if s == nil || !s.alive() {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := f(i, s); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = errDeadline
	}
	return first
}

func anyAlive(sessions []*session) bool {
	for _, s := range sessions {
		if s != nil && s.alive() {
			return true
		}
	}
	return false
}

// sleepCtx sleeps for d; false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// shortTransport is a transport's name as used in room names.
func shortTransport(tr string) string {
	switch tr {
	case trGRPC:
		return "g"
	case trGRPCWeb:
		return "gw"
	case trWSJSON:
		return "wj"
	case trWSBinary:
		return "wb"
	}
	return "sio"
}
