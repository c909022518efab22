// Package sqlite is Parley's default store: users, refresh tokens,
// messages with per-conversation sequence numbers, room memberships and
// file metadata in one SQLite file (pure Go driver, no cgo).
//
// Writes go through one connection and reads through a pool of others; in
// WAL mode readers never block the writer or each other. Message appends
// are group-committed: a single writer goroutine takes every append that is
// waiting (up to Config.MaxBatch), writes them in one transaction and
// answers each caller only after the commit, so an acknowledged message is
// on disk and many concurrent appends share one fsync.
//
// Durability: the writer runs with synchronous=FULL, so a commit fsyncs the
// WAL before AppendMessage (or any other write) returns. A committed write
// survives a process crash, an OS crash and power loss (given a disk that
// honours fsync). synchronous=NORMAL would survive only a process crash: the
// last commits before an OS crash could be lost after the client was told
// they were stored. Group commit makes FULL cheap enough under load; see
// the benchmarks in this package for the numbers.
//
// Concurrency: a *Store is safe for concurrent use. Close waits for the
// append queue to drain; other calls after Close return store.ErrClosed.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/parleychat/parley/server/internal/sealer"
	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/store/groupcommit"
	"github.com/parleychat/parley/server/internal/store/storeutil"
)

// DefaultMaxBatch is the default Config.MaxBatch.
const DefaultMaxBatch = 256

// DefaultCommitDelay is the default Config.CommitDelay.
//
// In the rooms benchmark (2,000 stored messages a second from 2,000
// senders) 5 ms gathers about 10 messages per commit instead of 4.5 with
// 2 ms and a rule that needed two appends waiting: 25 server CPU-µs per
// delivery instead of 34, for about 2 ms more median latency.
const DefaultCommitDelay = 5 * time.Millisecond

// DefaultWriteTimeout is the default Config.WriteTimeout.
const DefaultWriteTimeout = 30 * time.Second

// busyTimeout bounds how long a statement waits for a lock held by another
// process on the same file before failing with SQLITE_BUSY. In-process
// writes never contend: there is one writer connection.
const busyTimeout = 5 * time.Second

// Config configures a Store.
type Config struct {
	// Path is the database file; it and its -wal/-shm siblings are created
	// if missing. Required (":memory:" is refused: the reader and writer
	// pools must share one database).
	Path string
	// Sealer encrypts Message.Text at rest. Nil stores plaintext. Rows
	// written without a key stay readable after one is configured; rows
	// sealed under a key need that key (keep old keys in the keyring).
	Sealer *sealer.Keyring
	// Logger receives lifecycle events and write errors. Nil discards.
	Logger *slog.Logger
	// MaxBatch caps how many appends share one transaction. Zero means
	// DefaultMaxBatch.
	MaxBatch int
	// CommitDelay is how long the writer waits for more appends before a
	// commit when an append arrived while the last commit ran (several
	// callers append at once): more messages then share one commit and
	// fsync, like PostgreSQL's commit_delay. A single sender, which waits
	// for each append, is never held. Zero means DefaultCommitDelay;
	// negative disables it.
	CommitDelay time.Duration
	// WriteTimeout bounds each commit of the append writer, so a database
	// that stops answering fails the appends taken instead of holding
	// them (and Close) forever. Zero means DefaultWriteTimeout.
	WriteTimeout time.Duration

	// synchronous overrides PRAGMA synchronous; only the benchmarks set it,
	// to measure NORMAL against the FULL the store runs with.
	synchronous string
}

// Validate reports whether c is usable.
func (c Config) Validate() error {
	switch {
	case c.Path == "":
		return errors.New("sqlite: Config.Path is required")
	case c.Path == ":memory:" || strings.HasPrefix(c.Path, "file:"):
		return fmt.Errorf("sqlite: Config.Path must be a file path, not %q", c.Path)
	case c.MaxBatch < 0:
		return fmt.Errorf("sqlite: negative MaxBatch %d", c.MaxBatch)
	}
	return nil
}

// Store is the SQLite store. See the package doc.
type Store struct {
	w *sql.DB // one connection: every write
	r *sql.DB // pool: every read
	// Statements on the hot paths, prepared once: parsing SQL costs more
	// than running these statements.
	// Prepared once: the statements every message or connect runs (SQLite
	// would otherwise parse them each time, a tenth of a connect's CPU).
	wst    struct{ dedup, insert, bump, lastSeen *sql.Stmt }
	rst    struct{ histBack, histFwd, lastSeq, direct, user, memberships *sql.Stmt }
	sealer *sealer.Keyring
	log    *slog.Logger

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	q        *groupcommit.Queue[*appendReq, appendResult] // drained by writeLoop
	maxBatch int
	delay    time.Duration   // Config.CommitDelay; 0 when disabled
	writeTO  time.Duration   // Config.WriteTimeout
	inCommit atomic.Bool     // writeLoop is committing (see appendReq.overlapped)
	ids      storeutil.IDGen // only writeLoop touches it
	done     chan struct{}

	deleteChunk int // rows per retention transaction; tests lower it

	// Counters for benchmarks and tests.
	batches  atomic.Int64 // batches committed
	appended atomic.Int64 // requests in committed batches
}

// Open opens (creating and migrating if needed) the database at cfg.Path
// and starts the writer goroutine. ctx bounds the opening and migration.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	switch {
	case cfg.CommitDelay == 0:
		cfg.CommitDelay = DefaultCommitDelay
	case cfg.CommitDelay < 0:
		cfg.CommitDelay = 0
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.synchronous == "" {
		cfg.synchronous = "FULL"
	}
	path, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	log := cfg.Logger.With("component", "store.sqlite", "path", path)
	if err := createPrivate(path); err != nil {
		return nil, err
	}

	busy := strconv.FormatInt(busyTimeout.Milliseconds(), 10)
	w, err := sql.Open("sqlite", dsn(path, url.Values{
		"_pragma": {"busy_timeout(" + busy + ")", "journal_mode(WAL)", "foreign_keys(1)", "synchronous(" + cfg.synchronous + ")"},
		// Take the write lock at BEGIN: a deferred transaction that reads
		// first and then writes can fail with SQLITE_BUSY when another
		// process wrote in between, which busy_timeout cannot fix.
		"_txlock": {"immediate"},
	}))
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)

	fail := func(err error) (*Store, error) {
		w.Close()
		return nil, err
	}
	var mode string
	if err := w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fail(fmt.Errorf("sqlite: open %s: %w", path, err))
	}
	if !strings.EqualFold(mode, "wal") {
		// The reader/writer split relies on WAL; without it readers and the
		// writer would block each other.
		return fail(fmt.Errorf("sqlite: %s: journal_mode is %q, want wal", path, mode))
	}
	version, applied, err := migrate(ctx, w)
	if err != nil {
		return fail(err)
	}

	r, err := sql.Open("sqlite", dsn(path, url.Values{
		"_pragma": {"busy_timeout(" + busy + ")", "foreign_keys(1)", "query_only(1)"},
	}))
	if err != nil {
		return fail(fmt.Errorf("sqlite: %w", err))
	}
	readers := max(4, 2*runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(readers)
	r.SetMaxIdleConns(readers)
	if err := r.PingContext(ctx); err != nil {
		r.Close()
		return fail(fmt.Errorf("sqlite: %w", err))
	}

	s := &Store{
		w:        w,
		r:        r,
		sealer:   cfg.Sealer,
		log:      log,
		q:        groupcommit.New[*appendReq, appendResult](cfg.MaxBatch),
		maxBatch: cfg.MaxBatch,
		delay:    cfg.CommitDelay,
		writeTO:  cfg.WriteTimeout,
		done:     make(chan struct{}),

		deleteChunk: defaultDeleteChunk,
	}
	if err := s.prepare(ctx); err != nil {
		r.Close()
		return fail(err)
	}
	go s.writeLoop()
	log.Info("store opened", "schema_version", version, "migrations_applied", applied,
		"synchronous", cfg.synchronous, "sealed", cfg.Sealer.Enabled(), "max_batch", cfg.MaxBatch, "commit_delay", cfg.CommitDelay)
	return s, nil
}

// createPrivate makes sure the database file exists with mode 0600 (and
// its directory, 0700) before SQLite opens it: SQLite would create it
// world-readable under the usual umask, and gives the -wal and -shm files
// the database file's permissions. It holds password hashes and messages.
func createPrivate(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	return f.Close()
}

func dsn(path string, q url.Values) string {
	// A file: URI so SQLite percent-decodes the path; EscapedPath keeps '?'
	// and '#' in a file name from being read as the query or fragment.
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

// Close stops accepting appends, waits until every append already queued
// has been committed and answered, then closes the database. It is safe to
// call more than once; later calls return the first result.
// ObserveCommits makes o see every group commit (batch size, duration,
// error), for the metrics; nil stops it. Safe for concurrent use.
func (s *Store) ObserveCommits(o groupcommit.Observer) { s.q.SetObserver(o) }

func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.q.Close()
		<-s.done
		for _, st := range s.stmts() {
			st.Close()
		}
		// sql.DB.Close waits for queries already running on it.
		s.closeErr = errors.Join(s.w.Close(), s.r.Close())
		s.log.Info("store closed", "batches", s.batches.Load(), "messages", s.appended.Load())
	})
	return s.closeErr
}

func (s *Store) prepare(ctx context.Context) error {
	for _, p := range []struct {
		db *sql.DB
		q  string
		to **sql.Stmt
	}{
		{s.w, qDedup, &s.wst.dedup},
		{s.w, qInsertMsg, &s.wst.insert},
		{s.w, qBumpSeq, &s.wst.bump},
		{s.r, qHistoryBackward, &s.rst.histBack},
		{s.r, qHistoryForward, &s.rst.histFwd},
		{s.r, qLastSeq, &s.rst.lastSeq},
		{s.r, qDirectSince, &s.rst.direct},
		{s.r, qGetUser, &s.rst.user},
		{s.r, qMemberships, &s.rst.memberships},
		{s.w, qTouchLastSeen, &s.wst.lastSeen},
	} {
		st, err := p.db.PrepareContext(ctx, p.q)
		if err != nil {
			for _, st := range s.stmts() {
				st.Close()
			}
			return fmt.Errorf("sqlite: prepare: %w", err)
		}
		*p.to = st
	}
	return nil
}

// stmts lists the prepared statements that exist.
func (s *Store) stmts() []*sql.Stmt {
	var out []*sql.Stmt
	for _, st := range []*sql.Stmt{s.wst.dedup, s.wst.insert, s.wst.bump, s.wst.lastSeen,
		s.rst.histBack, s.rst.histFwd, s.rst.lastSeq, s.rst.direct, s.rst.user, s.rst.memberships} {
		if st != nil {
			out = append(out, st)
		}
	}
	return out
}

// check is called first by every method.
func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return ctx.Err()
}

// mapErr turns driver errors into the store's sentinel errors, keeping the
// driver's message for logs.
func (s *Store) mapErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrExists) || errors.Is(err, store.ErrClosed) {
		return err
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE:
			return fmt.Errorf("%w (%v)", store.ErrExists, err)
		case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
			return fmt.Errorf("%w: referenced record (%v)", store.ErrNotFound, err)
		}
	}
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	if s.closed.Load() && strings.Contains(err.Error(), "sql: database is closed") {
		// A call that raced Close (database/sql has no sentinel for this).
		return store.ErrClosed
	}
	return err
}

// affected turns "no row changed" into store.ErrNotFound.
func (s *Store) affected(res sql.Result, err error) error {
	if err != nil {
		return s.mapErr(err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return s.mapErr(err)
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// withTx runs fn in a write transaction, committing if it returns nil.
func (s *Store) withTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return s.mapErr(err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return s.mapErr(err)
	}
	return s.mapErr(tx.Commit())
}

// nanos and fromNanos store times (see storeutil.Nanos).
func nanos(t time.Time) int64 { return storeutil.Nanos(t) }

func fromNanos(n int64) time.Time { return storeutil.FromNanos(n) }

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

//go:embed migrations/*.sql
var migrationFS embed.FS

// migrations returns the embedded migrations in order (see
// storeutil.LoadMigrations).
func migrations() ([]storeutil.Migration, error) {
	ms, err := storeutil.LoadMigrations(migrationFS, "migrations")
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	return ms, nil
}

// migrate brings the schema up to date, one transaction per migration, and
// returns the resulting version and how many migrations it applied. Every
// step re-reads the version inside its (immediate) transaction, so two
// processes opening a new file at once do not both apply a migration.
func migrate(ctx context.Context, db *sql.DB) (version, applied int, err error) {
	ms, err := migrations()
	if err != nil {
		return 0, 0, err
	}
	return applyMigrations(ctx, db, ms)
}

// applyMigrations is migrate with the list given: tests pass a prefix of
// it to build a database as an older binary left it.
func applyMigrations(ctx context.Context, db *sql.DB, ms []storeutil.Migration) (version, applied int, err error) {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		version    INTEGER PRIMARY KEY,
		applied_at INTEGER NOT NULL
	) STRICT`); err != nil {
		return 0, 0, fmt.Errorf("sqlite: schema_version: %w", err)
	}
	current := func(q interface {
		QueryRowContext(context.Context, string, ...any) *sql.Row
	}) (int, error) {
		var v int
		err := q.QueryRowContext(ctx, "SELECT coalesce(max(version), 0) FROM schema_version").Scan(&v)
		return v, err
	}
	v, err := current(db)
	if err != nil {
		return 0, 0, fmt.Errorf("sqlite: schema_version: %w", err)
	}
	if v > len(ms) {
		return v, 0, fmt.Errorf("sqlite: database schema version %d is newer than this binary's %d", v, len(ms))
	}
	for _, m := range ms[v:] {
		did, err := func() (bool, error) {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return false, err
			}
			defer tx.Rollback()
			if v, err := current(tx); err != nil || v >= m.Version {
				return false, err // another process got here first
			}
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return false, err
			}
			if _, err := tx.ExecContext(ctx, "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
				m.Version, time.Now().UnixNano()); err != nil {
				return false, err
			}
			return true, tx.Commit()
		}()
		if err != nil {
			return 0, applied, fmt.Errorf("sqlite: migration %s: %w", m.Name, err)
		}
		if did {
			applied++
		}
	}
	return len(ms), applied, nil
}
