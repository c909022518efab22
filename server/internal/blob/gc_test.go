package blob_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/server/internal/blob"
)

// refs stands for the message store's file rows: the ids referenced.
type refs struct {
	mu  sync.Mutex
	ids map[string]bool
}

func newRefs(ids ...string) *refs {
	r := &refs{ids: map[string]bool{}}
	for _, id := range ids {
		r.ids[id] = true
	}
	return r
}

func (r *refs) set(id string, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids[id] = on
}

func (r *refs) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ids[id]
}

func (r *refs) inUse(_ context.Context, ids []string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, id := range ids {
		if r.ids[id] {
			out = append(out, id)
		}
	}
	return out, nil
}

func mustPut(t testing.TB, s *blob.Store, content []byte) string {
	t.Helper()
	id, _, err := s.Put(context.Background(), bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func mustStage(t testing.TB, s *blob.Store, content []byte) *blob.Staged {
	t.Helper()
	st, err := s.Stage(context.Background(), bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// checkBlob fails unless blob id is stored with content.
func checkBlob(t testing.TB, s *blob.Store, id string, content []byte) {
	t.Helper()
	got, err := readAll(t, s, id)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("blob %.8s: %d bytes, %v; want its %d bytes", id, len(got), err, len(content))
	}
}

// trashFiles lists the trash files under dir.
func trashFiles(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(path, ".trash") {
			out = append(out, path)
		}
		return nil
	})
	return out
}

func blobPath(dir, id string) string { return filepath.Join(dir, id[:2], id) }

func TestRemove(t *testing.T) {
	t.Parallel()
	for _, sealed := range []bool{false, true} {
		t.Run(fmt.Sprint("sealed=", sealed), func(t *testing.T) {
			t.Parallel()
			cfg := blob.Config{Dir: t.TempDir()}
			if sealed {
				cfg.Sealer = newKeyring(t, "k1", map[string][]byte{"k1": randKey()})
			}
			s := newStore(t, cfg)
			ctx := context.Background()
			a, b := []byte("unused content"), []byte("used content")
			ida, idb := mustPut(t, s, a), mustPut(t, s, b)
			missing := hexSHA([]byte("never stored"))
			n, err := s.Remove(ctx, []string{ida, idb, missing, "../../etc/passwd"}, newRefs(idb).inUse)
			if err != nil || n != 1 {
				t.Fatalf("Remove = %d, %v; want 1", n, err)
			}
			if s.Has(ida) {
				t.Fatal("the unused blob is still there")
			}
			if _, err := s.Open(ctx, ida); !errors.Is(err, blob.ErrNotFound) {
				t.Fatalf("Open of a removed blob: %v", err)
			}
			checkBlob(t, s, idb, b)
			if tr := trashFiles(t, cfg.Dir); len(tr) != 0 {
				t.Fatalf("trash left: %v", tr)
			}
			// Removing again is a no-op.
			if n, err := s.Remove(ctx, []string{ida}, newRefs().inUse); err != nil || n != 0 {
				t.Fatalf("second Remove = %d, %v", n, err)
			}
		})
	}
}

func TestRemoveKeepsAllWhenLookupFails(t *testing.T) {
	t.Parallel()
	s := newStore(t, blob.Config{})
	content := []byte("content")
	id := mustPut(t, s, content)
	failing := func(context.Context, []string) ([]string, error) { return nil, errors.New("database down") }
	if n, err := s.Remove(context.Background(), []string{id}, failing); err == nil || n != 0 {
		t.Fatalf("Remove with a failing lookup = %d, %v", n, err)
	}
	checkBlob(t, s, id, content)
}

// TestUploadRacesRemove runs an upload of the same content (record the
// reference, then Commit) at each point of a Remove, deterministically:
// the upload's blob survives every interleaving.
func TestUploadRacesRemove(t *testing.T) {
	t.Parallel()
	content := []byte("the same content, uploaded again")
	for _, tc := range []struct {
		name string
		// remove runs Remove with upload (record the reference, Commit)
		// placed at one point.
		remove func(s *blob.Store, id string, r *refs, upload func()) (int, error)
	}{
		{"upload before Remove (Commit finds the blob)", func(s *blob.Store, id string, r *refs, upload func()) (int, error) {
			upload()
			return s.Remove(context.Background(), []string{id}, r.inUse)
		}},
		{"upload after the blob is taken, seen by the lookup", func(s *blob.Store, id string, r *refs, upload func()) (int, error) {
			return s.Remove(context.Background(), []string{id}, func(ctx context.Context, ids []string) ([]string, error) {
				upload()
				return r.inUse(ctx, ids)
			})
		}},
		{"upload after the lookup (Commit writes the blob again)", func(s *blob.Store, id string, r *refs, upload func()) (int, error) {
			return s.Remove(context.Background(), []string{id}, func(ctx context.Context, ids []string) ([]string, error) {
				used, err := r.inUse(ctx, ids)
				upload()
				return used, err
			})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, blob.Config{})
			id := mustPut(t, s, content) // stored earlier, its row since deleted
			r := newRefs()
			st := mustStage(t, s, content)
			upload := func() {
				r.set(id, true) // PutFile
				if err := st.Commit(); err != nil {
					t.Error(err)
				}
			}
			if _, err := tc.remove(s, id, r, upload); err != nil {
				t.Fatal(err)
			}
			checkBlob(t, s, id, content)
		})
	}
}

// TestUploadsRaceRemoves runs uploads of one content against two
// collectors (two nodes) that delete its reference and then its blob: at
// the end of every round, a referenced blob is stored.
func TestUploadsRaceRemoves(t *testing.T) {
	t.Parallel()
	s := newStore(t, blob.Config{})
	content := []byte("contended content")
	id := hexSHA(content)
	r := newRefs()
	for round := range 100 {
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for range 2 {
			wg.Go(func() {
				for range 3 {
					r.set(id, false) // DeleteUnusedFiles
					if _, err := s.Remove(context.Background(), []string{id}, r.inUse); err != nil {
						errs <- err
					}
				}
			})
		}
		wg.Go(func() {
			for range 3 {
				st, err := s.Stage(context.Background(), bytes.NewReader(content))
				if err != nil {
					errs <- err
					return
				}
				r.set(id, true) // PutFile
				if err := st.Commit(); err != nil {
					errs <- err
				}
			}
		})
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if r.has(id) {
			checkBlob(t, s, id, content)
		}
		if round%10 == 0 {
			r.set(id, true) // start some rounds with the reference present
		}
	}
}

func TestRemoveUnused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	s := newStore(t, blob.Config{Dir: dir})
	now := time.Now()
	before := now.Add(-time.Hour)
	old := now.Add(-2 * time.Hour)
	put := func(content string, modified time.Time) string {
		id := mustPut(t, s, []byte(content))
		if err := os.Chtimes(blobPath(dir, id), modified, modified); err != nil {
			t.Fatal(err)
		}
		return id
	}
	orphanOld := put("orphan, old", old)
	orphanYoung := put("orphan, young", now) // an upload between Commit and its row, say
	usedOld := put("used, old", old)
	// A crash in the middle of a Remove left two trash files.
	trashUsed, trashUnused := put("trash, used", old), put("trash, unused", old)
	for _, id := range []string{trashUsed, trashUnused} {
		if err := os.Rename(blobPath(dir, id), blobPath(dir, id)+".trash"); err != nil {
			t.Fatal(err)
		}
	}
	r := newRefs(usedOld, trashUsed)

	next, n, err := s.RemoveUnused(ctx, before, r.inUse, "", 0)
	if err != nil || n != 2 || next != "" {
		t.Fatalf("RemoveUnused = %q, %d, %v; want \"\", 2", next, n, err)
	}
	for id, want := range map[string]bool{orphanOld: false, orphanYoung: true, usedOld: true, trashUsed: true, trashUnused: false} {
		if s.Has(id) != want {
			t.Errorf("blob %q stored: %v, want %v", id[:8], !want, want)
		}
	}
	checkBlob(t, s, trashUsed, []byte("trash, used"))
	if tr := trashFiles(t, dir); len(tr) != 0 {
		t.Fatalf("trash left: %v", tr)
	}
}

// TestRemoveUnusedResumes: with a limit, each call examines a few
// subdirectories and says where to go on; a cycle of calls covers them all.
func TestRemoveUnusedResumes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	s := newStore(t, blob.Config{Dir: dir})
	old := time.Now().Add(-2 * time.Hour)
	subdirs := map[string]bool{}
	var ids []string
	for i := 0; len(subdirs) < 4; i++ {
		id := mustPut(t, s, fmt.Appendf(nil, "orphan %d", i))
		os.Chtimes(blobPath(dir, id), old, old)
		subdirs[id[:2]] = true
		ids = append(ids, id)
	}
	calls, removed, from := 0, 0, ""
	for {
		next, n, err := s.RemoveUnused(ctx, time.Now().Add(-time.Hour), newRefs().inUse, from, 1)
		if err != nil {
			t.Fatal(err)
		}
		calls++
		removed += n
		if next == "" {
			break
		}
		if next <= from {
			t.Fatalf("next %q does not move on from %q", next, from)
		}
		from = next
	}
	if calls != len(subdirs) || removed != len(ids) {
		t.Fatalf("%d calls removed %d blobs; want %d calls (one per subdirectory) removing %d", calls, removed, len(subdirs), len(ids))
	}
}
