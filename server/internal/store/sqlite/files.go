package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

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
	return `SELECT id FROM files WHERE id IN (?` + strings.Repeat(", ?", n-1) + `)`
}
