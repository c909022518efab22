package main

// Several parleyd nodes of one cluster (issue 12): the bench connects its
// sessions to a list of nodes, places each room's members on them
// (placement), and measures every node apart: its CPU from /proc, and
// from its /metrics the cluster events it received over NATS, before and
// after each phase.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Placements of a room's members on the nodes.
const (
	// placeLocal puts all of room r's members on node r mod N: every
	// delivery is made by the node the message was sent to, and a node
	// should receive from NATS only its own rooms' events.
	placeLocal = "local"
	// placeCross puts room r's publishers on node r mod N and its other
	// members on the next node: every message is delivered on two nodes,
	// half its deliveries (the publishers' own copies aside) across NATS.
	placeCross = "cross"
)

// memberNode is the node of member k of room r (k < publishers publish).
func memberNode(placement string, nodes, r, k, publishers int) int {
	if nodes <= 1 {
		return 0
	}
	if placement == placeCross && k >= publishers {
		return (r + 1) % nodes
	}
	return r % nodes
}

// Counters read from every node's /metrics.
var nodeCounters = []string{
	"parley_nats_received_messages_total",
	"parley_nats_received_bytes_total",
	"parley_nats_subscriptions",
	"parley_cluster_outbound_dropped_total",
	"parley_store_filled_messages_total",
	"parley_messages_out_total",
	// The store's group commits: how long they took, how many messages
	// each held, and how many took over 25 ms.
	"parley_store_commit_duration_seconds_sum",
	"parley_store_commit_duration_seconds_count",
	"parley_store_commit_batch_messages_sum",
	`parley_store_commit_duration_seconds_bucket{le="0.025"}`,
}

// nodeSample is one node at one moment: its CPU time (with a pid) and its
// counters (with a metrics address).
type nodeSample struct {
	at       time.Time
	cpu      time.Duration
	cpuErr   error
	counters map[string]float64
	err      error // reading the metrics
}

// sampleNodes samples every node of t, the metrics in parallel.
func sampleNodes(ctx context.Context, t target) []nodeSample {
	out := make([]nodeSample, len(t.nodes))
	done := make(chan struct{}, len(t.nodes))
	for i := range t.nodes {
		go func() {
			defer func() { done <- struct{}{} }()
			if i < len(t.metricsAddrs) && t.metricsAddrs[i] != "" {
				out[i].counters, out[i].err = scrapeCounters(ctx, t.metricsAddrs[i])
			}
		}()
	}
	for range t.nodes {
		<-done
	}
	// /proc last and together, so the CPU window is the same for all.
	now := time.Now()
	for i := range out {
		out[i].at = now
		if i < len(t.pids) && t.pids[i] > 0 {
			var s procSample
			s, out[i].cpuErr = sampleProc(t.pids[i])
			out[i].cpu = s.cpu
		}
	}
	return out
}

// scrapeCounters reads the samples of nodeCounters (a name, or a name and
// its labels as the exposition format writes them) from a parleyd metrics
// listener (no forced GC, unlike scrapeGo).
func scrapeCounters(ctx context.Context, addr string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s/metrics: %s", addr, resp.Status)
	}
	want := map[string]bool{}
	for _, n := range nodeCounters {
		want[n] = true
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || !want[name] {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return nil, fmt.Errorf("metrics at %s: %s: %w", addr, name, err)
		}
		out[name] = f
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if _, ok := out["parley_nats_received_messages_total"]; !ok {
		return out, fmt.Errorf("metrics at %s: no parley_nats_received_messages_total (not a cluster node?)", addr)
	}
	return out, nil
}

// phaseStats is what one node did between two samples.
type phaseStats struct {
	Seconds    float64 `json:"seconds"`
	CPUSeconds float64 `json:"cpu_s,omitempty"`
	// NATS: cluster events received, their bytes, and rates. A node also
	// receives the events it published itself on a subject it listens to
	// (core NATS echoes them; the hub drops them by node id).
	NATSMsgs      float64 `json:"nats_msgs"`
	NATSBytes     float64 `json:"nats_bytes"`
	NATSMsgsPerS  float64 `json:"nats_msgs_per_s"`
	NATSBytesPerS float64 `json:"nats_bytes_per_s"`
	Subscriptions float64 `json:"nats_subscriptions"` // at the end
	OutDropped    float64 `json:"cluster_outbound_dropped"`
	Filled        float64 `json:"store_filled_messages"`
	MessagesOut   float64 `json:"messages_out"` // events queued to this node's sessions
	// The store's group commits during the phase.
	Commits         float64 `json:"store_commits"`
	CommitMeanMs    float64 `json:"store_commit_mean_ms,omitempty"`
	MsgsPerCommit   float64 `json:"store_messages_per_commit,omitempty"`
	CommitsOver25ms float64 `json:"store_commits_over_25ms"`
	Error           string  `json:"error,omitempty"`
}

func diffSample(a, b nodeSample) *phaseStats {
	p := &phaseStats{Seconds: b.at.Sub(a.at).Seconds()}
	if err := errors.Join(a.cpuErr, b.cpuErr, a.err, b.err); err != nil {
		p.Error = err.Error()
	}
	p.CPUSeconds = (b.cpu - a.cpu).Seconds()
	if a.counters == nil || b.counters == nil {
		return p
	}
	d := func(name string) float64 { return b.counters[name] - a.counters[name] }
	p.NATSMsgs, p.NATSBytes = d("parley_nats_received_messages_total"), d("parley_nats_received_bytes_total")
	if p.Seconds > 0 {
		p.NATSMsgsPerS, p.NATSBytesPerS = p.NATSMsgs/p.Seconds, p.NATSBytes/p.Seconds
	}
	p.Subscriptions = b.counters["parley_nats_subscriptions"]
	p.OutDropped, p.Filled = d("parley_cluster_outbound_dropped_total"), d("parley_store_filled_messages_total")
	p.MessagesOut = d("parley_messages_out_total")
	p.Commits = d("parley_store_commit_duration_seconds_count")
	if p.Commits > 0 {
		p.CommitMeanMs = d("parley_store_commit_duration_seconds_sum") * 1e3 / p.Commits
		p.MsgsPerCommit = d("parley_store_commit_batch_messages_sum") / p.Commits
		p.CommitsOver25ms = p.Commits - d(`parley_store_commit_duration_seconds_bucket{le="0.025"}`)
	}
	return p
}

// nodeReport is one node's share of a run.
type nodeReport struct {
	Node     int    `json:"node"`
	GRPCAddr string `json:"grpc_addr"`
	HTTPAddr string `json:"http_addr"`
	PID      int    `json:"pid,omitempty"`
	Conns    int    `json:"connections"` // this bench's sessions on the node

	// fanout, rooms: rooms with a member here; messages its sessions
	// published; messages published into its rooms (from any node), and
	// into the others' (what it must not receive); deliveries to its
	// sessions, and their CPU cost.
	Rooms         int     `json:"rooms,omitempty"`
	Sent          int64   `json:"sent,omitempty"`
	SentOwnRooms  int64   `json:"sent_in_its_rooms,omitempty"`
	SentElsewhere int64   `json:"sent_in_other_rooms,omitempty"`
	Received      int64   `json:"received,omitempty"`
	CPUUsPerDeliv float64 `json:"cpu_us_per_delivery,omitempty"`

	// The measured phase (a fanout step, idle's hold, the storm), and for
	// idle the connect phase before it.
	Phase   *phaseStats `json:"phase,omitempty"`
	Connect *phaseStats `json:"connect_phase,omitempty"`
}

// newNodeReports makes one report per node of t.
func newNodeReports(t target) []nodeReport {
	out := make([]nodeReport, len(t.nodes))
	for i, ep := range t.nodes {
		out[i] = nodeReport{Node: i, GRPCAddr: ep.grpcAddr, HTTPAddr: ep.httpAddr}
		if i < len(t.pids) {
			out[i].PID = t.pids[i]
		}
	}
	return out
}

// multiWatch is procWatch over every node's pid: the report's Server is
// their sum (one node: that node's figures, as before).
type multiWatch struct{ ws []*procWatch }

func startMultiWatch(pids []int) *multiWatch {
	m := &multiWatch{}
	for _, p := range pids {
		if p > 0 {
			m.ws = append(m.ws, startWatch(p))
		}
	}
	if len(m.ws) == 0 {
		m.ws = []*procWatch{startWatch(0)}
	}
	return m
}

func (m *multiWatch) finish(deliveries, conns int64) (*serverStats, float64, [2][3]float64) {
	srv, self, load := m.ws[0].finish(deliveries, conns)
	if len(m.ws) == 1 || srv == nil {
		return srv, self, load
	}
	sum := &serverStats{PIDs: []int{srv.PID}, PeakIsPhase: srv.PeakIsPhase}
	add := func(s *serverStats) {
		if s.Error != "" && sum.Error == "" {
			sum.Error = s.Error
		}
		sum.CPUSeconds += s.CPUSeconds
		sum.RSSMiB += s.RSSMiB
		sum.RSSBeforeMiB += s.RSSBeforeMiB
		sum.PeakRSSMiB += s.PeakRSSMiB
		sum.PeakIsPhase = sum.PeakIsPhase && s.PeakIsPhase
	}
	add(srv)
	for _, w := range m.ws[1:] {
		s, _, _ := w.finish(deliveries, conns)
		sum.PIDs = append(sum.PIDs, s.PID)
		add(s)
	}
	if deliveries > 0 {
		sum.CPUUsPerDeliv = sum.CPUSeconds * 1e6 / float64(deliveries)
	}
	if conns > 0 {
		sum.RSSPerConnKiB = (sum.RSSMiB - sum.RSSBeforeMiB) * 1024 / float64(conns)
	}
	return sum, self, load
}

// barrier waits, through files in dir, until n processes have reached
// the point named name (several bench processes holding one cluster's
// connections: one process may hold at most its open-file limit). Each
// process creates dir/name.<pid>.
func barrier(ctx context.Context, dir, name string, n int) error {
	if dir == "" || n <= 1 {
		return nil
	}
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s.%d", name, os.Getpid())), nil, 0o600); err != nil {
		return err
	}
	for {
		m, err := filepath.Glob(filepath.Join(dir, name+".*"))
		if err != nil {
			return err
		}
		if len(m) >= n {
			return nil
		}
		if !sleepCtx(ctx, 50*time.Millisecond) {
			return fmt.Errorf("waiting for %d processes at %s (%d there): %w", n, name, len(m), errDeadline)
		}
	}
}

// auxSample is the CPU time of the processes around the servers (the
// PostgreSQL backends, nats-server), by name: --aux-pids names pids,
// --aux-comms takes every process with that command name at the moment
// of the sample (PostgreSQL starts a backend per connection).
func auxSample(t target) map[string]time.Duration {
	if len(t.auxPIDs) == 0 && len(t.auxComms) == 0 {
		return nil
	}
	out := map[string]time.Duration{}
	for name, pid := range t.auxPIDs {
		if s, err := sampleProc(pid); err == nil {
			out[name] += s.cpu
		}
	}
	if len(t.auxComms) > 0 {
		want := map[string]bool{}
		for _, c := range t.auxComms {
			want[c] = true
		}
		dirs, _ := os.ReadDir("/proc")
		for _, d := range dirs {
			pid, err := strconv.Atoi(d.Name())
			if err != nil {
				continue
			}
			comm, err := os.ReadFile("/proc/" + d.Name() + "/comm")
			if c := strings.TrimSpace(string(comm)); err == nil && want[c] {
				if s, err := sampleProc(pid); err == nil {
					out[c] += s.cpu
				}
			}
		}
	}
	return out
}

// diffAux is each name's CPU seconds between two aux samples. A process
// that ended in between takes its CPU time with it, so a figure is at
// least what the survivors used.
func diffAux(a, b map[string]time.Duration) map[string]float64 {
	if a == nil || b == nil {
		return nil
	}
	out := map[string]float64{}
	for name, v := range b {
		out[name] = max((v - a[name]).Seconds(), 0)
	}
	return out
}
