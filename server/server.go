// Package server wires Parley together: storage, hub, services, the one
// interceptor chain, the gRPC listener, the HTTP bridge and the metrics
// listener, the health probes (see health.go), and their graceful stop.
// cmd/parleyd fills its Config from flags and the environment.
//
// Concurrency: a *Server is safe for concurrent use; Start is called once,
// Shutdown any number of times (the first does the work, the others wait
// for it).
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/encoding/gzip" // clients may ask for gzip
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/stats"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/adminsvc"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/internal/authsvc"
	"github.com/parleychat/parley/server/internal/blob"
	"github.com/parleychat/parley/server/internal/broker/natsbroker"
	"github.com/parleychat/parley/server/internal/chatsvc"
	"github.com/parleychat/parley/server/internal/filegc"
	"github.com/parleychat/parley/server/internal/hub"
	"github.com/parleychat/parley/server/internal/interceptor"
	"github.com/parleychat/parley/server/internal/metrics"
	"github.com/parleychat/parley/server/internal/ratelimit"
	"github.com/parleychat/parley/server/internal/sealer"
	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/store/groupcommit"
	"github.com/parleychat/parley/server/internal/store/postgres"
	"github.com/parleychat/parley/server/internal/store/sqlite"
	"github.com/parleychat/parley/server/internal/tracing"
)

// Server is one Parley node.
type Server struct {
	cfg    Config
	log    *slog.Logger
	store  Store
	hub    *hub.Hub
	issuer *auth.Issuer
	grpc   *grpc.Server
	health *health.Server
	limit  *ratelimit.Limiter
	pipe   *pipeListener
	inproc *grpc.ClientConn
	http   *http.Server
	bridge interface{ Close() error }
	chain  *interceptor.Chain
	broker *natsbroker.Broker
	chat   *chatsvc.Service
	mhttp  *http.Server
	files  *filegc.Collector

	metrics *metrics.Metrics
	traces  func(context.Context) error // flushes and stops the trace exporter

	grpcLis, httpLis, metricsLis net.Listener
	serveErr                     chan error
	stopOnce                     sync.Once
	// stopping is set when Shutdown begins: from then on new calls and
	// /ws attaches are refused and /readyz fails.
	stopping atomic.Bool
	bg       sync.WaitGroup
	bgStop   chan struct{}
	// bgCtx ends when Shutdown begins, so background work (the janitor,
	// readiness checks) stops instead of delaying the stop.
	bgCtx    context.Context
	bgCancel context.CancelFunc

	// The last readiness result (see Ready).
	readyFlight singleflight.Group
	readyMu     sync.Mutex
	readyAt     time.Time
	readyErr    error
}

// New opens storage and builds the node; Start binds its listeners.
func New(ctx context.Context, cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// One slot per serving goroutine (gRPC, pipe, HTTP, metrics), so none
	// blocks on its result when Shutdown is called without Run.
	s := &Server{cfg: cfg, log: cfg.Logger, serveErr: make(chan error, 4), bgStop: make(chan struct{})}
	s.bgCtx, s.bgCancel = context.WithCancel(context.Background())
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	if cfg.JWTSecret == nil {
		secret, err := LoadOrCreateSecret(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		cfg.JWTSecret = secret
		s.cfg.JWTSecret = secret
	}
	keys, err := sealer.ParseKeys(cfg.EncryptionKeys)
	if err != nil {
		return nil, fmt.Errorf("encryption keys: %w", err)
	}
	raw, err := openStore(ctx, cfg.DataDir, cfg.DatabaseURL, keys, cfg.Logger, cfg.StoreTimeout)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			raw.Close()
		}
	}()
	if s.metrics, err = metrics.New(metrics.Config{Transport: transportOf}); err != nil {
		return nil, err
	}
	if oc, ok := raw.(interface{ ObserveCommits(groupcommit.Observer) }); ok {
		oc.ObserveCommits(s.metrics)
	}
	// Outermost the counting, so a call the guard's deadline cut short is
	// counted as the store error it is.
	var st Store = countingStore{Store: guardStore(raw, cfg.StoreTimeout, cfg.Logger), m: s.metrics}
	s.store = st
	blobs, err := blob.New(blob.Config{Dir: filepath.Join(cfg.DataDir, "files"), Sealer: keys, MaxSize: cfg.MaxFileSize})
	if err != nil {
		return nil, err
	}
	s.files, err = filegc.New(filegc.Config{Store: st, Blobs: blobs, Grace: cfg.FileGrace, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	s.issuer, err = auth.NewIssuer(auth.IssuerConfig{Secret: cfg.JWTSecret, Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience, TTL: cfg.AccessTTL})
	if err != nil {
		return nil, err
	}
	pubKeys, err := auth.LoadPublicKeys(cfg.PublicKeyFiles...)
	if err != nil {
		return nil, err
	}
	verifier, err := auth.NewVerifier(auth.VerifierConfig{HMACSecret: cfg.JWTSecret, PublicKeys: pubKeys, Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience})
	if err != nil {
		return nil, err
	}
	hcfg := hub.Config{Store: st, Logger: cfg.Logger, QueueSize: cfg.QueueSize, TypingTimeout: cfg.TypingTimeout, PresenceWindow: cfg.PresenceWindow,
		OnlineSnapshotLimit: cfg.OnlineSnapshotLimit, PresenceNamesLimit: cfg.PresenceNamesLimit, ReplayCap: cfg.ReplayCap}
	if cfg.NATSURL != "" {
		b, err := natsbroker.New(natsbroker.Config{URL: cfg.NATSURL, Subject: cfg.NATSSubject, Name: "parleyd", Logger: cfg.Logger})
		if err != nil {
			return nil, err
		}
		s.broker = b
		hcfg.Broker = b
	}
	s.hub, err = hub.New(hcfg)
	if err != nil {
		if s.broker != nil {
			s.broker.Close()
		}
		return nil, err
	}
	if s.traces, err = tracing.Setup(ctx, tracing.Config{Endpoint: cfg.OTLPEndpoint, NodeID: s.hub.NodeID()}); err != nil {
		return nil, err
	}
	rates, err := ratelimit.ParseConfig(cfg.RateLimits)
	if err != nil {
		return nil, fmt.Errorf("rate limits: %w", err)
	}
	s.limit = ratelimit.New(rates)
	s.chain, err = interceptor.New(interceptor.Config{
		Verifier: verifier, Users: st, Limiter: s.limit, Logger: cfg.Logger, ClientIP: clientIP,
		Unary: s.metrics.UnaryInterceptor(), Stream: s.metrics.StreamInterceptor(), Policy: cfg.StreamPolicy,
	})
	if err != nil {
		return nil, err
	}
	opts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(chatsvc.Codec{}),
		grpc.MaxRecvMsgSize(256 << 10), // a 64 KiB file chunk or a 4,000-character event, with room to spare
		grpc.MaxSendMsgSize(8 << 20),   // a history page of 100 long messages
		grpc.MaxConcurrentStreams(64),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.ConnectionTimeout(10 * time.Second),
		// Chat connections are mostly idle: release the write buffer between
		// writes and keep the read buffer small, so memory per connection
		// stays low (see the idle-connection figures in the README).
		grpc.SharedWriteBuffer(true),
		grpc.ReadBufferSize(16 << 10),
		// Static flow-control windows instead of grpc's dynamic ones, whose
		// estimator pings the client after each burst it receives: in a
		// room where everyone talks that is a ping and its ack per message.
		// A stream's window holds the largest message (a 64 KiB file chunk
		// in its event); the connection's bounds what one client can make
		// the server buffer.
		grpc.InitialWindowSize(256 << 10),
		grpc.InitialConnWindowSize(1 << 20),
	}
	if cfg.TLSCertFile != "" {
		creds, err := credentials.NewServerTLSFromFile(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("TLS: %w", err)
		}
		opts = append(opts, grpc.Creds(creds))
	}
	// The shutdown gate runs first: a stopping node refuses before any
	// token check or store lookup.
	opts = append(opts, grpc.ChainUnaryInterceptor(s.gateUnary), grpc.ChainStreamInterceptor(s.gateStream))
	if tracing.Enabled() {
		// Spans for calls; Chat.Connect's commands carry their own trace
		// context (chatsvc), and a span the length of a stream helps no
		// one. Only with tracing on: with any stats handler grpc-go
		// allocates an event per message sent.
		opts = append(opts, grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithFilter(func(info *stats.RPCTagInfo) bool {
			return info.FullMethodName != chatv1.Chat_Connect_FullMethodName
		}))))
	}
	opts = append(opts, s.chain.ServerOptions()...)
	s.grpc = grpc.NewServer(opts...)

	s.chat, err = chatsvc.New(chatsvc.Config{Hub: s.hub, Store: st, Blobs: blobs, Logger: cfg.Logger, MaxFileSize: cfg.MaxFileSize, Coalesce: cfg.WriteCoalesce,
		Observer: s.metrics})
	if err != nil {
		return nil, err
	}
	hashBudget := cfg.PasswordHashMemory
	if hashBudget == 0 {
		hashBudget = authsvc.HashMemoryBudget()
	}
	authSvc, err := authsvc.New(authsvc.Config{Store: st, Issuer: s.issuer, Logger: cfg.Logger, DisableRegistration: cfg.DisableRegistration,
		Hashes: auth.NewHashLimiter(auth.HashLimiterConfig{MemoryBudget: hashBudget})})
	if err != nil {
		return nil, err
	}
	admin, err := adminsvc.New(adminsvc.Config{Hub: s.hub, Store: st, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	chatv1.RegisterChatServer(s.grpc, s.chat)
	chatv1.RegisterAuthServer(s.grpc, authSvc)
	chatv1.RegisterAdminServer(s.grpc, admin)
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	s.metrics.InitializeRPC(s.grpc)
	s.metrics.Watch(metrics.Sources{Hub: s.hub, Limiter: s.limit, Chain: s.chain, Broker: s.broker})
	ok = true
	return s, nil
}

// Store is everything the services need from storage; the SQLite and
// PostgreSQL stores both provide it.
type Store interface {
	hub.Store
	chatsvc.Store
	authsvc.Store
	adminsvc.Store
	filegc.Store
	UserStore // EnsureUser's
	DeleteMessagesBefore(ctx context.Context, t time.Time) (int64, error)
	DeleteExpiredRefreshTokens(ctx context.Context, now time.Time) (int64, error)
	// Ping reports whether the database answers, for /readyz.
	Ping(ctx context.Context) error
	Close() error
}

// OpenStore opens PostgreSQL when databaseURL is set, else the SQLite
// file in dataDir.
func OpenStore(ctx context.Context, dataDir, databaseURL string, keys *sealer.Keyring, log *slog.Logger) (Store, error) {
	return openStore(ctx, dataDir, databaseURL, keys, log, 0)
}

// openStore is OpenStore with a bound on each commit of the append writer
// (zero: the back end's default).
func openStore(ctx context.Context, dataDir, databaseURL string, keys *sealer.Keyring, log *slog.Logger, writeTimeout time.Duration) (Store, error) {
	if databaseURL != "" {
		st, err := postgres.Open(ctx, postgres.Config{URL: databaseURL, Sealer: keys, Logger: log, WriteTimeout: writeTimeout})
		if err != nil {
			return nil, fmt.Errorf("open PostgreSQL store: %w", err)
		}
		return st, nil
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	st, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(dataDir, "parley.db"), Sealer: keys, Logger: log, WriteTimeout: writeTimeout})
	if err != nil {
		return nil, fmt.Errorf("open SQLite store: %w", err)
	}
	return st, nil
}

// clientIP is the address rate limits key on: the TCP peer, or, on the
// in-process bridge connection only, the browser address it forwards.
func clientIP(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	if _, inproc := p.Addr.(pipeAddr); inproc {
		if v := metadata.ValueFromIncomingContext(ctx, ClientIPHeader); len(v) > 0 {
			return v[0]
		}
		return "in-process"
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return p.Addr.String()
	}
	return host
}

// Issuer mints tokens with the server's key (for `parleyd token` and tests).
func (s *Server) Issuer() *auth.Issuer { return s.issuer }

// GRPCAddr is the bound gRPC address (after Start).
func (s *Server) GRPCAddr() string { return addrOf(s.grpcLis) }

// HTTPAddr is the bound HTTP address (after Start), or "" when off.
func (s *Server) HTTPAddr() string { return addrOf(s.httpLis) }

// MetricsAddr is the bound metrics address (after Start), or "" when off.
func (s *Server) MetricsAddr() string { return addrOf(s.metricsLis) }

func addrOf(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}

// Start binds the listeners and serves in the background.
func (s *Server) Start(ctx context.Context) error {
	var err error
	if s.grpcLis, err = net.Listen("tcp", s.cfg.GRPCAddr); err != nil {
		return fmt.Errorf("gRPC listener: %w", err)
	}
	if s.cfg.HTTPAddr != "off" {
		if s.httpLis, err = net.Listen("tcp", s.cfg.HTTPAddr); err != nil {
			s.grpcLis.Close()
			return fmt.Errorf("HTTP listener: %w", err)
		}
		if err := s.startBridge(); err != nil {
			s.grpcLis.Close()
			s.httpLis.Close()
			return err
		}
	}
	if s.cfg.MetricsAddr != "off" {
		if s.metricsLis, err = net.Listen("tcp", s.cfg.MetricsAddr); err != nil {
			s.grpcLis.Close()
			if s.httpLis != nil {
				s.httpLis.Close()
			}
			return fmt.Errorf("metrics listener: %w", err)
		}
		s.mhttp = &http.Server{Handler: s.probes(s.metricsHandler()), ReadHeaderTimeout: 5 * time.Second}
		go func() { s.serveErr <- ignoreClosed(s.mhttp.Serve(s.metricsLis)) }()
	}
	s.setHealth(healthpb.HealthCheckResponse_SERVING)
	go func() { s.serveErr <- ignoreClosed(s.grpc.Serve(s.metrics.CountConns(s.grpcLis))) }()
	s.bg.Add(2)
	go s.janitor()
	go s.watchReadiness()
	s.log.Info("parleyd started", "grpc", s.GRPCAddr(), "http", s.HTTPAddr(), "metrics", s.MetricsAddr(), "data", s.cfg.DataDir, "tls", s.cfg.TLSCertFile != "", "node", s.hub.NodeID(), "cluster", s.broker != nil)
	return nil
}

// startBridge serves the HTTP bridge with an in-process connection to the
// gRPC server so every bridged call passes the same interceptors.
func (s *Server) startBridge() error {
	s.pipe = newPipeListener()
	go func() { s.serveErr <- ignoreClosed(s.grpc.Serve(s.pipe)) }()
	creds := insecure.NewCredentials()
	if s.cfg.TLSCertFile != "" {
		// The pipe never leaves this process, so there is nothing to verify;
		// TLS is spoken only because the server's credentials demand it.
		creds = credentials.NewTLS(&tls.Config{InsecureSkipVerify: true}) //nolint:gosec // in-memory pipe
	}
	conn, err := grpc.NewClient("passthrough:///in-process",
		grpc.WithContextDialer(s.pipe.DialContext),
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8<<20)),
	)
	if err != nil {
		return err
	}
	s.inproc = conn
	origins := s.cfg.AllowedOrigins
	if len(origins) == 0 {
		_, port, _ := net.SplitHostPort(s.httpLis.Addr().String())
		scheme := "http"
		if s.cfg.TLSCertFile != "" {
			scheme = "https"
		}
		origins = []string{scheme + "://localhost:" + port, scheme + "://127.0.0.1:" + port}
	}
	h, closer, err := newBridge(s, conn, origins)
	if err != nil {
		return err
	}
	s.bridge = closer
	s.http = newHTTPServer(s.probes(h))
	go func() {
		var err error
		if s.cfg.TLSCertFile != "" {
			err = s.http.ServeTLS(s.httpLis, s.cfg.TLSCertFile, s.cfg.TLSKeyFile)
		} else {
			err = s.http.Serve(s.httpLis)
		}
		s.serveErr <- ignoreClosed(err)
	}()
	return nil
}

func ignoreClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) || errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Run starts the server and stops it gracefully when ctx ends.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Start(ctx); err != nil {
		s.store.Close()
		return err
	}
	var err error
	select {
	case <-ctx.Done():
		// Says which signal, when ctx is signal.NotifyContext's: an
		// unexplained shutdown is otherwise hard to tell from a crash.
		s.log.Info("stop requested", "cause", context.Cause(ctx))
	case err = <-s.serveErr:
		if err != nil {
			s.log.Error("listener failed", "err", err)
		}
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace)
	defer cancel()
	return errors.Join(err, s.Shutdown(stopCtx))
}

// shutdownReserve is the part of the grace kept for the forced stop and
// closing storage after the drain: the whole shutdown fits in the grace.
func shutdownReserve(grace time.Duration) time.Duration { return min(grace/3, 3*time.Second) }

// Shutdown stops the node in an order that lets no client in while it
// drains: first it stops accepting (gRPC and HTTP listeners closed, health
// NOT_SERVING for every service, /readyz failing, new calls on open
// connections refused), then it tells every session to reconnect later and
// waits for them to end, then it stops the servers and closes storage. If
// sessions are still live when ctx is near its end, they are cut, so
// Shutdown returns by ctx's deadline. Safe to call more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	var err error
	s.stopOnce.Do(func() {
		// Stop accepting.
		start := time.Now()
		s.stopping.Store(true)
		s.health.Shutdown()
		s.bgCancel()
		if s.grpcLis != nil {
			s.grpcLis.Close() // grpc.Serve returns; GracefulStop below closes nothing twice that matters
		}
		if s.httpLis != nil {
			s.httpLis.Close()
		}
		httpDone := make(chan struct{})
		if s.http != nil {
			// Closes idle keep-alive connections now and the others once
			// their request is answered; hijacked WebSockets are the
			// bridge's. Shutdown's own wait is bounded below.
			go func() { _ = s.http.Shutdown(context.WithoutCancel(ctx)); close(httpDone) }()
		} else {
			close(httpDone)
		}

		// Drain: every session hears the notice and ends by itself.
		drainCtx, cancel := ctx, context.CancelFunc(func() {})
		if dl, ok := ctx.Deadline(); ok {
			drainCtx, cancel = context.WithDeadline(ctx, dl.Add(-shutdownReserve(time.Until(dl))))
		}
		defer cancel()
		n := s.hub.Shutdown(s.cfg.ReconnectAfter)
		s.log.Info("shutting down", "sessions", n)
		// Let the sessions end on their own, so each writes its final status:
		// GracefulStop would close gRPC-Web (ServeHTTP) streams mid-flight.
		if err := s.hub.WaitIdle(drainCtx); err == nil {
			select { // a session detaches just before its status goes out
			case <-time.After(100 * time.Millisecond):
			case <-drainCtx.Done():
			}
		} else {
			s.log.Warn("sessions still live at the drain deadline; cutting them", "sessions", s.hub.Stats().Connections)
		}

		// Stop. From here every wait is bounded by ctx: a handler still
		// finishing a store write, or a store still committing, must not
		// hold the process past its grace (a supervisor would kill it
		// there anyway, less cleanly).
		drained := time.Since(start)
		if s.bridge != nil {
			waitUntil(ctx, func() { s.bridge.Close() })
		}
		if s.http != nil {
			select {
			case <-httpDone:
			case <-drainCtx.Done():
				s.http.Close()
				<-httpDone
			}
		}
		done := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-drainCtx.Done():
			s.grpc.Stop() // ends every stream; GracefulStop still waits for their handlers
			select {
			case <-done:
			case <-ctx.Done():
				s.log.Warn("handlers still running at the shutdown deadline")
			}
		}
		if s.inproc != nil {
			s.inproc.Close()
		}
		if s.mhttp != nil {
			s.mhttp.Close()
		}
		if s.broker != nil {
			s.broker.Close()
		}
		serversStopped := time.Since(start)
		close(s.bgStop)
		s.bg.Wait()
		s.limit.Close()
		closed := make(chan error, 1)
		go func() { closed <- errors.Join(s.store.Close(), s.traces(ctx)) }()
		select {
		case err = <-closed:
		case <-ctx.Done():
			err = errors.New("storage was still closing at the shutdown deadline")
		}
		s.log.Info("stopped", "drain", drained.Round(time.Millisecond), "servers", serversStopped.Round(time.Millisecond),
			"total", time.Since(start).Round(time.Millisecond))
	})
	return err
}

// waitUntil runs f and waits for it to return or ctx to end, reporting
// whether f returned (f keeps running otherwise, and must not touch what
// the caller uses after).
func waitUntil(ctx context.Context, f func()) bool {
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// EnsureUser makes sure username exists with role, creating it with an
// unusable random password when missing (for minted test tokens).
func (s *Server) EnsureUser(ctx context.Context, username string, role auth.Role) error {
	return EnsureUser(ctx, s.store, username, role)
}

// UserStore is what EnsureUser needs.
type UserStore interface {
	GetUser(ctx context.Context, username string) (store.User, error)
	CreateUser(ctx context.Context, u store.User) error
	SetUserRole(ctx context.Context, username, role string) error
}

// EnsureUser makes sure username exists in st with role. A username the
// protocol forbids is refused (auth.ErrInvalidUsername), so no account is
// made that the API could not name.
func EnsureUser(ctx context.Context, st UserStore, username string, role auth.Role) error {
	if err := auth.ValidateUsername(username); err != nil {
		return err
	}
	u, err := st.GetUser(ctx, username)
	switch {
	case errors.Is(err, store.ErrNotFound):
		pw, _, err := auth.NewRefreshToken() // random and never shown: a token-only account
		if err != nil {
			return err
		}
		hash, err := auth.HashPassword(pw)
		if err != nil {
			return err
		}
		return st.CreateUser(ctx, store.User{Username: username, PasswordHash: hash, Role: role.String(), Active: true, CreatedAt: time.Now().UTC()})
	case err != nil:
		return err
	case u.Role != role.String():
		return st.SetUserRole(ctx, username, role.String())
	}
	return nil
}
