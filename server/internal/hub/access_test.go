package hub_test

import (
	"context"
	"errors"
	"testing"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/apierr"
	"github.com/parleychat/parley/server/internal/store"
)

// TestAccessCheckStoreFailure: when the store cannot say whether a user is
// a member of a room, reading it fails with the store's error, not as
// PermissionDenied: the member would be told they may not read their own
// room, and would not retry.
func TestAccessCheckStoreFailure(t *testing.T) {
	t.Parallel()
	h, st := newHub(t, 1, 16)
	ctx := context.Background()
	if err := st.AddMembership(ctx, "user00000", "lobby"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.ConversationKey(ctx, "user00000", &chatv1.Conversation{Kind: &chatv1.Conversation_Room{Room: "lobby"}}); err != nil {
		t.Fatalf("a stored member may read the room: %v", err)
	}
	st.Close() // every later call fails with store.ErrClosed
	_, err := h.ConversationKey(ctx, "user00000", &chatv1.Conversation{Kind: &chatv1.Conversation_Room{Room: "lobby"}})
	var ae *apierr.Error
	if errors.As(err, &ae) || !errors.Is(err, store.ErrClosed) {
		t.Fatalf("with the store failing, ConversationKey = %v, want the store's error (not a refusal)", err)
	}
}
