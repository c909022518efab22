package bridge_test

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/parleychat/parley/bridge"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

const connectMethod = "/chat.v1.Chat/Connect"

// forModes runs f against a bridge on an in-process grpc.Server and
// against a standalone one proxying over Conn.
func forModes(t *testing.T, f func(t *testing.T, e *env)) {
	for _, m := range []mode{inProcess, standalone} {
		t.Run(string(m), func(t *testing.T) {
			t.Parallel()
			f(t, newEnv(t, m, nil))
		})
	}
}

func TestGRPCWebSocketConnect(t *testing.T) {
	t.Parallel()
	forModes(t, func(t *testing.T, e *env) {
		ctx := testCtx(t)
		g, _, err := dialGRPCWeb(ctx, e, connectMethod, allowedOrigin, map[string]string{"authorization": "Bearer tok-gw"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		var ev chatv1.ServerEvent
		if err := g.Recv(ctx, &ev); err != nil || ev.GetWelcome().GetUser().GetUsername() != "gw" {
			t.Fatalf("welcome: %v %v", &ev, err)
		}
		if err := g.Send(ctx, ping("p1")); err != nil {
			t.Fatal(err)
		}
		if err := g.Recv(ctx, &ev); err != nil || ev.GetPong() == nil || ev.GetRequestId() != "p1" {
			t.Fatalf("pong: %v %v", &ev, err)
		}
		if err := g.Send(ctx, say("s1", "general", "over grpc-web")); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"ack", "message"} {
			if err := g.Recv(ctx, &ev); err != nil {
				t.Fatalf("%s: %v", want, err)
			}
		}
		if ev.GetMessage().GetText() != "over grpc-web" {
			t.Fatalf("message: %v", &ev)
		}
		// Half-close: the handler returns OK and the trailers say so.
		if err := g.CloseSend(ctx); err != nil {
			t.Fatal(err)
		}
		if err := g.Recv(ctx, &ev); !errors.Is(err, io.EOF) {
			t.Fatalf("after CloseSend: %v, want io.EOF (grpc-status 0)", err)
		}
		if err := e.waitEnded(t, "gw", 5*time.Second); err != nil {
			t.Fatalf("handler: %v", err)
		}
	})
}

func TestGRPCWebSocketFinalStatus(t *testing.T) {
	t.Parallel()
	forModes(t, func(t *testing.T, e *env) {
		ctx := testCtx(t)
		// No token: the server's interceptor refuses, and the browser gets
		// the status (not a silent close).
		g, _, err := dialGRPCWeb(ctx, e, connectMethod, allowedOrigin, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		var ev chatv1.ServerEvent
		err = g.Recv(ctx, &ev)
		if status.Code(err) != codes.Unauthenticated || status.Convert(err).Message() != "missing or invalid token" {
			t.Fatalf("got %v, want Unauthenticated", err)
		}

		// A status returned mid-stream.
		g2, _, err := dialGRPCWeb(ctx, e, connectMethod, "", map[string]string{"authorization": "Bearer tok-gwperm"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer g2.Close()
		if err := g2.Recv(ctx, &ev); err != nil {
			t.Fatal(err)
		}
		_ = g2.Send(ctx, say("x", "general", "perm"))
		if err := g2.Recv(ctx, &ev); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("got %v, want PermissionDenied", err)
		}
	})
}

func TestGRPCWebSocketOriginRefused(t *testing.T) {
	t.Parallel()
	forModes(t, func(t *testing.T, e *env) {
		ctx := testCtx(t)
		for _, origin := range []string{evilOrigin, e.base, "null"} {
			_, resp, err := dialGRPCWeb(ctx, e, connectMethod, origin, map[string]string{"authorization": "Bearer tok-x"}, nil)
			if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Fatalf("origin %s: err %v resp %v, want 403", origin, err, resp)
			}
		}
		// Unknown methods are refused too (CORS for registered endpoints only).
		_, resp, err := dialGRPCWeb(ctx, e, "/chat.v1.Chat/Nope", allowedOrigin, nil, nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("unknown method: err %v resp %v, want 403", err, resp)
		}
	})
}

func TestGRPCWebHeaderFrameIdentityStripped(t *testing.T) {
	t.Parallel()
	forModes(t, func(t *testing.T, e *env) {
		ctx := testCtx(t)
		spoofed := map[string]string{
			"authorization":              "Bearer tok-spoofer",
			"x-forwarded-for":            "6.6.6.6",
			"x-real-ip":                  "6.6.6.6",
			"forwarded":                  "for=6.6.6.6",
			bridge.DefaultClientIPHeader: "6.6.6.6",
			"x-parley-user":              "admin",
			"cookie":                     "session=stolen",
			"true-client-ip":             "6.6.6.6",
			"x-forwarded-host":           "evil.example",
		}
		upgrade := http.Header{"X-Forwarded-For": {"7.7.7.7"}, "X-Parley-Client-Ip": {"7.7.7.7"}}
		g, _, err := dialGRPCWeb(ctx, e, connectMethod, allowedOrigin, spoofed, upgrade)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		var ev chatv1.ServerEvent
		if err := g.Recv(ctx, &ev); err != nil {
			t.Fatal(err)
		}
		md := e.chat.lastMD("spoofer", connectMethod)
		if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer tok-spoofer" {
			t.Fatalf("authorization %q", got)
		}
		if got := md.Get(bridge.DefaultClientIPHeader); len(got) != 1 || got[0] != "127.0.0.1" {
			t.Fatalf("%s = %q, want the connection's address only", bridge.DefaultClientIPHeader, got)
		}
		for k, v := range md {
			if strings.Contains(strings.Join(v, ","), "6.6.6.6") || strings.Contains(strings.Join(v, ","), "7.7.7.7") {
				t.Errorf("spoofed metadata reached the server: %s=%q", k, v)
			}
		}
		for _, k := range []string{"x-forwarded-for", "x-real-ip", "forwarded", "x-parley-user", "cookie", "x-forwarded-host"} {
			if v := md.Get(k); len(v) > 0 {
				t.Errorf("%s reached the server: %q", k, v)
			}
		}
	})
}

func TestGRPCWebSocketClientGoneEndsServerStream(t *testing.T) {
	t.Parallel()
	forModes(t, func(t *testing.T, e *env) {
		for _, tc := range []struct {
			name  string
			close func(g *gwClient)
		}{
			{"abrupt", func(g *gwClient) { _ = g.WS.CloseNow() }},
			{"clean", func(g *gwClient) { _ = g.WS.Close(websocket.StatusNormalClosure, "tab closed") }},
		} {
			ctx := testCtx(t)
			user := "gwgone-" + tc.name
			g, _, err := dialGRPCWeb(ctx, e, connectMethod, allowedOrigin, map[string]string{"authorization": "Bearer tok-" + user}, nil)
			if err != nil {
				t.Fatal(err)
			}
			var ev chatv1.ServerEvent
			if err := g.Recv(ctx, &ev); err != nil {
				t.Fatal(err)
			}
			tc.close(g)
			// improbable reports the vanished socket both as the end of the
			// client's messages (io.EOF from Recv) and by cancelling the
			// stream's context, so the handler returns nil or Canceled,
			// whichever it notices first; either way it returns.
			if err := e.waitEnded(t, user, 10*time.Second); err != nil && status.Code(err) != codes.Canceled {
				t.Fatalf("%s: handler returned %v", tc.name, err)
			}
		}
	})
}

func TestGRPCWebSocketOversizedFrame(t *testing.T) {
	t.Parallel()
	forModes(t, func(t *testing.T, e *env) {
		ctx := testCtx(t)
		g, _, err := dialGRPCWeb(ctx, e, connectMethod, allowedOrigin, map[string]string{"authorization": "Bearer tok-gwbig"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		var ev chatv1.ServerEvent
		if err := g.Recv(ctx, &ev); err != nil {
			t.Fatal(err)
		}
		_ = g.Send(ctx, say("big", "general", strings.Repeat("x", bridge.DefaultMaxFrameBytes)))
		var ce websocket.CloseError
		for {
			if err = g.Recv(ctx, &ev); err != nil {
				break
			}
		}
		if !errors.As(err, &ce) || ce.Code != websocket.StatusMessageTooBig {
			t.Fatalf("got %v, want close 1009", err)
		}
		e.waitEnded(t, "gwbig", 10*time.Second)
	})
}

func TestGRPCWebUnaryAndCORS(t *testing.T) {
	t.Parallel()
	forModes(t, func(t *testing.T, e *env) {
		ctx := testCtx(t)
		var rooms chatv1.ListRoomsResponse
		if _, err := grpcWebUnary(ctx, e, "/chat.v1.Chat/ListRooms", allowedOrigin, "Bearer tok-unary", &chatv1.ListRoomsRequest{}, &rooms); err != nil {
			t.Fatal(err)
		}
		if len(rooms.GetRooms()) != 1 {
			t.Fatalf("rooms %v", &rooms)
		}
		if _, err := grpcWebUnary(ctx, e, "/chat.v1.Chat/ListRooms", "", "", &chatv1.ListRoomsRequest{}, &rooms); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("no token: %v", err)
		}
		res, err := grpcWebUnary(ctx, e, "/chat.v1.Chat/ListRooms", evilOrigin, "Bearer tok-unary", &chatv1.ListRoomsRequest{}, &rooms)
		if res == nil || res.StatusCode != http.StatusForbidden {
			t.Fatalf("foreign origin: %v %v", res, err)
		}

		preflight := func(origin string) *http.Response {
			req, _ := http.NewRequestWithContext(ctx, http.MethodOptions, e.base+"/chat.v1.Chat/ListRooms", nil)
			req.Header.Set("Origin", origin)
			req.Header.Set("Access-Control-Request-Method", "POST")
			req.Header.Set("Access-Control-Request-Headers", "authorization,content-type,x-grpc-web,x-user-agent")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			return res
		}
		if res := preflight(allowedOrigin); res.Header.Get("Access-Control-Allow-Origin") != allowedOrigin {
			t.Fatalf("preflight from allowed origin: %d %v", res.StatusCode, res.Header)
		}
		if res := preflight(evilOrigin); res.StatusCode != http.StatusForbidden || res.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("preflight from foreign origin: %d %v", res.StatusCode, res.Header)
		}
	})
}
