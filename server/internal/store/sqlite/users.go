package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/parleychat/parley/server/internal/store"
)

func validRole(role string) bool {
	switch role {
	case store.RoleUser, store.RoleModerator, store.RoleAdmin:
		return true
	}
	return false
}

// CreateUser stores a new user; store.ErrExists if the username is taken.
// An empty Role means store.RoleUser; a zero CreatedAt means now.
// Usernames are compared exactly (byte for byte); normalising them is the
// caller's job.
func (s *Store) CreateUser(ctx context.Context, u store.User) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if u.Role == "" {
		u.Role = store.RoleUser
	}
	if u.Username == "" || !validRole(u.Role) {
		return fmt.Errorf("sqlite: bad user: username %q role %q", u.Username, u.Role)
	}
	if u.CreatedAt.IsZero() {
		u.CreatedAt = time.Now()
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO users (username, password_hash, role, active, created_at, last_seen_at)
		VALUES (?, ?, ?, ?, ?, ?)`,
		u.Username, u.PasswordHash, u.Role, u.Active, nanos(u.CreatedAt), nanos(u.LastSeenAt))
	return s.mapErr(err)
}

// GetUser returns a user; store.ErrNotFound if there is none.
func (s *Store) GetUser(ctx context.Context, username string) (store.User, error) {
	if err := s.check(ctx); err != nil {
		return store.User{}, err
	}
	var u store.User
	var created, seen int64
	err := s.rst.user.QueryRowContext(ctx, username).
		Scan(&u.Username, &u.PasswordHash, &u.Role, &u.Active, &created, &seen)
	if err != nil {
		return store.User{}, s.mapErr(err)
	}
	u.CreatedAt, u.LastSeenAt = fromNanos(created), fromNanos(seen)
	return u, nil
}

// SetUserActive enables or disables a user; store.ErrNotFound if none.
func (s *Store) SetUserActive(ctx context.Context, username string, active bool) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	return s.affected(s.w.ExecContext(ctx, `UPDATE users SET active = ? WHERE username = ?`, active, username))
}

// SetUserRole changes a user's role (one of the store.Role constants);
// store.ErrNotFound if there is no such user.
func (s *Store) SetUserRole(ctx context.Context, username, role string) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if !validRole(role) {
		return fmt.Errorf("sqlite: bad role %q", role)
	}
	return s.affected(s.w.ExecContext(ctx, `UPDATE users SET role = ? WHERE username = ?`, role, username))
}

// TouchLastSeen records when the user's last session closed;
// store.ErrNotFound if there is no such user.
func (s *Store) TouchLastSeen(ctx context.Context, username string, t time.Time) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	return s.affected(s.wst.lastSeen.ExecContext(ctx, nanos(t), username))
}

// CountUsers returns the number of users.
func (s *Store) CountUsers(ctx context.Context) (int64, error) {
	return s.count(ctx, "SELECT count(*) FROM users")
}

// CreateRefreshToken stores a refresh token hash. store.ErrNotFound if the
// user does not exist, store.ErrExists if the hash is already stored.
func (s *Store) CreateRefreshToken(ctx context.Context, t store.RefreshToken) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if t.Hash == "" || t.Username == "" {
		return fmt.Errorf("sqlite: refresh token needs Hash and Username")
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO refresh_tokens (hash, username, expires_at, created_at)
		VALUES (?, ?, ?, ?)`, t.Hash, t.Username, nanos(t.ExpiresAt), time.Now().UnixNano())
	return s.mapErr(err)
}

// RotateRefreshToken atomically spends the token oldHash and stores next
// in its place, returning the owner. The old token must exist, be
// unrevoked and expire after now; otherwise nothing changes and
// store.ErrNotFound is returned, so a rotated token can never be used
// twice. next.Username may be empty (it takes the owner); if set it must
// be the owner.
func (s *Store) RotateRefreshToken(ctx context.Context, oldHash string, next store.RefreshToken, now time.Time) (string, error) {
	if err := s.check(ctx); err != nil {
		return "", err
	}
	if next.Hash == "" {
		return "", fmt.Errorf("sqlite: refresh token needs Hash")
	}
	var username string
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		// One conditional UPDATE both checks and spends the old token.
		err := tx.QueryRowContext(ctx, `UPDATE refresh_tokens SET revoked_at = ?1
			WHERE hash = ?2 AND revoked_at = 0 AND expires_at > ?1 RETURNING username`,
			nanos(now), oldHash).Scan(&username)
		if err != nil {
			return err // sql.ErrNoRows maps to store.ErrNotFound
		}
		if next.Username != "" && next.Username != username {
			return fmt.Errorf("sqlite: rotating %s's refresh token to user %q", username, next.Username)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO refresh_tokens (hash, username, expires_at, created_at)
			VALUES (?, ?, ?, ?)`, next.Hash, username, nanos(next.ExpiresAt), nanos(now))
		return err
	})
	if err != nil {
		return "", err
	}
	return username, nil
}

// RevokeRefreshToken revokes a token. Revoking a revoked token succeeds;
// store.ErrNotFound if the hash is unknown.
func (s *Store) RevokeRefreshToken(ctx context.Context, hash string) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	return s.affected(s.w.ExecContext(ctx, `UPDATE refresh_tokens
		SET revoked_at = CASE WHEN revoked_at = 0 THEN ? ELSE revoked_at END WHERE hash = ?`,
		time.Now().UnixNano(), hash))
}

// DeleteExpiredRefreshTokens removes tokens (revoked or not) that expired
// at or before now and returns how many. Until then revoked tokens are
// kept, which lets RotateRefreshToken refuse a replayed token.
func (s *Store) DeleteExpiredRefreshTokens(ctx context.Context, now time.Time) (int64, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	res, err := s.w.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE expires_at <= ?`, nanos(now))
	if err != nil {
		return 0, s.mapErr(err)
	}
	n, err := res.RowsAffected()
	return n, s.mapErr(err)
}

const (
	qGetUser       = `SELECT username, password_hash, role, active, created_at, last_seen_at FROM users WHERE username = ?`
	qTouchLastSeen = `UPDATE users SET last_seen_at = ? WHERE username = ?`
)
