package server

import (
	"net/http"

	"google.golang.org/grpc"

	"github.com/parleychat/parley/bridge"
)

// newBridge builds the HTTP side: gRPC-Web over the in-process *grpc.Server
// and /ws, REST and the web app over the in-process connection, so every
// request meets the same interceptors as native gRPC.
func newBridge(s *Server, conn *grpc.ClientConn, origins []string) (http.Handler, interface{ Close() error }, error) {
	b, err := bridge.New(bridge.Config{
		GRPCServer:     s.grpc,
		Conn:           conn,
		AllowedOrigins: origins,
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
