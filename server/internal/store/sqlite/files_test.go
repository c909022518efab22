package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/parleychat/parley/server/internal/store/storetest"
)

func TestDeleteUnusedFiles(t *testing.T) {
	t.Parallel()
	s := newStore(t, Config{})
	storetest.UnusedFiles(t, s)
}

func TestUploads(t *testing.T) {
	t.Parallel()
	s := newStore(t, Config{})
	storetest.Uploads(t, s)
}

func TestExistingFilesChunks(t *testing.T) {
	t.Parallel()
	s := newStore(t, Config{})
	storetest.ExistingFilesChunks(t, s, maxExistingFiles)
}

// TestUpgradeFiles opens a database written before file garbage
// collection and per-upload files: a file counts as used at its last
// upload, and its id names its blob.
func TestUpgradeFiles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "parley.db")
	now := time.Now()
	old, cutoff := now.Add(-48*time.Hour), now.Add(-24*time.Hour)
	db := openVersion(t, path, 2)
	for _, q := range []string{
		fmt.Sprintf(`INSERT INTO files VALUES ('old', 'n', 1, 't', 'alice', %d)`, old.UnixNano()),
		fmt.Sprintf(`INSERT INTO file_uploaders VALUES ('old', 'alice', %d)`, old.UnixNano()),
		fmt.Sprintf(`INSERT INTO files VALUES ('shared', 'n', 1, 't', 'alice', %d)`, old.UnixNano()),
		fmt.Sprintf(`INSERT INTO file_uploaders VALUES ('shared', 'alice', %d)`, old.UnixNano()),
		fmt.Sprintf(`INSERT INTO file_uploaders VALUES ('shared', 'bob', %d)`, now.UnixNano()),
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()
	s := openAt(t, path, Config{})
	if got, err := s.DeleteUnusedFiles(ctx, cutoff, 10); err != nil || !slices.Equal(got, []string{"old"}) {
		t.Fatalf("DeleteUnusedFiles after the upgrade = %v, %v; want [old]", got, err)
	}
	if f, err := s.GetFile(ctx, "shared"); err != nil || f.Uploader != "alice" || f.BlobID != "shared" || !f.CreatedAt.Equal(old.UTC().Truncate(0)) {
		t.Fatalf("shared after the upgrade = %+v, %v", f, err)
	}
}
