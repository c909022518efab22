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

// FileMetadata checks storing and reading an upload's metadata, who
// uploaded it, and where it was shared, on an empty store.
func FileMetadata(t *testing.T, s Store) {
	t.Helper()
	ctx := context.Background()
	created := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	f := store.File{ID: strings.Repeat("ab", 32), BlobID: strings.Repeat("cd", 32), Name: "cat.png", Size: 1234, ContentType: "image/png", Uploader: "alice", CreatedAt: created}
	got, err := s.PutFile(ctx, f)
	if err != nil || got != f {
		t.Fatalf("PutFile = %+v, %v", got, err)
	}
	// Same content uploaded again by someone else under another name: an
	// upload of its own, over the same blob (Uploads has more).
	again, err := s.PutFile(ctx, store.File{BlobID: f.BlobID, Name: "other.png", Size: 1234, ContentType: "image/webp", Uploader: "bob"})
	if err != nil || again.ID == f.ID || again.Name != "other.png" || again.ContentType != "image/webp" || again.Uploader != "bob" {
		t.Fatalf("second PutFile = %+v, %v; want a new upload with its own metadata", again, err)
	}
	if got, err := s.GetFile(ctx, f.ID); err != nil || got != f {
		t.Fatalf("GetFile = %+v, %v", got, err)
	}
	if _, err := s.GetFile(ctx, "missing"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetFile(missing) = %v", err)
	}
	for _, tt := range []struct {
		user string
		want bool
	}{{"alice", true}, {"bob", false}, {"carol", false}} {
		if ok, err := s.IsFileUploader(ctx, f.ID, tt.user); err != nil || ok != tt.want {
			t.Errorf("IsFileUploader(%s) = %v, %v", tt.user, ok, err)
		}
	}
	if _, err := s.PutFile(ctx, store.File{ID: "x", BlobID: "x"}); err == nil {
		t.Fatal("PutFile without uploader succeeded")
	}

	share := func(conv string) {
		MustAppend(t, s, store.Message{Conversation: conv, Sender: "alice", FileID: f.ID, FileName: f.Name})
	}
	share(store.RoomKey("b"))
	share(store.RoomKey("a"))
	share(store.RoomKey("b"))
	share(store.DirectKey("alice", "bob"))
	MustAppend(t, s, store.Message{Conversation: store.RoomKey("c"), Sender: "alice", Text: "no file"})
	convs, err := s.FileConversations(ctx, f.ID)
	want := []string{store.DirectKey("alice", "bob"), store.RoomKey("a"), store.RoomKey("b")}
	if err != nil || !slices.Equal(convs, want) {
		t.Fatalf("FileConversations = %v, %v; want %v", convs, err, want)
	}
	if convs, err := s.FileConversations(ctx, "missing"); err != nil || len(convs) != 0 {
		t.Fatalf("FileConversations(missing) = %v, %v", convs, err)
	}
}

// UpgradeFiles opens a database written before file garbage collection
// and per-upload files (schema version 2): a file counts as used at its
// last upload, and its id names its blob.
func UpgradeFiles(t *testing.T, b Backend) {
	t.Helper()
	ctx := context.Background()
	now := time.Now()
	old, cutoff := now.Add(-48*time.Hour), now.Add(-24*time.Hour)
	db := b.NewDBAt(t, 2)
	for _, q := range []string{
		fmt.Sprintf(`INSERT INTO files VALUES ('old', 'n', 1, 't', 'alice', %d)`, old.UnixNano()),
		fmt.Sprintf(`INSERT INTO file_uploaders VALUES ('old', 'alice', %d)`, old.UnixNano()),
		fmt.Sprintf(`INSERT INTO files VALUES ('shared', 'n', 1, 't', 'alice', %d)`, old.UnixNano()),
		fmt.Sprintf(`INSERT INTO file_uploaders VALUES ('shared', 'alice', %d)`, old.UnixNano()),
		fmt.Sprintf(`INSERT INTO file_uploaders VALUES ('shared', 'bob', %d)`, now.UnixNano()),
	} {
		b.Exec(t, db, q)
	}
	s := b.mustOpen(t, db, Options{})
	if got, err := s.DeleteUnusedFiles(ctx, cutoff, 10); err != nil || !slices.Equal(got, []string{"old"}) {
		t.Fatalf("DeleteUnusedFiles after the upgrade = %v, %v; want [old]", got, err)
	}
	if f, err := s.GetFile(ctx, "shared"); err != nil || f.Uploader != "alice" || f.BlobID != "shared" || !f.CreatedAt.Equal(old.UTC().Truncate(0)) {
		t.Fatalf("shared after the upgrade = %+v, %v", f, err)
	}
}
