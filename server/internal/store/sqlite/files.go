package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/parleychat/parley/server/internal/store"
)

// Files. A row is one upload (store.File): its own id, name, type and
// uploader over a blob (blob_id, the content hash) that uploads of the same
// content share.
//
// File garbage collection. A file row is garbage once no message
// references it and it was last uploaded or posted (touched_at) before the
// grace period; a blob is garbage once no row names it. The protocol that
// keeps uploads and posts racing the collector safe is in the filegc
// package; these are its queries.

// TouchFile marks file id as used at t (it keeps the later of t and the
// last use) and returns its metadata; store.ErrNotFound if there is no
// such file. Posting a file calls it before appending the message: the
// touch makes the file young, so DeleteUnusedFiles leaves it alone until
// the message that references it is stored, and if the collector deleted
// the file first, the post fails instead of referencing a missing file.
func (s *Store) TouchFile(ctx context.Context, id string, t time.Time) (store.File, error) {
	if err := s.check(ctx); err != nil {
		return store.File{}, err
	}
	f, err := scanFile(s.w.QueryRowContext(ctx, qTouchFile, nanos(t), id))
	if err != nil {
		return store.File{}, s.mapErr(err)
	}
	return f, nil
}

const qTouchFile = `UPDATE files SET touched_at = max(touched_at, ?1) WHERE id = ?2 RETURNING ` + fileCols

// The subquery walks files_touched_at from the oldest; the NOT EXISTS is a
// lookup in messages_file.
const qDeleteUnusedFiles = `DELETE FROM files WHERE id IN (
	SELECT f.id FROM files f WHERE f.touched_at < ?1
		AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.file_id = f.id)
	ORDER BY f.touched_at LIMIT ?2)
	RETURNING blob_id`

// DeleteUnusedFiles deletes, in one transaction, up to limit files (with
// their uploaders) that no message references and that were last uploaded
// or posted before before, oldest first, and returns the blob id of each
// (one per row, so an id repeats when two deleted uploads shared content).
// Other uploads may still name those blobs: the caller removes a blob only
// if ExistingFiles does not report it (blob.Store.Remove asks), and calls
// again while it gets limit ids back.
func (s *Store) DeleteUnusedFiles(ctx context.Context, before time.Time, limit int) ([]string, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, fmt.Errorf("sqlite: DeleteUnusedFiles limit %d", limit)
	}
	var ids []string
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		var err error
		ids, err = s.strings(tx.QueryContext(ctx, qDeleteUnusedFiles, nanos(before), limit))
		return err
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// maxExistingFiles bounds the ids ExistingFiles puts in one query (SQLite
// allows 32766 parameters; far fewer keep each query short).
const maxExistingFiles = 500

// ExistingFiles returns those of the blob ids ids that some upload still
// names (the blobs in use), in no particular order. It reads the latest
// committed state.
func (s *Store) ExistingFiles(ctx context.Context, ids []string) ([]string, error) {
	var out []string
	for len(ids) > 0 {
		if err := s.check(ctx); err != nil {
			return nil, err
		}
		chunk := ids[:min(len(ids), maxExistingFiles)]
		ids = ids[len(chunk):]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		found, err := s.strings(s.r.QueryContext(ctx, qExistingFiles(len(chunk)), args...))
		if err != nil {
			return nil, err
		}
		out = append(out, found...)
	}
	return out, nil
}

func qExistingFiles(n int) string {
	return `SELECT DISTINCT blob_id FROM files WHERE blob_id IN (?` + strings.Repeat(", ?", n-1) + `)`
}

const fileCols = `id, blob_id, name, size, content_type, uploader, created_at`

// PutFile records a new upload and returns it as stored. Its ID is
// assigned (NewFileID) when empty; an ID that is taken gives
// store.ErrExists. BlobID and Uploader are required. The uploader is
// recorded in file_uploaders too, which is what IsFileUploader reads (rows
// from before 0004 have several). A zero CreatedAt means now; the upload
// counts as used then (see DeleteUnusedFiles).
//
// Call it before making the content durable in the blob store (see
// blob.Staged): once this row is committed the file garbage collector,
// which checks for a row naming the blob after taking it away, puts the
// blob back.
func (s *Store) PutFile(ctx context.Context, f store.File) (store.File, error) {
	if err := s.check(ctx); err != nil {
		return store.File{}, err
	}
	if f.BlobID == "" || f.Uploader == "" {
		return store.File{}, fmt.Errorf("sqlite: file needs BlobID and Uploader")
	}
	if f.ID == "" {
		f.ID = store.NewFileID()
	}
	if f.CreatedAt.IsZero() {
		f.CreatedAt = time.Now()
	}
	f.CreatedAt = fromNanos(nanos(f.CreatedAt))
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO files (`+fileCols+`, touched_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)`,
			f.ID, f.BlobID, f.Name, f.Size, f.ContentType, f.Uploader, nanos(f.CreatedAt)); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO file_uploaders (file_id, username, created_at) VALUES (?, ?, ?)`,
			f.ID, f.Uploader, nanos(f.CreatedAt))
		return err
	})
	if err != nil {
		return store.File{}, s.mapErr(err)
	}
	return f, nil
}

func scanFile(row scanner) (store.File, error) {
	var f store.File
	var created int64
	err := row.Scan(&f.ID, &f.BlobID, &f.Name, &f.Size, &f.ContentType, &f.Uploader, &created)
	f.CreatedAt = fromNanos(created)
	return f, err
}

// GetFile returns an upload; store.ErrNotFound if none.
func (s *Store) GetFile(ctx context.Context, id string) (store.File, error) {
	if err := s.check(ctx); err != nil {
		return store.File{}, err
	}
	f, err := scanFile(s.r.QueryRowContext(ctx, `SELECT `+fileCols+` FROM files WHERE id = ?`, id))
	if err != nil {
		return store.File{}, s.mapErr(err)
	}
	return f, nil
}

// IsFileUploader reports whether username uploaded file id (for a file
// from before 0004, whether it was one of those who uploaded its content).
func (s *Store) IsFileUploader(ctx context.Context, id, username string) (bool, error) {
	if err := s.check(ctx); err != nil {
		return false, err
	}
	var ok bool
	err := s.r.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM file_uploaders WHERE file_id = ? AND username = ?)`,
		id, username).Scan(&ok)
	return ok, s.mapErr(err)
}

// FileConversations returns the distinct conversations holding a message
// that references the file, sorted. Messages removed by retention no
// longer count.
func (s *Store) FileConversations(ctx context.Context, fileID string) ([]string, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	return s.strings(s.r.QueryContext(ctx, `SELECT DISTINCT conversation FROM messages WHERE file_id = ? ORDER BY conversation`, fileID))
}
