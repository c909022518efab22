package sqlite

import (
	"context"
	"database/sql"
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
