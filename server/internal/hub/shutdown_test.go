package hub_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/hub"
)

// TestAttachAfterShutdownIsRefused: a session attached after Shutdown
// told every session to go would never hear it and would hold the drain.
func TestAttachAfterShutdownIsRefused(t *testing.T) {
	t.Parallel()
	h, _ := newHub(t, 2, 16)
	s := attach(t, h, "user00000")
	if n := h.Shutdown(time.Second); n != 1 {
		t.Fatalf("Shutdown told %d sessions, want 1", n)
	}
	h.Detach(s)
	_, err := h.Attach(context.Background(), hub.Identity{Username: "user00001", Role: chatv1.Role_ROLE_USER}, time.Time{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Attach after Shutdown = %v, want Unavailable", err)
	}
	if st := h.Stats(); st.Connections != 0 {
		t.Fatalf("connections after a refused attach = %d", st.Connections)
	}
}
