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
