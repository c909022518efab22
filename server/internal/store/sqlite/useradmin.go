package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/store/storeutil"
)

// ListUsers returns every user, by username, for `parleyd user list`.
func (s *Store) ListUsers(ctx context.Context) ([]store.User, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	rows, err := s.r.QueryContext(ctx, `SELECT username, password_hash, role, active, created_at, last_seen_at
		FROM users ORDER BY username`)
	if err != nil {
		return nil, s.mapErr(err)
	}
	defer rows.Close()
	var out []store.User
	for rows.Next() {
		u, err := storeutil.ScanUser(rows)
		if err != nil {
			return nil, s.mapErr(err)
		}
		out = append(out, u)
	}
	return out, s.mapErr(rows.Err())
}

// SetUserPassword replaces a user's password hash and revokes every
// refresh token of the user, so a stolen login ends with the old
// password (recorded as a logout: not reuse); store.ErrNotFound if there
// is no such user.
func (s *Store) SetUserPassword(ctx context.Context, username, passwordHash string) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	return s.withTx(ctx, func(tx *sql.Tx) error {
		if err := s.affected(tx.ExecContext(ctx, `UPDATE users SET password_hash = ? WHERE username = ?`, passwordHash, username)); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE refresh_tokens SET revoked_at = ?, revoke_reason = ?
			WHERE username = ? AND revoked_at = 0`, time.Now().UnixNano(), storeutil.RevokedLogout, username)
		return err
	})
}

// UpdateUser writes change to username's row if check approves the row as
// this same transaction reads it: a write transaction holds SQLite's one
// writer from BEGIN IMMEDIATE on, so no other change to the row (an
// admin's promotion of it) can commit between the check and the write. A
// moderator racing that promotion either acts first, on a user, or is
// judged by the promoted role. store.ErrNotFound if there is no such user
// (check is not called); check's error as it is.
func (s *Store) UpdateUser(ctx context.Context, username string, check store.UserCheck, change store.UserChange) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if change.Role != "" && !storeutil.ValidRole(change.Role) {
		return fmt.Errorf("sqlite: bad role %q", change.Role)
	}
	var refused error
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		u, err := storeutil.ScanUser(tx.QueryRowContext(ctx, `SELECT username, password_hash, role, active, created_at, last_seen_at
			FROM users WHERE username = ?`, username))
		if err != nil {
			return err
		}
		if refused = check(u); refused != nil {
			return refused
		}
		return s.affected(tx.ExecContext(ctx, `UPDATE users SET active = COALESCE(?, active), role = COALESCE(?, role) WHERE username = ?`,
			change.Active, nullIfEmpty(change.Role), username))
	})
	if refused != nil {
		return refused
	}
	return err
}
