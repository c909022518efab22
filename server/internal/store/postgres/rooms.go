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
