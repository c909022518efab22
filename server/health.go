package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// The probes, on the HTTP listener and the metrics listener:
//
//   - /healthz: the process is alive and serving HTTP (200 "ok").
//   - /readyz: this node should get traffic: not shutting down, the store
//     answers within readyTimeout and, when clustered, NATS is connected
//     (200 "ready"; else 503 with the reason).
//
// gRPC health (grpc.health.v1) answers per service: "" and each chat.v1
// service. Every one turns NOT_SERVING when shutdown begins, and follows
// readiness, checked every readyInterval, until then.
const (
	readyTimeout  = 2 * time.Second
	readyInterval = 5 * time.Second
	readyCacheFor = time.Second
)

// healthServices are the names gRPC health answers for.
var healthServices = []string{"", chatv1.Chat_ServiceDesc.ServiceName, chatv1.Auth_ServiceDesc.ServiceName, chatv1.Admin_ServiceDesc.ServiceName}

// errShuttingDown is what new calls, /ws attaches and /readyz hear once
// shutdown has begun.
var errShuttingDown = status.Error(codes.Unavailable, "server shutting down; reconnect to another node or retry shortly")

// Ready reports nil when this node should get traffic, else why not. A
// result is reused for readyCacheFor and concurrent checks share one, so
// a flood of /readyz on the public listener cannot become a flood of
// database pings. Safe for concurrent use.
func (s *Server) Ready(ctx context.Context) error {
	if s.stopping.Load() {
		return errors.New("shutting down")
	}
	s.readyMu.Lock()
	at, err := s.readyAt, s.readyErr
	s.readyMu.Unlock()
	if !at.IsZero() && time.Since(at) < readyCacheFor {
		return err
	}
	ch := s.readyFlight.DoChan("ready", func() (any, error) {
		// Not the caller's context: the check is shared with others.
		err := s.checkReady(context.WithoutCancel(ctx))
		s.readyMu.Lock()
		s.readyAt, s.readyErr = time.Now(), err
		s.readyMu.Unlock()
		return nil, err
	})
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// checkReady does the checks Ready reports.
func (s *Server) checkReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		return fmt.Errorf("store unreachable: %w", err)
	}
	if s.broker != nil {
		if err := s.broker.Status(); err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
	}
	return nil
}

// probes serves /healthz and /readyz and hands every other request to next
// (nil: 404).
func (s *Server) probes(next http.Handler) http.Handler {
	if next == nil {
		next = http.NotFoundHandler()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			probeAnswer(w, http.StatusOK, "ok")
		case "/readyz":
			if err := s.Ready(r.Context()); err != nil {
				probeAnswer(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
				return
			}
			probeAnswer(w, http.StatusOK, "ready")
		default:
			next.ServeHTTP(w, r)
		}
	})
}

func probeAnswer(w http.ResponseWriter, code int, text string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(text + "\n"))
}

// setHealth sets every health service to st. After health.Shutdown it is a
// no-op, so a late readiness check cannot turn a stopping node SERVING.
func (s *Server) setHealth(st healthpb.HealthCheckResponse_ServingStatus) {
	for _, name := range healthServices {
		s.health.SetServingStatus(name, st)
	}
}

// watchReadiness keeps gRPC health in line with Ready until shutdown.
func (s *Server) watchReadiness() {
	defer s.bg.Done()
	t := time.NewTicker(readyInterval)
	defer t.Stop()
	serving := true
	for {
		select {
		case <-t.C:
		case <-s.bgStop:
			return
		}
		err := s.Ready(s.bgCtx)
		if now := err == nil; now != serving {
			serving = now
			if serving {
				s.log.Info("ready again")
				s.setHealth(healthpb.HealthCheckResponse_SERVING)
			} else {
				s.log.Warn("not ready", "reason", err)
				s.setHealth(healthpb.HealthCheckResponse_NOT_SERVING)
			}
		}
	}
}

// The gate refuses every new call but health checks once shutdown has
// begun: a client must not be welcomed by a node that is going away (the
// listeners are closed by then, but a connection opened before can still
// start streams).
func (s *Server) gateUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	if s.refuses(info.FullMethod) {
		return nil, errShuttingDown
	}
	return next(ctx, req)
}

func (s *Server) gateStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) error {
	if s.refuses(info.FullMethod) {
		return errShuttingDown
	}
	return next(srv, ss)
}

func (s *Server) refuses(method string) bool {
	return s.stopping.Load() && !strings.HasPrefix(method, "/"+healthpb.Health_ServiceDesc.ServiceName+"/")
}
