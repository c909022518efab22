package conformance_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/servertest"
)

type httpResult struct {
	status int
	header http.Header
	body   []byte
}

func call(t *testing.T, method, url string, hdr map[string]string, body io.Reader) httpResult {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return httpResult{res.StatusCode, res.Header, b}
}

// TestRESTAgainstParleyd walks the REST API of the bridge inside parleyd:
// register, post through /ws, read history, list, upload and download,
// and the refusals that come from the server's interceptors.
func TestRESTAgainstParleyd(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	base := "http://" + srv.HTTPAddr()

	r := call(t, "POST", base+"/api/auth/register", nil, strings.NewReader(`{"username":"carol","password":"correct horse battery"}`))
	if r.status != 200 {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	var reg chatv1.RegisterResponse
	if err := protojson.Unmarshal(r.body, &reg); err != nil || reg.GetTokens().GetAccessToken() == "" {
		t.Fatalf("register: %s %v", r.body, err)
	}
	auth := map[string]string{"Authorization": "Bearer " + reg.GetTokens().GetAccessToken()}
	if r = call(t, "POST", base+"/api/auth/login", nil, strings.NewReader(`{"username":"carol","password":"wrong password"}`)); r.status != 401 {
		t.Fatalf("login with a wrong password: %d %s", r.status, r.body)
	}

	// Post a message over /ws so that history has something.
	ws, _, err := websocket.Dial(t.Context(), "ws://"+srv.HTTPAddr()+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	_ = ws.Write(t.Context(), websocket.MessageText, []byte(`{"authorization":"Bearer `+reg.GetTokens().GetAccessToken()+`"}`))
	_ = ws.Write(t.Context(), websocket.MessageText, []byte(`{"requestId":"m1","sendMessage":{"room":"general","text":"from the bridge"}}`))
	for {
		_, data, err := ws.Read(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		var ev chatv1.ServerEvent
		if err := protojson.Unmarshal(data, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.GetRequestId() == "m1" {
			if ev.GetAck() == nil {
				t.Fatalf("want ack, got %v", &ev)
			}
			break
		}
	}

	r = call(t, "GET", base+"/api/messages?room=general", auth, nil)
	var hist chatv1.GetHistoryResponse
	if r.status != 200 || protojson.Unmarshal(r.body, &hist) != nil || len(hist.GetMessages()) != 1 || hist.GetMessages()[0].GetText() != "from the bridge" {
		t.Fatalf("history: %d %s", r.status, r.body)
	}
	if r = call(t, "GET", base+"/api/users/online", auth, nil); r.status != 200 || !strings.Contains(string(r.body), `"carol"`) {
		t.Fatalf("online: %d %s", r.status, r.body)
	}
	if r = call(t, "GET", base+"/api/rooms", auth, nil); r.status != 200 || !strings.Contains(string(r.body), `"general"`) {
		t.Fatalf("rooms: %d %s", r.status, r.body)
	}

	// Files: 150 KiB in three chunks, back byte for byte.
	content := bytes.Repeat([]byte("parley "), 150<<10/7)
	r = call(t, "POST", base+"/api/files", map[string]string{
		"Authorization": auth["Authorization"], "Content-Type": "text/plain", "X-File-Name": "notes%20%C3%A9t%C3%A9.txt",
	}, bytes.NewReader(content))
	var up chatv1.UploadFileResponse
	if r.status != 200 || protojson.Unmarshal(r.body, &up) != nil || len(up.GetFile().GetId()) != 64 {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	r = call(t, "GET", base+"/api/files/"+up.GetFile().GetId(), auth, nil)
	if r.status != 200 || !bytes.Equal(r.body, content) || r.header.Get("Content-Length") != strconv.Itoa(len(content)) ||
		!strings.HasPrefix(r.header.Get("Content-Disposition"), "attachment;") || r.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("download: %d, %d bytes, %v", r.status, len(r.body), r.header)
	}

	// Refusals: the server's interceptors decide, the bridge maps.
	for _, tc := range []struct {
		path   string
		hdr    map[string]string
		status int
		code   string
	}{
		{"/api/rooms", nil, 401, "UNAUTHENTICATED"},
		{"/api/rooms", map[string]string{"Authorization": "Bearer nope"}, 401, "UNAUTHENTICATED"},
		{"/api/messages?room=general&limit=1000", auth, 400, "INVALID_ARGUMENT"},
		{"/api/messages?user=x", auth, 400, "INVALID_ARGUMENT"},
		{"/api/files/" + strings.Repeat("0", 64), auth, 404, "NOT_FOUND"},
		{"/api/files/nothex", auth, 400, "INVALID_ARGUMENT"},
		{"/api/rooms?token=abc", nil, 400, "INVALID_ARGUMENT"},
		{"/api/rooms", map[string]string{"Authorization": auth["Authorization"], "Origin": "http://evil.example"}, 403, "PERMISSION_DENIED"},
	} {
		r := call(t, "GET", base+tc.path, tc.hdr, nil)
		var body struct{ Code, Message string }
		_ = json.Unmarshal(r.body, &body)
		if r.status != tc.status || body.Code != tc.code {
			t.Errorf("GET %s: %d %s, want %d %s", tc.path, r.status, r.body, tc.status, tc.code)
		}
	}
}

// TestClientGoneIsOfflineOnParleyd: when a browser-side WebSocket goes
// away, the server's session ends, which another client sees as
// UserOffline, on /ws and on gRPC-Web alike.
func TestClientGoneIsOfflineOnParleyd(t *testing.T) {
	t.Parallel()
	for _, tr := range []transport{{"grpc-web-ws", openGRPCWeb(false)}, {"ws-json", openWS(websocket.MessageText, false)}, {"ws-binary", openWS(websocket.MessageBinary, false)}} {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			srv := servertest.Start(t, servertest.Options{})
			h := &harness{srv: srv, tr: transport{"grpc", openGRPC}, rec: &recorder{t: t, seen: map[string][]string{}}, toks: map[string]string{}}
			watcher := h.connect(t, "watcher")
			h.tr = tr
			leaver := h.connect(t, "leaver")
			leaver.close() // drop the WebSocket without a word

			deadline := time.After(waitFor)
			for {
				select {
				case ev, ok := <-watcher.events:
					if !ok {
						t.Fatal("watcher's stream ended")
					}
					if ev.GetUserOffline().GetUser().GetUsername() == "leaver" || slices.ContainsFunc(ev.GetPresenceChanged().GetOffline(), func(u *chatv1.User) bool { return u.GetUsername() == "leaver" }) {
						return
					}
				case <-deadline:
					t.Fatal("the server never saw the leaver go")
				}
			}
		})
	}
}

// TestMalformedFramesOnParleyd: on parleyd's /ws (attached to the sessions
// directly) a frame that does not decode is refused in band and the
// connection lives on, in both formats.
func TestMalformedFramesOnParleyd(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	h := &harness{srv: srv, rec: &recorder{t: t, seen: map[string][]string{}}, toks: map[string]string{}}
	tok := h.token(t, "mallory")
	for _, format := range []websocket.MessageType{websocket.MessageText, websocket.MessageBinary} {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		base := "http://" + srv.HTTPAddr()
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/ws", &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {base}}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		if err := c.Write(ctx, format, []byte(`{"authorization":"Bearer `+tok+`"}`)); err != nil {
			t.Fatal(err)
		}
		bad, ping := []byte(`{"requestId":"r1","sendMessage":`), []byte(`{"requestId":"r2","ping":{}}`)
		if format == websocket.MessageBinary {
			bad = []byte{0x0a, 0xff, 0xff, 0xff}
			ping, _ = proto.Marshal(&chatv1.ClientEvent{RequestId: "r2", Event: &chatv1.ClientEvent_Ping{Ping: &chatv1.Ping{}}})
		}
		for _, frame := range [][]byte{bad, ping} {
			if err := c.Write(ctx, format, frame); err != nil {
				t.Fatal(err)
			}
		}
		var sawError, sawPong bool
		for !sawPong {
			typ, data, err := c.Read(ctx)
			if err != nil {
				t.Fatalf("%v: connection ended: %v", format, err)
			}
			ev := new(chatv1.ServerEvent)
			if typ == websocket.MessageText {
				err = protojson.Unmarshal(data, ev)
			} else {
				err = proto.Unmarshal(data, ev)
			}
			if err != nil {
				t.Fatal(err)
			}
			if e := ev.GetError(); e != nil {
				if e.GetCode() != chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT || !strings.Contains(e.GetMessage(), "malformed") {
					t.Fatalf("%v: error = %v", format, e)
				}
				sawError = true
			}
			sawPong = ev.GetPong() != nil && ev.GetRequestId() == "r2"
		}
		if !sawError {
			t.Fatalf("%v: no in-band error before the pong", format)
		}
	}
}

// TestShutdownStatusOnEveryTransport: on shutdown every client gets the
// notice with a reconnect hint and then the final status Unavailable,
// whatever carries its stream.
func TestShutdownStatusOnEveryTransport(t *testing.T) {
	t.Parallel()
	for _, tr := range transports[:4] { // parleyd's own listeners
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			srv := servertest.Start(t, servertest.Options{})
			h := &harness{srv: srv, tr: tr, rec: &recorder{t: t, seen: map[string][]string{}}, toks: map[string]string{}}
			s := h.connect(t, "stayer")
			srv.Stop()
			seen, err := s.finish(t)
			var notice *chatv1.ServerNotice
			for _, ev := range seen {
				if n := ev.GetServerNotice(); n != nil {
					notice = n
				}
			}
			if notice.GetKind() != chatv1.NoticeKind_NOTICE_KIND_SHUTDOWN || notice.GetReconnectAfter().AsDuration() <= 0 {
				t.Fatalf("notice = %v", notice)
			}
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("final status = %v, want Unavailable", err)
			}
		})
	}
}

// TestSlowConsumerOnParleydWS: on parleyd's /ws a client that stops
// reading is disconnected as a slow consumer while the room goes on: its
// session (whose writer is then blocked on the socket) ends, and everyone
// else sees it go offline. The flood goes to a room the watcher is not in,
// so that only the slow client can fall behind.
func TestSlowConsumerOnParleydWS(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
		c.QueueSize = 32
		c.RateLimits = "message=unlimited,join=unlimited"
	}})
	h := &harness{srv: srv, tr: transport{"grpc", openGRPC}, rec: &recorder{t: t, seen: map[string][]string{}}, toks: map[string]string{}}
	watcher := h.connect(t, "watcher")

	ctx, cancel := context.WithTimeout(context.Background(), waitFor) // under the 25 s ping, whose timeout would end it too
	defer cancel()
	base := "http://" + srv.HTTPAddr()
	// A small receive buffer, so that the server's writes block soon.
	dialer := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	slow, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/ws", &websocket.DialOptions{
		HTTPHeader: http.Header{"Origin": {base}},
		HTTPClient: &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.CloseNow()
	if err := slow.Write(ctx, websocket.MessageBinary, []byte(`{"authorization":"Bearer `+h.token(t, "slow")+`"}`)); err != nil {
		t.Fatal(err)
	}
	join, _ := proto.Marshal(&chatv1.ClientEvent{RequestId: "j", Event: &chatv1.ClientEvent_JoinRoom{JoinRoom: &chatv1.JoinRoom{Room: "flood"}}})
	if err := slow.Write(ctx, websocket.MessageBinary, join); err != nil {
		t.Fatal(err)
	}
	for { // up to RoomJoined; then it stops reading
		_, data, err := slow.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ev := new(chatv1.ServerEvent)
		if err := proto.Unmarshal(data, ev); err != nil {
			t.Fatal(err)
		}
		if ev.GetRoomJoined() != nil {
			break
		}
	}

	sender := srv.Dial(t)
	stream, err := chatv1.NewChatClient(sender).Connect(servertest.WithToken(ctx, h.token(t, "flooder")))
	if err != nil {
		t.Fatal(err)
	}
	// The flooder reads its own stream, so only slow falls behind, and
	// waits for its acks every 8 sends, as a real client would: one that
	// never waits could itself fall a queue behind on a loaded machine
	// (its own messages and acks come back to it), and the flood would
	// stop before slow's queue fills.
	acks := make(chan string, 64)
	go func() {
		defer close(acks)
		for {
			ev, err := stream.Recv()
			if err != nil {
				return
			}
			if ev.GetAck() != nil {
				acks <- ev.GetRequestId()
			}
		}
	}()
	if err := stream.Send(&chatv1.ClientEvent{Event: &chatv1.ClientEvent_JoinRoom{JoinRoom: &chatv1.JoinRoom{Room: "flood"}}}); err != nil {
		t.Fatal(err)
	}
	text := strings.Repeat("x", 4000)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; i < 20000; i++ {
			id := strconv.Itoa(i)
			if stream.Send(&chatv1.ClientEvent{RequestId: id, Event: &chatv1.ClientEvent_SendMessage{SendMessage: &chatv1.SendMessage{Room: "flood", Text: text}}}) != nil {
				return
			}
			if i%8 != 7 {
				continue
			}
			for acked := ""; acked != id; {
				select {
				case <-stop:
					return
				case a, ok := <-acks:
					if !ok {
						return
					}
					acked = a
				}
			}
		}
	}()

	for {
		select {
		case ev, ok := <-watcher.events:
			if !ok {
				t.Fatal("watcher's stream ended")
			}
			if ev.GetUserOffline().GetUser().GetUsername() == "slow" || slices.ContainsFunc(ev.GetPresenceChanged().GetOffline(), func(u *chatv1.User) bool { return u.GetUsername() == "slow" }) {
				return
			}
		case <-ctx.Done():
			t.Fatal("the slow consumer's session never ended")
		}
	}
}

// TestIdleWSHoldsOneGoroutine: on parleyd's /ws an idle connection keeps
// one goroutine, its reader. The upgrade's goroutine exits once the
// session is attached, and the writer runs only while frames wait.
func TestIdleWSHoldsOneGoroutine(t *testing.T) {
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
		c.RateLimits = "connect=unlimited"
	}})
	h := &harness{srv: srv, tr: transport{"ws-binary", openWS(websocket.MessageBinary, false)}, rec: &recorder{t: t, seen: map[string][]string{}}, toks: map[string]string{}}
	const conns = 30
	for i := range conns {
		user := "idle" + strconv.Itoa(i)
		h.toks[user] = srv.TokenAs(t, user, chatv1.Role_ROLE_USER)
		h.connect(t, user) // up to a pong: everything queued at connect was written
	}
	var got int
	deadline := time.Now().Add(waitFor)
	for time.Now().Before(deadline) {
		if got = sessionGoroutines(); got == conns {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%d idle /ws connections hold %d session goroutines, want %d", conns, got, conns)
}

// sessionGoroutines counts the goroutines running the server's session or
// bridge code.
func sessionGoroutines() int {
	var buf bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&buf, 2)
	n := 0
	for _, g := range strings.Split(buf.String(), "\n\n") {
		if strings.Contains(g, "parley/server/internal/chatsvc.") || strings.Contains(g, "parley/bridge.(") {
			n++
		}
	}
	return n
}
