package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/server/internal/store"
)

// Users checks creating, reading and updating users on an empty store.
func Users(t *testing.T, s Store) {
	t.Helper()
	ctx := context.Background()
	created := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	alice := store.User{Username: "alice", PasswordHash: "$argon2id$x", Role: store.RoleAdmin, Active: true, CreatedAt: created}
	if err := s.CreateUser(ctx, alice); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(ctx, alice); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate CreateUser: %v, want ErrExists", err)
	}
	if err := s.CreateUser(ctx, store.User{Username: "bob"}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []store.User{{}, {Username: "carol", Role: "root"}} {
		if err := s.CreateUser(ctx, bad); err == nil {
			t.Errorf("CreateUser(%+v) succeeded", bad)
		}
	}
	got, err := s.GetUser(ctx, "alice")
	if err != nil || got != alice {
		t.Fatalf("GetUser = %+v, %v; want %+v", got, err, alice)
	}
	bob, _ := s.GetUser(ctx, "bob")
	if bob.Role != store.RoleUser || bob.Active || bob.CreatedAt.IsZero() || !bob.LastSeenAt.IsZero() {
		t.Fatalf("defaults not applied: %+v", bob)
	}
	if _, err := s.GetUser(ctx, "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetUser(nobody) = %v", err)
	}
	if _, err := s.GetUser(ctx, "Alice"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetUser(Alice) = %v: usernames compare exactly", err)
	}

	seen := time.Date(2025, 1, 1, 0, 0, 0, 1, time.UTC)
	steps := []struct {
		name string
		do   func(user string) error
	}{
		{"SetUserActive", func(u string) error { return s.SetUserActive(ctx, u, false) }},
		{"SetUserRole", func(u string) error { return s.SetUserRole(ctx, u, store.RoleModerator) }},
		{"TouchLastSeen", func(u string) error { return s.TouchLastSeen(ctx, u, seen) }},
	}
	for _, st := range steps {
		if err := st.do("alice"); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if err := st.do("nobody"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("%s(nobody) = %v, want ErrNotFound", st.name, err)
		}
	}
	if err := s.SetUserRole(ctx, "alice", "root"); err == nil {
		t.Fatal("SetUserRole accepted an unknown role")
	}
	got, _ = s.GetUser(ctx, "alice")
	if got.Active || got.Role != store.RoleModerator || !got.LastSeenAt.Equal(seen) {
		t.Fatalf("after updates: %+v", got)
	}
	if n, err := s.CountUsers(ctx); err != nil || n != 2 {
		t.Fatalf("CountUsers = %d, %v", n, err)
	}
}

// Memberships checks storing a user's rooms on an empty store.
func Memberships(t *testing.T, s Store) {
	t.Helper()
	ctx := context.Background()
	mustUser(t, s, "alice")
	// "Zeta" sorts before "alpha" byte by byte, whatever the database's collation.
	for _, room := range []string{"zeta", "alpha", "mid", "alpha", "Zeta"} {
		if err := s.AddMembership(ctx, "alice", room); err != nil {
			t.Fatalf("AddMembership(%s): %v", room, err)
		}
	}
	if rooms, err := s.Memberships(ctx, "alice"); err != nil || !slices.Equal(rooms, []string{"Zeta", "alpha", "mid", "zeta"}) {
		t.Fatalf("Memberships = %v, %v", rooms, err)
	}
	if err := s.AddMembership(ctx, "nobody", "alpha"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("membership for unknown user: %v", err)
	}
	if err := s.AddMembership(ctx, "alice", ""); err == nil {
		t.Fatal("membership of no room accepted")
	}
	if err := s.RemoveMembership(ctx, "alice", "mid"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveMembership(ctx, "alice", "mid"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("removing twice: %v", err)
	}
	if rooms, _ := s.Memberships(ctx, "alice"); !slices.Equal(rooms, []string{"Zeta", "alpha", "zeta"}) {
		t.Fatalf("after remove: %v", rooms)
	}
	if rooms, err := s.Memberships(ctx, "nobody"); err != nil || len(rooms) != 0 {
		t.Fatalf("Memberships(nobody) = %v, %v", rooms, err)
	}
}

// Closed checks that a closed store refuses every call with
// store.ErrClosed, and that closing twice is fine.
func Closed(t *testing.T, s Store) {
	t.Helper()
	ctx := context.Background()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	calls := map[string]func() error{
		"AppendMessage": func() error {
			_, _, err := s.AppendMessage(ctx, store.Message{Conversation: "r:x", Sender: "a"})
			return err
		},
		"CreateUser":    func() error { return s.CreateUser(ctx, store.User{Username: "a"}) },
		"GetUser":       func() error { _, err := s.GetUser(ctx, "a"); return err },
		"SetUserActive": func() error { return s.SetUserActive(ctx, "a", true) },
		"UpdateUser": func() error {
			return s.UpdateUser(ctx, "a", func(store.User) error { return nil }, store.UserChange{Role: store.RoleUser})
		},
		"CountUsers": func() error { _, err := s.CountUsers(ctx); return err },
		"RotateRefreshToken": func() error {
			_, err := s.RotateRefreshToken(ctx, "x", store.RefreshToken{Hash: "y"}, time.Now())
			return err
		},
		"DeleteExpiredRefreshTokens": func() error { _, err := s.DeleteExpiredRefreshTokens(ctx, time.Now()); return err },
		"History":                    func() error { _, _, err := s.History(ctx, "r:x", store.HistoryQuery{}); return err },
		"LastSeq":                    func() error { _, err := s.LastSeq(ctx, "r:x"); return err },
		"DirectMessagesSince":        func() error { _, _, err := s.DirectMessagesSince(ctx, "a", time.Time{}, 0); return err },
		"Memberships":                func() error { _, err := s.Memberships(ctx, "a"); return err },
		"PutFile":                    func() error { _, err := s.PutFile(ctx, store.File{ID: "f", BlobID: "f", Uploader: "a"}); return err },
		"FileConversations":          func() error { _, err := s.FileConversations(ctx, "f"); return err },
		"DeleteMessagesBefore": func() error {
			_, err := s.DeleteMessagesBefore(ctx, time.Now())
			return err
		},
		"TouchFile":                func() error { _, err := s.TouchFile(ctx, "f", time.Now()); return err },
		"DeleteUnusedFiles":        func() error { _, err := s.DeleteUnusedFiles(ctx, time.Now(), 1); return err },
		"ExistingFiles":            func() error { _, err := s.ExistingFiles(ctx, []string{"f"}); return err },
		"RevokeRefreshTokenFamily": func() error { return s.RevokeRefreshTokenFamily(ctx, "x") },
		"CountMessages":            func() error { _, err := s.CountMessages(ctx); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

// schemaVersions counts db's schema_version rows.
func schemaVersions(t *testing.T, b Backend, db string) int {
	t.Helper()
	var n int
	b.QueryRow(t, db, "SELECT count(*) FROM schema_version", &n)
	return n
}

// ReopenKeepsEverything checks that what one Store wrote a Store opened
// later on the same database reads, and that reopening applies no
// migration again.
func ReopenKeepsEverything(t *testing.T, b Backend) {
	t.Helper()
	ctx := context.Background()
	s, db := b.open(t, Options{})
	mustUser(t, s, "alice")
	s.AddMembership(ctx, "alice", "general")
	s.CreateRefreshToken(ctx, store.RefreshToken{Hash: "t1", Username: "alice", ExpiresAt: time.Now().Add(time.Hour)})
	s.PutFile(ctx, store.File{ID: "f", BlobID: "f", Name: "n", Uploader: "alice"})
	var want []store.Message
	for i := range 10 {
		want = append(want, MustAppend(t, s, store.Message{Conversation: store.RoomKey("general"), Sender: "alice", Text: fmt.Sprint(i)}))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = b.mustOpen(t, db, Options{})
	if u, err := s.GetUser(ctx, "alice"); err != nil || u.Username != "alice" {
		t.Fatalf("user after reopen: %+v, %v", u, err)
	}
	if rooms, _ := s.Memberships(ctx, "alice"); !slices.Equal(rooms, []string{"general"}) {
		t.Fatalf("memberships after reopen: %v", rooms)
	}
	if _, err := s.GetFile(ctx, "f"); err != nil {
		t.Fatalf("file after reopen: %v", err)
	}
	if _, err := s.RotateRefreshToken(ctx, "t1", store.RefreshToken{Hash: "t2"}, time.Now()); err != nil {
		t.Fatalf("token after reopen: %v", err)
	}
	got, _, err := s.History(ctx, store.RoomKey("general"), store.HistoryQuery{})
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("history after reopen:\n%v\nwant\n%v (%v)", got, want, err)
	}
	if m := MustAppend(t, s, store.Message{Conversation: store.RoomKey("general"), Sender: "alice"}); m.Seq != 11 || m.ID <= want[9].ID {
		t.Fatalf("append after reopen: %+v", m)
	}
	if n := schemaVersions(t, b, db); n != b.Migrations {
		t.Fatalf("%d schema_version rows after reopen, want %d", n, b.Migrations)
	}
}

// RefusesNewerSchema checks that a store does not open a database a newer
// binary migrated.
func RefusesNewerSchema(t *testing.T, b Backend) {
	t.Helper()
	s, db := b.open(t, Options{})
	s.Close()
	b.Exec(t, db, "INSERT INTO schema_version (version, applied_at) VALUES (999, 0)")
	if _, err := b.Open(t, db, Options{}); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("opening a database from a newer binary: %v", err)
	}
}
