package conformance_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/encoding/protojson"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/servertest"
)

// TestStandaloneWSDisconnectTable: a standalone bridge's /ws (proxied to
// parleyd over gRPC) ends a session the server ends as parleyd's own /ws
// does: the server's Disconnect event last, and a close with its code and
// reason, from the one table. An admin's disconnect ends the stream
// Aborted, which the status alone would close 4500; a shutdown, 1012.
func TestStandaloneWSDisconnectTable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		end    func(t *testing.T, srv *servertest.Server)
		code   websocket.StatusCode
		reason string
	}{
		{"admin", func(t *testing.T, srv *servertest.Server) {
			ctx := testContext(t)
			admin := chatv1.NewAdminClient(srv.Dial(t))
			tok := srv.TokenAs(t, "root", chatv1.Role_ROLE_ADMIN)
			if _, err := admin.DisconnectUser(servertest.WithToken(ctx, tok), &chatv1.DisconnectUserRequest{Username: "alice", Reason: "spam"}); err != nil {
				t.Fatal(err)
			}
		}, 4409, "disconnected by an administrator: spam"},
		{"shutdown", func(t *testing.T, srv *servertest.Server) { srv.Stop() }, websocket.StatusServiceRestart, "server shutting down"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := servertest.Start(t, servertest.Options{})
			base := startStandalone(t, srv.GRPCAddr())
			ctx := testContext(t)
			c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/ws", &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {standaloneOrigin}}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			if err := c.Write(ctx, websocket.MessageText, []byte(`{"authorization":"Bearer `+srv.TokenAs(t, "alice", chatv1.Role_ROLE_USER)+`"}`)); err != nil {
				t.Fatal(err)
			}
			if _, _, err := c.Read(ctx); err != nil { // Welcome: the session is open
				t.Fatal(err)
			}
			tc.end(t, srv)
			var last *chatv1.ServerEvent
			for {
				_, data, err := c.Read(ctx)
				if err != nil {
					var ce websocket.CloseError
					if !errors.As(err, &ce) {
						t.Fatalf("no close frame: %v", err)
					}
					if ce.Code != tc.code || ce.Reason != tc.reason {
						t.Fatalf("close %d %q, want %d %q", ce.Code, ce.Reason, tc.code, tc.reason)
					}
					break
				}
				last = new(chatv1.ServerEvent)
				if err := protojson.Unmarshal(data, last); err != nil {
					t.Fatal(err)
				}
			}
			if d := last.GetDisconnect(); d.GetCode() != uint32(tc.code) || d.GetReason() != tc.reason {
				t.Fatalf("last event %v, want the Disconnect %d %q", last, tc.code, tc.reason)
			}
		})
	}
}
