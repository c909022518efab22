// Package metrics defines every Prometheus series parleyd exports, in one
// place, and the registry that /metrics serves. docs/observability.md
// explains each series; docs/grafana/parley-dashboard.json charts them.
//
// The packages that count do not import Prometheus. Most keep plain
// atomic counters that the collectors here read at scrape time (the hub's
// Stats, ratelimit.Limiter.Refused, interceptor.Chain.AuthFailed,
// natsbroker.Broker.Reconnects): a counter on a hot path stays one atomic
// add, and a package's tests need no registry. Where an event carries a
// value to bucket (a commit's duration, a writer burst's depth) the
// package declares a one-method observer interface that a *Metrics
// implements (groupcommit.Observer, chatsvc.Observer). Labels are few and
// bounded: transport, reason, kind, op; never a user, room or session.
//
// The RPC series (grpc_server_*) come from go-grpc-middleware's Prometheus
// provider, run as the interceptor chain's first interceptor after
// recovery, on every transport: native gRPC and gRPC-Web reach it through
// the gRPC server, the bridged WebSocket through
// the same gate (interceptor.Chain.Serve). Chat.Connect is counted as a call (started,
// handled, duration) but not per message: the provider's per-message
// hooks allocate, and the parley_messages_* counters already count
// Connect's traffic.
//
// Concurrency: a *Metrics is safe for concurrent use once New returns.
package metrics

import (
	"context"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/broker/natsbroker"
	"github.com/parleychat/parley/server/internal/chatsvc"
	"github.com/parleychat/parley/server/internal/hub"
	"github.com/parleychat/parley/server/internal/interceptor"
	"github.com/parleychat/parley/server/internal/ratelimit"
	"github.com/parleychat/parley/server/internal/store"
)

// Transports a session can arrive on: the transport label's values.
const (
	TransportGRPC    = "grpc"    // native gRPC (HTTP/2)
	TransportGRPCWeb = "grpcweb" // gRPC-Web through the bridge
	TransportWS      = "ws"      // the bridge's /ws WebSocket
	TransportInProc  = "inproc"  // the bridge's in-process connection (REST)
)

var transports = []string{TransportGRPC, TransportGRPCWeb, TransportWS, TransportInProc}

// StoreOps are the op label values of parley_store_errors_total: "commit"
// (a group-commit batch) and the store methods the server counts.
var StoreOps = []string{"commit", "append_message", "get_user", "memberships", "add_membership",
	"remove_membership", "touch_last_seen", "direct_messages_since", "put_file"}

// Config says how to read what Metrics cannot see for itself.
type Config struct {
	// Transport names the transport of a call from its context (one of
	// the Transport constants). Required.
	Transport func(ctx context.Context) string
}

// Metrics holds parleyd's series. Create it with New, then Watch the
// parts whose counters it reads once they exist.
type Metrics struct {
	reg       *prometheus.Registry
	transport func(context.Context) string
	rpc       *grpcprom.ServerMetrics
	rpcUnary  grpc.UnaryServerInterceptor
	rpcStream grpc.StreamServerInterceptor

	sessions      map[string]prometheus.Gauge
	started       map[string]prometheus.Counter
	ended         map[[2]string]prometheus.Counter
	endedVec      *prometheus.CounterVec
	queueDrained  prometheus.Histogram
	commitSeconds prometheus.Histogram
	commitSize    prometheus.Histogram
	storeErrors   *prometheus.CounterVec
	commitErrors  prometheus.Counter
	conns         connTracker
}

// New builds the registry with the Go and process collectors and every
// series whose values are pushed (sessions, histograms, RPCs, store
// errors).
func New(cfg Config) (*Metrics, error) {
	if cfg.Transport == nil {
		return nil, errors.New("metrics: Config.Transport is required")
	}
	m := &Metrics{reg: prometheus.NewRegistry(), transport: cfg.Transport}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	sessions := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "parley_sessions", Help: "Live Chat.Connect sessions, by transport."}, []string{"transport"})
	started := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_sessions_started_total", Help: "Chat.Connect sessions opened, by transport."}, []string{"transport"})
	m.endedVec = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_sessions_ended_total", Help: "Chat.Connect sessions ended, by transport and reason."}, []string{"transport", "reason"})
	m.sessions, m.started, m.ended = map[string]prometheus.Gauge{}, map[string]prometheus.Counter{}, map[[2]string]prometheus.Counter{}
	for _, t := range transports {
		m.sessions[t] = sessions.WithLabelValues(t)
		m.started[t] = started.WithLabelValues(t)
		for _, r := range chatsvc.EndReasons() {
			m.ended[[2]string{t, r}] = m.endedVec.WithLabelValues(t, r)
		}
	}
	m.queueDrained = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "parley_send_queue_drained_frames",
		Help:    "Frames a session's writer found queued each time it drained the queue (the queue's depth when the writer got to it).",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
	})
	m.commitSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "parley_store_commit_duration_seconds",
		Help:    "Time to write and commit one group-commit batch of messages.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	})
	m.commitSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "parley_store_commit_batch_messages",
		Help:    "Messages in one group-commit batch.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
	})
	m.storeErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "parley_store_errors_total",
		Help: "Storage operations that failed (not found, already exists and cancelled calls are not failures), by operation.",
	}, []string{"op"})
	for _, op := range StoreOps {
		m.storeErrors.WithLabelValues(op) // at zero, so that a rate() has a series before the first failure
	}
	m.commitErrors = m.storeErrors.WithLabelValues("commit")
	grpcConns := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "parley_grpc_connections", Help: "Open TCP connections on the native gRPC listener."},
		func() float64 { return float64(m.conns.live()) })
	m.reg.MustRegister(sessions, started, m.endedVec, m.queueDrained, m.commitSeconds, m.commitSize, m.storeErrors, grpcConns)

	m.rpc = grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
		grpcprom.WithHistogramBuckets([]float64{.001, .005, .01, .05, .1, .5, 1, 5, 30, 300, 3600})))
	m.reg.MustRegister(m.rpc)
	m.rpcUnary = m.rpc.UnaryServerInterceptor()
	stream := m.rpc.StreamServerInterceptor()
	m.rpcStream = func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if info.FullMethod != chatv1.Chat_Connect_FullMethodName {
			return stream(srv, ss, info, handler)
		}
		// The call is counted; its messages are not (see the package doc):
		// the handler gets the stream unwrapped.
		return stream(srv, ss, info, func(srv any, _ grpc.ServerStream) error { return handler(srv, ss) })
	}
	return m, nil
}

// Registry is what /metrics serves.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// UnaryInterceptor and StreamInterceptor are the RPC metrics, for
// interceptor.Config.
func (m *Metrics) UnaryInterceptor() grpc.UnaryServerInterceptor { return m.rpcUnary }

// StreamInterceptor: see UnaryInterceptor.
func (m *Metrics) StreamInterceptor() grpc.StreamServerInterceptor { return m.rpcStream }

// InitializeRPC makes the RPC series of every method srv serves, at zero,
// so that dashboards see them before the first call.
func (m *Metrics) InitializeRPC(srv *grpc.Server) { m.rpc.InitializeMetrics(srv) }

// Sources are the parts whose own counters the collectors read at scrape
// time. Broker is nil on a single node.
type Sources struct {
	Hub     *hub.Hub
	Limiter *ratelimit.Limiter
	Chain   *interceptor.Chain
	Broker  *natsbroker.Broker
}

// Watch registers the collectors that read src. Call it once.
func (m *Metrics) Watch(src Sources) {
	h := src.Hub
	gauge := func(name, help string, f func() float64) {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	counter := func(name, help string, labels prometheus.Labels, f func() float64) {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, f))
	}
	stat := func(f func(hub.Stats) int64) func() float64 { return func() float64 { return float64(f(h.Stats())) } }
	gauge("parley_connections", "Live Chat.Connect streams, all transports (parley_sessions splits them).", stat(func(st hub.Stats) int64 { return int64(st.Connections) }))
	gauge("parley_online_users", "Users with at least one live stream on this node.", stat(func(st hub.Stats) int64 { return int64(st.OnlineUsers) }))
	gauge("parley_rooms", "Rooms with live members on this node.", stat(func(st hub.Stats) int64 { return int64(st.Rooms) }))
	counter("parley_messages_in_total", "Messages stored (duplicates of a client_msg_id included).", nil, stat(func(st hub.Stats) int64 { return st.MessagesIn }))
	counter("parley_messages_out_total", "Events queued to sessions by fan-out (deliveries).", nil, stat(func(st hub.Stats) int64 { return st.MessagesOut }))
	counter("parley_messages_dropped_total", "Events fan-out could not queue because the session was closing or its queue was full.", nil, stat(func(st hub.Stats) int64 { return st.Dropped }))
	counter("parley_slow_consumer_disconnects_total", "Sessions closed because their outbound queue was full.", nil, stat(func(st hub.Stats) int64 { return st.SlowConsumers }))
	counter("parley_store_filled_messages_total", "Messages delivered from the store to fill a gap in the live stream (an event lost or late between nodes, or a catch-up after a NATS outage).", nil, func() float64 { return float64(h.Filled()) })
	gauge("parley_cluster_peers", "Other nodes this node has heard from within the presence TTL (0 on a single node).", func() float64 { return float64(h.Peers()) })

	for _, k := range ratelimit.Kinds() {
		counter("parley_rate_limited_total", "Calls, stream opens and commands refused by the rate limiter, by kind.", prometheus.Labels{"kind": k.String()},
			func() float64 { return float64(src.Limiter.Refused(k)) })
	}
	for _, f := range interceptor.AuthFailures() {
		counter("parley_auth_failures_total", "Tokens refused at call or stream open or at in-band refresh, by reason.", prometheus.Labels{"reason": f.String()},
			func() float64 { return float64(src.Chain.AuthFailed(f)) })
	}
	if b := src.Broker; b != nil {
		gauge("parley_nats_connected", "1 while the NATS connection is up, 0 while it is down or reconnecting.", func() float64 {
			if b.Connected() {
				return 1
			}
			return 0
		})
		counter("parley_nats_reconnects_total", "Times the NATS connection was re-established.", nil, func() float64 { return float64(b.Reconnects()) })
		counter("parley_nats_dropped_total", "Cluster events NATS dropped because this node's subscription fell behind.", nil, func() float64 { return float64(b.Dropped()) })
		counter("parley_nats_received_messages_total", "Cluster events this node received: only its rooms' and users' traffic, presence and admin.", nil, func() float64 { n, _ := b.Received(); return float64(n) })
		counter("parley_nats_received_bytes_total", "Bytes of the cluster events this node received.", nil, func() float64 { _, n := b.Received(); return float64(n) })
		gauge("parley_nats_subscriptions", "NATS subjects this node listens on (its rooms and users, and the cluster's own).", func() float64 { return float64(b.Subscriptions()) })
		counter("parley_cluster_outbound_dropped_total", "Cluster events not published because the outbound queue was full (stored messages among them are announced for the others to read from the store).", nil, func() float64 { return float64(h.ClusterDropped()) })
	}
}

// SessionStarted implements chatsvc.Observer.
func (m *Metrics) SessionStarted(ctx context.Context) {
	t := m.transport(ctx)
	if g, ok := m.sessions[t]; ok {
		g.Inc()
		m.started[t].Inc()
	}
}

// SessionEnded implements chatsvc.Observer.
func (m *Metrics) SessionEnded(ctx context.Context, reason string) {
	t := m.transport(ctx)
	g, ok := m.sessions[t]
	if !ok {
		return
	}
	g.Dec()
	if c, ok := m.ended[[2]string{t, reason}]; ok {
		c.Inc()
		return
	}
	m.endedVec.WithLabelValues(t, reason).Inc()
}

// QueueDrained implements chatsvc.Observer.
func (m *Metrics) QueueDrained(frames int) { m.queueDrained.Observe(float64(frames)) }

// BatchCommitted implements groupcommit.Observer.
func (m *Metrics) BatchCommitted(size int, took time.Duration, err error) {
	if err != nil {
		m.commitErrors.Inc()
		return
	}
	m.commitSeconds.Observe(took.Seconds())
	m.commitSize.Observe(float64(size))
}

// StoreError counts err against op unless it is an answer rather than a
// failure: nil, not found, already exists, or the caller giving up.
func (m *Metrics) StoreError(op string, err error) {
	if err == nil || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrExists) || errors.Is(err, context.Canceled) {
		return
	}
	m.storeErrors.WithLabelValues(op).Inc()
}

// CountConns wraps the native gRPC listener so that its open connections
// are counted (parley_grpc_connections). Accept hands grpc-go the
// listener's own *net.TCPConn: grpc-go pools an idle connection's read
// buffer only for that type, so a wrapped conn would cost 16 KiB per idle
// connection; and a grpc stats.Handler would cost an allocation per
// message sent. Instead the connections are remembered, and those since
// closed are forgotten when the gauge is read (and now and then on
// Accept, so that an unscraped server does not keep them).
func (m *Metrics) CountConns(l net.Listener) net.Listener {
	return trackingListener{Listener: l, t: &m.conns}
}

type trackingListener struct {
	net.Listener
	t *connTracker
}

func (l trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if sc, ok := c.(syscall.Conn); ok && err == nil {
		l.t.add(c, sc)
	}
	return c, err
}

// connTracker remembers accepted connections until they close.
type connTracker struct {
	mu    sync.Mutex
	conns map[net.Conn]syscall.Conn
	next  int // the size at which add prunes
}

func (t *connTracker) add(c net.Conn, sc syscall.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conns == nil {
		t.conns = map[net.Conn]syscall.Conn{}
	}
	t.conns[c] = sc
	if len(t.conns) >= t.next {
		t.pruneLocked()
		t.next = 2*len(t.conns) + 1024
	}
}

// live counts the connections still open.
func (t *connTracker) live() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pruneLocked()
	return len(t.conns)
}

// pruneLocked forgets closed connections. Control on a closed conn fails
// at once, without a system call.
func (t *connTracker) pruneLocked() {
	for c, sc := range t.conns {
		raw, err := sc.SyscallConn()
		if err == nil {
			err = raw.Control(func(uintptr) {})
		}
		if err != nil {
			delete(t.conns, c)
		}
	}
}
