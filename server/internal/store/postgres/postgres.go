// Package postgres is Parley's PostgreSQL store, the twin of the default
// sqlite store: users, refresh tokens, messages with per-conversation
// sequence numbers, room memberships and file metadata, with the same
// methods and the same semantics, so several parleyd nodes can share one
// database.
//
// Message appends are group-committed: one writer goroutine per Store takes
// every append that is waiting (up to Config.MaxBatch) and writes them in
// one transaction, pipelined in a single round trip (BEGIN, bump the
// conversations' counters, insert the messages, COMMIT; before it, one
// more round trip looks up the batch's client message ids, if it has
// any), answering each caller only after the commit.
//
// Sequence numbers come from the conversations table, bumped in that same
// transaction. The row lock on a conversation's counter, held until
// COMMIT, serialises writers in every process, so seqs stay contiguous and
// unique however many nodes append at once, and a conversation's batches
// commit in seq order: a reader never sees seq n+1 before n, so paging
// forward with AfterSeq (resuming from a cursor) cannot skip a message
// that commits later. A batch locks its conversations in key order, so
// two nodes cannot deadlock on them. A batch that loses a race with
// another node for a client message id is retried (and then answers with
// the other node's message); one whose transaction PostgreSQL refuses
// because of one message's values is written again message by message, so
// only that one fails.
//
// Durability: an acknowledged append was committed. It survives what the
// server's synchronous_commit setting promises (the default, on, waits
// for the WAL flush; the store does not override the setting, and logs it
// when it opens).
//
// Every other call runs on a connection pool; a separate one-connection
// pool serves the writer so reads can never starve appends.
//
// Schema: the embedded migrations are versioned in schema_version and
// applied in one transaction under a transaction-scoped advisory lock, so
// nodes starting together do not race. Config.Schema puts everything in a
// schema of its own (created if missing).
//
// Concurrency: a *Store is safe for concurrent use. Close waits for the
// append queue to drain; other calls after Close return store.ErrClosed.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/puddle/v2"

	"github.com/parleychat/parley/server/internal/sealer"
	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/store/groupcommit"
	"github.com/parleychat/parley/server/internal/store/storeutil"
)

// Defaults for Config.
const (
	DefaultMaxBatch = 256
	DefaultMaxConns = 8
)

// Config configures a Store.
type Config struct {
	// URL is the PostgreSQL connection string, as a URL
	// (postgres://user:pass@host:5432/db?sslmode=verify-full) or in
	// keyword/value form; the PG* environment variables fill what it
	// leaves out, as with libpq. Required.
	URL string
	// Schema, if set, is the schema that holds the store's tables: it is
	// created if missing and becomes the connections' search_path. Empty
	// means the URL's (or the server's) search_path, usually public.
	Schema string
	// Sealer encrypts Message.Text at rest. Nil stores plaintext. Rows
	// written without a key stay readable after one is configured; rows
	// sealed under a key need that key (keep old keys in the keyring).
	Sealer *sealer.Keyring
	// Logger receives lifecycle events and write errors. Nil discards.
	Logger *slog.Logger
	// MaxBatch caps how many appends share one transaction. Zero means
	// DefaultMaxBatch.
	MaxBatch int
	// MaxConns caps the connections the Store opens, counting the append
	// writer's own; at least 2. Zero means DefaultMaxConns.
	MaxConns int
	// WriteTimeout bounds one attempt at an append batch's transaction, so
	// a server that stops answering fails the callers instead of holding
	// them (and Close) forever. Zero means DefaultWriteTimeout.
	WriteTimeout time.Duration

	// synchronousCommit overrides the server's synchronous_commit; only the
	// benchmarks set it, to measure "off" against the "on" the store is
	// meant to run with.
	synchronousCommit string
}

// Validate reports whether c is usable. It does not contact the server.
func (c Config) Validate() error {
	switch {
	case c.URL == "":
		return errors.New("postgres: Config.URL is required")
	case len(c.Schema) > 63 || strings.IndexByte(c.Schema, 0) >= 0:
		// PostgreSQL would silently truncate a longer name.
		return fmt.Errorf("postgres: bad Config.Schema %q: want at most 63 bytes, no NUL", c.Schema)
	case c.MaxBatch < 0:
		return fmt.Errorf("postgres: negative MaxBatch %d", c.MaxBatch)
	case c.MaxConns < 0 || c.MaxConns == 1:
		return fmt.Errorf("postgres: MaxConns %d: want 0 (default) or at least 2", c.MaxConns)
	}
	if _, err := pgxpool.ParseConfig(c.URL); err != nil {
		return fmt.Errorf("postgres: Config.URL: %w", err)
	}
	return nil
}

// Store is the PostgreSQL store. See the package doc.
type Store struct {
	db     *pgxpool.Pool // every call but appends
	w      *pgxpool.Pool // one connection: the append writer's
	sealer *sealer.Keyring
	log    *slog.Logger

	closed    atomic.Bool
	closeOnce sync.Once

	q        *groupcommit.Queue[*appendReq, appendResult] // drained by writeLoop
	maxBatch int
	writeTO  time.Duration   // Config.WriteTimeout
	ids      storeutil.IDGen // only writeLoop touches it
	done     chan struct{}

	deleteChunk int // rows per retention statement; tests lower it

	// Counters for benchmarks, tests and the close log.
	batches  atomic.Int64 // batches committed
	appended atomic.Int64 // requests in committed batches
	retries  atomic.Int64 // batch transactions retried
}

// Open connects to cfg.URL, creates and migrates the schema if needed and
// starts the writer goroutine. ctx bounds connecting and migrating.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("postgres: Config.URL: %w", err)
	}
	params := pcfg.ConnConfig.RuntimeParams
	if cfg.Schema != "" {
		params["search_path"] = pgx.Identifier{cfg.Schema}.Sanitize()
	}
	if cfg.synchronousCommit != "" {
		params["synchronous_commit"] = cfg.synchronousCommit
	}
	if params["application_name"] == "" {
		params["application_name"] = "parleyd"
	}
	log := cfg.Logger.With("component", "store.postgres",
		"host", pcfg.ConnConfig.Host, "database", pcfg.ConnConfig.Database)

	wcfg := pcfg.Copy()
	pcfg.MaxConns = int32(cfg.MaxConns - 1)
	wcfg.MaxConns, wcfg.MinConns = 1, 0

	db, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	mig, err := migrate(ctx, db, cfg.Schema)
	if err != nil {
		db.Close()
		return nil, err
	}
	w, err := pgxpool.NewWithConfig(ctx, wcfg)
	if err == nil {
		if err = w.Ping(ctx); err != nil {
			w.Close()
		}
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}

	s := &Store{
		db:       db,
		w:        w,
		sealer:   cfg.Sealer,
		log:      log.With("schema", mig.schema),
		q:        groupcommit.New[*appendReq, appendResult](cfg.MaxBatch),
		maxBatch: cfg.MaxBatch,
		writeTO:  cfg.WriteTimeout,
		done:     make(chan struct{}),

		deleteChunk: defaultDeleteChunk,
	}
	go s.writeLoop()
	s.log.Info("store opened", "schema_version", mig.version, "migrations_applied", mig.applied,
		"synchronous_commit", mig.syncCommit, "sealed", cfg.Sealer.Enabled(),
		"max_batch", cfg.MaxBatch, "max_conns", cfg.MaxConns)
	return s, nil
}

// Close stops accepting appends, waits until every append already queued
// has been committed and answered, then closes the connections, waiting
// for calls still using them. It is safe to call more than once and always
// returns nil.
// ObserveCommits makes o see every group commit (batch size, duration,
// error), for the metrics; nil stops it. Safe for concurrent use.
func (s *Store) ObserveCommits(o groupcommit.Observer) { s.q.SetObserver(o) }

func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.q.Close()
		<-s.done
		s.w.Close()
		s.db.Close()
		s.log.Info("store closed", "batches", s.batches.Load(), "messages", s.appended.Load(),
			"retries", s.retries.Load())
	})
	return nil
}

// check is called first by every method.
func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return ctx.Err()
}

// PostgreSQL error codes the store acts on.
const (
	codeUniqueViolation      = "23505"
	codeForeignKeyViolation  = "23503"
	codeSerializationFailure = "40001"
	codeDeadlockDetected     = "40P01"
)

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// mapErr turns driver errors into the store's sentinel errors, keeping the
// driver's message for logs.
func (s *Store) mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrExists) || errors.Is(err, store.ErrClosed):
		return err
	case errors.Is(err, pgx.ErrNoRows):
		return store.ErrNotFound
	case s.closed.Load() && errors.Is(err, puddle.ErrClosedPool):
		return store.ErrClosed // a call that raced Close
	}
	switch pgCode(err) {
	case codeUniqueViolation:
		return fmt.Errorf("%w (%v)", store.ErrExists, err)
	case codeForeignKeyViolation:
		return fmt.Errorf("%w: referenced record (%v)", store.ErrNotFound, err)
	}
	return err
}

// affected turns "no row changed" into store.ErrNotFound.
func (s *Store) affected(tag pgconn.CommandTag, err error) error {
	if err != nil {
		return s.mapErr(err)
	}
	if tag.RowsAffected() == 0 {
		return store.ErrNotFound
	}
	return nil
}

// withTx runs fn in a transaction, committing if it returns nil.
func (s *Store) withTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return s.mapErr(pgx.BeginFunc(ctx, s.db, fn))
}

// nanos and fromNanos store times (see storeutil.Nanos).
func nanos(t time.Time) int64 { return storeutil.Nanos(t) }

func fromNanos(n int64) time.Time { return storeutil.FromNanos(n) }

//go:embed migrations/*.sql
var migrationFS embed.FS

// migrations returns the embedded migrations in order (see
// storeutil.LoadMigrations).
func migrations() ([]storeutil.Migration, error) {
	ms, err := storeutil.LoadMigrations(migrationFS, "migrations")
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return ms, nil
}

type migrated struct {
	schema     string // where the tables are
	version    int    // the schema version now
	applied    int    // migrations this call applied
	syncCommit string // the server's synchronous_commit, for the log
}

// migrate brings the schema up to date in one transaction. A
// transaction-scoped advisory lock, keyed by the schema, serialises it
// with every other process migrating the same schema: the second waits,
// then finds the work done. (PostgreSQL DDL is transactional, so a failed
// migration leaves nothing behind; a migration that cannot run in a
// transaction, such as CREATE INDEX CONCURRENTLY, needs another path.)
func migrate(ctx context.Context, db *pgxpool.Pool, schema string) (migrated, error) {
	ms, err := migrations()
	if err != nil {
		return migrated{}, err
	}
	return applyMigrations(ctx, db, schema, ms)
}

// applyMigrations is migrate with the list given: tests pass a prefix of
// it to build a database as an older binary left it.
func applyMigrations(ctx context.Context, db *pgxpool.Pool, schema string, ms []storeutil.Migration) (migrated, error) {
	var res migrated
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended(
				'parley.store.migrate:' || coalesce(nullif($1::text, ''), current_schema(), ''), 0))`, schema); err != nil {
			return err
		}
		if schema != "" {
			if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{schema}.Sanitize()); err != nil {
				return err
			}
		}
		var cur *string
		if err := tx.QueryRow(ctx, "SELECT current_schema(), current_setting('synchronous_commit')").
			Scan(&cur, &res.syncCommit); err != nil {
			return err
		}
		if cur == nil {
			return errors.New("no schema: the search_path names none that exists (set Config.Schema)")
		}
		res.schema = *cur
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
				version    integer PRIMARY KEY,
				applied_at bigint NOT NULL
			)`); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_version").Scan(&res.version); err != nil {
			return err
		}
		if res.version > len(ms) {
			return fmt.Errorf("database schema version %d is newer than this binary's %d", res.version, len(ms))
		}
		for _, m := range ms[res.version:] {
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("migration %s: %w", m.Name, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
				m.Version, time.Now().UnixNano()); err != nil {
				return fmt.Errorf("migration %s: %w", m.Name, err)
			}
			res.version = m.Version
			res.applied++
		}
		return nil
	})
	if err != nil {
		return migrated{}, fmt.Errorf("postgres: migrate: %w", err)
	}
	return res, nil
}
