package filegc_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/parleychat/parley/server/internal/blob"
	"github.com/parleychat/parley/server/internal/filegc"
	"github.com/parleychat/parley/server/internal/sealer"
	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/store/postgres"
	"github.com/parleychat/parley/server/internal/store/sqlite"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// messageStore is what these tests use of a real store.
type messageStore interface {
	filegc.Store
	PutFile(ctx context.Context, f store.File) (store.File, error)
	GetFile(ctx context.Context, id string) (store.File, error)
	TouchFile(ctx context.Context, id string, t time.Time) (store.File, error)
	AppendMessage(ctx context.Context, m store.Message) (store.Message, bool, error)
	DeleteMessagesBefore(ctx context.Context, t time.Time) (int64, error)
}

func postgresURL() string {
	if u := os.Getenv("PARLEY_TEST_POSTGRES_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// stores opens each real store: SQLite in a temporary file, PostgreSQL in
// a schema of its own, dropped when the test ends.
var stores = map[string]func(t *testing.T) messageStore{
	"sqlite": func(t *testing.T) messageStore {
		s, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "parley.db")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	},
	"postgres": func(t *testing.T) messageStore {
		ctx := context.Background()
		b := make([]byte, 8)
		rand.Read(b)
		schema := "parley_test_" + hex.EncodeToString(b)
		t.Cleanup(func() {
			conn, err := pgx.Connect(ctx, postgresURL())
			if err != nil {
				t.Errorf("drop schema: %v", err)
				return
			}
			defer conn.Close(ctx)
			conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
		})
		s, err := postgres.Open(ctx, postgres.Config{URL: postgresURL(), Schema: schema, MaxConns: 4})
		if err != nil {
			t.Fatalf("PostgreSQL (set PARLEY_TEST_POSTGRES_URL): %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	},
}

// forEachStore runs test on each store with a sealed blob store in a
// temporary directory.
func forEachStore(t *testing.T, test func(t *testing.T, st messageStore, blobs *blob.Store, dir string)) {
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			key := make([]byte, 32)
			rand.Read(key)
			keys, err := sealer.New(sealer.Config{Keys: map[string][]byte{"k1": key}, Active: "k1"})
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			blobs, err := blob.New(blob.Config{Dir: dir, Sealer: keys})
			if err != nil {
				t.Fatal(err)
			}
			test(t, open(t), blobs, dir)
		})
	}
}

// upload stores content as chatsvc does: stage, record the row, commit.
func upload(t testing.TB, st messageStore, blobs *blob.Store, content, uploader string, at time.Time) store.File {
	t.Helper()
	ctx := context.Background()
	staged, err := blobs.Stage(ctx, bytes.NewReader([]byte(content)))
	if err != nil {
		t.Fatal(err)
	}
	f, err := st.PutFile(ctx, store.File{BlobID: staged.ID(), Name: content, Size: staged.Size(), ContentType: "text/plain", Uploader: uploader, CreatedAt: at})
	if err != nil {
		staged.Discard()
		t.Fatal(err)
	}
	if err := staged.Commit(); err != nil {
		t.Fatal(err)
	}
	return f
}

func post(t testing.TB, st messageStore, f store.File, at time.Time) {
	t.Helper()
	if _, _, err := st.AppendMessage(context.Background(), store.Message{Conversation: store.RoomKey("general"), Sender: "alice", FileID: f.ID, SentAt: at}); err != nil {
		t.Fatal(err)
	}
}

// checkKept fails unless upload f has its row (when f.ID is set) and its
// blob, which reads back as content (a download).
func checkKept(t testing.TB, st messageStore, blobs *blob.Store, f store.File, content string) {
	t.Helper()
	if f.ID != "" {
		if _, err := st.GetFile(context.Background(), f.ID); err != nil {
			t.Fatalf("file %q: %v", content, err)
		}
	}
	r, err := blobs.Open(context.Background(), f.BlobID)
	if err != nil {
		t.Fatalf("blob of %q: %v", content, err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil || string(got) != content {
		t.Fatalf("blob of %q reads %q, %v", content, got, err)
	}
}

// checkGone fails unless upload f has lost its row and (when f.BlobID is
// set) its blob.
func checkGone(t testing.TB, st messageStore, blobs *blob.Store, f store.File, content string) {
	t.Helper()
	if _, err := st.GetFile(context.Background(), f.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("file %q: %v, want ErrNotFound", content, err)
	}
	if blobs.Has(f.BlobID) {
		t.Fatalf("blob of %q is still stored", content)
	}
}

func newCollector(t testing.TB, cfg filegc.Config) *filegc.Collector {
	t.Helper()
	c, err := filegc.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSweep: after retention, files no message references and last used
// before the grace period go, rows and blobs; referenced files, young
// uploads, shared content and files being posted stay and still download.
// Orphan blobs go once old.
func TestSweep(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, st messageStore, blobs *blob.Store, dir string) {
		ctx := context.Background()
		now := time.Now()
		old, older := now.Add(-48*time.Hour), now.Add(-72*time.Hour)
		c := newCollector(t, filegc.Config{Store: st, Blobs: blobs, Grace: 24 * time.Hour, Chunk: 1})

		posted := upload(t, st, blobs, "posted, message kept", "alice", old)
		post(t, st, posted, now)
		unposted := upload(t, st, blobs, "never posted", "alice", old)
		expired := upload(t, st, blobs, "posted, message expired", "alice", old)
		post(t, st, expired, older)
		shared := upload(t, st, blobs, "shared", "alice", old)
		sharedAgain := upload(t, st, blobs, "shared", "bob", now) // the same content, uploaded again
		young := upload(t, st, blobs, "young upload", "alice", now)
		twice := upload(t, st, blobs, "posted twice", "alice", old)
		post(t, st, twice, older)
		post(t, st, twice, now)
		posting := upload(t, st, blobs, "being posted", "alice", old)
		if _, err := st.TouchFile(ctx, posting.ID, now); err != nil { // SendFile, before its append
			t.Fatal(err)
		}
		orphanOld, _, err := blobs.Put(ctx, bytes.NewReader([]byte("orphan, old")))
		if err != nil {
			t.Fatal(err)
		}
		os.Chtimes(filepath.Join(dir, orphanOld[:2], orphanOld), old, old)
		orphanYoung, _, err := blobs.Put(ctx, bytes.NewReader([]byte("orphan, young")))
		if err != nil {
			t.Fatal(err)
		}

		if n, err := st.DeleteMessagesBefore(ctx, now.Add(-24*time.Hour)); err != nil || n != 2 {
			t.Fatalf("retention deleted %d messages, %v; want 2", n, err)
		}
		res, err := c.Sweep(ctx, now)
		if err != nil || res != (filegc.Result{Files: 3, Blobs: 2, Orphans: 1}) {
			t.Fatalf("Sweep = %+v, %v; want 3 files, 2 blobs, 1 orphan", res, err)
		}
		checkGone(t, st, blobs, unposted, "never posted")
		checkGone(t, st, blobs, expired, "posted, message expired")
		checkKept(t, st, blobs, posted, "posted, message kept")
		// Alice's old upload of shared content goes like any unposted
		// upload; bob's young one keeps the blob they share.
		if _, err := st.GetFile(ctx, shared.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("alice's old upload of shared content: %v, want ErrNotFound", err)
		}
		checkKept(t, st, blobs, sharedAgain, "shared")
		checkKept(t, st, blobs, young, "young upload")
		checkKept(t, st, blobs, twice, "posted twice")
		checkKept(t, st, blobs, posting, "being posted")
		if blobs.Has(orphanOld) || !blobs.Has(orphanYoung) {
			t.Fatalf("orphans: old stored %v (want false), young stored %v (want true)", blobs.Has(orphanOld), blobs.Has(orphanYoung))
		}
		if res, err := c.Sweep(ctx, now); err != nil || res != (filegc.Result{}) {
			t.Fatalf("second Sweep = %+v, %v; want nothing", res, err)
		}

		// A day later every unreferenced file is old; referenced ones stay.
		res, err = c.Sweep(ctx, now.Add(25*time.Hour))
		if err != nil || res.Files != 3 || res.Blobs != 3 {
			t.Fatalf("Sweep a day later = %+v, %v; want 3 files and blobs (shared, young, being posted)", res, err)
		}
		checkKept(t, st, blobs, posted, "posted, message kept")
		checkKept(t, st, blobs, twice, "posted twice")
		checkGone(t, st, blobs, sharedAgain, "shared")
		// A post of a file the collector deleted fails instead of
		// referencing it.
		if _, err := st.TouchFile(ctx, young.ID, now); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("touching a deleted file: %v, want ErrNotFound", err)
		}
	})
}

// hooked runs a function at one point of a sweep's use of the store.
type hooked struct {
	filegc.Store
	once                                   sync.Once
	afterDelete, beforeLookup, afterLookup func()
}

func (h *hooked) DeleteUnusedFiles(ctx context.Context, before time.Time, limit int) ([]string, error) {
	ids, err := h.Store.DeleteUnusedFiles(ctx, before, limit)
	if len(ids) > 0 && h.afterDelete != nil {
		h.once.Do(h.afterDelete)
	}
	return ids, err
}

func (h *hooked) ExistingFiles(ctx context.Context, ids []string) ([]string, error) {
	if h.beforeLookup != nil {
		h.once.Do(h.beforeLookup)
	}
	found, err := h.Store.ExistingFiles(ctx, ids)
	if h.afterLookup != nil {
		h.once.Do(h.afterLookup)
	}
	return found, err
}

// TestSweepRacesUpload uploads the content of a file being collected at
// each point of the sweep, deterministically: the new upload keeps its
// row and its blob every time.
func TestSweepRacesUpload(t *testing.T) {
	t.Parallel()
	for _, point := range []string{"after the rows are deleted", "after the blob is taken", "after the lookup"} {
		t.Run(point, func(t *testing.T) {
			t.Parallel()
			forEachStore(t, func(t *testing.T, st messageStore, blobs *blob.Store, _ string) {
				now := time.Now()
				const content = "uploaded again"
				first := upload(t, st, blobs, content, "alice", now.Add(-48*time.Hour))
				h := &hooked{Store: st}
				var second store.File
				again := func() { second = upload(t, st, blobs, content, "bob", now) }
				switch point {
				case "after the rows are deleted":
					h.afterDelete = again // its Commit finds the blob
				case "after the blob is taken":
					h.beforeLookup = again // the lookup finds its row
				case "after the lookup":
					h.afterLookup = again // its Commit writes the blob again
				}
				c := newCollector(t, filegc.Config{Store: h, Blobs: blobs, Grace: 24 * time.Hour})
				res, err := c.Sweep(context.Background(), now)
				if err != nil || res.Files != 1 {
					t.Fatalf("Sweep = %+v, %v; want the old row deleted", res, err)
				}
				checkGone(t, st, blobs, store.File{ID: first.ID}, content) // its row; the blob is second's
				checkKept(t, st, blobs, second, content)
			})
		})
	}
}

// TestSweepUploadStress races uploads of one content against sweeps that
// find every row old (a grace of 1ns): whenever the row exists at the end
// of a round, so does its blob.
func TestSweepUploadStress(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, st messageStore, blobs *blob.Store, _ string) {
		ctx := context.Background()
		c := newCollector(t, filegc.Config{Store: st, Blobs: blobs, Grace: time.Nanosecond})
		const content = "contended"
		for range 30 {
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			wg.Go(func() {
				for range 3 {
					if _, err := c.Sweep(ctx, time.Now()); err != nil {
						errs <- err
					}
				}
			})
			wg.Go(func() {
				for range 3 {
					staged, err := blobs.Stage(ctx, bytes.NewReader([]byte(content)))
					if err == nil {
						_, err = st.PutFile(ctx, store.File{BlobID: staged.ID(), Name: "c", Uploader: "alice"})
						if err == nil {
							err = staged.Commit()
						} else {
							staged.Discard()
						}
					}
					if err != nil {
						errs <- err
					}
				}
			})
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			staged, err := blobs.Stage(ctx, bytes.NewReader([]byte(content)))
			if err != nil {
				t.Fatal(err)
			}
			staged.Discard()
			if used, err := st.ExistingFiles(ctx, []string{staged.ID()}); err != nil {
				t.Fatal(err)
			} else if len(used) > 0 {
				checkKept(t, st, blobs, store.File{BlobID: staged.ID()}, content)
			}
		}
	})
}
