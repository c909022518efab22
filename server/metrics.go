package server

import (
	"context"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/peer"

	"github.com/parleychat/parley/bridge"
	"github.com/parleychat/parley/server/internal/metrics"
)

func (s *Server) metricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.Registry(), promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// directWSKey marks the context of a session Attach started.
type directWSKey struct{}

// transportOf names the transport a call or session came on, for the
// metrics' transport label.
func transportOf(ctx context.Context) string {
	switch {
	case bridge.IsGRPCWeb(ctx): // before directWSKey: gRPC-Web attaches too
		return metrics.TransportGRPCWeb
	case ctx.Value(directWSKey{}) != nil:
		return metrics.TransportWS
	}
	if p, ok := peer.FromContext(ctx); ok {
		if _, inproc := p.Addr.(pipeAddr); inproc {
			return metrics.TransportInProc
		}
	}
	return metrics.TransportGRPC
}
