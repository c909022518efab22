package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"
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
