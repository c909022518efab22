package server

import (
	"context"
	"time"

	"github.com/parleychat/parley/server/internal/metrics"
	"github.com/parleychat/parley/server/internal/store"
)

// countingStore counts the failures of the operations a live chat server
// depends on (parley_store_errors_total{op}); every other method passes
// through untouched.
type countingStore struct {
	Store
	m *metrics.Metrics
}

func (s countingStore) AppendMessage(ctx context.Context, m store.Message) (store.Message, bool, error) {
	out, dup, err := s.Store.AppendMessage(ctx, m)
	s.m.StoreError("append_message", err)
	return out, dup, err
}

func (s countingStore) GetUser(ctx context.Context, username string) (store.User, error) {
	u, err := s.Store.GetUser(ctx, username)
	s.m.StoreError("get_user", err)
	return u, err
}

func (s countingStore) Memberships(ctx context.Context, username string) ([]string, error) {
	rooms, err := s.Store.Memberships(ctx, username)
	s.m.StoreError("memberships", err)
	return rooms, err
}

func (s countingStore) AddMembership(ctx context.Context, username, room string) error {
	err := s.Store.AddMembership(ctx, username, room)
	s.m.StoreError("add_membership", err)
	return err
}

func (s countingStore) RemoveMembership(ctx context.Context, username, room string) error {
	err := s.Store.RemoveMembership(ctx, username, room)
	s.m.StoreError("remove_membership", err)
	return err
}

func (s countingStore) TouchLastSeen(ctx context.Context, username string, t time.Time) error {
	err := s.Store.TouchLastSeen(ctx, username, t)
	s.m.StoreError("touch_last_seen", err)
	return err
}

func (s countingStore) DirectMessagesSince(ctx context.Context, username string, since time.Time, limit int) ([]store.Message, bool, error) {
	msgs, more, err := s.Store.DirectMessagesSince(ctx, username, since, limit)
	s.m.StoreError("direct_messages_since", err)
	return msgs, more, err
}

func (s countingStore) PutFile(ctx context.Context, f store.File) (store.File, error) {
	out, err := s.Store.PutFile(ctx, f)
	s.m.StoreError("put_file", err)
	return out, err
}
