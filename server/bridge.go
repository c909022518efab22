package server

import (
	"net/http"

	"google.golang.org/grpc"

	"github.com/parleychat/parley/bridge"
)

// newBridge builds the HTTP side: gRPC-Web over the in-process *grpc.Server,
// /ws attached to the sessions directly (Attach, session.Attacher), REST over the
// in-process connection; every request meets the interceptors' policy.
func newBridge(s *Server, conn *grpc.ClientConn, origins []string) (http.Handler, interface{ Close() error }, error) {
	b, err := bridge.New(bridge.Config{
		GRPCServer:     s.grpc,
		Conn:           conn,
		Sessions:       s,
		AllowedOrigins: origins,
		PingInterval:   s.cfg.PingInterval,
		Static:         s.cfg.Static,
		Logger:         s.log,
		ClientIPHeader: ClientIPHeader,
	})
	if err != nil {
		return nil, nil, err
	}
	return b.Handler(), b, nil
}

func newHTTPServer(h http.Handler) *http.Server { return bridge.NewHTTPServer("", h) }
