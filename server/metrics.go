package server

import (
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/parleychat/parley/server/internal/hub"
)

func (s *Server) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	gauge := func(name, help string, f func(hub.Stats) float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(s.hub.Stats()) }))
	}
	counter := func(name, help string, f func(hub.Stats) float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return f(s.hub.Stats()) }))
	}
	gauge("parley_connections", "Live Connect streams.", func(st hub.Stats) float64 { return float64(st.Connections) })
	gauge("parley_online_users", "Users with at least one live stream.", func(st hub.Stats) float64 { return float64(st.OnlineUsers) })
	gauge("parley_rooms", "Rooms with live members.", func(st hub.Stats) float64 { return float64(st.Rooms) })
	counter("parley_messages_in_total", "Messages stored.", func(st hub.Stats) float64 { return float64(st.MessagesIn) })
	counter("parley_messages_out_total", "Events queued to sessions by fan-out.", func(st hub.Stats) float64 { return float64(st.MessagesOut) })
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// janitor runs RunJanitor at start and then hourly.
