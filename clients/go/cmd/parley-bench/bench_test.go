package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/servertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// improbable's grpc-web (in the in-process server) starts it in init.
		goleak.IgnoreTopFunction("github.com/desertbit/timer.timerRoutine"))
}

// unlimitedRates is the --rate-limits value the bench assumes.
const unlimitedRates = "message=unlimited,join=unlimited,connect=unlimited,other=unlimited,typing=unlimited"

func startServer(t *testing.T) *servertest.Server {
	t.Helper()
	return servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
		c.RateLimits = unlimitedRates
	}})
}

// TestSmoke runs the CI smoke (exact delivery of 200 messages to 20
// members) over every Parley transport against a real in-process server.
func TestSmoke(t *testing.T) {
	srv := startServer(t)
	const members, messages = 20, 200
	var list []user
	for i := range len(parleyTransports) * members {
		name := fmt.Sprintf("smoke-%d", i)
		list = append(list, user{name: name, token: srv.TokenAs(t, name, chatv1.Role_ROLE_USER)})
	}
	users := &fixedUsers{list: list}
	ep := endpoints{grpcAddr: srv.GRPCAddr(), httpAddr: srv.HTTPAddr()}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, tr := range parleyTransports {
		t.Run(tr, func(t *testing.T) {
			sp := smokeSpec(members, messages)
			tg := target{transport: tr, nodes: []endpoints{ep}, pids: []int{os.Getpid()}, tokens: users, run: "test", concurrency: 8}
			reps := runFanout(ctx, tg, sp, func(r report) { t.Log(summary(r)) })
			if err := smokeCheck(reps, sp); err != nil {
				t.Fatal(err)
			}
			if s := reps[0].Server; s == nil || s.Error != "" || s.RSSMiB <= 0 {
				t.Errorf("server stats from /proc: %+v", s)
			}
		})
	}
}

// TestRegistrar registers users, reuses them from the file, and connects
// with their tokens; run against parley-bench's own CLI.
func TestRegistrar(t *testing.T) {
	srv := startServer(t)
	file := filepath.Join(t.TempDir(), "users")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := &registrar{addr: srv.GRPCAddr(), run: "reg", concurrency: 2, file: file}
	first, err := r.users(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	again, err := (&registrar{addr: "127.0.0.1:1", run: "unused", file: file}).users(ctx, 2)
	if err != nil {
		t.Fatalf("reading %s: %v", file, err)
	}
	if fmt.Sprint(first) != fmt.Sprint(again) {
		t.Fatalf("file gave %v, registered %v", again, first)
	}
	code := run([]string{"idle", "--transport", "ws-binary,grpc", "--conns", "2", "--duration", "100ms", "--tokens", file,
		"--grpc-addr", srv.GRPCAddr(), "--http-addr", srv.HTTPAddr(), "--deadline", "20s"}, io.Discard, io.Discard)
	if code != 0 {
		t.Fatalf("parley-bench idle exited %d", code)
	}
}

func TestRefusesNonLoopback(t *testing.T) {
	t.Parallel()
	for addr, ok := range map[string]bool{
		"127.0.0.1:1": true, "[::1]:1": true, "localhost:1": true,
		"10.0.0.1:1": false, "0.0.0.0:1": false, ":1": false, "example.com:1": false,
	} {
		if err := loopbackOnly(addr); (err == nil) != ok {
			t.Errorf("loopbackOnly(%q) = %v", addr, err)
		}
	}
	if code := run([]string{"smoke", "--grpc-addr", "192.0.2.1:50051"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("smoke against 192.0.2.1 exited %d, want 2", code)
	}
}

func TestTextRoundTrip(t *testing.T) {
	t.Parallel()
	due := time.Unix(1700000000, 123456789)
	b := formatText(nil, "r1", 3, 7, 42, due, 128)
	if len(b) != 128 {
		t.Fatalf("len %d", len(b))
	}
	run, step, pub, seq, ts, ok := parseText(b)
	if !ok || string(run) != "r1" || step != 3 || pub != 7 || seq != 42 || ts != due.UnixNano() {
		t.Fatalf("parseText(%q) = %q %d %d %d %d %v", b, run, step, pub, seq, ts, ok)
	}
	for _, bad := range []string{"", "b|", "b|r|1|2|3", "b|r|1|x|3|4|", "hello"} {
		if _, _, _, _, _, ok := parseText([]byte(bad)); ok {
			t.Errorf("parseText(%q) ok", bad)
		}
	}
}

func TestTracker(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	tr := newTracker("r", &n)
	now := time.Now()
	for _, seq := range []int64{0, 1, 3, 2, 3, 4} {
		tr.observe(formatText(nil, "r", 0, 1, seq, now, 64), now.Add(time.Millisecond).UnixNano())
	}
	tr.observe(formatText(nil, "other", 0, 1, 9, now, 64), now.UnixNano())
	tr.observe(formatText(nil, "r", 1, 1, 9, now, 64), now.UnixNano())
	var c counts
	c.add(tr)
	if c.unique != 5 || c.dups != 1 || c.ooo != 1 || c.alien != 1 || c.late != 1 || n.Load() != 5 {
		t.Fatalf("counts %+v, received %d", c, n.Load())
	}
	if p50 := c.hist.quantile(.5); p50 < 1000 || p50 > 1031 {
		t.Fatalf("p50 %d us, want about 1000", p50)
	}
}

func TestHistogram(t *testing.T) {
	t.Parallel()
	var h histogram
	for v := int64(1); v <= 100000; v++ {
		h.record(v)
	}
	for _, q := range []float64{.5, .9, .99} {
		want := q * 100000
		if got := float64(h.quantile(q)); got < want || got > want*1.04 {
			t.Errorf("q%.2f = %.0f, want %.0f (+4%%)", q, got, want)
		}
	}
	if h.quantile(1) != 100000 {
		t.Errorf("max %d", h.quantile(1))
	}
	for i := range 1700 { // values up to 2^57 us
		if b := bucketOf(upperOf(i)); b != i {
			t.Fatalf("bucketOf(upperOf(%d)) = %d", i, b)
		}
	}
}

func TestScanParley(t *testing.T) {
	t.Parallel()
	room := &chatv1.Conversation{Kind: &chatv1.Conversation_Room{Room: "r1"}}
	for _, tc := range []struct {
		ev         *chatv1.ServerEvent
		kind       evKind
		room, text string
	}{
		{&chatv1.ServerEvent{Event: &chatv1.ServerEvent_Welcome{Welcome: &chatv1.Welcome{SessionId: "s"}}}, evReady, "", ""},
		{&chatv1.ServerEvent{Event: &chatv1.ServerEvent_Message{Message: &chatv1.Message{Id: "m", Seq: 9, Conversation: room, Sender: "bob", Body: &chatv1.Message_Text{Text: "hi"}}}}, evMessage, "r1", "hi"},
		{&chatv1.ServerEvent{RequestId: "j", Event: &chatv1.ServerEvent_RoomJoined{RoomJoined: &chatv1.RoomJoined{Room: "r1", Members: []string{"a"}}}}, evJoined, "r1", ""},
		{&chatv1.ServerEvent{Event: &chatv1.ServerEvent_RoomLeft{RoomLeft: &chatv1.RoomLeft{Room: "r1"}}}, evLeft, "r1", ""},
		{&chatv1.ServerEvent{Event: &chatv1.ServerEvent_Ack{Ack: &chatv1.Ack{MessageId: "m", Seq: 1}}}, evAck, "", ""},
		{&chatv1.ServerEvent{Event: &chatv1.ServerEvent_Error{Error: &chatv1.Error{Code: chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED, Message: "slow"}}}, evError, "", "slow"},
		{&chatv1.ServerEvent{Event: &chatv1.ServerEvent_Pong{Pong: &chatv1.Pong{}}}, evOther, "", ""},
	} {
		b, err := proto.Marshal(tc.ev)
		if err != nil {
			t.Fatal(err)
		}
		got, err := scanParley(b)
		if err != nil || got.kind != tc.kind || string(got.room) != tc.room || string(got.text) != tc.text {
			t.Errorf("scanParley(%v) = %+v, %v", tc.ev, got, err)
		}
	}
	if _, err := scanParley([]byte{0x0a, 0x05, 0x01}); err == nil {
		t.Error("truncated event scanned without error")
	}
}

func TestTrailerStatus(t *testing.T) {
	t.Parallel()
	if err := trailerStatus([]byte("content-type: application/grpc-web+proto\r\n")); err != nil {
		t.Errorf("headers: %v", err)
	}
	if err := trailerStatus([]byte("grpc-status: 0\r\n")); err != io.EOF {
		t.Errorf("status 0: %v", err)
	}
	err := trailerStatus([]byte("Grpc-Status: 8\r\ngrpc-message: slow%20consumer\r\n"))
	if st, _ := status.FromError(err); st.Code() != codes.ResourceExhausted || st.Message() != "slow consumer" {
		t.Errorf("status 8: %v", err)
	}
}

func TestMintHS256(t *testing.T) {
	t.Parallel()
	tok := mintHS256([]byte("k"), "alice", time.Hour)
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q", tok)
	}
	mac := hmac.New(sha256.New, []byte("k"))
	mac.Write([]byte(parts[0] + "." + parts[1]))
	if base64.RawURLEncoding.EncodeToString(mac.Sum(nil)) != parts[2] {
		t.Fatal("bad signature")
	}
	claims, _ := base64.RawURLEncoding.DecodeString(parts[1])
	if !strings.Contains(string(claims), `"id":"alice"`) {
		t.Fatalf("claims %s", claims)
	}
}

// TestSmokeSocketIO runs the smoke through the Socket.IO adapter against
// fakeSocketIO, a stand-in for the Node reference server that speaks the
// same subset of the protocol.
func TestSmokeSocketIO(t *testing.T) {
	secret := []byte("test-secret")
	srv := httptest.NewServer(fakeSocketIO(t, secret))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sp := smokeSpec(5, 50)
	tg := target{transport: trSocketIO, nodes: []endpoints{{sioAddr: srv.Listener.Addr().String()}},
		tokens: minter{secret: secret, run: "sio"}, run: "sio", concurrency: 4}
	reps := runFanout(ctx, tg, sp, func(r report) { t.Log(summary(r)) })
	if err := smokeCheck(reps, sp); err != nil {
		t.Fatal(err)
	}
	bad := target{transport: trSocketIO, nodes: tg.nodes, tokens: minter{secret: []byte("wrong"), run: "x"}, run: "x"}
	if reps := runFanout(ctx, bad, smokeSpec(1, 1), func(report) {}); reps[0].OK || !strings.Contains(reps[0].Problem, "refused") {
		t.Fatalf("a bad token connected: %+v", reps[0])
	}
}

// fakeSocketIO serves Engine.IO v4 over WebSocket: open, a ping first,
// namespace connect with a token check, join_room and send_room_message.
func fakeSocketIO(t *testing.T, secret []byte) http.Handler {
	var mu sync.Mutex
	rooms := map[string][]*websocket.Conn{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx := r.Context()
		send := func(s string) { _ = c.Write(ctx, websocket.MessageText, []byte(s)) }
		send(`0{"sid":"e","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`)
		_, b, err := c.Read(ctx)
		if err != nil {
			return
		}
		var auth struct{ Token string }
		_ = json.Unmarshal(bytes.TrimPrefix(b, []byte("40")), &auth)
		if p := strings.Split(auth.Token, "."); len(p) != 3 || p[2] != sign(secret, p[0]+"."+p[1]) {
			send(`44{"message":"Invalid authentication token"}`)
			return
		}
		send("2")
		if _, b, err := c.Read(ctx); err != nil || string(b) != "3" {
			t.Errorf("pong: %q %v", b, err)
			return
		}
		send(`40{"sid":"s"}`)
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			var args []json.RawMessage
			if json.Unmarshal(bytes.TrimPrefix(b, []byte("42")), &args) != nil || len(args) != 2 {
				continue
			}
			switch string(args[0]) {
			case `"join_room"`:
				var room string
				_ = json.Unmarshal(args[1], &room)
				mu.Lock()
				rooms[room] = append(rooms[room], c)
				mu.Unlock()
				send(`42["room_joined",{"roomId":` + string(args[1]) + `}]`)
			case `"send_room_message"`:
				var m sioSend
				_ = json.Unmarshal(args[1], &m)
				out, _ := json.Marshal([]any{"room_message", map[string]string{"roomId": m.RoomID, "text": m.Message}})
				mu.Lock()
				members := rooms[m.RoomID]
				mu.Unlock()
				for _, mc := range members {
					_ = mc.Write(ctx, websocket.MessageText, append([]byte("42"), out...))
				}
			}
		}
	})
}

func sign(secret []byte, s string) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(s))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}
