package conformance_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/bridge"
	"github.com/parleychat/parley/bridge/internal/grpcwebws"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/servertest"
	sess "github.com/parleychat/parley/server/session"
)

// The tests here drive the gRPC-Web Connect that parleyd's bridge attaches
// to its sessions directly (bridge/grpcwebdirect.go), byte by byte where
// it matters, with a real WebSocket client against a real parleyd.

// directServer starts parleyd with no connect limit, so that a test may
// open as many calls as it likes.
func directServer(t *testing.T) *servertest.Server {
	t.Helper()
	return servertest.Start(t, servertest.Options{Configure: func(c *server.Config) { c.RateLimits = "connect=unlimited" }})
}

// dialDirect opens improbable's WebSocket transport on parleyd's own
// bridge and sends headerFrame, as it is, as the header frame.
func dialDirect(t *testing.T, ctx context.Context, srv *servertest.Server, headerFrame string) *grpcwebws.Conn {
	t.Helper()
	ws, _, err := websocket.Dial(ctx, "ws://"+srv.HTTPAddr()+chatv1.Chat_Connect_FullMethodName, &websocket.DialOptions{Subprotocols: []string{"grpc-websockets"}})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = ws.CloseNow() })
	ws.SetReadLimit(8 << 20)
	if err := ws.Write(ctx, websocket.MessageBinary, []byte(headerFrame)); err != nil {
		t.Fatalf("header frame: %v", err)
	}
	return &grpcwebws.Conn{WS: ws}
}

// headers is a header frame as improbable's client writes it, with a
// token and extra lines.
func headers(token string, extra ...string) string {
	h := "content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\nx-user-agent: grpc-web-javascript/0.1\r\n"
	if token != "" {
		h += "authorization: Bearer " + token + "\r\n"
	}
	for _, e := range extra {
		h += e + "\r\n"
	}
	return h
}

// welcomed opens a call for user and reads its Welcome.
func welcomed(t *testing.T, ctx context.Context, srv *servertest.Server, user string, extra ...string) *grpcwebws.Conn {
	t.Helper()
	c := dialDirect(t, ctx, srv, headers(srv.TokenAs(t, user, chatv1.Role_ROLE_USER), extra...))
	var ev chatv1.ServerEvent
	if err := c.Recv(ctx, &ev); err != nil || ev.GetWelcome().GetUser().GetUsername() != user {
		t.Fatalf("%s: want Welcome, got %v, %v", user, &ev, err)
	}
	return c
}

// finish reads the call to its end: the events, the final status (nil
// for OK, from the trailers) and the WebSocket's close code.
func finish(t *testing.T, ctx context.Context, c *grpcwebws.Conn) ([]*chatv1.ServerEvent, error, websocket.StatusCode) {
	t.Helper()
	var evs []*chatv1.ServerEvent
	for {
		ev := new(chatv1.ServerEvent)
		err := c.Recv(ctx, ev)
		if err == nil {
			evs = append(evs, ev)
			continue
		}
		if c.Trailer == nil {
			t.Fatalf("the call ended without trailers: %v (after %d events)", err, len(evs))
		}
		if errors.Is(err, io.EOF) {
			err = nil
		}
		// Then the WebSocket closes.
		for {
			if _, _, rerr := c.WS.Read(ctx); rerr != nil {
				return evs, err, websocket.CloseStatus(rerr)
			}
		}
	}
}

// clientMessage is one client message of the transport: 0x00, then a
// gRPC frame of flag and msg.
func clientMessage(flag byte, msg []byte) []byte {
	return append([]byte{0}, grpcwebws.Frame(flag, msg)...)
}

func mustMarshal(t *testing.T, ev *chatv1.ClientEvent) []byte {
	t.Helper()
	b, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGRPCWebDirectRoundTrip: a ping and a message go out and come back,
// and the client's half-close (improbable's FINISH_SEND, a lone 0x01)
// ends the call OK after what its last commands produced.
func TestGRPCWebDirectRoundTrip(t *testing.T) {
	t.Parallel()
	srv := directServer(t)
	ctx := testContext(t)
	c := welcomed(t, ctx, srv, "alice")
	if got := c.Header.Get("Content-Type"); got != "application/grpc-web+proto" {
		t.Fatalf("response content-type %q", got)
	}
	if err := c.Send(ctx, &chatv1.ClientEvent{RequestId: "p1", Event: &chatv1.ClientEvent_Ping{Ping: &chatv1.Ping{}}}); err != nil {
		t.Fatal(err)
	}
	text := "héllo over gRPC-Web, % and all"
	if err := c.Send(ctx, &chatv1.ClientEvent{RequestId: "m1", Event: &chatv1.ClientEvent_SendMessage{SendMessage: &chatv1.SendMessage{Room: "general", Text: text, ClientMsgId: "c1"}}}); err != nil {
		t.Fatal(err)
	}
	var pong, ack, echoed bool
	for !pong || !ack || !echoed {
		var ev chatv1.ServerEvent
		if err := c.Recv(ctx, &ev); err != nil {
			t.Fatalf("recv (pong %v ack %v message %v): %v", pong, ack, echoed, err)
		}
		switch {
		case ev.GetPong() != nil:
			pong = ev.GetRequestId() == "p1"
		case ev.GetAck() != nil:
			ack = ev.GetRequestId() == "m1" && ev.GetAck().GetSeq() > 0
		case ev.GetMessage() != nil:
			m := ev.GetMessage()
			echoed = m.GetText() == text && m.GetSender() == "alice" && m.GetConversation().GetRoom() == "general"
		}
	}
	// Half-close right after a command: its answer still comes, then the
	// trailers say OK and the WebSocket closes normally.
	if err := c.Send(ctx, &chatv1.ClientEvent{RequestId: "p2", Event: &chatv1.ClientEvent_Ping{Ping: &chatv1.Ping{}}}); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseSend(ctx); err != nil {
		t.Fatal(err)
	}
	evs, final, code := finish(t, ctx, c)
	if final != nil || code != websocket.StatusNormalClosure {
		t.Fatalf("after the half-close: status %v, close %d; want OK and 1000", final, code)
	}
	if len(evs) == 0 || evs[len(evs)-1].GetPong() == nil || evs[len(evs)-1].GetRequestId() != "p2" {
		t.Fatalf("after the half-close got %v, want the pong to p2 last", evs)
	}
}

// TestGRPCWebDirectBadHeaderFrame: a header frame that does not parse, or
// whose authorization or grpc-timeout is broken, ends the call with
// InvalidArgument in its trailers, and the WebSocket closes normally.
func TestGRPCWebDirectBadHeaderFrame(t *testing.T) {
	t.Parallel()
	srv := directServer(t)
	tok := srv.TokenAs(t, "hdr", chatv1.Role_ROLE_USER)
	for _, tc := range []struct {
		name, frame, want string
	}{
		{"line without a colon", headers(tok, "this is not a header"), "missing colon"},
		{"continuation first", " folded\r\n" + headers(tok), "bad header frame"},
		{"authorization twice", headers(tok, "authorization: Bearer "+tok), "authorization given 2 times"},
		{"authorization not ASCII", headers("", "authorization: Bearer tök"), "authorization must be printable ASCII"},
		{"grpc-timeout without unit", headers(tok, "grpc-timeout: 100"), "grpc-timeout"},
		{"grpc-timeout bad unit", headers(tok, "grpc-timeout: 100x"), "grpc-timeout"},
		{"grpc-timeout 9 digits", headers(tok, "grpc-timeout: 123456789S"), "grpc-timeout"},
		{"grpc-timeout negative", headers(tok, "grpc-timeout: -1S"), "grpc-timeout"},
		{"grpc-timeout fraction", headers(tok, "grpc-timeout: 1.5S"), "grpc-timeout"},
		{"grpc-timeout twice", headers(tok, "grpc-timeout: 1S", "grpc-timeout: 2S"), "grpc-timeout given 2 times"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			evs, final, code := finish(t, ctx, dialDirect(t, ctx, srv, tc.frame))
			st := status.Convert(final)
			if len(evs) != 0 || st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "bad header frame") || !strings.Contains(st.Message(), tc.want) {
				t.Fatalf("got %d events and %v %q, want InvalidArgument saying %q", len(evs), st.Code(), st.Message(), tc.want)
			}
			if code != websocket.StatusNormalClosure {
				t.Fatalf("closed with %d, want 1000 after the trailers", code)
			}
		})
	}
}

// TestGRPCWebDirectBadClientMessages: a client message that breaks the
// transport's framing (its control byte, the gRPC frame's flag or length
// prefix) ends the call with a status that says so; a frame that is whole
// but whose protobuf does not decode is answered in band, and the call
// lives on.
func TestGRPCWebDirectBadClientMessages(t *testing.T) {
	t.Parallel()
	srv := directServer(t)
	ping := clientMessage(0, mustMarshal(t, &chatv1.ClientEvent{RequestId: "after", Event: &chatv1.ClientEvent_Ping{Ping: &chatv1.Ping{}}}))
	long := clientMessage(0, []byte("abc"))
	binary.BigEndian.PutUint32(long[2:6], 9)
	short := clientMessage(0, []byte("abcdef"))
	binary.BigEndian.PutUint32(short[2:6], 2)
	for i, tc := range []struct {
		name string
		msg  []byte
		code codes.Code
		want string
	}{
		{"empty message", []byte{}, codes.InvalidArgument, "must start with 0x00"},
		{"control byte 0x02", append([]byte{2}, ping[1:]...), codes.InvalidArgument, "must start with 0x00"},
		{"0x01 with more after it", []byte{1, 0}, codes.InvalidArgument, "must start with 0x00"},
		{"truncated gRPC frame", []byte{0, 0, 0, 0}, codes.InvalidArgument, "truncated gRPC frame"},
		{"length prefix too long", long, codes.InvalidArgument, "length does not match"},
		{"length prefix too short", short, codes.InvalidArgument, "length does not match"},
		{"compressed flag", clientMessage(1, ping[6:]), codes.Unimplemented, "compression is not supported"},
		{"trailer flag", clientMessage(0x80, ping[6:]), codes.InvalidArgument, "flag must be 0x0"},
		{"malformed protobuf", clientMessage(0, []byte{0x0a, 0xff, 0xff, 0xff}), codes.OK, "malformed protobuf"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			c := welcomed(t, ctx, srv, "bad"+string(rune('a'+i)))
			if err := c.WS.Write(ctx, websocket.MessageBinary, tc.msg); err != nil {
				t.Fatal(err)
			}
			if tc.code == codes.OK {
				// In band: an Error event, then the ping after it is answered.
				if err := c.WS.Write(ctx, websocket.MessageBinary, ping); err != nil {
					t.Fatal(err)
				}
				var sawError bool
				for {
					var ev chatv1.ServerEvent
					if err := c.Recv(ctx, &ev); err != nil {
						t.Fatalf("the call ended: %v", err)
					}
					if e := ev.GetError(); e != nil {
						if e.GetCode() != chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT || !strings.Contains(e.GetMessage(), tc.want) {
							t.Fatalf("in-band error %v, want INVALID_ARGUMENT %q", e, tc.want)
						}
						sawError = true
					}
					if ev.GetPong() != nil && ev.GetRequestId() == "after" {
						break
					}
				}
				if !sawError {
					t.Fatal("no in-band error before the pong")
				}
				return
			}
			_, final, _ := finish(t, ctx, c)
			if st := status.Convert(final); st.Code() != tc.code || !strings.Contains(st.Message(), tc.want) {
				t.Fatalf("call ended with %v %q, want %v saying %q", st.Code(), st.Message(), tc.code, tc.want)
			}
		})
	}
}

// TestGRPCWebDirectOversizedMessage: a message over the bridge's limit
// (its header frame or a later one) ends the call with a status that
// names the limit, the Disconnect table's for 1009, and then the
// WebSocket closes with 1009; the server serves on.
func TestGRPCWebDirectOversizedMessage(t *testing.T) {
	t.Parallel()
	srv := directServer(t)
	ctx := testContext(t)
	check := func(t *testing.T, c *grpcwebws.Conn) {
		t.Helper()
		_, final, code := finish(t, ctx, c)
		st := status.Convert(final)
		want := sess.Disconnect{Code: sess.CodeTooBig}.Err()
		if st.Code() != status.Code(want) || !strings.Contains(st.Message(), "131072-byte limit") {
			t.Fatalf("call ended with %v %q, want %v naming the limit", st.Code(), st.Message(), status.Code(want))
		}
		if code != websocket.StatusMessageTooBig {
			t.Fatalf("closed with %d, want 1009", code)
		}
	}
	t.Run("message", func(t *testing.T) {
		c := welcomed(t, ctx, srv, "big")
		big := mustMarshal(t, &chatv1.ClientEvent{RequestId: "big", Event: &chatv1.ClientEvent_SendMessage{SendMessage: &chatv1.SendMessage{Room: "general", Text: strings.Repeat("x", bridge.DefaultMaxFrameBytes)}}})
		if err := c.WS.Write(ctx, websocket.MessageBinary, clientMessage(0, big)); err != nil {
			t.Fatal(err)
		}
		check(t, c)
	})
	t.Run("header frame", func(t *testing.T) {
		check(t, dialDirect(t, ctx, srv, headers(srv.TokenAs(t, "bighdr", chatv1.Role_ROLE_USER), "x-pad: "+strings.Repeat("p", bridge.DefaultMaxFrameBytes))))
	})
	// The server is unharmed.
	welcomed(t, ctx, srv, "after")
}

// TestGRPCWebDirectDeadline: the call's grpc-timeout is its deadline, as
// on a gRPC server. When it passes, the session ends through the
// Disconnect table: the Disconnect event, then DeadlineExceeded in the
// trailers. A deadline that far exceeds a time.Duration is none.
func TestGRPCWebDirectDeadline(t *testing.T) {
	t.Parallel()
	srv := directServer(t)
	ctx := testContext(t)
	c := welcomed(t, ctx, srv, "hasty", "grpc-timeout: 1500m")
	evs, final, code := finish(t, ctx, c)
	if status.Code(final) != codes.DeadlineExceeded {
		t.Fatalf("call ended with %v, want DeadlineExceeded", final)
	}
	if code != websocket.StatusNormalClosure {
		t.Fatalf("closed with %d, want 1000 after the trailers", code)
	}
	want := sess.FromStatus(final).Event().GetDisconnect()
	if len(evs) == 0 || evs[len(evs)-1].GetDisconnect() == nil {
		t.Fatalf("events %v: want the Disconnect last", evs)
	}
	if got := evs[len(evs)-1].GetDisconnect(); got.GetCode() != want.GetCode() || got.GetReconnect() != want.GetReconnect() || got.GetCode() != uint32(sess.CodeServerError) {
		t.Fatalf("Disconnect %v, want %v (the table's for DeadlineExceeded)", got, want)
	}

	// 99999999H is past a time.Duration: no deadline, the call lives.
	c = welcomed(t, ctx, srv, "patient", "grpc-timeout: 99999999H")
	if err := c.Send(ctx, &chatv1.ClientEvent{RequestId: "p", Event: &chatv1.ClientEvent_Ping{Ping: &chatv1.Ping{}}}); err != nil {
		t.Fatal(err)
	}
	for {
		var ev chatv1.ServerEvent
		if err := c.Recv(ctx, &ev); err != nil {
			t.Fatalf("a call with no deadline ended: %v", err)
		}
		if ev.GetPong() != nil {
			break
		}
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}
