package conformance_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/parleychat/parley/clients/go/parley"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/servertest"
)

// sdkSession opens a live session as user on srv through the Go SDK and
// returns it with the user's REST authorization header.
func sdkSession(t *testing.T, srv *servertest.Server, user string) (*parley.Session, map[string]string) {
	t.Helper()
	tok := srv.TokenAs(t, user, chatv1.Role_ROLE_USER)
	c, err := parley.Dial(t.Context(), srv.GRPCAddr(), parley.WithToken(tok))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := c.Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	go func() { // the test reads answers, not events
		for range s.Events() {
		}
	}()
	return s, map[string]string{"Authorization": "Bearer " + tok}
}

// TestRESTDataEndpointsOnParleyd: GET /api/conversations pages the
// caller's conversations, GET /api/rooms lists rooms whose members are
// offline with stored and online counts.
func TestRESTDataEndpointsOnParleyd(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) { c.RateLimits = "message=unlimited" }})
	base := "http://" + srv.HTTPAddr()
	srv.TokenAs(t, "bob", chatv1.Role_ROLE_USER) // bob exists, and connects only later
	alice, aliceAuth := sdkSession(t, srv, "alice")
	if _, err := alice.Join(t.Context(), "attic"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 120; i++ {
		if _, err := alice.Send(t.Context(), "general", "m"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := alice.SendPrivate(t.Context(), "bob", "psst"); err != nil { // bob never connects
		t.Fatal(err)
	}
	alice.Close()
	_, bobAuth := sdkSession(t, srv, "bob")
	// alice's session ends on the server a moment after her side closes.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		r := call(t, "GET", base+"/api/users/online", bobAuth, nil)
		if r.status == 200 && !strings.Contains(string(r.body), `"alice"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice still online: %s", r.body)
		}
	}

	// Conversations, one per page.
	var seen []string
	token := ""
	for range 4 {
		r := call(t, "GET", base+"/api/conversations?page_size=1&page_token="+token, aliceAuth, nil)
		var page chatv1.ListConversationsResponse
		if r.status != 200 || protojson.Unmarshal(r.body, &page) != nil || len(page.GetConversations()) != 1 {
			t.Fatalf("conversations: %d %s", r.status, r.body)
		}
		c := page.GetConversations()[0]
		seen = append(seen, c.GetConversation().GetRoom()+"@"+c.GetConversation().GetUser()+":"+strconv.FormatInt(c.GetLastSeq(), 10))
		if token = page.GetNextPageToken(); token == "" {
			break
		}
	}
	if got := strings.Join(seen, " "); got != "@bob:1 general@:120 attic@:0" || token != "" {
		t.Fatalf("alice's conversations: %s (next %q)", got, token)
	}
	var body map[string]any
	r := call(t, "GET", base+"/api/conversations", aliceAuth, nil)
	if r.status != 200 || json.Unmarshal(r.body, &body) != nil || !strings.Contains(string(r.body), `"lastMessage"`) || !strings.Contains(string(r.body), `"lastSeq":"120"`) {
		t.Fatalf("conversations JSON: %d %s", r.status, r.body)
	}
	for _, q := range []string{"page_size=201", "page_size=x", "page_token=" + strings.Repeat("a", 257), "page_token=bogus"} {
		if r := call(t, "GET", base+"/api/conversations?"+q, aliceAuth, nil); r.status != 400 {
			t.Errorf("GET /api/conversations?%s: %d %s, want 400", q, r.status, r.body)
		}
	}
	if r := call(t, "GET", base+"/api/conversations", nil, nil); r.status != 401 {
		t.Errorf("GET /api/conversations without a token: %d, want 401", r.status)
	}

	// Rooms: alice is offline, her room is listed all the same.
	r = call(t, "GET", base+"/api/rooms", bobAuth, nil)
	var rooms chatv1.ListRoomsResponse
	if r.status != 200 || protojson.Unmarshal(r.body, &rooms) != nil {
		t.Fatalf("rooms: %d %s", r.status, r.body)
	}
	var got []string
	for _, rm := range rooms.GetRooms() {
		got = append(got, rm.GetName()+":"+strconv.Itoa(int(rm.GetMemberCount()))+"/"+strconv.Itoa(int(rm.GetOnlineCount()))+":"+strconv.FormatBool(rm.GetJoined()))
	}
	if s := strings.Join(got, " "); s != "attic:1/0:false general:2/1:true" {
		t.Fatalf("rooms for bob: %s", s)
	}

}

// TestRESTHistoryFromStartOnParleyd: GET /api/messages with after_seq=0
// reads from the first message; without after_seq, the latest page.
func TestRESTHistoryFromStartOnParleyd(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) { c.RateLimits = "message=unlimited" }})
	base := "http://" + srv.HTTPAddr()
	alice, _ := sdkSession(t, srv, "alice")
	_, bobAuth := sdkSession(t, srv, "bob")
	for i := 1; i <= 120; i++ {
		if _, err := alice.Send(t.Context(), "general", "m"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	r := call(t, "GET", base+"/api/messages?room=general&after_seq=0&limit=100", bobAuth, nil)
	var hist chatv1.GetHistoryResponse
	if r.status != 200 || protojson.Unmarshal(r.body, &hist) != nil || len(hist.GetMessages()) != 100 ||
		hist.GetMessages()[0].GetSeq() != 1 || !hist.GetHasMore() {
		t.Fatalf("history from the start: %d %.300s", r.status, r.body)
	}
	r = call(t, "GET", base+"/api/messages?room=general&limit=100", bobAuth, nil)
	if r.status != 200 || protojson.Unmarshal(r.body, &hist) != nil || len(hist.GetMessages()) != 100 || hist.GetMessages()[0].GetSeq() != 21 {
		t.Fatalf("latest history: %d %.300s", r.status, r.body)
	}
}
