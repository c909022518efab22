package hub_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/hub"
	"github.com/parleychat/parley/server/internal/store"
)

// TestRestoreAtTheDefaultCap: with more direct messages missed than the
// default replay cap (1000, also the store's own cap on one read), a
// connect replays the oldest 1000 and says complete=false, rather than
// stopping at the store's cap and calling that complete.
func TestRestoreAtTheDefaultCap(t *testing.T) {
	h, st := newHub(t, 2, 0)
	ctx := context.Background()
	seen := time.Now().Add(-time.Hour)
	for i := range 1001 {
		if _, _, err := st.AppendMessage(ctx, store.Message{
			Conversation: store.DirectKey("user00000", "user00001"), Sender: "user00001", Recipient: "user00000",
			Text: fmt.Sprint("dm ", i+1), SentAt: seen.Add(time.Duration(i+1) * time.Millisecond),
		}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := h.Attach(ctx, hub.Identity{Username: "user00000", Role: chatv1.Role_ROLE_USER, LastSeenAt: seen}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Detach(s)
	var seqs []int64
	for _, f := range s.Take(nil) {
		var ev chatv1.ServerEvent
		if err := proto.Unmarshal(f.Data, &ev); err != nil {
			t.Fatal(err)
		}
		if rm := ev.GetRecentMessages(); rm.GetConversation().GetUser() == "user00001" {
			for _, m := range rm.GetMessages() {
				seqs = append(seqs, m.GetSeq())
			}
		}
		if sr := ev.GetStateRestored(); sr != nil {
			if sr.GetComplete() || sr.GetMessagesReplayed() != 1000 || len(seqs) != 1000 || seqs[0] != 1 || seqs[999] != 1000 {
				t.Fatalf("restored %d messages (%v...), %v", len(seqs), seqs[:min(len(seqs), 3)], sr)
			}
			return
		}
	}
	t.Fatal("no StateRestored")
}
