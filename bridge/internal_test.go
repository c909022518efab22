package bridge

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

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
	l, _ := newOriginList([]string{"http://[::1]:8080"})
	if p := l.patterns(); len(p) != 1 || p[0] != `http://\[::1\]:8080` {
		t.Errorf("patterns %q", p)
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
