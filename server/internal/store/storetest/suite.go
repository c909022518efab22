// Package storetest is the one test suite of Parley's stores: every
// behaviour the sqlite and postgres stores share, written once and run by
// each store's tests against its own database through a Backend. What
// only one store has (SQLite's WAL and sync modes and commit delay, file
// checks; PostgreSQL's multi-node safety, schemas and query plans) stays
// in that store's package.
//
// Concurrency: Run starts every check as a parallel subtest, each on a
// database of its own, so a Backend's functions must be safe for
// concurrent use.
package storetest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/server/internal/sealer"
	"github.com/parleychat/parley/server/internal/store"
)

// Store is what the suite uses of a store: every method the sqlite and
// postgres stores share.
type Store interface {
	Refresh
	Files
	Conversations
	GetUser(ctx context.Context, username string) (store.User, error)
	SetUserActive(ctx context.Context, username string, active bool) error
	SetUserRole(ctx context.Context, username, role string) error
	UpdateUser(ctx context.Context, username string, check store.UserCheck, change store.UserChange) error
	TouchLastSeen(ctx context.Context, username string, t time.Time) error
	CountUsers(ctx context.Context) (int64, error)
	History(ctx context.Context, conversation string, q store.HistoryQuery) ([]store.Message, bool, error)
	LastSeq(ctx context.Context, conversation string) (int64, error)
	DirectMessagesSince(ctx context.Context, username string, since time.Time, limit int) ([]store.Message, bool, error)
	CountMessages(ctx context.Context) (int64, error)
	RemoveMembership(ctx context.Context, username, room string) error
	Memberships(ctx context.Context, username string) ([]string, error)
	GetFile(ctx context.Context, id string) (store.File, error)
	FileConversations(ctx context.Context, id string) ([]string, error)
	Close() error
}

// Options are the settings a check opens a Store with.
type Options struct {
	Sealer   *sealer.Keyring // encrypts message text at rest; nil stores plaintext
	MaxBatch int             // appends per group commit; 0 is the store's default
	// NoCommitDelay turns off waiting for more appends before a commit
	// (sqlite's CommitDelay), so the check alone decides which appends
	// share a batch. Stores that never wait ignore it.
	NoCommitDelay bool
}

// Queue is the state of a Store's append queue.
type Queue struct {
	Taken   int64 // appends the writer has taken, ever
	Queued  int   // appends waiting, not yet taken
	Batches int64 // batches committed
	Closing bool  // Close has begun
}

// Backend is how the suite reaches one store implementation and its
// databases. A database is named by a string: a file path, a schema.
type Backend struct {
	// NewDB makes an empty database, removed when the test ends.
	NewDB func(t *testing.T) string
	// NewDBAt makes a database migrated only up to version, as an older
	// binary left it.
	NewDBAt func(t *testing.T, version int) string
	// Open opens a Store on db, closed when the test ends (a check may
	// close it first).
	Open func(t *testing.T, db string, o Options) (Store, error)
	// Exec runs sql straight on db, outside any Store.
	Exec func(t *testing.T, db, sql string)
	// QueryRow runs query straight on db and scans its one row into dest.
	QueryRow func(t *testing.T, db, query string, dest ...any)
	// Stall makes s's append writer block on its next batch, one that
	// touches conversation, until release is called (release is also
	// called when the test ends).
	Stall func(t *testing.T, s Store, db, conversation string) (release func())
	// Queue reports s's append queue.
	Queue func(s Store) Queue
	// SetDeleteChunk sets how many rows one retention step deletes, so a
	// check can exercise several.
	SetDeleteChunk func(s Store, n int)
	// Migrations is how many migrations the store embeds.
	Migrations int
	// MaxExistingFiles is how many ids one ExistingFiles query takes.
	MaxExistingFiles int
	// MaxDirectLimit is the store's cap on DirectMessagesSince.
	MaxDirectLimit int
	// Nodes is how many Stores the concurrency checks open on one
	// database: 1 for a store one process owns, more for one that nodes
	// share.
	Nodes int
}

// open opens a Store on a new database.
func (b Backend) open(t *testing.T, o Options) (Store, string) {
	t.Helper()
	db := b.NewDB(t)
	return b.mustOpen(t, db, o), db
}

// mustOpen opens a Store on db.
func (b Backend) mustOpen(t *testing.T, db string, o Options) Store {
	t.Helper()
	s, err := b.Open(t, db, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Run runs every check of the suite against b, each as a parallel subtest
// on a new database.
func Run(t *testing.T, b Backend) {
	// On an empty store, opened with the default options.
	plain := map[string]func(*testing.T, Store){
		"Users":                         Users,
		"UpdateUser":                    UpdateUser,
		"AppendAssigns":                 AppendAssigns,
		"History":                       History,
		"DirectMessagesSince":           func(t *testing.T, s Store) { DirectMessagesSince(t, s, b.MaxDirectLimit) },
		"Memberships":                   Memberships,
		"Files":                         FileMetadata,
		"Uploads":                       func(t *testing.T, s Store) { Uploads(t, s) },
		"DeleteUnusedFiles":             func(t *testing.T, s Store) { UnusedFiles(t, s) },
		"ExistingFilesChunks":           func(t *testing.T, s Store) { ExistingFilesChunks(t, s, b.MaxExistingFiles) },
		"ListConversations":             func(t *testing.T, s Store) { ListConversations(t, s) },
		"RoomSummaries":                 func(t *testing.T, s Store) { RoomSummaries(t, s) },
		"RefreshTokens":                 func(t *testing.T, s Store) { RefreshTokens(t, s) },
		"Closed":                        Closed,
		"SeqContiguousUnderConcurrency": SeqContiguousUnderConcurrency,
	}
	for name, check := range plain {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, _ := b.open(t, Options{})
			check(t, s)
		})
	}
	// With the Backend's other hooks.
	for name, check := range map[string]func(*testing.T, Backend){
		"RefreshTokenReuse":     RefreshTokenReuseIn,
		"RotateRace":            RotateRace,
		"UpdateUserRace":        UpdateUserRace,
		"UpgradeRefreshTokens":  UpgradeRefreshTokens,
		"UpgradeFiles":          UpgradeFiles,
		"Dedup":                 Dedup,
		"DeleteMessagesBefore":  DeleteMessagesBefore,
		"AppendContext":         AppendContext,
		"CloseDrains":           CloseDrains,
		"ReopenKeepsEverything": ReopenKeepsEverything,
		"RefusesNewerSchema":    RefusesNewerSchema,
		"EncryptionAtRest":      EncryptionAtRest,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			check(t, b)
		})
	}
}

// MustAppend appends m, failing the test on an error or a duplicate.
func MustAppend(t testing.TB, s Store, m store.Message) store.Message {
	t.Helper()
	got, dup, err := s.AppendMessage(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if dup {
		t.Fatalf("append %+v reported duplicate", m)
	}
	return got
}

// WaitFor polls cond until it holds or the test has waited too long.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// AppendOutcome is what an AppendMessage returned.
type AppendOutcome struct {
	Msg store.Message
	Dup bool
	Err error
}

// AppendAsync starts an append and returns where its outcome will arrive.
func AppendAsync(ctx context.Context, s Store, m store.Message) <-chan AppendOutcome {
	ch := make(chan AppendOutcome, 1)
	go func() {
		msg, dup, err := s.AppendMessage(ctx, m)
		ch <- AppendOutcome{msg, dup, err}
	}()
	return ch
}

// seqsOf pages backwards through a conversation, as a client scrolling up
// would, and returns every seq in order.
func seqsOf(t testing.TB, s Store, conv string) []int64 {
	t.Helper()
	var seqs []int64
	for before := int64(0); ; {
		msgs, more, err := s.History(context.Background(), conv, store.HistoryQuery{BeforeSeq: before, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		page := make([]int64, 0, len(msgs))
		for _, m := range msgs {
			page = append(page, m.Seq)
		}
		seqs = append(page, seqs...)
		if !more {
			return seqs
		}
		before = msgs[0].Seq
	}
}

// CheckContiguous fails unless conv's seqs run 1, 2, ... n and LastSeq is
// n; it returns n.
func CheckContiguous(t testing.TB, s Store, conv string) int {
	t.Helper()
	seqs := seqsOf(t, s, conv)
	for i, seq := range seqs {
		if seq != int64(i+1) {
			t.Fatalf("%s: seq %d at position %d: gap or duplicate", conv, seq, i)
		}
	}
	if last, err := s.LastSeq(context.Background(), conv); err != nil || last != int64(len(seqs)) {
		t.Fatalf("%s: LastSeq %d (%v), %d messages", conv, last, err, len(seqs))
	}
	return len(seqs)
}

// quote makes s an SQL string literal, for the raw queries (both
// dialects).
func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
