// Package blob owns file contents: a content-addressed store in a
// directory, where a blob's id is the hex SHA-256 of its plaintext and it
// lives at Dir/<first two hex digits>/<id>. Uploads of the same content
// share one blob. File metadata (names, types, uploaders: one record per
// upload) is not kept here; it belongs to the message store.
//
// With a sealer.Keyring the bytes on disk are sealed with
// sealer.SealWriter; ids stay plaintext hashes (that is what
// store.File.BlobID means), so someone who can read the directory can confirm whether a file
// they already hold is stored, but not read any file they do not.
//
// Uploads are staged (Stage) and then committed (Staged.Commit), so the
// caller can record the id between the two; deletion (Remove,
// RemoveUnused, in gc.go) relies on that order to never lose the blob of
// an upload racing it.
//
// Concurrency: a *Store is safe for concurrent use, by this process and by
// others sharing the directory. Writes go to a temp file that is fsynced
// and renamed into place, so a reader never sees a partial file and a crash
// leaves at most a stale temp file, removed by the next New after an hour,
// or a <id>.trash file from an unfinished Remove, settled by the next
// RemoveUnused.
package blob

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/parleychat/parley/server/internal/sealer"
)

// DefaultMaxSize is the default Config.MaxSize: 10 MiB.
const DefaultMaxSize = 10 << 20

const (
	tempPrefix = ".tmp-"
	// staleTemp is how old a temp file must be before New deletes it. It is
	// far longer than any upload may take, so a Put in flight in another
	// process sharing the directory is never disturbed.
	staleTemp = time.Hour
)

var (
	// ErrTooLarge is returned by Put when the content exceeds MaxSize.
	ErrTooLarge = errors.New("blob: too large")
	// ErrNotFound is returned by Open when no blob has the id, including
	// when the id is not well formed.
	ErrNotFound = errors.New("blob: not found")
	// ErrCorrupt is returned by a reader from Open at end of file when the
	// content read does not hash to its id.
	ErrCorrupt = errors.New("blob: content does not match id")
)

// Config configures a Store.
type Config struct {
	// Dir is the root directory; it is created (0700) if missing. Required.
	Dir string
	// Sealer encrypts contents at rest. Nil stores plaintext. Blobs written
	// under either setting stay readable under the other only as far as
	// keys allow: plaintext blobs always open, sealed ones need their key.
	Sealer *sealer.Keyring
	// MaxSize is the largest content Put accepts, in bytes. Zero means
	// DefaultMaxSize.
	MaxSize int64
}

// Store is a content-addressed file store. See the package doc for its
// layout and concurrency contract.
type Store struct {
	dir     string
	sealer  *sealer.Keyring
	maxSize int64
}

// New opens (creating if needed) the store at cfg.Dir.
func New(cfg Config) (*Store, error) {
	if cfg.Dir == "" {
		return nil, errors.New("blob: Config.Dir is required")
	}
	if cfg.MaxSize < 0 {
		return nil, fmt.Errorf("blob: negative MaxSize %d", cfg.MaxSize)
	}
	if cfg.MaxSize == 0 {
		cfg.MaxSize = DefaultMaxSize
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	s := &Store{dir: dir, sealer: cfg.Sealer, maxSize: cfg.MaxSize}
	s.removeStaleTemps()
	return s, nil
}

func (s *Store) removeStaleTemps() {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasPrefix(e.Name(), tempPrefix) {
			continue
		}
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > staleTemp {
			os.Remove(filepath.Join(s.dir, e.Name()))
		}
	}
}

// ValidID reports whether id has the form of a blob id: 64 lowercase hex
// digits. Only such ids ever reach the file system, which is what keeps
// ids like "../../etc/passwd" out.
func ValidID(id string) bool {
	if len(id) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !isLowerHex(id[i]) {
			return false
		}
	}
	return true
}

func isLowerHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }

func (s *Store) path(id string) string { return filepath.Join(s.dir, id[:2], id) }

// Put stores the content read from r (until EOF) and returns its id and
// plaintext size: Stage followed by Commit. Content larger than MaxSize
// fails with ErrTooLarge without being stored. Storing content that is
// already present succeeds and keeps the existing file. When Put returns
// nil the file is durable: its data and its directory entry have been
// fsynced. ctx is checked between reads of r.
//
// A caller that records the id elsewhere (the message store's file rows)
// and runs the garbage collector should use Stage and record the id
// before Commit; see Staged.
func (s *Store) Put(ctx context.Context, r io.Reader) (id string, size int64, err error) {
	st, err := s.Stage(ctx, r)
	if err != nil {
		return "", 0, err
	}
	if err := st.Commit(); err != nil {
		return "", 0, err
	}
	return st.ID(), st.Size(), nil
}

// Staged is content written and fsynced to a temporary file, whose id is
// known but which is not yet stored under it. Exactly one of Commit or
// Discard must be called. Not safe for concurrent use.
//
// Uploads stage first so that the reference to the content is recorded
// before the content is committed: the garbage collector takes a blob
// away (Remove) before it looks for references, and puts it back if it
// finds one. If Commit found the blob present, the reference recorded
// before it is seen by any collector that takes the blob away afterwards;
// if a collector took it away before, Commit writes it again.
type Staged struct {
	s    *Store
	tmp  string
	id   string
	size int64
}

// ID is the staged content's id (the hex SHA-256 of its plaintext).
func (st *Staged) ID() string { return st.id }

// Size is the staged content's plaintext size in bytes.
func (st *Staged) Size() int64 { return st.size }

// Stage reads r until EOF into a sealed (when a key is configured),
// fsynced temporary file and returns it with its id. Content larger than
// MaxSize fails with ErrTooLarge. ctx is checked between reads of r.
func (s *Store) Stage(ctx context.Context, r io.Reader) (_ *Staged, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(s.dir, tempPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()

	h := sha256.New()
	// A buffer between the copy and a plaintext file keeps writes large;
	// SealWriter already writes whole segments.
	bw := bufio.NewWriterSize(tmp, 64<<10)
	sw, err := s.sealer.SealWriter(bw)
	if err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	// Read one byte past the limit so "exactly MaxSize" and "more" differ.
	src := &ctxReader{ctx: ctx, r: io.LimitReader(r, s.maxSize+1)}
	size, err := io.Copy(io.MultiWriter(h, sw), src)
	if err != nil {
		return nil, err
	}
	if size > s.maxSize {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, s.maxSize)
	}
	if err := sw.Close(); err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	return &Staged{s: s, tmp: tmp.Name(), id: hex.EncodeToString(h.Sum(nil)), size: size}, nil
}

// Discard deletes the staged content without storing it.
func (st *Staged) Discard() { os.Remove(st.tmp) }

// Commit stores the staged content under its id, durably: when it returns
// nil the file's data and its directory entry have been fsynced. Content
// already present is kept and the staged copy deleted.
func (st *Staged) Commit() error {
	s, id := st.s, st.id
	final := s.path(id)
	if _, statErr := os.Stat(final); statErr == nil {
		os.Remove(st.tmp)
		return nil
	}
	sub := filepath.Dir(final)
	_, statErr := os.Stat(sub)
	newSub := errors.Is(statErr, fs.ErrNotExist)
	if err := os.MkdirAll(sub, 0o700); err != nil {
		os.Remove(st.tmp)
		return fmt.Errorf("blob: %w", err)
	}
	// Two Puts of the same content may both get here; rename replaces
	// atomically and both files hold the same plaintext, so either wins.
	if err := os.Rename(st.tmp, final); err != nil {
		os.Remove(st.tmp)
		return fmt.Errorf("blob: %w", err)
	}
	// The rename is durable only once the directory holding the new entry
	// is synced (and its parent, if the directory itself is new).
	if err := syncDir(sub); err != nil {
		return err
	}
	if newSub {
		if err := syncDir(s.dir); err != nil {
			return err
		}
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("blob: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("blob: sync %s: %w", dir, err)
	}
	return nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Has reports whether a blob with id is stored. A malformed id is not.
func (s *Store) Has(id string) bool {
	if !ValidID(id) {
		return false
	}
	info, err := os.Stat(s.path(id))
	return err == nil && info.Mode().IsRegular()
}

// Open returns a reader of the plaintext of blob id; the caller must Close
// it. A malformed or unknown id gives ErrNotFound. The reader
// authenticates sealed content segment by segment and, at end of file,
// checks the content against its id (ErrCorrupt). ctx bounds only the
// open, not later reads.
func (s *Store) Open(ctx context.Context, id string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !ValidID(id) {
		return nil, fmt.Errorf("%w: malformed id", ErrNotFound)
	}
	f, err := os.Open(s.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	br := bufio.NewReaderSize(f, 32<<10)
	prefix, _ := br.Peek(sealer.SniffLen)
	var plain io.Reader = br
	if sealer.IsSealedStream(prefix) {
		if !s.sealer.Enabled() {
			f.Close()
			return nil, fmt.Errorf("blob: %s is sealed and no key is configured", id)
		}
		if plain, err = s.sealer.OpenReader(br); err != nil {
			f.Close()
			return nil, fmt.Errorf("blob: %w", err)
		}
	}
	// A plaintext blob is accepted even with a key set: it was stored
	// before encryption was turned on. The hash check still guards it.
	return &verifyReader{r: plain, f: f, h: sha256.New(), id: id}, nil
}

// verifyReader hashes what it reads and checks it against the id at EOF.
type verifyReader struct {
	r  io.Reader
	f  *os.File
	h  hash.Hash
	id string
}

func (v *verifyReader) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	if err == io.EOF && hex.EncodeToString(v.h.Sum(nil)) != v.id {
		return n, fmt.Errorf("%w %s", ErrCorrupt, v.id)
	}
	if err != nil && err != io.EOF {
		err = fmt.Errorf("blob: %s: %w", v.id, err)
	}
	return n, err
}

func (v *verifyReader) Close() error { return v.f.Close() }
