package bridge_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/parleychat/parley/bridge"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

type apiResult struct {
	status int
	header http.Header
	body   []byte
}

func (e *env) do(t *testing.T, method, path string, hdr map[string]string, body io.Reader) apiResult {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), method, e.base+path, body)
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
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return apiResult{res.StatusCode, res.Header, b}
}

func bearer(user string) map[string]string {
	return map[string]string{"Authorization": "Bearer tok-" + user}
}

func TestRESTHistory(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, nil)

	r := e.do(t, "GET", "/api/messages?room=general", bearer("hist1"), nil)
	if r.status != 200 || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %s", r.status, r.body)
	}
	var resp chatv1.GetHistoryResponse
	if err := protojson.Unmarshal(r.body, &resp); err != nil || len(resp.GetMessages()) != 1 || !resp.GetHasMore() {
		t.Fatalf("body %s: %v", r.body, err)
	}
	if !bytes.Contains(r.body, []byte(`"hasMore":true`)) {
		t.Errorf("want protojson camelCase names: %s", r.body)
	}
	e.chat.mu.Lock()
	got := e.chat.hist["hist1"]
	e.chat.mu.Unlock()
	if got.GetConversation().GetRoom() != "general" || got.GetLimit() != 100 || got.GetBeforeSeq() != 0 || got.AfterSeq != nil {
		t.Fatalf("request %v, want room general, limit 100 by default, no after_seq", got)
	}

	// after_seq=0 is sent as present: from the start.
	if r := e.do(t, "GET", "/api/messages?room=general&after_seq=0", bearer("hist3"), nil); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	e.chat.mu.Lock()
	got = e.chat.hist["hist3"]
	e.chat.mu.Unlock()
	if got.AfterSeq == nil || *got.AfterSeq != 0 {
		t.Fatalf("after_seq=0 sent as %v", got)
	}
	if r := e.do(t, "GET", "/api/messages?room=general&after_seq=", bearer("hist4"), nil); r.status != 400 || !bytes.Contains(r.body, []byte("after_seq: empty")) {
		t.Fatalf("empty after_seq: %d %s", r.status, r.body)
	}

	r = e.do(t, "GET", "/api/messages?user=bob&before_seq=42&limit=5", bearer("hist2"), nil)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	e.chat.mu.Lock()
	got = e.chat.hist["hist2"]
	e.chat.mu.Unlock()
	if got.GetConversation().GetUser() != "bob" || got.GetLimit() != 5 || got.GetBeforeSeq() != 42 {
		t.Fatalf("request %v", got)
	}
	md := e.chat.lastMD("hist2", "/chat.v1.Chat/GetHistory")
	if ip := md.Get(bridge.DefaultClientIPHeader); len(ip) != 1 || ip[0] != "127.0.0.1" {
		t.Fatalf("client ip %q", ip)
	}
}

func TestRESTErrorMapping(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, nil)
	for _, tc := range []struct {
		name, path string
		hdr        map[string]string
		status     int
		code       string
	}{
		{"no token", "/api/rooms", nil, 401, "UNAUTHENTICATED"},
		{"bad token", "/api/users/online", map[string]string{"Authorization": "Bearer nope"}, 401, "UNAUTHENTICATED"},
		{"forbidden", "/api/messages?room=forbidden", bearer("e"), 403, "PERMISSION_DENIED"},
		{"not found", "/api/messages?room=missing", bearer("e"), 404, "NOT_FOUND"},
		{"invalid (server)", "/api/messages?room=general&limit=500", bearer("e"), 400, "INVALID_ARGUMENT"},
		{"no conversation (server)", "/api/messages", bearer("e"), 400, "INVALID_ARGUMENT"},
		{"both room and user", "/api/messages?room=a&user=bob", bearer("e"), 400, "INVALID_ARGUMENT"},
		{"bad integer", "/api/messages?room=a&before_seq=x", bearer("e"), 400, "INVALID_ARGUMENT"},
		{"rate limited", "/api/messages?room=limited", bearer("e"), 429, "RESOURCE_EXHAUSTED"},
		{"internal", "/api/messages?room=broken", bearer("e"), 500, "UNKNOWN"},
		{"token in URL", "/api/rooms?access_token=tok-e", nil, 400, "INVALID_ARGUMENT"},
		{"token in URL with header", "/api/rooms?token=tok-e", bearer("e"), 400, "INVALID_ARGUMENT"},
		{"foreign origin", "/api/rooms", map[string]string{"Authorization": "Bearer tok-e", "Origin": evilOrigin}, 403, "PERMISSION_DENIED"},
		{"unknown endpoint", "/api/nope", bearer("e"), 404, "NOT_FOUND"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, "GET", tc.path, tc.hdr, nil)
			var body struct{ Code, Message string }
			if err := json.Unmarshal(r.body, &body); err != nil {
				t.Fatalf("body %s: %v", r.body, err)
			}
			if r.status != tc.status || body.Code != tc.code || body.Message == "" {
				t.Fatalf("got %d %s, want %d %s", r.status, r.body, tc.status, tc.code)
			}
			if r.header.Get("Content-Type") != "application/json" || r.header.Get("X-Content-Type-Options") != "nosniff" {
				t.Fatalf("headers %v", r.header)
			}
			switch r.status {
			case 429:
				if r.header.Get("Retry-After") != "3" {
					t.Fatalf("Retry-After %q, want 3 (2.5s rounded up)", r.header.Get("Retry-After"))
				}
			case 401:
				if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
					t.Fatalf("WWW-Authenticate %q", r.header.Get("WWW-Authenticate"))
				}
			}
		})
	}
}

func TestRESTListsAndCORS(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, nil)
	r := e.do(t, "GET", "/api/users/online", bearer("lister"), nil)
	if r.status != 200 || !strings.Contains(string(r.body), `"username":"lister"`) {
		t.Fatalf("%d %s", r.status, r.body)
	}
	r = e.do(t, "GET", "/api/rooms", map[string]string{"Authorization": "Bearer tok-lister", "Origin": allowedOrigin}, nil)
	if r.status != 200 || !strings.Contains(string(r.body), `"memberCount":2`) {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if r.header.Get("Access-Control-Allow-Origin") != allowedOrigin {
		t.Fatalf("CORS: %v", r.header)
	}
	r = e.do(t, "OPTIONS", "/api/rooms", map[string]string{"Origin": allowedOrigin, "Access-Control-Request-Method": "GET"}, nil)
	if r.status != 204 || !strings.Contains(r.header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("preflight: %d %v", r.status, r.header)
	}
}

func TestRESTUploadDownload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, nil)
	content := bytes.Repeat([]byte("0123456789abcdef"), 200<<10/16+7) // 200 KiB + 112 bytes
	sum := sha256.Sum256(content)
	id := hex.EncodeToString(sum[:])

	// Raw body, name percent-encoded.
	r := e.do(t, "POST", "/api/files", map[string]string{
		"Authorization": "Bearer tok-up", "Content-Type": "text/plain", "X-File-Name": "r%C3%A9sum%C3%A9.txt",
	}, bytes.NewReader(content))
	if r.status != 200 {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	var up chatv1.UploadFileResponse
	if err := protojson.Unmarshal(r.body, &up); err != nil || up.GetFile().GetId() != id || up.GetFile().GetName() != "résumé.txt" {
		t.Fatalf("upload response %s: %v", r.body, err)
	}
	e.chat.mu.Lock()
	chunks := e.chat.chunks["up"]
	e.chat.mu.Unlock()
	if len(chunks) != 4 || chunks[0] != 64<<10 || chunks[3] != len(content)-3*64<<10 {
		t.Fatalf("chunk sizes %v, want 64 KiB chunks", chunks)
	}

	r = e.do(t, "GET", "/api/files/"+id, bearer("up"), nil)
	if r.status != 200 || !bytes.Equal(r.body, content) {
		t.Fatalf("download: %d, %d bytes", r.status, len(r.body))
	}
	for k, want := range map[string]string{
		"Content-Type":           "text/plain",
		"Content-Length":         strconv.Itoa(len(content)),
		"Content-Disposition":    `attachment; filename="r_sum_.txt"; filename*=UTF-8''r%C3%A9sum%C3%A9.txt`,
		"X-Content-Type-Options": "nosniff",
	} {
		if got := r.header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}

	// Multipart, size field first.
	var mp bytes.Buffer
	w := multipart.NewWriter(&mp)
	_ = w.WriteField("size", strconv.Itoa(len(content)))
	fw, _ := w.CreateFormFile("file", "multi.bin")
	_, _ = fw.Write(content)
	_ = w.Close()
	r = e.do(t, "POST", "/api/files", map[string]string{"Authorization": "Bearer tok-mp", "Content-Type": w.FormDataContentType()}, &mp)
	if r.status != 200 || !strings.Contains(string(r.body), id) {
		t.Fatalf("multipart upload: %d %s", r.status, r.body)
	}

	// Multipart without a size.
	mp.Reset()
	w = multipart.NewWriter(&mp)
	fw, _ = w.CreateFormFile("file", "multi.bin")
	_, _ = fw.Write(content)
	_ = w.Close()
	r = e.do(t, "POST", "/api/files", map[string]string{"Authorization": "Bearer tok-mp", "Content-Type": w.FormDataContentType()}, &mp)
	if r.status != http.StatusLengthRequired {
		t.Fatalf("multipart without size: %d %s", r.status, r.body)
	}

	// Errors from the server and from the bridge.
	if r = e.do(t, "GET", "/api/files/"+strings.Repeat("0", 64), bearer("up"), nil); r.status != 404 {
		t.Fatalf("missing file: %d %s", r.status, r.body)
	}
	if r = e.do(t, "POST", "/api/files", map[string]string{"Content-Type": "text/plain", "X-File-Name": "a"}, strings.NewReader("abc")); r.status != 401 {
		t.Fatalf("upload without token: %d %s", r.status, r.body)
	}
	if r = e.do(t, "POST", "/api/files", map[string]string{"Authorization": "Bearer tok-up", "X-File-Name": "a", "X-File-Size": "10"}, strings.NewReader("abc")); r.status != 400 {
		t.Fatalf("short body: %d %s", r.status, r.body)
	}
}

func TestRESTUploadTooLarge(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, func(c *bridge.Config) { c.MaxUploadBytes = 1000 })
	r := e.do(t, "POST", "/api/files", map[string]string{"Authorization": "Bearer tok-big", "X-File-Name": "a"}, bytes.NewReader(make([]byte, 1001)))
	if r.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("%d %s", r.status, r.body)
	}
	// A lying X-File-Size does not get more through.
	r = e.do(t, "POST", "/api/files", map[string]string{"Authorization": "Bearer tok-big", "X-File-Name": "a", "X-File-Size": "900"}, bytes.NewReader(make([]byte, 200<<10)))
	if r.status != http.StatusBadRequest && r.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("%d %s", r.status, r.body)
	}
}

func TestRESTDownloadNameSanitized(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, nil)
	id := strings.Repeat("f", 64)
	e.chat.addFile(&chatv1.FileRef{Id: id, Name: "../../etc/pa\"ss\r\nwd.html", Size: 4, ContentType: "text/html; charset=utf-8"}, []byte("<b>"+"x"))
	r := e.do(t, "GET", "/api/files/"+id, bearer("dl"), nil)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	cd := r.header.Get("Content-Disposition")
	if !strings.HasPrefix(cd, `attachment; filename="pa_sswd.html"`) || strings.ContainsAny(cd, "\r\n/") {
		t.Fatalf("Content-Disposition %q", cd)
	}
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "sandbox") {
		t.Fatalf("CSP %q", csp)
	}
}

func TestRESTAuth(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, nil)
	r := e.do(t, "POST", "/api/auth/login", nil, strings.NewReader(`{"username":"alice","password":"secret"}`))
	if r.status != 200 || !strings.Contains(string(r.body), `"accessToken":"tok-alice"`) {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if r = e.do(t, "POST", "/api/auth/login", nil, strings.NewReader(`{"username":"alice","password":"wrong"}`)); r.status != 401 {
		t.Fatalf("wrong password: %d %s", r.status, r.body)
	}
	if r = e.do(t, "POST", "/api/auth/login", nil, strings.NewReader(`{"username":"alice","pass":"x"}`)); r.status != 400 {
		t.Fatalf("unknown field: %d %s", r.status, r.body)
	}
	if r = e.do(t, "POST", "/api/auth/login", nil, strings.NewReader(`{"username":"`+strings.Repeat("a", 20<<10)+`"}`)); r.status != 413 {
		t.Fatalf("huge body: %d %s", r.status, r.body)
	}
	if r = e.do(t, "POST", "/api/auth/register", nil, strings.NewReader(`{}`)); r.status != 500 || !strings.Contains(string(r.body), "UNIMPLEMENTED") {
		t.Fatalf("register on the test server: %d %s", r.status, r.body)
	}
	if r = e.do(t, "POST", "/api/auth/nope", nil, strings.NewReader(`{}`)); r.status != 404 {
		t.Fatalf("unknown op: %d %s", r.status, r.body)
	}
}

func TestStaticSPA(t *testing.T) {
	t.Parallel()
	app := fstest.MapFS{
		"index.html":          {Data: []byte("<!doctype html><title>Parley</title>")},
		"assets/app-1a2b3.js": {Data: []byte("console.log(1)")},
		"favicon.svg":         {Data: []byte("<svg/>")},
	}
	e := newEnv(t, inProcess, func(c *bridge.Config) { c.Static = app })

	for _, tc := range []struct {
		path, wantBody, wantCache string
		status                    int
	}{
		{"/", "<!doctype html><title>Parley</title>", "no-cache", 200},
		{"/rooms/general", "<!doctype html><title>Parley</title>", "no-cache", 200},
		{"/admin", "<!doctype html><title>Parley</title>", "no-cache", 200},
		{"/assets/app-1a2b3.js", "console.log(1)", "public, max-age=31536000, immutable", 200},
		{"/favicon.svg", "<svg/>", "no-cache", 200},
		{"/assets/missing.js", "", "", 404},
		{"/../../etc/passwd", "<!doctype html><title>Parley</title>", "no-cache", 200},
	} {
		r := e.do(t, "GET", tc.path, nil, nil)
		if r.status != tc.status || (tc.wantBody != "" && string(r.body) != tc.wantBody) || r.header.Get("Cache-Control") != tc.wantCache {
			t.Errorf("%s: %d %q cache %q", tc.path, r.status, r.body, r.header.Get("Cache-Control"))
		}
		if r.header.Get("X-Frame-Options") != "DENY" || r.header.Get("Referrer-Policy") != "no-referrer" || r.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: security headers %v", tc.path, r.header)
		}
		csp := r.header.Get("Content-Security-Policy")
		host := strings.TrimPrefix(e.base, "http://")
		if !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "ws://"+host) || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: CSP %q", tc.path, csp)
		}
	}
	if r := e.do(t, "GET", "/index.html", nil, nil); !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		t.Errorf("index content type %q", r.header.Get("Content-Type"))
	}
	if r := e.do(t, "POST", "/", nil, nil); r.status != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d", r.status)
	}

	// Without an app: 404, still with the headers.
	bare := newEnv(t, inProcess, nil)
	if r := bare.do(t, "GET", "/", nil, nil); r.status != 404 || r.header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("no app: %d %v", r.status, r.header)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  bridge.Config
	}{
		{"no conn", bridge.Config{}},
		{"wildcard origin", bridge.Config{Conn: dummyConn{}, AllowedOrigins: []string{"*"}}},
		{"origin with path", bridge.Config{Conn: dummyConn{}, AllowedOrigins: []string{"http://a.example/app"}}},
		{"origin pattern", bridge.Config{Conn: dummyConn{}, AllowedOrigins: []string{"https://*.example.com"}}},
		{"bare host", bridge.Config{Conn: dummyConn{}, AllowedOrigins: []string{"a.example"}}},
		{"ping too often", bridge.Config{Conn: dummyConn{}, PingInterval: 10}},
		{"reserved ip header", bridge.Config{Conn: dummyConn{}, ClientIPHeader: "grpc-ip"}},
	} {
		if _, err := bridge.New(tc.cfg); err == nil {
			t.Errorf("%s: New accepted it", tc.name)
		}
	}
	b, err := bridge.New(bridge.Config{Conn: dummyConn{}, AllowedOrigins: []string{"https://chat.example.com", "http://[::1]:8080", "http://localhost:8080/"}})
	if err != nil {
		t.Fatalf("valid config: %v", err)
	}
	_ = b.Close()
}

func TestNewHTTPServer(t *testing.T) {
	t.Parallel()
	s := bridge.NewHTTPServer(":8080", http.NotFoundHandler())
	if s.ReadHeaderTimeout == 0 || s.IdleTimeout == 0 || s.MaxHeaderBytes == 0 {
		t.Fatalf("limits unset: %+v", s)
	}
	if s.WriteTimeout != 0 || s.ReadTimeout != 0 {
		t.Fatal("Read/WriteTimeout would cut hijacked WebSockets")
	}
}

// dummyConn is a grpc.ClientConnInterface that is never called.
type dummyConn struct{}

func (dummyConn) Invoke(context.Context, string, any, any, ...grpc.CallOption) error {
	return status.Error(codes.Unavailable, "dummy")
}

func (dummyConn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, status.Error(codes.Unavailable, "dummy")
}

// TestRESTOnlineUsersPageParams: the bridge refuses a bad page_size or
// page_token itself, with a message saying what is accepted.
func TestRESTOnlineUsersPageParams(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, nil)
	for _, tc := range []struct{ query, want string }{
		{"page_size=abc", "page_size: not an integer"},
		{"page_size=-1", "page_size: out of range"},
		{"page_size=1001", "page_size: out of range: give an integer from 1 to 1000"},
		{"page_token=" + strings.Repeat("x", 129), "page_token: too long"},
	} {
		r := e.do(t, "GET", "/api/users/online?"+tc.query, bearer("pager"), nil)
		if r.status != 400 || !strings.Contains(string(r.body), `"INVALID_ARGUMENT"`) || !strings.Contains(string(r.body), tc.want) {
			t.Errorf("%s: %d %s, want 400 with %q", tc.query, r.status, r.body, tc.want)
		}
	}
	if r := e.do(t, "GET", "/api/users/online?page_size=1000&page_token=bob", bearer("pager"), nil); r.status != 200 {
		t.Fatalf("valid page: %d %s", r.status, r.body)
	}
}

// TestRESTUploadNameReduced: a REST upload's name is reduced to a display
// name before it reaches Chat.UploadFile, whatever the server behind does.
func TestRESTUploadNameReduced(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, nil)
	r := e.do(t, "POST", "/api/files", map[string]string{
		"Authorization": "Bearer tok-up", "Content-Type": "text/plain", "X-File-Name": "..%2F..%5Cetc%2Fpa%00ss%0D%0Awd%E2%80%AE.txt",
	}, strings.NewReader("abc"))
	if r.status != 200 {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	var up chatv1.UploadFileResponse
	if err := protojson.Unmarshal(r.body, &up); err != nil || up.GetFile().GetName() != "passwd.txt" {
		t.Fatalf("upload response %s (%v): want the name passwd.txt", r.body, err)
	}
}
