package bridge_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/parleychat/parley/bridge"
)

// TestRESTOpenAPI: GET /api/openapi.json serves the generated document,
// and every operation it lists is an endpoint the bridge serves.
func TestRESTOpenAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, nil)
	r := e.do(t, "GET", "/api/openapi.json", map[string]string{"Origin": allowedOrigin}, nil)
	if r.status != 200 || r.header.Get("Content-Type") != "application/json" ||
		r.header.Get("X-Content-Type-Options") != "nosniff" || r.header.Get("Access-Control-Allow-Origin") != allowedOrigin {
		t.Fatalf("%d %v %.200s", r.status, r.header, r.body)
	}
	var doc struct {
		Swagger string                                `json:"swagger"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(r.body, &doc); err != nil || doc.Swagger != "2.0" {
		t.Fatalf("not an OpenAPI 2 document (%v): %.200s", err, r.body)
	}
	var ops []string
	for path, methods := range doc.Paths {
		for m := range methods {
			ops = append(ops, strings.ToUpper(m)+" "+path)
		}
	}
	slices.Sort(ops)
	want := []string{
		"GET /api/conversations", "GET /api/messages", "GET /api/rooms", "GET /api/users/online",
		"POST /api/auth/login", "POST /api/auth/logout", "POST /api/auth/refresh", "POST /api/auth/register",
	}
	if !slices.Equal(ops, want) {
		t.Fatalf("operations %v, want %v", ops, want)
	}
	for _, op := range ops {
		method, path, _ := strings.Cut(op, " ")
		var body *strings.Reader
		if method == "POST" {
			body = strings.NewReader(`{}`)
		} else {
			body = strings.NewReader("")
		}
		r := e.do(t, method, path, bearer("doc"), body)
		if r.status == 404 && strings.Contains(string(r.body), "no such endpoint") {
			t.Errorf("%s: listed in the document but not served: %s", op, r.body)
		}
	}
}

// TestRESTGatewayFieldNames: the names the OpenAPI document gives
// (conversation.room, lowerCamelCase fields) work beside /api's own.
func TestRESTGatewayFieldNames(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, nil)
	if r := e.do(t, "GET", "/api/messages?conversation.room=general&beforeSeq=7&afterSeq=0", bearer("names"), nil); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	e.chat.mu.Lock()
	got := e.chat.hist["names"]
	e.chat.mu.Unlock()
	if got.GetConversation().GetRoom() != "general" || got.GetBeforeSeq() != 7 || got.AfterSeq == nil || got.GetLimit() != 100 {
		t.Fatalf("request %v", got)
	}
	if r := e.do(t, "GET", "/api/messages?room=general&conversation.user=bob", bearer("names"), nil); r.status != 400 || !strings.Contains(string(r.body), `"INVALID_ARGUMENT"`) {
		t.Fatalf("room and conversation.user: %d %s", r.status, r.body)
	}
}

// TestRESTForwardsOnlyTokenAndAddress: the gateway's own forwarding
// (X-Forwarded-For/Host, Grpc-Metadata-* headers, Grpc-Timeout) is off: a
// call carries the Authorization header and the TCP peer's address, so a
// client cannot choose the address the server rate-limits by.
func TestRESTForwardsOnlyTokenAndAddress(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, nil)
	r := e.do(t, "GET", "/api/rooms", map[string]string{
		"Authorization":                    "Bearer tok-fwd",
		"X-Forwarded-For":                  "203.0.113.9",
		"X-Forwarded-Host":                 "evil.example",
		"Grpc-Metadata-X-Parley-Client-Ip": "203.0.113.9",
		"X-Parley-Client-Ip":               "203.0.113.9",
		"Grpc-Metadata-Role":               "admin",
		"Grpc-Timeout":                     "nonsense",
		"X-Http-Method-Override":           "DELETE",
	}, nil)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	for k := range r.header {
		if strings.HasPrefix(k, "Grpc-") {
			t.Errorf("gateway header %s in the answer", k)
		}
	}
	md := e.chat.lastMD("fwd", "/chat.v1.Chat/ListRooms")
	if ip := md.Get(bridge.DefaultClientIPHeader); len(ip) != 1 || ip[0] != "127.0.0.1" {
		t.Errorf("client ip %q, want the TCP peer's", ip)
	}
	for k, v := range md {
		switch k {
		case bridge.DefaultClientIPHeader, "authorization", ":authority", "content-type", "user-agent", "grpc-accept-encoding", "grpc-timeout":
		default:
			t.Errorf("metadata %s=%q reached the server", k, v)
		}
	}
}

// TestRESTAuthBodyStrict: an auth body is exactly one JSON object, as
// before the gateway (whose own decoder takes an empty body as {}).
func TestRESTAuthBodyStrict(t *testing.T) {
	t.Parallel()
	e := newEnv(t, inProcess, nil)
	for _, body := range []string{"", `{"username":"alice","password":"secret"} {}`, `[]`} {
		r := e.do(t, "POST", "/api/auth/login", nil, strings.NewReader(body))
		if r.status != http.StatusBadRequest || !strings.Contains(string(r.body), "malformed JSON") {
			t.Errorf("body %q: %d %s, want 400 malformed JSON", body, r.status, r.body)
		}
	}
}
