package bridge

import (
	"net/http"
	"time"
)

// NewHTTPServer returns an *http.Server for h with deliberate limits:
//
//   - ReadHeaderTimeout 10s: a client must send its headers promptly
//     (slowloris).
//   - IdleTimeout 120s: idle keep-alive connections are closed.
//   - MaxHeaderBytes 64 KiB: room for a 4 KiB token, little else.
//   - no ReadTimeout or WriteTimeout: net/http leaves both deadlines on a
//     hijacked connection, so they would cut every WebSocket (and every
//     long download) after that time. Instead /api sets per-chunk
//     deadlines through http.ResponseController, and WebSockets have
//     pings, write timeouts and a first-frame timeout.
//
// The caller sets TLS and logging and calls ListenAndServe / Shutdown;
// Shutdown does not wait for hijacked connections, so call Bridge.Close too.
func NewHTTPServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
}
