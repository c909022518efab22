package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/parleychat/parley/server/internal/store"
)

// Files is what the file checks use of a store.
type Files interface {
	PutFile(ctx context.Context, f store.File) (store.File, error)
	TouchFile(ctx context.Context, id string, t time.Time) (store.File, error)
	DeleteUnusedFiles(ctx context.Context, before time.Time, limit int) ([]string, error)
	ExistingFiles(ctx context.Context, ids []string) ([]string, error)
	IsFileUploader(ctx context.Context, id, username string) (bool, error)
	AppendMessage(ctx context.Context, m store.Message) (store.Message, bool, error)
	DeleteMessagesBefore(ctx context.Context, t time.Time) (int64, error)
}

func mustFile(t testing.TB, s Files, id, uploader string, at time.Time) {
	t.Helper()
	if _, err := s.PutFile(context.Background(), store.File{ID: id, Name: id, Size: 1, ContentType: "t", Uploader: uploader, CreatedAt: at}); err != nil {
		t.Fatal(err)
	}
}

func sorted(ids []string) []string {
	slices.Sort(ids)
	return ids
}

// UnusedFiles checks, on an empty store, that files no message references
// and last used before the cutoff go, in chunks, oldest first, and that
// referenced, re-uploaded and touched files stay.
func UnusedFiles(t *testing.T, s Files) {
	t.Helper()
	ctx := context.Background()
	now := time.Now()
	old, older, cutoff := now.Add(-48*time.Hour), now.Add(-72*time.Hour), now.Add(-24*time.Hour)

	mustFile(t, s, "unused-old", "alice", old)
	mustFile(t, s, "unused-older", "alice", older)
	mustFile(t, s, "young", "alice", now)
	mustFile(t, s, "posted", "alice", older)
	mustFile(t, s, "reuploaded", "alice", older)
	mustFile(t, s, "reuploaded", "bob", now) // the same content again: young
	mustFile(t, s, "touched", "alice", older)
	if _, dup, err := s.AppendMessage(ctx, store.Message{Conversation: "r:x", Sender: "alice", FileID: "posted", SentAt: older}); err != nil || dup {
		t.Fatalf("append = %v, %v", dup, err)
	}
	if f, err := s.TouchFile(ctx, "touched", now); err != nil || f.ID != "touched" || f.Uploader != "alice" {
		t.Fatalf("TouchFile = %+v, %v", f, err)
	}
	if _, err := s.TouchFile(ctx, "touched", old); err != nil { // never moves back
		t.Fatal(err)
	}
	if _, err := s.TouchFile(ctx, "nothing", now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("TouchFile of an unknown file: %v, want ErrNotFound", err)
	}

	if _, err := s.DeleteUnusedFiles(ctx, cutoff, 0); err == nil {
		t.Fatal("DeleteUnusedFiles accepted limit 0")
	}
	for _, want := range [][]string{{"unused-older"}, {"unused-old"}, nil} {
		got, err := s.DeleteUnusedFiles(ctx, cutoff, 1)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("DeleteUnusedFiles = %v, %v; want %v", got, err, want)
		}
	}
	if ok, _ := s.IsFileUploader(ctx, "unused-old", "alice"); ok {
		t.Fatal("a deleted file's uploaders were kept")
	}
	all := []string{"unused-old", "unused-older", "young", "posted", "reuploaded", "touched", "nothing"}
	if got, err := s.ExistingFiles(ctx, all); err != nil || !slices.Equal(sorted(got), []string{"posted", "reuploaded", "touched", "young"}) {
		t.Fatalf("ExistingFiles = %v, %v", got, err)
	}

	// Retention takes the message: the file it carried goes next.
	if _, err := s.DeleteMessagesBefore(ctx, cutoff); err != nil {
		t.Fatal(err)
	}
	if got, err := s.DeleteUnusedFiles(ctx, cutoff, 10); err != nil || !slices.Equal(got, []string{"posted"}) {
		t.Fatalf("after retention: DeleteUnusedFiles = %v, %v; want [posted]", got, err)
	}
	// Later, everything unreferenced is old.
	if got, err := s.DeleteUnusedFiles(ctx, now.Add(time.Second), 10); err != nil || !slices.Equal(sorted(got), []string{"reuploaded", "touched", "young"}) {
		t.Fatalf("DeleteUnusedFiles later = %v, %v", got, err)
	}
}

// ExistingFilesChunks checks ExistingFiles over more ids than the store
// asks about at once (chunk).
func ExistingFilesChunks(t *testing.T, s Files, chunk int) {
	t.Helper()
	var ids, want []string
	for i := range 2*chunk + 10 {
		id := fmt.Sprintf("f%04d", i)
		ids = append(ids, id)
		if i%3 == 0 {
			mustFile(t, s, id, "alice", time.Now())
			want = append(want, id)
		}
	}
	got, err := s.ExistingFiles(context.Background(), ids)
	if err != nil || !slices.Equal(sorted(got), want) {
		t.Fatalf("ExistingFiles found %d of %d, %v", len(got), len(want), err)
	}
}
