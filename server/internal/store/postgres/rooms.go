package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parleychat/parley/server/internal/store"
)

// AddMembership makes username a member of room. It is idempotent;
// store.ErrNotFound if the user does not exist.
func (s *Store) AddMembership(ctx context.Context, username, room string) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if username == "" || room == "" {
		return fmt.Errorf("postgres: membership needs username and room")
	}
	_, err := s.db.Exec(ctx, `INSERT INTO memberships (username, room, created_at) VALUES ($1, $2, $3)
		ON CONFLICT (username, room) DO NOTHING`, username, room, time.Now().UnixNano())
	return s.mapErr(err)
}

// RemoveMembership ends a membership; store.ErrNotFound if there was none.
func (s *Store) RemoveMembership(ctx context.Context, username, room string) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	return s.affected(s.db.Exec(ctx, `DELETE FROM memberships WHERE username = $1 AND room = $2`, username, room))
}

const qMemberships = `SELECT room FROM memberships WHERE username = $1 ORDER BY room`

// Memberships returns the rooms username belongs to, sorted (byte order).
func (s *Store) Memberships(ctx context.Context, username string) ([]string, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	return s.strings(ctx, qMemberships, username)
}

func (s *Store) strings(ctx context.Context, q string, args ...any) ([]string, error) {
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, s.mapErr(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return out, s.mapErr(err)
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

// qRoomSummaries counts every room's stored members and marks those of $1,
// in one pass over memberships, and adds the room $2 every user is in with
// the number of users.
const qRoomSummaries = `
SELECT room, count(*)::int, bool_or(username = $1) FROM memberships WHERE room <> $2::text GROUP BY room
UNION ALL SELECT $2::text COLLATE "C", (SELECT count(*)::int FROM users), true WHERE $2::text <> ''
ORDER BY 1`

// RoomSummaries lists every room, sorted by name (byte order), with its
// stored member count, marking those username is a member of. A room
// exists while it has a stored member. everyone names the room every user
// is in without a stored membership (e.g. "general"; empty for none): it is
// always listed, counting every user, joined.
func (s *Store) RoomSummaries(ctx context.Context, username, everyone string) ([]store.RoomSummary, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	rows, err := s.db.Query(ctx, qRoomSummaries, username, everyone)
	if err != nil {
		return nil, s.mapErr(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.RoomSummary, error) {
		var r store.RoomSummary
		err := row.Scan(&r.Name, &r.Members, &r.Joined)
		return r, err
	})
	return out, s.mapErr(err)
}
