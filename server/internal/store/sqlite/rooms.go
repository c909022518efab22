package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/parleychat/parley/server/internal/store"
)

// AddMembership makes username a member of room. It is idempotent;
// store.ErrNotFound if the user does not exist.
func (s *Store) AddMembership(ctx context.Context, username, room string) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if username == "" || room == "" {
		return fmt.Errorf("sqlite: membership needs username and room")
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO memberships (username, room, created_at) VALUES (?, ?, ?)
		ON CONFLICT (username, room) DO NOTHING`, username, room, time.Now().UnixNano())
	return s.mapErr(err)
}

// RemoveMembership ends a membership; store.ErrNotFound if there was none.
func (s *Store) RemoveMembership(ctx context.Context, username, room string) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	return s.affected(s.w.ExecContext(ctx, `DELETE FROM memberships WHERE username = ? AND room = ?`, username, room))
}

// Memberships returns the rooms username belongs to, sorted.
func (s *Store) Memberships(ctx context.Context, username string) ([]string, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	rows, err := s.rst.memberships.QueryContext(ctx, username)
	return s.strings(rows, err)
}

// qMemberships lists a user's rooms.
const qMemberships = `SELECT room FROM memberships WHERE username = ? ORDER BY room`

func (s *Store) strings(rows *sql.Rows, err error) ([]string, error) {
	if err != nil {
		return nil, s.mapErr(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, s.mapErr(err)
		}
		out = append(out, v)
	}
	return out, s.mapErr(rows.Err())
}

const fileCols = `id, name, size, content_type, uploader, created_at`

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
		return store.File{}, fmt.Errorf("sqlite: file needs ID and Uploader")
	}
	if f.CreatedAt.IsZero() {
		f.CreatedAt = time.Now()
	}
	var stored store.File
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO files (`+fileCols+`, touched_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
			ON CONFLICT (id) DO UPDATE SET touched_at = max(touched_at, excluded.touched_at)`,
			f.ID, f.Name, f.Size, f.ContentType, f.Uploader, nanos(f.CreatedAt)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO file_uploaders (file_id, username, created_at) VALUES (?, ?, ?)
			ON CONFLICT (file_id, username) DO NOTHING`, f.ID, f.Uploader, nanos(f.CreatedAt)); err != nil {
			return err
		}
		var err error
		stored, err = scanFile(tx.QueryRowContext(ctx, `SELECT `+fileCols+` FROM files WHERE id = ?`, f.ID))
		return err
	})
	return stored, err
}

func scanFile(row scanner) (store.File, error) {
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
	f, err := scanFile(s.r.QueryRowContext(ctx, `SELECT `+fileCols+` FROM files WHERE id = ?`, id))
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

// qRoomSummaries counts every room's stored members and marks those of ?1,
// in one pass over memberships, and adds the room ?2 every user is in with
// the number of users.
const qRoomSummaries = `
SELECT room, count(*), max(username = ?1) FROM memberships WHERE room <> ?2 GROUP BY room
UNION ALL SELECT ?2, (SELECT count(*) FROM users), 1 WHERE ?2 <> ''
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
	rows, err := s.r.QueryContext(ctx, qRoomSummaries, username, everyone)
	if err != nil {
		return nil, s.mapErr(err)
	}
	defer rows.Close()
	var out []store.RoomSummary
	for rows.Next() {
		var r store.RoomSummary
		if err := rows.Scan(&r.Name, &r.Members, &r.Joined); err != nil {
			return nil, s.mapErr(err)
		}
		out = append(out, r)
	}
	return out, s.mapErr(rows.Err())
}
