package server_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/servertest"
)

// TestOnlineUsersArePaged connects more users than OnlineSnapshotLimit: a
// new session's snapshot lists the first page with the count and a token,
// ListOnlineUsers pages the rest over gRPC, and with more users than
// PresenceNamesLimit presence carries only the count.
func TestOnlineUsersArePaged(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
		c.OnlineSnapshotLimit = 4
		c.PresenceNamesLimit = 6
		c.PresenceWindow = 20 * time.Millisecond
	}})
	conn := srv.Dial(t)
	const n = 10
	var want []string
	var clients []*client
	for i := range n {
		name := fmt.Sprintf("page%02d", i)
		want = append(want, name)
		c := connect(t, conn, name, srv.Token(t, name, auth.RoleUser))
		c.next(func(ev *chatv1.ServerEvent) bool { return ev.GetStateRestored() != nil })
		clients = append(clients, c)
	}

	// The last to connect saw everyone: the first page only.
	late := connect(t, conn, "page99", srv.Token(t, "page99", auth.RoleUser))
	want = append(want, "page99")
	snap := late.next(func(ev *chatv1.ServerEvent) bool { return ev.GetOnlineUsers() != nil }).GetOnlineUsers()
	var first []string
	for _, u := range snap.GetUsers() {
		first = append(first, u.GetUsername())
	}
	if !slices.Equal(first, want[:4]) || snap.GetOnlineCount() != n+1 || snap.GetNextPageToken() == "" {
		t.Fatalf("snapshot = %v", snap)
	}

	// The rest comes from ListOnlineUsers, from the snapshot's token on.
	chat := chatv1.NewChatClient(conn)
	ctx := servertest.WithToken(t.Context(), srv.Token(t, "page99", auth.RoleUser))
	got, token := first, snap.GetNextPageToken()
	for pages := 0; token != ""; pages++ {
		if pages > n {
			t.Fatal("paging does not end")
		}
		resp, err := chat.ListOnlineUsers(ctx, &chatv1.ListOnlineUsersRequest{PageSize: 3, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetUsers()) > 3 || resp.GetOnlineCount() != n+1 {
			t.Fatalf("page = %v", resp)
		}
		for _, u := range resp.GetUsers() {
			got = append(got, u.GetUsername())
			if u.GetRole() != chatv1.Role_ROLE_USER {
				t.Fatalf("role of %s = %v", u.GetUsername(), u.GetRole())
			}
		}
		token = resp.GetNextPageToken()
	}
	if !slices.Equal(got, want) {
		t.Fatalf("paged %v, want %v", got, want)
	}
	// The default page holds everyone here.
	if resp, err := chat.ListOnlineUsers(ctx, &chatv1.ListOnlineUsersRequest{}); err != nil || len(resp.GetUsers()) != n+1 || resp.GetNextPageToken() != "" {
		t.Fatalf("default page: %v %v", resp, err)
	}
	for _, bad := range []*chatv1.ListOnlineUsersRequest{{PageSize: -1}, {PageSize: 1001}, {PageToken: strings.Repeat("x", 129)}} {
		_, err := chat.ListOnlineUsers(ctx, bad)
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("%v: %v, want InvalidArgument", bad, err)
		}
		if bad.PageSize != 0 && !strings.Contains(status.Convert(err).Message(), "page_size") {
			t.Fatalf("%v: message %q does not name page_size", bad, status.Convert(err).Message())
		}
	}

	// 11 online, above the names limit of 6: the newcomer's arrival reaches
	// the others as a count.
	ev := clients[0].next(func(ev *chatv1.ServerEvent) bool {
		return ev.GetPresenceChanged().GetOnlineCount() == n+1 || ev.GetUserOnline().GetOnlineCount() == n+1
	})
	if pc := ev.GetPresenceChanged(); !pc.GetNamesOmitted() || len(pc.GetOnline()) != 0 {
		t.Fatalf("above the limit: %v", ev)
	}
	// Back to 6: names again.
	for _, c := range clients[5:] {
		c.close()
	}
	ev = clients[0].next(func(ev *chatv1.ServerEvent) bool {
		if pc := ev.GetPresenceChanged(); pc != nil {
			return pc.GetOnlineCount() == 6
		}
		return ev.GetUserOffline().GetOnlineCount() == 6
	})
	late.close()
	off := clients[0].next(func(ev *chatv1.ServerEvent) bool { return ev.GetUserOffline() != nil })
	if off.GetUserOffline().GetUser().GetUsername() != "page99" || off.GetUserOffline().GetOnlineCount() != 5 {
		t.Fatalf("below the limit: %v (before: %v)", off, ev)
	}
}
