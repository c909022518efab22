package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parleychat/parley/server/internal/store"
)

// File garbage collection. A file row is garbage once no message
// references it and it was last uploaded or posted (touched_at) before the
// grace period. The protocol that keeps uploads and posts racing the
// collector safe is in the filegc package; these are its queries.

// TouchFile marks file id as used at t (it keeps the later of t and the
// last use) and returns its metadata; store.ErrNotFound if there is no
// such file. Posting a file calls it before appending the message: the
// touch makes the file young, so DeleteUnusedFiles leaves it alone until
// the message that references it is stored, and if the collector deleted
// the file first, the post fails instead of referencing a missing file.
// (If the two meet on the row's lock, the later one sees the other's
// commit: DeleteUnusedFiles rechecks touched_at on the locked row.)
func (s *Store) TouchFile(ctx context.Context, id string, t time.Time) (store.File, error) {
	if err := s.check(ctx); err != nil {
		return store.File{}, err
	}
	f, err := scanFile(s.db.QueryRow(ctx, qTouchFile, id, nanos(t)))
	if err != nil {
		return store.File{}, s.mapErr(err)
	}
	return f, nil
}

const qTouchFile = `UPDATE files SET touched_at = greatest(touched_at, $2) WHERE id = $1 RETURNING ` + fileCols

// The array walks files_touched_at from the oldest; the NOT EXISTS is a
// lookup in messages_file. The outer conditions repeat the inner ones on
// purpose: when a row picked by the array was touched or posted by a
// transaction that committed meanwhile, READ COMMITTED re-evaluates the
// outer WHERE on the row's new version (the array itself is not
// recomputed), so a file touched meanwhile is kept. It runs unprepared
// (see qDeleteBefore).
const qDeleteUnusedFiles = `DELETE FROM files WHERE id = ANY (ARRAY (
	SELECT f.id FROM files f WHERE f.touched_at < $1
		AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.file_id = f.id)
	ORDER BY f.touched_at LIMIT $2))
	AND touched_at < $1
	AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.file_id = files.id)
	RETURNING id`

// DeleteUnusedFiles deletes, in one transaction, up to limit files (with
// their uploaders) that no message references and that were last uploaded
// or posted before before, oldest first, and returns their ids. A caller
// deletes the blobs after it and calls again while it gets limit ids back.
func (s *Store) DeleteUnusedFiles(ctx context.Context, before time.Time, limit int) ([]string, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, fmt.Errorf("postgres: DeleteUnusedFiles limit %d", limit)
	}
	rows, err := s.db.Query(ctx, qDeleteUnusedFiles, pgx.QueryExecModeExec, nanos(before), limit)
	if err != nil {
		return nil, s.mapErr(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, s.mapErr(err)
	}
	return ids, nil
}

const qExistingFiles = `SELECT id FROM files WHERE id = ANY ($1)`

// maxExistingFiles bounds the ids ExistingFiles puts in one query.
const maxExistingFiles = 500

// ExistingFiles returns those of ids that are stored files, in no
// particular order. It reads the latest committed state.
func (s *Store) ExistingFiles(ctx context.Context, ids []string) ([]string, error) {
	var out []string
	for len(ids) > 0 {
		if err := s.check(ctx); err != nil {
			return nil, err
		}
		chunk := ids[:min(len(ids), maxExistingFiles)]
		ids = ids[len(chunk):]
		found, err := s.strings(ctx, qExistingFiles, chunk)
		if err != nil {
			return nil, err
		}
		out = append(out, found...)
	}
	return out, nil
}

const (
	fileCols = `id, name, size, content_type, uploader, created_at`

	qGetFile           = `SELECT ` + fileCols + ` FROM files WHERE id = $1`
	qIsFileUploader    = `SELECT EXISTS (SELECT 1 FROM file_uploaders WHERE file_id = $1 AND username = $2)`
	qFileConversations = `SELECT DISTINCT conversation FROM messages WHERE file_id = $1 ORDER BY conversation`
)

// PutFile records file metadata. If a file with f.ID is already stored its
// metadata is kept (same id, same content) and returned; either way
// f.Uploader is recorded as one of the file's uploaders, and the file
// counts as used at f.CreatedAt (see DeleteUnusedFiles). A zero CreatedAt
// means now.
//
// Call it before making the content durable in the blob store (see
// blob.Staged): once this row is committed the file garbage collector,
// which checks for the row after taking a blob away, puts the blob back.
func (s *Store) PutFile(ctx context.Context, f store.File) (store.File, error) {
	if err := s.check(ctx); err != nil {
		return store.File{}, err
	}
	if f.ID == "" || f.Uploader == "" {
		return store.File{}, fmt.Errorf("postgres: file needs ID and Uploader")
	}
	if f.CreatedAt.IsZero() {
		f.CreatedAt = time.Now()
	}
	var stored store.File
	err := s.withTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO files (`+fileCols+`, touched_at) VALUES ($1, $2, $3, $4, $5, $6, $6)
			ON CONFLICT (id) DO UPDATE SET touched_at = greatest(files.touched_at, excluded.touched_at)`,
			f.ID, f.Name, f.Size, f.ContentType, f.Uploader, nanos(f.CreatedAt)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO file_uploaders (file_id, username, created_at) VALUES ($1, $2, $3)
			ON CONFLICT (file_id, username) DO NOTHING`, f.ID, f.Uploader, nanos(f.CreatedAt)); err != nil {
			return err
		}
		var err error
		stored, err = scanFile(tx.QueryRow(ctx, qGetFile, f.ID))
		return err
	})
	return stored, err
}

func scanFile(row pgx.Row) (store.File, error) {
	var f store.File
	var created int64
	err := row.Scan(&f.ID, &f.Name, &f.Size, &f.ContentType, &f.Uploader, &created)
	f.CreatedAt = fromNanos(created)
	return f, err
}

// GetFile returns a file's metadata; store.ErrNotFound if none.
func (s *Store) GetFile(ctx context.Context, id string) (store.File, error) {
	if err := s.check(ctx); err != nil {
		return store.File{}, err
	}
	f, err := scanFile(s.db.QueryRow(ctx, qGetFile, id))
	if err != nil {
		return store.File{}, s.mapErr(err)
	}
	return f, nil
}

// IsFileUploader reports whether username uploaded file id.
func (s *Store) IsFileUploader(ctx context.Context, id, username string) (bool, error) {
	if err := s.check(ctx); err != nil {
		return false, err
	}
	var ok bool
	err := s.db.QueryRow(ctx, qIsFileUploader, id, username).Scan(&ok)
	return ok, s.mapErr(err)
}

// FileConversations returns the distinct conversations holding a message
// that references the file, sorted (byte order). Messages removed by
// retention no longer count.
func (s *Store) FileConversations(ctx context.Context, fileID string) ([]string, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	return s.strings(ctx, qFileConversations, fileID)
}
