package sqlite

import (
	"testing"

	"github.com/parleychat/parley/server/internal/store/storetest"
)

func TestListConversations(t *testing.T) {
	t.Parallel()
	storetest.ListConversations(t, newStore(t, Config{}))
}

func TestRoomSummaries(t *testing.T) {
	t.Parallel()
	storetest.RoomSummaries(t, newStore(t, Config{}))
}
