package sqlite

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/store/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func openAt(t testing.TB, path string, cfg Config) *Store {
	t.Helper()
	cfg.Path = path
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	return openAt(t, filepath.Join(t.TempDir(), "parley.db"), cfg)
}

// queued counts requests waiting in the append queue (not yet taken).
func (s *Store) queued() int { return s.q.Queued() }

// stallWriter holds the only writer connection, so the writer goroutine
// blocks in BeginTx after taking its next batch. It returns the release.
func stallWriter(t testing.TB, s *Store) func() {
	t.Helper()
	conn, err := s.w.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release := func() { once.Do(func() { conn.Close() }) }
	t.Cleanup(release)
	return release
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, cfg := range []Config{{}, {Path: ":memory:"}, {Path: "file:x.db"}, {Path: "x.db", MaxBatch: -1}} {
		if _, err := Open(context.Background(), cfg); err == nil {
			t.Errorf("Open(%+v) succeeded", cfg)
		}
	}
}

// TestCommitDelay: appends that queued up while a commit ran wait for the
// commit delay, and appends arriving meanwhile join their commit.
func TestCommitDelay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t, Config{CommitDelay: 2 * time.Second})
	room := store.RoomKey("r")
	release := stallWriter(t, s)
	taken := s.q.Taken()
	plug := storetest.AppendAsync(ctx, s, store.Message{Conversation: room, Sender: "carol"})
	storetest.WaitFor(t, "the plug's commit to start", func() bool { return s.q.Taken() == taken+1 && s.inCommit.Load() })
	var results []<-chan storetest.AppendOutcome
	// One append queued while the plug commits: a second caller.
	results = append(results, storetest.AppendAsync(ctx, s, store.Message{Conversation: room, Sender: "alice", ClientMsgID: "early"}))
	storetest.WaitFor(t, "an append to queue behind the plug", func() bool { return s.queued() == 1 })
	release()
	if r := <-plug; r.Err != nil {
		t.Fatal(r.Err)
	}
	batches := s.batches.Load()
	// The writer now holds it for the delay; these join it.
	for i := range 3 {
		results = append(results, storetest.AppendAsync(ctx, s, store.Message{Conversation: room, Sender: "alice", ClientMsgID: fmt.Sprint("late", i)}))
	}
	seqs := map[int64]bool{}
	for _, r := range results {
		res := <-r
		if res.Err != nil || res.Dup {
			t.Fatalf("append: %+v", res)
		}
		seqs[res.Msg.Seq] = true
	}
	if len(seqs) != 4 {
		t.Fatalf("%d distinct seqs, want 4", len(seqs))
	}
	if got := s.batches.Load() - batches; got != 1 {
		t.Fatalf("4 appends in %d commits, want 1", got)
	}
}

// TestCommitDelayNotForALoneSender: a sender that waits for each append
// has at most one queued at a time and is never held, however long the
// delay.
func TestCommitDelayNotForALoneSender(t *testing.T) {
	t.Parallel()
	s := newStore(t, Config{CommitDelay: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 20 {
		if _, _, err := s.AppendMessage(ctx, store.Message{Conversation: store.RoomKey("r"), Sender: "alice", ClientMsgID: fmt.Sprint(i)}); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
}

func TestFilePermissions(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "new", "dir", "parley.db")
	s := openAt(t, path, Config{})
	storetest.MustAppend(t, s, store.Message{Conversation: "r:x", Sender: "a"})
	for _, p := range []string{path, path + "-wal"} {
		info, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if perm := info.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s has mode %v, want no group or other access", filepath.Base(p), perm)
		}
	}
}

// TestQueryPlans checks that every lookup the store makes is served by an
// index, not a table scan.
func TestQueryPlans(t *testing.T) {
	t.Parallel()
	s := newStore(t, Config{})
	queries := map[string][]any{
		qDedup:           {"a", "c"},
		qHistoryBackward: {"r:x", 10, 5},
		qHistoryForward:  {"r:x", 1, 10, 5},
		qLastSeq:         {"r:x"},
		qDirectSince:     {"a", 0, 10},
		qDeleteBefore:    {0, 10},
		`SELECT room FROM memberships WHERE username = ? ORDER BY room`:                                    {"a"},
		`SELECT DISTINCT conversation FROM messages WHERE file_id = ? ORDER BY conversation`:               {"f"},
		`SELECT EXISTS (SELECT 1 FROM file_uploaders WHERE file_id = ? AND username = ?)`:                  {"f", "a"},
		`SELECT ` + fileCols + ` FROM files WHERE id = ?`:                                                  {"f"},
		`UPDATE refresh_tokens SET revoked_at = ?1 WHERE hash = ?2 AND revoked_at = 0 AND expires_at > ?1`: {0, "h"},
		`DELETE FROM refresh_tokens WHERE expires_at <= ?`:                                                 {0},
		qTouchFile:         {0, "f"},
		qDeleteUnusedFiles: {0, 10},
		qExistingFiles(3):  {"a", "b", "c"},
		`UPDATE refresh_tokens SET revoked_at = ?, revoke_reason = ? WHERE family = ? AND revoked_at = 0`: {0, "r", "f"},
		`SELECT username, family, revoke_reason, expires_at FROM refresh_tokens WHERE hash = ?`:           {"h"},
	}
	for q, args := range queries {
		rows, err := s.r.Query("EXPLAIN QUERY PLAN "+q, args...)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			rows.Scan(&id, &parent, &notused, &detail)
			plan = append(plan, detail)
		}
		rows.Close()
		for _, step := range plan {
			if (strings.HasPrefix(step, "SCAN ") && step != "SCAN CONSTANT ROW") || strings.Contains(step, "USE TEMP B-TREE") {
				t.Errorf("query\n%s\nplan %q: step %q is a scan or sort", q, plan, step)
			}
		}
	}
}
