package sqlite

import (
	"context"
	"database/sql"
	"net/url"
	"path/filepath"
	"testing"

	"github.com/parleychat/parley/server/internal/store/storetest"
)

// TestStore runs the store suite (every behaviour the stores share)
// against SQLite files in the test's temporary directory.
func TestStore(t *testing.T) {
	t.Parallel()
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	storetest.Run(t, storetest.Backend{
		NewDB: func(t *testing.T) string { return filepath.Join(t.TempDir(), "parley.db") },
		NewDBAt: func(t *testing.T, version int) string {
			path := filepath.Join(t.TempDir(), "parley.db")
			openVersion(t, path, version).Close()
			return path
		},
		Open: func(t *testing.T, path string, o storetest.Options) (storetest.Store, error) {
			cfg := Config{Path: path, Sealer: o.Sealer, MaxBatch: o.MaxBatch}
			if o.NoCommitDelay {
				cfg.CommitDelay = -1
			}
			s, err := Open(context.Background(), cfg)
			if err != nil {
				return nil, err
			}
			t.Cleanup(func() { s.Close() })
			return s, nil
		},
		Exec: func(t *testing.T, path, q string) {
			t.Helper()
			db := rawDB(t, path)
			defer db.Close()
			if _, err := db.Exec(q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		},
		QueryRow: func(t *testing.T, path, q string, dest ...any) {
			t.Helper()
			db := rawDB(t, path)
			defer db.Close()
			if err := db.QueryRow(q).Scan(dest...); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		},
		Stall: func(t *testing.T, s storetest.Store, _, _ string) func() {
			return stallWriter(t, s.(*Store))
		},
		Queue: func(s storetest.Store) storetest.Queue {
			st := s.(*Store)
			return storetest.Queue{Taken: st.q.Taken(), Queued: st.q.Queued(), Batches: st.batches.Load(), Closing: st.closed.Load()}
		},
		SetDeleteChunk:   func(s storetest.Store, n int) { s.(*Store).deleteChunk = n },
		Migrations:       len(ms),
		MaxExistingFiles: maxExistingFiles,
		MaxDirectLimit:   MaxDirectLimit,
		Nodes:            1,
	})
}

// rawDB opens the file at path outside any Store, as another process
// (or the sqlite3 shell) would.
func rawDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", dsn(path, url.Values{"_pragma": {"busy_timeout(5000)", "foreign_keys(1)"}}))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// openVersion creates a database at path migrated only up to version, as
// an older binary would have left it, and returns a connection to it.
func openVersion(t testing.TB, path string, version int) *sql.DB {
	t.Helper()
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", dsn(path, url.Values{
		"_pragma": {"journal_mode(WAL)", "foreign_keys(1)"},
		"_txlock": {"immediate"},
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if v, _, err := applyMigrations(context.Background(), db, ms[:version]); err != nil || v != version {
		t.Fatalf("migrate to %d: %d, %v", version, v, err)
	}
	return db
}
