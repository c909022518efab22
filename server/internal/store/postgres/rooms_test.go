package postgres

import (
	"testing"

	"github.com/parleychat/parley/server/internal/store/storetest"
)

func TestListConversations(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, Config{})
	storetest.ListConversations(t, s)
}

func TestRoomSummaries(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, Config{})
	storetest.RoomSummaries(t, s)
}
