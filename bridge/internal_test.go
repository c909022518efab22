package bridge

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// TestDefaultMaxFrameBytesFitsLargestEvent checks the arithmetic behind
// DefaultMaxFrameBytes against the contract's limits.
func TestDefaultMaxFrameBytesFitsLargestEvent(t *testing.T) {
	t.Parallel()
	room := strings.Repeat("r", 64)
	resume := &chatv1.Resume{}
	for range 500 {
		resume.Cursors = append(resume.Cursors, &chatv1.ConversationCursor{
			Conversation: &chatv1.Conversation{Kind: &chatv1.Conversation_Room{Room: room}},
			LastSeq:      1<<63 - 1,
		})
	}
	rid := strings.Repeat("i", 64)
	largest := []*chatv1.ClientEvent{
		{RequestId: rid, Event: &chatv1.ClientEvent_Resume{Resume: resume}},
		{RequestId: rid, Event: &chatv1.ClientEvent_SendMessage{SendMessage: &chatv1.SendMessage{
			Room: room, Text: strings.Repeat("😀", 4000), ClientMsgId: rid,
		}}},
		{RequestId: rid, Event: &chatv1.ClientEvent_RefreshToken{RefreshToken: &chatv1.RefreshToken{AccessToken: strings.Repeat("t", 4096)}}},
	}
	for _, ev := range largest {
		js, _ := protojson.Marshal(ev)
		// The worst a client may legally write: every non-ASCII char as
		// a \u escape (a surrogate pair for this emoji: 12 bytes).
		worstJSON := len(js)
		if text := ev.GetSendMessage().GetText(); text != "" {
			worstJSON += utf8.RuneCountInString(text)*12 - len(text)
		}
		pb, _ := proto.Marshal(ev)
		t.Logf("%T: protojson %d B (worst escaping %d B), protobuf %d B", ev.GetEvent(), len(js), worstJSON, len(pb))
		if worstJSON > DefaultMaxFrameBytes || len(pb) > DefaultMaxFrameBytes {
			t.Errorf("%T does not fit %d bytes", ev.GetEvent(), DefaultMaxFrameBytes)
		}
	}
	// An UploadFile chunk over the gRPC-Web WebSocket transport: control
	// byte + gRPC frame header + message.
	chunk, _ := proto.Marshal(&chatv1.UploadFileRequest{Data: &chatv1.UploadFileRequest_Chunk{Chunk: make([]byte, 64<<10)}})
	if n := 1 + 5 + len(chunk); n > DefaultMaxFrameBytes {
		t.Errorf("upload chunk frame %d B does not fit", n)
	}
}

func TestNormalizeOrigin(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"http://localhost:8080":        "http://localhost:8080",
		"HTTP://LocalHost:8080":        "http://localhost:8080",
		"http://localhost:8080/":       "http://localhost:8080",
		"https://chat.example.com":     "https://chat.example.com",
		"https://chat.example.com:443": "https://chat.example.com",
		"http://chat.example.com:80":   "http://chat.example.com",
		"http://[::1]:8080":            "http://[::1]:8080",
		"http://[::1]:80":              "http://[::1]",
		"*":                            "",
		"null":                         "",
		"http://*.example.com":         "",
		"ws://localhost":               "",
		"http://user@localhost":        "",
		"http://localhost/app":         "",
		"localhost:8080":               "",
	} {
		got, ok := normalizeOrigin(in)
		if got != want || ok != (want != "") {
			t.Errorf("normalizeOrigin(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestCloseReason(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 100) // 200 bytes
	r := closeReason(long)
	if len(r) > 123 || !utf8.ValidString(r) {
		t.Fatalf("closeReason: %d bytes, valid %v", len(r), utf8.ValidString(r))
	}
	if closeReason("short") != "short" {
		t.Fatal("short reason changed")
	}
}

func TestParseHello(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in       string
		auth     string
		ok, fail bool
	}{
		{`{"authorization":"Bearer x"}`, "Bearer x", true, false},
		{` {}`, "", true, false},
		{`{"authorization":1}`, "", false, true},
		{`{"ping":{}}`, "", false, false},
		{`{"authorization":"Bearer x","ping":{}}`, "", false, false},
		{`not json`, "", false, false},
		{"\x0a\x02", "", false, false},
	} {
		auth, ok, err := parseHello([]byte(tc.in))
		if auth != tc.auth || ok != tc.ok || (err != nil) != tc.fail {
			t.Errorf("parseHello(%q) = %q %v %v", tc.in, auth, ok, err)
		}
	}
}

func TestCodeName(t *testing.T) {
	t.Parallel()
	b, _ := json.Marshal([]string{codeName(0), codeName(1), codeName(3), codeName(8), codeName(16)})
	if string(b) != `["OK","CANCELLED","INVALID_ARGUMENT","RESOURCE_EXHAUSTED","UNAUTHENTICATED"]` {
		t.Fatal(string(b))
	}
}

// TestFirstFrameTimeouts: a WebSocket that never sends its first frame is
// closed, on /ws (4408) and on the gRPC-Web transport (header frame).
func TestFirstFrameTimeouts(t *testing.T) {
	t.Parallel()
	b, err := New(Config{Conn: nopConn{}})
	if err != nil {
		t.Fatal(err)
	}
	b.firstFrameTimeout, b.headerFrameTimeout = 300*time.Millisecond, 300*time.Millisecond
	hs := httptest.NewServer(b.Handler())
	defer hs.Close()
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws := "ws" + strings.TrimPrefix(hs.URL, "http")

	c, _, err := websocket.Dial(ctx, ws+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != closeFirstFrame {
		t.Fatalf("/ws: %v, want close 4408", err)
	}

	g, _, err := websocket.Dial(ctx, ws+chatv1.Chat_Connect_FullMethodName, &websocket.DialOptions{Subprotocols: []string{"grpc-websockets"}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.CloseNow()
	start := time.Now()
	if _, _, err := g.Read(ctx); err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("gRPC-Web: read %v after %s, want the socket closed after 300ms", err, time.Since(start))
	}
}

// nopConn is a grpc.ClientConnInterface that refuses every call.
type nopConn struct{}

func (nopConn) Invoke(context.Context, string, any, any, ...grpc.CallOption) error {
	return status.Error(codes.Unavailable, "nop")
}

func (nopConn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, status.Error(codes.Unavailable, "nop")
}

func FuzzParseHello(f *testing.F) {
	for _, s := range []string{`{"authorization":"Bearer x"}`, `{}`, `{"ping":{}}`, `{"authorization":1}`, "\x0a\x00", ` {"authorization":"a","b":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		auth, ok, err := parseHello(data)
		if err != nil && ok {
			t.Fatal("ok with an error")
		}
		if auth != "" && !ok {
			t.Fatal("token from a frame that is not a hello")
		}
		_ = probeRequestID(data)
	})
}

func FuzzNormalizeOrigin(f *testing.F) {
	for _, s := range []string{"http://localhost:8080", "https://a.example:443", "http://[::1]:80", "*", "null", "http://a/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, o string) {
		n, ok := normalizeOrigin(o)
		if !ok {
			return
		}
		if n2, ok2 := normalizeOrigin(n); !ok2 || n2 != n {
			t.Fatalf("not idempotent: %q -> %q -> %q", o, n, n2)
		}
		if strings.ContainsAny(n, "*?/ ") && !strings.HasPrefix(n, "http") {
			t.Fatalf("odd origin %q", n)
		}
	})
}
