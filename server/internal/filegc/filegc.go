// Package filegc deletes the files that no message references any more:
// their metadata rows in the message store, then their contents in the
// blob store. Retention deletes messages; without this, the files they
// carried would stay forever.
//
// A file (one upload: a row of its own) is garbage when no message
// references it and it was last uploaded or posted (the store's
// touched_at) more than Config.Grace ago: an upload must survive until its
// uploader posts it. Its content is a blob, named by its SHA-256, that
// other uploads of the same content share, so the blob goes only when no
// row names it any more.
//
// Order, for crash safety: rows are deleted first, in a transaction per
// chunk, and the blobs after. A crash in between leaves orphan blobs (on
// disk, no row), which every sweep also looks for and deletes once they
// are older than the grace period.
//
// Races, for correctness:
//   - An upload of the same content: the upload records its row before it
//     commits the blob (blob.Staged), and the blob store puts back a blob
//     that a row names when it looks after taking it away
//     (blob.Store.Remove), so the upload keeps its blob.
//   - A post of an old file: posting touches the file first
//     (TouchFile), which either makes it young, so this sweep keeps it, or
//     finds it deleted, so the post fails with not found; a message never
//     references a file this deleted.
//
// Concurrency: a *Collector is safe for concurrent use; sweeps run one at
// a time. Sweeps from several nodes sharing the store and the directory
// are safe too.
package filegc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/parleychat/parley/server/internal/blob"
)

// Defaults for Config.
const (
	DefaultGrace      = 24 * time.Hour
	DefaultChunk      = 500
	DefaultOrphanScan = 20000
)

// Store is what the collector needs from the message store.
// DeleteUnusedFiles deletes up to limit garbage rows and returns the blob
// id of each; ExistingFiles returns those of the blob ids some row still
// names.
type Store interface {
	DeleteUnusedFiles(ctx context.Context, before time.Time, limit int) ([]string, error)
	ExistingFiles(ctx context.Context, ids []string) ([]string, error)
}

// Blobs is what the collector needs from the blob store.
type Blobs interface {
	Remove(ctx context.Context, ids []string, inUse blob.InUse) (int, error)
	RemoveUnused(ctx context.Context, before time.Time, inUse blob.InUse, from string, limit int) (next string, removed int, err error)
}

// Config configures a Collector.
type Config struct {
	Store Store // required
	Blobs Blobs // required
	// Grace is how long a file no message references is kept after it was
	// last uploaded or posted. Default DefaultGrace.
	Grace time.Duration
	// Chunk is how many file rows one transaction deletes. Default
	// DefaultChunk.
	Chunk int
	// OrphanScan is about how many blobs one sweep examines looking for
	// orphans; the next sweep goes on from there, so every blob is looked
	// at over a few sweeps without any one sweep reading the whole
	// directory. Default DefaultOrphanScan.
	OrphanScan int
	// Logger receives a line per sweep that deleted something (Sweep
	// returns errors to its caller). Nil discards.
	Logger *slog.Logger
}

// Collector sweeps unused files. See the package doc.
type Collector struct {
	cfg Config
	mu  sync.Mutex // one sweep at a time; guards next
	// next is the blob subdirectory the orphan scan goes on from.
	next string
}

// New returns a collector.
func New(cfg Config) (*Collector, error) {
	switch {
	case cfg.Store == nil || cfg.Blobs == nil:
		return nil, errors.New("filegc: Store and Blobs are required")
	case cfg.Grace < 0 || cfg.Chunk < 0 || cfg.OrphanScan < 0:
		return nil, fmt.Errorf("filegc: negative Grace %v, Chunk %d or OrphanScan %d", cfg.Grace, cfg.Chunk, cfg.OrphanScan)
	}
	if cfg.Grace == 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.Chunk == 0 {
		cfg.Chunk = DefaultChunk
	}
	if cfg.OrphanScan == 0 {
		cfg.OrphanScan = DefaultOrphanScan
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Collector{cfg: cfg}, nil
}

// Result counts what a sweep deleted.
type Result struct {
	Files   int // file rows
	Blobs   int // their blobs
	Orphans int // blobs that had no row (or were left as trash by a crash)
}

// Sweep deletes the files unused since now minus the grace period, then
// their blobs, then looks for orphan blobs. ctx bounds it; on an error the
// sweep goes on where it safely can, and the next sweep retries the rest.
func (c *Collector) Sweep(ctx context.Context, now time.Time) (Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	before := now.Add(-c.cfg.Grace)
	inUse := blob.InUse(c.cfg.Store.ExistingFiles)
	var res Result
	var errs []error
	for {
		ids, err := c.cfg.Store.DeleteUnusedFiles(ctx, before, c.cfg.Chunk)
		if err != nil {
			errs = append(errs, fmt.Errorf("delete unused files: %w", err))
			break
		}
		res.Files += len(ids)
		// The rows are gone (committed); a failure here leaves orphans for
		// the scan below or a later sweep.
		n, err := c.cfg.Blobs.Remove(ctx, ids, inUse)
		res.Blobs += n
		if err != nil {
			errs = append(errs, fmt.Errorf("delete blobs: %w", err))
		}
		if len(ids) < c.cfg.Chunk {
			break
		}
	}
	if ctx.Err() == nil {
		next, n, err := c.cfg.Blobs.RemoveUnused(ctx, before, inUse, c.next, c.cfg.OrphanScan)
		res.Orphans += n
		if err != nil {
			errs = append(errs, fmt.Errorf("delete orphan blobs: %w", err))
		} else {
			c.next = next
		}
	}
	if res != (Result{}) {
		c.cfg.Logger.Info("deleted unused files", "files", res.Files, "blobs", res.Blobs, "orphan_blobs", res.Orphans,
			"grace", c.cfg.Grace)
	}
	return res, errors.Join(errs...)
}
