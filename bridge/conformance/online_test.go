package conformance_test

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/servertest"
)

// TestRESTOnlineUsersPagesOnParleyd pages GET /api/users/online on a real
// parleyd with more users online than one page, and checks the refusals
// of the server's own validation.
func TestRESTOnlineUsersPagesOnParleyd(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) { c.OnlineSnapshotLimit = 3 }})
	conn := srv.Dial(t)
	chat := chatv1.NewChatClient(conn)
	const n = 7
	var want []string
	for i := range n {
		name := fmt.Sprintf("pager%02d", i)
		want = append(want, name)
		stream, err := chat.Connect(servertest.WithToken(t.Context(), srv.TokenAs(t, name, chatv1.Role_ROLE_USER)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil { // Welcome: the session is attached
			t.Fatal(err)
		}
	}
	auth := map[string]string{"Authorization": "Bearer " + srv.TokenAs(t, "pager00", chatv1.Role_ROLE_USER)}
	base := "http://" + srv.HTTPAddr() + "/api/users/online"

	var got []string
	token, pages := "", 0
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := call(t, "GET", base+"?page_size=3&page_token="+url.QueryEscape(token), auth, nil)
		if r.status != 200 {
			t.Fatalf("page %d: %d %s", pages, r.status, r.body)
		}
		var resp chatv1.ListOnlineUsersResponse
		if err := protojson.Unmarshal(r.body, &resp); err != nil {
			t.Fatal(err)
		}
		if resp.GetOnlineCount() != n {
			if time.Now().After(deadline) {
				t.Fatalf("onlineCount %d, want %d", resp.GetOnlineCount(), n)
			}
			time.Sleep(20 * time.Millisecond) // a session still attaching
			continue
		}
		if len(resp.GetUsers()) > 3 {
			t.Fatalf("page of %d users, asked for 3", len(resp.GetUsers()))
		}
		for _, u := range resp.GetUsers() {
			got = append(got, u.GetUsername())
		}
		pages++
		if resp.GetNextPageToken() == "" {
			break
		}
		if !strings.Contains(string(r.body), `"nextPageToken"`) {
			t.Fatalf("want protojson names: %s", r.body)
		}
		token = resp.GetNextPageToken()
	}
	if !slices.Equal(got, want) || pages != 3 {
		t.Fatalf("%d pages: %v, want %v", pages, got, want)
	}

	// The default page is 100; the server refuses what the bridge lets by
	// only when the contract does (a too-long token is the bridge's own).
	r := call(t, "GET", base, auth, nil)
	var all chatv1.ListOnlineUsersResponse
	if err := protojson.Unmarshal(r.body, &all); err != nil || len(all.GetUsers()) != n || all.GetNextPageToken() != "" {
		t.Fatalf("default page: %d %s %v", r.status, r.body, err)
	}
	if r := call(t, "GET", base+"?page_size=5000", auth, nil); r.status != 400 || !strings.Contains(string(r.body), "page_size") {
		t.Fatalf("page_size=5000: %d %s", r.status, r.body)
	}
}
