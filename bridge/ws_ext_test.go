package bridge_test

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/bridge"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/session"
)

func TestWSJSONRoundTrip(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, nil)
	ctx := testCtx(t)
	c := dialWS(t, ctx, e, wsOpts{origin: allowedOrigin})

	writeText(t, ctx, c, hello("jason"))
	typ, welcome, raw, err := readWS(ctx, c)
	if err != nil || typ != websocket.MessageText {
		t.Fatalf("welcome: %v %v", typ, err)
	}
	if got := welcome.GetWelcome().GetUser().GetUsername(); got != "jason" {
		t.Fatalf("welcome user %q, want jason", got)
	}
	// protojson defaults: lowerCamelCase names, enums by name.
	for _, want := range []string{`"sessionId"`, `"serverTime"`, `"ROLE_USER"`} {
		if !bytes.Contains(raw, []byte(want)) {
			t.Errorf("welcome %s lacks %s", raw, want)
		}
	}

	writeText(t, ctx, c, `{"requestId":"p1","ping":{}}`)
	if ev := mustReadWS(t, ctx, c, websocket.MessageText); ev.GetRequestId() != "p1" || ev.GetPong() == nil {
		t.Fatalf("want pong p1, got %v", ev)
	}
	// proto field names are accepted on input too.
	writeText(t, ctx, c, `{"request_id":"s1","send_message":{"room":"general","text":"hi there"}}`)
	ack := mustReadWS(t, ctx, c, websocket.MessageText)
	msg := mustReadWS(t, ctx, c, websocket.MessageText)
	if ack.GetRequestId() != "s1" || ack.GetAck() == nil || msg.GetMessage().GetText() != "hi there" {
		t.Fatalf("want ack s1 + message, got %v / %v", ack, msg)
	}
}

func TestWSBinaryRoundTrip(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, nil)
	for _, tc := range []struct {
		name  string
		first func(ctx context.Context, c *websocket.Conn)
		subs  []string
	}{
		{"binary hello frame", func(ctx context.Context, c *websocket.Conn) {
			_ = c.Write(ctx, websocket.MessageBinary, []byte(hello("binhello")))
		}, nil},
		{"subprotocol token, first frame a command", func(ctx context.Context, c *websocket.Conn) {
			writeBinaryEvent(t, ctx, c, ping("p0"))
		}, []string{bridge.Subprotocol, "bearer.tok-binsub"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			c := dialWS(t, ctx, e, wsOpts{subprotocols: tc.subs})
			tc.first(ctx, c)
			if ev := mustReadWS(t, ctx, c, websocket.MessageBinary); ev.GetWelcome() == nil {
				t.Fatalf("want welcome, got %v", ev)
			}
			if tc.subs != nil {
				if ev := mustReadWS(t, ctx, c, websocket.MessageBinary); ev.GetRequestId() != "p0" || ev.GetPong() == nil {
					t.Fatalf("want pong p0, got %v", ev)
				}
			}
			writeBinaryEvent(t, ctx, c, say("b1", "general", "héllo"))
			if ev := mustReadWS(t, ctx, c, websocket.MessageBinary); ev.GetAck() == nil || ev.GetRequestId() != "b1" {
				t.Fatalf("want ack b1, got %v", ev)
			}
			if ev := mustReadWS(t, ctx, c, websocket.MessageBinary); ev.GetMessage().GetText() != "héllo" {
				t.Fatalf("want message, got %v", ev)
			}
		})
	}
}

func TestWSSubprotocolToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, nil)
	ctx := testCtx(t)
	c, resp, err := dialWSResp(ctx, e, wsOpts{origin: allowedOrigin, subprotocols: []string{bridge.Subprotocol, "bearer.tok-subby"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if got := resp.Header.Values("Sec-WebSocket-Protocol"); len(got) != 1 || got[0] != bridge.Subprotocol {
		t.Fatalf("echoed subprotocols %q, want only %q", got, bridge.Subprotocol)
	}
	writeText(t, ctx, c, `{}`) // hello without a token: fixes JSON
	if ev := mustReadWS(t, ctx, c, websocket.MessageText); ev.GetWelcome().GetUser().GetUsername() != "subby" {
		t.Fatalf("want welcome for subby, got %v", ev)
	}
	md := e.chat.lastMD("subby", "/chat.v1.Chat/Connect")
	if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer tok-subby" {
		t.Fatalf("authorization metadata %q", got)
	}
	if got := md.Get(bridge.DefaultClientIPHeader); len(got) != 1 || got[0] != "127.0.0.1" {
		t.Fatalf("client ip metadata %q", got)
	}

	// A bearer token without parley.v1 is refused before the upgrade.
	_, resp, err = dialWSResp(ctx, e, wsOpts{subprotocols: []string{"bearer.tok-subby"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bearer without parley.v1: err %v resp %v", err, resp)
	}
}

func TestWSTokenTwiceRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, nil)
	ctx := testCtx(t)
	c := dialWS(t, ctx, e, wsOpts{subprotocols: []string{bridge.Subprotocol, "bearer.tok-a"}})
	writeText(t, ctx, c, hello("b"))
	if ce := readClose(t, ctx, c); ce.Code != 4400 {
		t.Fatalf("close %v, want 4400", ce)
	}
}

func TestWSTokenInURLRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, nil)
	ctx := testCtx(t)
	for _, q := range []string{"token=tok-x", "access_token=tok-x", "authorization=Bearer%20tok-x", "Token=x"} {
		c, resp, err := websocket.Dial(ctx, e.wsURL("/ws?"+q), nil)
		if err == nil {
			c.CloseNow()
			t.Fatalf("%s: upgraded", q)
		}
		if resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("%s: want 400, got %v", q, resp)
		}
	}
	// The body says why, for people reading it in devtools.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.base+"/ws?token=tok-x", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(res.Body)
	if res.StatusCode != http.StatusBadRequest || !strings.Contains(buf.String(), "not accepted in the URL") {
		t.Fatalf("%d %s", res.StatusCode, buf.String())
	}
}

func TestWSOriginRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, nil)
	ctx := testCtx(t)
	for _, origin := range []string{evilOrigin, "null", "http://app.example:8081", "https://app.example:8080",
		// Same host as the request: no host-equality default.
		e.base} {
		c, resp, err := dialWSResp(ctx, e, wsOpts{origin: origin})
		if err == nil {
			c.CloseNow()
			t.Fatalf("origin %s: upgraded", origin)
		}
		if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("origin %s: want 403, got %v", origin, resp)
		}
	}
	// The listed origin, in another case, passes.
	c := dialWS(t, ctx, e, wsOpts{origin: "HTTP://App.Example:8080"})
	writeText(t, ctx, c, hello("origin"))
	mustReadWS(t, ctx, c, websocket.MessageText)
}

func TestWSOversizedFrameCloses1009(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, nil)
	ctx := testCtx(t)
	c := dialWS(t, ctx, e, wsOpts{})
	writeText(t, ctx, c, hello("big"))
	mustReadWS(t, ctx, c, websocket.MessageText)
	big := `{"sendMessage":{"room":"general","text":"` + strings.Repeat("x", bridge.DefaultMaxFrameBytes) + `"}}`
	_ = c.Write(ctx, websocket.MessageText, []byte(big))
	if ce := readClose(t, ctx, c); ce.Code != websocket.StatusMessageTooBig {
		t.Fatalf("close %v, want 1009", ce)
	}
	e.waitEnded(t, "big", 10*time.Second)
}

// TestWSInvalidUTF8Closes1007: on the proxied path too, a text frame that
// is not UTF-8 fails the connection with 1007 (RFC 6455 invalid payload
// data), whether it is split across fragments or not.
func TestWSInvalidUTF8Closes1007(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, nil)
	for name, frame := range map[string]string{
		"first frame": "\xff",
		"after hello": "{\"requestId\":\"r1\",\"sendMessage\":{\"room\":\"general\",\"text\":\"caf\xe9\"}}",
	} {
		t.Run(name, func(t *testing.T) {
			ctx := testCtx(t)
			c := dialWS(t, ctx, e, wsOpts{})
			if name == "after hello" {
				writeText(t, ctx, c, hello("utf8"))
				mustReadWS(t, ctx, c, websocket.MessageText)
			}
			_ = c.Write(ctx, websocket.MessageText, []byte(frame))
			if ce := readClose(t, ctx, c); ce.Code != websocket.StatusInvalidFramePayloadData {
				t.Fatalf("close %v, want 1007", ce)
			}
		})
	}
}

func TestWSMalformedFramesAnsweredInBand(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, nil)
	ctx := testCtx(t)
	c := dialWS(t, ctx, e, wsOpts{})
	writeText(t, ctx, c, hello("malformed"))
	mustReadWS(t, ctx, c, websocket.MessageText)

	for _, tc := range []struct{ frame, wantRID, wantMsg string }{
		{`{"requestId":"r1","ping":{`, "", "malformed JSON: "},
		{`{"requestId":"r2","pingg":{}}`, "r2", "malformed JSON: "},
		{`[1,2,3]`, "", "malformed JSON: "},
		{`{"authorization":"Bearer tok-other"}`, "", "malformed JSON: "}, // a hello only counts first
	} {
		writeText(t, ctx, c, tc.frame)
		ev := mustReadWS(t, ctx, c, websocket.MessageText)
		if ev.GetError().GetCode() != chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT || !strings.HasPrefix(ev.GetError().GetMessage(), tc.wantMsg) || ev.GetRequestId() != tc.wantRID {
			t.Fatalf("frame %s: got %v", tc.frame, ev)
		}
	}
	// A binary frame that is not a ClientEvent; the answer stays JSON.
	_ = c.Write(ctx, websocket.MessageBinary, []byte{0xff, 0xff, 0xff})
	if ev := mustReadWS(t, ctx, c, websocket.MessageText); !strings.HasPrefix(ev.GetError().GetMessage(), "malformed protobuf: ") {
		t.Fatalf("binary garbage: got %v", ev)
	}
	// The connection lives on.
	writeJSONEvent(t, ctx, c, ping("alive"))
	if ev := mustReadWS(t, ctx, c, websocket.MessageText); ev.GetRequestId() != "alive" || ev.GetPong() == nil {
		t.Fatalf("want pong, got %v", ev)
	}
}

func TestWSFinalStatusToCloseCode(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, nil)
	for _, tc := range []struct {
		user, text string
		badToken   bool
		code       websocket.StatusCode
		reason     string
		disconnect bool // the server sent a Disconnect event last
	}{
		{user: "cc-ok", text: "bye", code: websocket.StatusNormalClosure, reason: ""},
		{user: "cc-perm", text: "perm", code: 4403, reason: "not allowed in this room"},
		{user: "cc-unavail", text: "unavailable", code: websocket.StatusServiceRestart, reason: "server restarting"},
		{user: "cc-exhausted", text: "exhausted", code: 4429, reason: "too many connections"},
		{user: "cc-internal", text: "internal", code: 4500, reason: "internal error"},
		{user: "cc-unauth", badToken: true, code: 4401, reason: "missing or invalid token"},
		// A session the server ended: the close carries its Disconnect's
		// code, which the status alone cannot always name (ResourceExhausted
		// is 4429 by the table, but a slow consumer's is 1008).
		{user: "cc-slow", text: "disconnect:1008:slow consumer", code: websocket.StatusPolicyViolation, reason: "slow consumer", disconnect: true},
		{user: "cc-admin", text: "disconnect:4409:disconnected by an administrator: spam", code: 4409, reason: "disconnected by an administrator: spam", disconnect: true},
		{user: "cc-restart", text: "disconnect:1012:server shutting down", code: websocket.StatusServiceRestart, reason: "server shutting down", disconnect: true},
		{user: "cc-limited", text: "disconnect:4429:too many connections", code: 4429, reason: "too many connections", disconnect: true},
	} {
		t.Run(tc.user, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			c := dialWS(t, ctx, e, wsOpts{})
			if tc.badToken {
				writeText(t, ctx, c, `{"authorization":"Bearer nope"}`)
			} else {
				writeText(t, ctx, c, hello(tc.user))
				mustReadWS(t, ctx, c, websocket.MessageText)
				writeJSONEvent(t, ctx, c, say("x", "general", tc.text))
			}
			last, ce := readLastAndClose(t, ctx, c)
			if ce.Code != tc.code || ce.Reason != tc.reason {
				t.Fatalf("close %d %q, want %d %q", ce.Code, ce.Reason, tc.code, tc.reason)
			}
			if d := last.GetDisconnect(); tc.disconnect && (d.GetCode() != uint32(tc.code) || d.GetReason() != tc.reason) {
				t.Fatalf("last event %v, want the server's Disconnect", last)
			}
		})
	}
}

// TestWSSlowConsumerToldWhy: a client whose queue fills (here, one event,
// behind a burst) while its socket still takes writes is told why, as a
// session the server ends tells it: a Disconnect event from the table,
// then the close with the same code and reason.
func TestWSSlowConsumerToldWhy(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, func(c *bridge.Config) { c.SendQueue = 1 })
	for _, format := range []websocket.MessageType{websocket.MessageText, websocket.MessageBinary} {
		ctx := testCtx(t)
		c := dialWS(t, ctx, e, wsOpts{})
		user := "told-" + format.String()
		if err := c.Write(ctx, format, []byte(hello(user))); err != nil {
			t.Fatal(err)
		}
		mustReadWS(t, ctx, c, format)
		writeJSONEvent(t, ctx, c, say("f", "general", "flood:5000:10"))
		last, ce := readLastAndClose(t, ctx, c)
		want := session.Disconnect{Code: session.CodeSlowConsumer, Reason: "slow consumer"}.Event().GetDisconnect()
		if ce.Code != websocket.StatusPolicyViolation || ce.Reason != "slow consumer" {
			t.Fatalf("%v: close %d %q, want 1008 \"slow consumer\"", format, ce.Code, ce.Reason)
		}
		if !proto.Equal(last.GetDisconnect(), want) {
			t.Fatalf("%v: last event %v, want %v", format, last, want)
		}
		if err := e.waitEnded(t, user, 10*time.Second); status.Code(err) != codes.Canceled {
			t.Fatalf("%v: the stream ended %v, want cancelled", format, err)
		}
	}
}

func TestWSNoTokenReachesServer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, nil)
	ctx := testCtx(t)
	c := dialWS(t, ctx, e, wsOpts{})
	writeJSONEvent(t, ctx, c, ping("first")) // no hello, no subprotocol token
	if ce := readClose(t, ctx, c); ce.Code != 4401 {
		t.Fatalf("close %v, want 4401 from the server's interceptor", ce)
	}
	if md := e.chat.lastMD("-", "/chat.v1.Chat/Connect"); md == nil {
		t.Fatal("the call did not reach the gRPC server")
	}
}

func TestWSSlowConsumerDisconnected(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, func(c *bridge.Config) { c.SendQueue = 64 })
	ctx := testCtx(t)

	slow := dialWS(t, ctx, e, wsOpts{})
	writeText(t, ctx, slow, hello("slow"))
	mustReadWS(t, ctx, slow, websocket.MessageText)
	// 64 MiB of events to a client that stops reading: socket buffers
	// fill, then the 64-event queue.
	writeJSONEvent(t, ctx, slow, say("f", "general", "flood:4096:16384"))

	fast := dialWS(t, ctx, e, wsOpts{})
	writeText(t, ctx, fast, hello("fast"))
	mustReadWS(t, ctx, fast, websocket.MessageText)
	// A burst that fits the queue, to a client that reads.
	writeJSONEvent(t, ctx, fast, say("f", "general", "flood:60:100"))
	for i := range 60 {
		if ev := mustReadWS(t, ctx, fast, websocket.MessageText); ev.GetMessage().GetSeq() != int64(i+1) {
			t.Fatalf("fast client: event %d is %v", i, ev)
		}
	}

	// The slow session is ended and its stream cancelled...
	if err := e.waitEnded(t, "slow", 20*time.Second); err == nil {
		t.Fatal("slow consumer's Connect ended OK, want cancelled")
	}
	// ...and its socket closed: draining it ends in an error.
	for {
		if _, _, err := slow.Read(ctx); err != nil {
			if code := websocket.CloseStatus(err); code != -1 && code != websocket.StatusPolicyViolation {
				t.Fatalf("slow consumer closed with %d, want 1008 (or no close frame)", code)
			}
			break
		}
	}
	// The fast one is still served.
	writeJSONEvent(t, ctx, fast, ping("still"))
	if ev := mustReadWS(t, ctx, fast, websocket.MessageText); ev.GetPong() == nil {
		t.Fatalf("fast client: %v", ev)
	}
}

func TestWSClientGoneEndsServerStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, nil)
	for _, tc := range []struct {
		user  string
		close func(c *websocket.Conn)
	}{
		{"gone-abrupt", func(c *websocket.Conn) { _ = c.CloseNow() }},
		{"gone-clean", func(c *websocket.Conn) { _ = c.Close(websocket.StatusNormalClosure, "bye") }},
	} {
		t.Run(tc.user, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			c := dialWS(t, ctx, e, wsOpts{})
			writeText(t, ctx, c, hello(tc.user))
			mustReadWS(t, ctx, c, websocket.MessageText)
			tc.close(c)
			e.waitEnded(t, tc.user, 10*time.Second)
		})
	}
}

func TestWSPingsKeepConnectionAndDetectDeadPeer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, func(c *bridge.Config) { c.PingInterval = time.Second })
	ctx := testCtx(t)

	// A reading client answers pings and stays.
	c := dialWS(t, ctx, e, wsOpts{})
	writeText(t, ctx, c, hello("pinged"))
	mustReadWS(t, ctx, c, websocket.MessageText)
	readDone := make(chan error, 1)
	go func() { _, _, err := c.Read(ctx); readDone <- err }() // pongs are sent while reading
	time.Sleep(3500 * time.Millisecond)                       // three ping intervals
	select {
	case err := <-e.chat.endedCh("pinged"):
		t.Fatalf("session ended while the client answered pings: %v", err)
	case err := <-readDone:
		t.Fatalf("idle read ended: %v", err)
	default:
	}
	_ = c.CloseNow()
	<-readDone

	// A client that never reads never answers: the session ends.
	deaf := dialWS(t, ctx, e, wsOpts{})
	writeText(t, ctx, deaf, hello("deaf"))
	e.waitEnded(t, "deaf", 10*time.Second)
}

func TestBridgeCloseEndsSessions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, nil)
	ctx := testCtx(t)
	c := dialWS(t, ctx, e, wsOpts{})
	writeText(t, ctx, c, hello("closing"))
	mustReadWS(t, ctx, c, websocket.MessageText)

	done := make(chan error, 1)
	go func() { done <- e.bridge.Close() }()
	last, ce := readLastAndClose(t, ctx, c)
	if ce.Code != websocket.StatusGoingAway {
		t.Fatalf("close %v, want 1001", ce)
	}
	// The table's row for it, told first as the server's sessions tell it.
	if d := last.GetDisconnect(); d.GetCode() != 1001 || !d.GetReconnect() || d.GetReason() != ce.Reason {
		t.Fatalf("last event %v, want Disconnect 1001 %q", last, ce.Reason)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	e.waitEnded(t, "closing", 5*time.Second)
	_, resp, err := dialWSResp(ctx, e, wsOpts{})
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial after Close: %v %v", err, resp)
	}
}
