package bridge_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/parleychat/parley/bridge"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// logBuffer is a slog handler's output, safe to read while the bridge logs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) lines(substr string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.buf.String(), "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return out
}

// TestOriginRefusalSaysHowToAdmitIt: a browser at an origin not listed is
// told, on every transport, which origin was refused and the flag that
// admits it; the server logs it once (per origin and minute).
func TestOriginRefusalSaysHowToAdmitIt(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	e := newEnv(t, inProcess, func(c *bridge.Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	})
	ctx := testCtx(t)
	const origin = "http://chat.example:8080"
	const want = `origin "http://chat.example:8080" is not allowed; start parleyd with --allowed-origins http://chat.example:8080`

	// REST: the JSON error body.
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.base+"/api/auth/register", strings.NewReader(`{"username":"alice","password":"correct horse"}`))
	req.Header.Set("Origin", origin)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body struct{ Code, Message string }
	err = json.NewDecoder(res.Body).Decode(&body)
	res.Body.Close()
	if err != nil || res.StatusCode != http.StatusForbidden || body.Code != "PERMISSION_DENIED" || body.Message != want {
		t.Errorf("REST: %d %+v (%v), want 403 PERMISSION_DENIED %q", res.StatusCode, body, err, want)
	}

	// gRPC-Web over HTTP: the status a gRPC-Web client reports.
	var reg chatv1.RegisterResponse
	res, err = grpcWebUnary(ctx, e, "/chat.v1.Auth/Register", origin, "", &chatv1.RegisterRequest{Username: "alice", Password: "correct horse"}, &reg)
	if res == nil || res.StatusCode != http.StatusForbidden {
		t.Fatalf("gRPC-Web: %v %v, want 403", res, err)
	}
	msg, _ := url.PathUnescape(res.Header.Get("Grpc-Message"))
	if res.Header.Get("Grpc-Status") != "7" || msg != want {
		t.Errorf("gRPC-Web status %q %q, want 7 %q", res.Header.Get("Grpc-Status"), msg, want)
	}

	// gRPC-Web's WebSocket transport and /ws: the upgrade's answer.
	_, res, err = dialGRPCWeb(ctx, e, "/chat.v1.Chat/Connect", origin, map[string]string{"authorization": "Bearer tok-x"}, nil)
	if err == nil || res == nil || res.StatusCode != http.StatusForbidden {
		t.Fatalf("gRPC-Web WebSocket: %v %v, want 403", res, err)
	}
	b, _ := io.ReadAll(res.Body)
	if !strings.Contains(string(b), want) {
		t.Errorf("gRPC-Web WebSocket refusal body %q, want %q", b, want)
	}
	_, res, err = dialWSResp(ctx, e, wsOpts{origin: origin})
	if err == nil || res == nil || res.StatusCode != http.StatusForbidden {
		t.Fatalf("/ws: %v %v, want 403", res, err)
	}
	b, _ = io.ReadAll(res.Body)
	if err := json.Unmarshal(b, &body); err != nil || body.Message != want {
		t.Errorf("/ws refusal body %q, want message %q", b, want)
	}

	// Four refusals of one origin within a minute: one warning.
	if got := logs.lines(`origin=` + origin); len(got) != 1 || !strings.Contains(got[0], "level=WARN") || !strings.Contains(got[0], "--allowed-origins") {
		t.Errorf("log lines for %s = %q, want one warning", origin, got)
	}

	// An origin given with its default port is advised in the form the
	// flag takes; one that is no http(s) origin gets no advice.
	for o, want := range map[string]string{
		"HTTP://Chat.Example:80": `origin "HTTP://Chat.Example:80" is not allowed; start parleyd with --allowed-origins http://chat.example`,
		"null":                   `origin "null" is not allowed: it is not a serialized http(s) origin, so no --allowed-origins entry can admit it`,
	} {
		var rooms chatv1.ListRoomsResponse
		res, err := grpcWebUnary(ctx, e, "/chat.v1.Chat/ListRooms", o, "Bearer tok-x", &chatv1.ListRoomsRequest{}, &rooms)
		if res == nil {
			t.Fatalf("%s: %v", o, err)
		}
		if msg, _ := url.PathUnescape(res.Header.Get("Grpc-Message")); msg != want {
			t.Errorf("origin %s: message %q, want %q", o, msg, want)
		}
	}
	if got := logs.lines(`origin=null`); len(got) != 1 {
		t.Errorf("log lines for null = %q, want one", got)
	}
}
