package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/servertest"
)

// scrape reads the server's /metrics into family name -> "labels" -> value,
// the labels written k="v",... in name order ("" for none); histograms
// give their _count and _sum under the family's name plus the suffix.
func scrape(t *testing.T, addr string) map[string]map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse metrics: %v", err)
	}
	out := map[string]map[string]float64{}
	put := func(name, labels string, v float64) {
		if out[name] == nil {
			out[name] = map[string]float64{}
		}
		out[name][labels] = v
	}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := strings.Join(ls, ",")
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				put(name, key, m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				put(name, key, m.GetGauge().GetValue())
			case dto.MetricType_HISTOGRAM:
				put(name+"_count", key, float64(m.GetHistogram().GetSampleCount()))
				put(name+"_sum", key, m.GetHistogram().GetSampleSum())
			}
		}
	}
	return out
}

// TestMetricsAfterSession scrapes a real server after a short session on
// native gRPC and on /ws: sends, a rate-limited send, refused tokens.
func TestMetricsAfterSession(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
		c.MetricsAddr = "127.0.0.1:0"
		c.RateLimits = "message=1/h:2"
	}})
	conn := srv.Dial(t)

	// gRPC: two messages stored, the third refused by the rate limiter.
	alice := connect(t, conn, "alice", srv.Token(t, "alice", auth.RoleUser))
	for i := range 3 {
		id := alice.send(sendRoom("general", fmt.Sprintf("hello %d", i), ""))
		ev := alice.next(replyTo(id))
		if want := i < 2; (ev.GetAck() != nil) != want {
			t.Fatalf("send %d: %v", i, ev)
		}
	}

	// /ws: one message, as JSON.
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+srv.HTTPAddr()+"/ws", &websocket.DialOptions{
		Subprotocols: []string{"parley.v1", "bearer." + srv.Token(t, "bob", auth.RoleUser)},
	})
	if err != nil {
		t.Fatalf("dial /ws: %v", err)
	}
	cmd, _ := protojson.Marshal(&chatv1.ClientEvent{RequestId: "w1", Event: &chatv1.ClientEvent_SendMessage{SendMessage: &chatv1.SendMessage{Room: "general", Text: "from ws"}}})
	if err := ws.Write(ctx, websocket.MessageText, cmd); err != nil {
		t.Fatalf("ws write: %v", err)
	}
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("ws read: %v", err)
		}
		var ev chatv1.ServerEvent
		if err := protojson.Unmarshal(data, &ev); err != nil {
			t.Fatalf("ws event: %v", err)
		}
		if ev.GetRequestId() == "w1" {
			if ev.GetAck() == nil {
				t.Fatalf("ws send: %v", &ev)
			}
			break
		}
	}

	// gRPC-Web's WebSocket transport (improbable's): the subprotocol, then
	// the request headers as the first binary message.
	gw, _, err := websocket.Dial(ctx, "ws://"+srv.HTTPAddr()+"/chat.v1.Chat/Connect", &websocket.DialOptions{Subprotocols: []string{"grpc-websockets"}})
	if err != nil {
		t.Fatalf("dial gRPC-Web: %v", err)
	}
	hdr := "content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\nauthorization: Bearer " + srv.Token(t, "carol", auth.RoleUser) + "\r\n"
	if err := gw.Write(ctx, websocket.MessageBinary, []byte(hdr)); err != nil {
		t.Fatalf("gRPC-Web header frame: %v", err)
	}
	if _, _, err := gw.Read(ctx); err != nil { // the first bytes of the response: the session is open
		t.Fatalf("gRPC-Web read: %v", err)
	}

	// Refused tokens: a forged one on Connect, none on a unary call.
	bad, err := tryConnect(t, conn, "mallory", "not-a-token")
	if err == nil {
		err = bad.ended()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("forged token: %v", err)
	}
	if _, err := chatv1.NewChatClient(conn).ListRooms(ctx, &chatv1.ListRoomsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no token: %v", err)
	}

	live := scrape(t, srv.MetricsAddr())
	for _, c := range []struct {
		name, labels string
		want         float64
	}{
		{"parley_sessions", `transport="grpc"`, 1},
		{"parley_sessions", `transport="ws"`, 1},
		{"parley_sessions", `transport="grpcweb"`, 1},
		{"parley_sessions_started_total", `transport="grpc"`, 1},
		{"parley_sessions_started_total", `transport="ws"`, 1},
		{"parley_sessions_started_total", `transport="grpcweb"`, 1},
		{"parley_connections", ``, 3},
		{"parley_grpc_connections", ``, 1},
	} {
		if got := live[c.name][c.labels]; got != c.want {
			t.Errorf("while connected: %s{%s} = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	alice.close()
	ws.Close(websocket.StatusNormalClosure, "bye")
	gw.CloseNow() // gone without a word: its call is cancelled
	connect := `grpc_method="Connect",grpc_service="chat.v1.Chat",grpc_type="bidi_stream"`
	type want struct {
		name, labels string
		want         float64
	}
	wants := []want{
		{"parley_sessions_ended_total", `reason="cancelled",transport="grpc"`, 1},
		{"parley_sessions_ended_total", `reason="client_closed",transport="ws"`, 1},
		{"parley_sessions_ended_total", `reason="cancelled",transport="grpcweb"`, 1},
		{"parley_sessions", `transport="grpc"`, 0},
		{"parley_sessions", `transport="ws"`, 0},
		{"parley_sessions", `transport="grpcweb"`, 0},
		{"parley_messages_in_total", ``, 3},
		{"parley_rate_limited_total", `kind="message"`, 1},
		{"parley_rate_limited_total", `kind="connect"`, 0},
		{"parley_auth_failures_total", `reason="token_invalid"`, 1},
		{"parley_auth_failures_total", `reason="token_required"`, 1},
		{"parley_store_commit_batch_messages_sum", ``, 3},
		{"parley_slow_consumer_disconnects_total", ``, 0},
		{"parley_cluster_peers", ``, 0},
		// Connect: alice, carol on gRPC-Web, the forged token, bob on /ws.
		{"grpc_server_started_total", connect, 4},
		{"grpc_server_handled_total", `grpc_code="Unauthenticated",` + connect, 1},
		{"grpc_server_handled_total", `grpc_code="Canceled",` + connect, 2}, // alice, carol
		{"grpc_server_handled_total", `grpc_code="OK",` + connect, 1},
		{"grpc_server_handled_total", `grpc_code="Unauthenticated",grpc_method="ListRooms",grpc_service="chat.v1.Chat",grpc_type="unary"`, 1},
	}
	// The sessions end on their own goroutines, and a scrape collects
	// each family separately: wait until every figure has settled.
	var m map[string]map[string]float64
	for deadline := time.Now().Add(waitFor); ; time.Sleep(20 * time.Millisecond) {
		m = scrape(t, srv.MetricsAddr())
		var wrong []string
		for _, c := range wants {
			if got := m[c.name][c.labels]; got != c.want {
				wrong = append(wrong, fmt.Sprintf("%s{%s} = %v, want %v", c.name, c.labels, got, c.want))
			}
		}
		if len(wrong) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the sessions ended:\n%s", strings.Join(wrong, "\n"))
		}
	}
	if n := m["parley_store_commit_duration_seconds_count"][""]; n < 1 || n != m["parley_store_commit_batch_messages_count"][""] {
		t.Errorf("commits timed %v, sized %v", n, m["parley_store_commit_batch_messages_count"][""])
	}
	if m["parley_send_queue_drained_frames_count"][""] < 1 {
		t.Errorf("no writer burst observed")
	}
	if _, ok := m["parley_nats_connected"]; ok {
		t.Errorf("NATS series on a single node")
	}
	if m["parley_messages_out_total"][""] < 3 {
		t.Errorf("deliveries %v", m["parley_messages_out_total"][""])
	}

	// The gRPC connection is counted until it closes.
	conn.Close()
	for deadline := time.Now().Add(waitFor); ; time.Sleep(20 * time.Millisecond) {
		m = scrape(t, srv.MetricsAddr())
		if m["parley_grpc_connections"][""] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("parley_grpc_connections = %v after the client closed", m["parley_grpc_connections"][""])
		}
	}
}

// TestMetricsSlowConsumer: a client that stops reading is cut off, and
// the scrape says so (the dedicated counter and the session's end reason).
func TestMetricsSlowConsumer(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
		c.MetricsAddr = "127.0.0.1:0"
		c.QueueSize = 16
		c.RateLimits = "message=unlimited"
	}})
	// A small fixed flow-control window: the server's writes to this
	// client block once it stops reading.
	slowConn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer slowConn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	slow, err := chatv1.NewChatClient(slowConn).Connect(servertest.WithToken(ctx, srv.Token(t, "slow", auth.RoleUser)))
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := slow.Recv(); err != nil || ev.GetWelcome() == nil {
		t.Fatalf("slow welcome: %v %v", ev, err)
	}
	pub := connect(t, srv.Dial(t), "pub", srv.Token(t, "pub", auth.RoleUser))
	text := strings.Repeat("z", 3000)
	for deadline := time.Now().Add(waitFor); ; {
		id := pub.send(sendRoom("general", text, ""))
		pub.next(replyTo(id))
		m := scrape(t, srv.MetricsAddr())
		if m["parley_slow_consumer_disconnects_total"][""] == 1 &&
			m["parley_sessions_ended_total"][`reason="slow_consumer",transport="grpc"`] == 1 &&
			m["parley_sessions"][`transport="grpc"`] == 1 { // pub's
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no slow consumer: %v %v", m["parley_slow_consumer_disconnects_total"], m["parley_sessions_ended_total"])
		}
	}
}
