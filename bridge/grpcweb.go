package bridge

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/improbable-eng/grpc-web/go/grpcweb"
	"google.golang.org/grpc"
)

// headerFrameTimeout bounds the wait for the header frame that opens a
// gRPC-Web WebSocket; improbable's transport would otherwise wait forever.
const headerFrameTimeout = 10 * time.Second

// grpcWebRequestHeaders are the headers a browser may send to gRPC-Web
// (CORS Access-Control-Allow-Headers) and the only ones forwarded to the
// gRPC server as metadata, from the HTTP request and from the header frame
// of the WebSocket transport alike. Everything else, notably identity and
// forwarding headers (X-Forwarded-For, X-Real-IP, Forwarded, the
// ClientIPHeader, Cookie), is dropped: those values are the client's own.
var grpcWebRequestHeaders = []string{
	"authorization",
	"content-type",
	"grpc-timeout",
	"grpc-encoding",
	"grpc-accept-encoding",
	"x-grpc-web",
	"x-user-agent",
}

func forwardedGRPCWebHeader(key string) bool {
	k := strings.ToLower(key)
	if k == "user-agent" || k == "te" {
		return true
	}
	for _, h := range grpcWebRequestHeaders {
		if k == h {
			return true
		}
	}
	return false
}

// newGRPCWeb wraps the in-process gRPC server, or a transparent proxy over
// Conn when there is none, with improbable's gRPC-Web and its WebSocket
// transport.
func (b *Bridge) newGRPCWeb() (*grpcweb.WrappedGrpcServer, *grpc.Server) {
	var (
		target    http.Handler
		endpoints func() []string
		proxy     *grpc.Server
	)
	if srv := b.cfg.GRPCServer; srv != nil {
		target = srv
		endpoints = func() []string { return grpcweb.ListGRPCResources(srv) }
	} else {
		proxy = newProxyServer(b.cfg.Conn, b.log)
		target = proxy
		endpoints = contractEndpoints
	}
	wrapped := grpcweb.WrapHandler(b.sanitizeGRPCWeb(target),
		// CORS pre-flights and WebSocket upgrades: the allow-list only.
		grpcweb.WithOriginFunc(b.origins.allows),
		grpcweb.WithWebsocketOriginFunc(b.origins.allowsRequest),
		grpcweb.WithAllowedRequestHeaders(grpcWebRequestHeaders),
		// Only methods the server (or the contract, for the proxy) has.
		grpcweb.WithCorsForRegisteredEndpointsOnly(true),
		grpcweb.WithEndpointsFunc(endpoints),
		// The bidirectional Connect needs the WebSocket transport.
		grpcweb.WithWebsockets(true),
		grpcweb.WithWebsocketPingInterval(b.cfg.PingInterval),
		grpcweb.WithWebsocketsMessageReadLimit(b.cfg.MaxFrameBytes),
	)
	return wrapped, proxy
}

// contractEndpoints lists the chat.v1 methods, for the standalone proxy.
func contractEndpoints() []string {
	var out []string
	for _, d := range contractServices {
		for _, m := range d.Methods {
			out = append(out, "/"+d.ServiceName+"/"+m.MethodName)
		}
		for _, s := range d.Streams {
			out = append(out, "/"+d.ServiceName+"/"+s.StreamName)
		}
	}
	return out
}

func (b *Bridge) isGRPCWeb(r *http.Request) bool {
	return b.grpcWeb.IsGrpcWebSocketRequest(r) || b.grpcWeb.IsGrpcWebRequest(r) || b.grpcWeb.IsAcceptableGrpcCorsRequest(r)
}

func (b *Bridge) serveGRPCWeb(w http.ResponseWriter, r *http.Request) {
	if refuseTokenInURL(w, r) {
		return
	}
	if !b.origins.allowsRequest(r) {
		// improbable only withholds CORS headers from a foreign origin on
		// the HTTP transport, and answers a bare 403 on the WebSocket one;
		// refuse it here, saying why.
		transport := "grpc-web"
		if b.grpcWeb.IsGrpcWebSocketRequest(r) {
			transport = "grpc-web-ws"
		}
		b.refusals.refused(r, transport, originOf(r))
		grpcWebRefusal(w, originRefusal(originOf(r)))
		return
	}
	if !b.grpcWeb.IsGrpcWebSocketRequest(r) {
		// One message per request on this transport (client streaming
		// needs the WebSocket one); twice the frame limit leaves room for
		// the base64 of application/grpc-web-text.
		r.Body = http.MaxBytesReader(w, r.Body, 2*b.cfg.MaxFrameBytes)
		b.grpcWeb.ServeHTTP(w, r)
		return
	}
	if b.directGRPCWeb(r) {
		b.serveGRPCWebConnect(w, r)
		return
	}
	// WebSocket transport: improbable checks the origin (403) and the
	// endpoint. The guard bounds the wait for the header frame, lets the
	// kernel drop a peer that stops acknowledging (pings included), and
	// closes the socket whatever path improbable returns by.
	g := &hijackGuard{ResponseWriter: w, userTimeout: 2 * b.cfg.PingInterval, headerTimeout: b.headerFrameTimeout}
	defer g.close()
	b.grpcWeb.ServeHTTP(g, r.WithContext(context.WithValue(r.Context(), hijackGuardKey{}, g)))
}

// sanitizeGRPCWeb sits between improbable and the gRPC server: it sees the
// request after improbable has merged the WebSocket header frame into it,
// keeps only the forwardable headers and sets ClientIPHeader from the
// connection's address.
func (b *Bridge) sanitizeGRPCWeb(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g, ok := r.Context().Value(hijackGuardKey{}).(*hijackGuard); ok {
			g.headerFrameRead()
		}
		h := make(http.Header, len(r.Header))
		for k, vv := range r.Header {
			if forwardedGRPCWebHeader(k) {
				h[k] = vv
			}
		}
		if ip := remoteIP(r); ip != "" {
			h.Set(b.cfg.ClientIPHeader, ip)
		}
		r.Header = h
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), grpcWebKey{}, true)))
	})
}

type grpcWebKey struct{}

// IsGRPCWeb reports whether ctx is that of a call the bridge serves as
// gRPC-Web: the in-process gRPC server's call contexts derive from the
// HTTP request's, so its metrics can tell gRPC-Web from native gRPC.
func IsGRPCWeb(ctx context.Context) bool { return ctx.Value(grpcWebKey{}) != nil }

// remoteIP is the host part of r.RemoteAddr: the peer of the TCP
// connection, never a forwarding header.
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

type hijackGuardKey struct{}

// hijackGuard wraps the ResponseWriter of a gRPC-Web WebSocket request to
// get hold of the hijacked connection.
type hijackGuard struct {
	http.ResponseWriter
	userTimeout   time.Duration
	headerTimeout time.Duration

	mu   sync.Mutex
	conn net.Conn
}

// Hijack implements http.Hijacker for the WebSocket upgrade.
func (g *hijackGuard) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(g.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(g.headerTimeout))
	setTCPUserTimeout(c, g.userTimeout)
	g.mu.Lock()
	g.conn = c
	g.mu.Unlock()
	return c, brw, nil
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (g *hijackGuard) Unwrap() http.ResponseWriter { return g.ResponseWriter }

// headerFrameRead lifts the header-frame deadline.
func (g *hijackGuard) headerFrameRead() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.conn != nil {
		_ = g.conn.SetReadDeadline(time.Time{})
	}
}

func (g *hijackGuard) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.conn != nil {
		_ = g.conn.Close()
	}
}
