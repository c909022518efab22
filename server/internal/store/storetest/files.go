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

// mustFile records an upload of the content blobID and returns its id.
func mustFile(t testing.TB, s Files, blobID, uploader string, at time.Time) string {
	t.Helper()
	f, err := s.PutFile(context.Background(), store.File{BlobID: blobID, Name: blobID + ".txt", Size: 1, ContentType: "text/plain", Uploader: uploader, CreatedAt: at})
	if err != nil {
		t.Fatal(err)
	}
	return f.ID
}

func sorted(ids []string) []string {
	slices.Sort(ids)
	return ids
}

// Uploads checks, on an empty store, that every upload is a file of its
// own: uploading content that is already stored gives a new id with the
// new uploader's name and type, never the earlier upload's, and only the
// blob is shared.
func Uploads(t *testing.T, s interface {
	Files
	GetFile(ctx context.Context, id string) (store.File, error)
}) {
	t.Helper()
	ctx := context.Background()
	at := time.Now().Add(-time.Hour).UTC().Truncate(time.Microsecond)
	a, err := s.PutFile(ctx, store.File{BlobID: "blob", Name: "alice.txt", Size: 3, ContentType: "text/plain", Uploader: "alice", CreatedAt: at})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.PutFile(ctx, store.File{BlobID: "blob", Name: "bob.bin", Size: 3, ContentType: "application/x-bob", Uploader: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.ID) != 64 || len(b.ID) != 64 || a.ID == b.ID {
		t.Fatalf("upload ids %q and %q: want two different 64-digit ids", a.ID, b.ID)
	}
	if b.Name != "bob.bin" || b.ContentType != "application/x-bob" || b.Uploader != "bob" || b.BlobID != "blob" {
		t.Fatalf("the second upload came back as %+v: it must keep its own metadata", b)
	}
	for _, want := range []store.File{a, b} {
		got, err := s.GetFile(ctx, want.ID)
		if err != nil || got != want {
			t.Fatalf("GetFile(%s) = %+v, %v; want %+v", want.ID, got, err, want)
		}
	}
	for _, c := range []struct {
		id, user string
		want     bool
	}{{a.ID, "alice", true}, {a.ID, "bob", false}, {b.ID, "bob", true}, {b.ID, "alice", false}} {
		if ok, err := s.IsFileUploader(ctx, c.id, c.user); err != nil || ok != c.want {
			t.Fatalf("IsFileUploader(%s, %s) = %v, %v; want %v", c.id, c.user, ok, err, c.want)
		}
	}
	if _, err := s.PutFile(ctx, store.File{ID: a.ID, BlobID: "other", Name: "x", Uploader: "carol"}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("PutFile with a taken id: %v, want ErrExists", err)
	}
	if _, err := s.PutFile(ctx, store.File{Name: "x", Uploader: "carol"}); err == nil {
		t.Fatal("PutFile accepted a file without a BlobID")
	}
	if got, err := s.ExistingFiles(ctx, []string{"blob", "other"}); err != nil || !slices.Equal(got, []string{"blob"}) {
		t.Fatalf("ExistingFiles = %v, %v; want [blob] once", got, err)
	}
}

// UnusedFiles checks, on an empty store, that uploads no message
// references and last used before the cutoff go, in chunks, oldest first,
// giving their blob ids, and that referenced, young and touched uploads
// stay, as do blobs another upload still names.
func UnusedFiles(t *testing.T, s Files) {
	t.Helper()
	ctx := context.Background()
	now := time.Now()
	old, older, cutoff := now.Add(-48*time.Hour), now.Add(-72*time.Hour), now.Add(-24*time.Hour)

	mustFile(t, s, "unused-old", "alice", old)
	mustFile(t, s, "unused-older", "alice", older)
	mustFile(t, s, "young", "alice", now)
	posted := mustFile(t, s, "posted", "alice", older)
	reupOld := mustFile(t, s, "reuploaded", "alice", older.Add(time.Hour))
	reupYoung := mustFile(t, s, "reuploaded", "bob", now) // the same content again
	touched := mustFile(t, s, "touched", "alice", older)
	if _, dup, err := s.AppendMessage(ctx, store.Message{Conversation: "r:x", Sender: "alice", FileID: posted, SentAt: older}); err != nil || dup {
		t.Fatalf("append = %v, %v", dup, err)
	}
	if f, err := s.TouchFile(ctx, touched, now); err != nil || f.ID != touched || f.BlobID != "touched" || f.Uploader != "alice" {
		t.Fatalf("TouchFile = %+v, %v", f, err)
	}
	if _, err := s.TouchFile(ctx, touched, old); err != nil { // never moves back
		t.Fatal(err)
	}
	if _, err := s.TouchFile(ctx, "nothing", now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("TouchFile of an unknown file: %v, want ErrNotFound", err)
	}

	if _, err := s.DeleteUnusedFiles(ctx, cutoff, 0); err == nil {
		t.Fatal("DeleteUnusedFiles accepted limit 0")
	}
	for _, want := range [][]string{{"unused-older"}, {"reuploaded"}, {"unused-old"}, nil} {
		got, err := s.DeleteUnusedFiles(ctx, cutoff, 1)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("DeleteUnusedFiles = %v, %v; want %v", got, err, want)
		}
	}
	if ok, _ := s.IsFileUploader(ctx, reupOld, "alice"); ok {
		t.Fatal("a deleted file's uploaders were kept")
	}
	if ok, _ := s.IsFileUploader(ctx, reupYoung, "bob"); !ok {
		t.Fatal("deleting one upload of shared content took another")
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
