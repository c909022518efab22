package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/store/storeutil"
)

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
	if u.Username == "" || !storeutil.ValidRole(u.Role) {
		return fmt.Errorf("postgres: bad user: username %q role %q", u.Username, u.Role)
	}
	if u.CreatedAt.IsZero() {
		u.CreatedAt = time.Now()
	}
	_, err := s.db.Exec(ctx, `INSERT INTO users (username, password_hash, role, active, created_at, last_seen_at)
		VALUES ($1, $2, $3, $4, $5, $6)`,
		u.Username, u.PasswordHash, u.Role, u.Active, nanos(u.CreatedAt), nanos(u.LastSeenAt))
	return s.mapErr(err)
}

// GetUser returns a user; store.ErrNotFound if there is none.
func (s *Store) GetUser(ctx context.Context, username string) (store.User, error) {
	if err := s.check(ctx); err != nil {
		return store.User{}, err
	}
	u, err := storeutil.ScanUser(s.db.QueryRow(ctx, `SELECT username, password_hash, role, active, created_at, last_seen_at
		FROM users WHERE username = $1`, username))
	return u, s.mapErr(err)
}

// SetUserActive enables or disables a user; store.ErrNotFound if none.
func (s *Store) SetUserActive(ctx context.Context, username string, active bool) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	return s.affected(s.db.Exec(ctx, `UPDATE users SET active = $1 WHERE username = $2`, active, username))
}

// SetUserRole changes a user's role (one of the store.Role constants);
// store.ErrNotFound if there is no such user.
func (s *Store) SetUserRole(ctx context.Context, username, role string) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if !storeutil.ValidRole(role) {
		return fmt.Errorf("postgres: bad role %q", role)
	}
	return s.affected(s.db.Exec(ctx, `UPDATE users SET role = $1 WHERE username = $2`, role, username))
}

// TouchLastSeen records when the user's last session closed;
// store.ErrNotFound if there is no such user.
func (s *Store) TouchLastSeen(ctx context.Context, username string, t time.Time) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	return s.affected(s.db.Exec(ctx, `UPDATE users SET last_seen_at = $1 WHERE username = $2`, nanos(t), username))
}

// CountUsers returns the number of users.
func (s *Store) CountUsers(ctx context.Context) (int64, error) {
	return s.count(ctx, "SELECT count(*) FROM users")
}

// CreateRefreshToken stores a refresh token hash, starting a new family
// when t.Family is empty (a login). store.ErrNotFound if the user does not
// exist, store.ErrExists if the hash is already stored.
func (s *Store) CreateRefreshToken(ctx context.Context, t store.RefreshToken) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if t.Hash == "" || t.Username == "" {
		return fmt.Errorf("postgres: refresh token needs Hash and Username")
	}
	if t.Family == "" {
		t.Family = store.NewRefreshFamily()
	}
	_, err := s.db.Exec(ctx, `INSERT INTO refresh_tokens (hash, username, expires_at, created_at, family)
		VALUES ($1, $2, $3, $4, $5)`, t.Hash, t.Username, nanos(t.ExpiresAt), time.Now().UnixNano(), t.Family)
	return s.mapErr(err)
}

// RotateRefreshToken atomically spends the token oldHash and stores next
// in its place, in the same family, returning the owner. The old token must
// exist, be unrevoked and expire after now; otherwise nothing is stored and
// an error is returned, so a rotated token can never be used twice, not
// even by two processes at once (the second waits on the row's lock, then
// finds it rotated):
//   - store.ErrRefreshTokenReused if it was already rotated and has not
//     expired. That is a replay, so every unrevoked token of its family is
//     revoked too (committed before returning), and the owner is returned
//     with the error for the caller's log. Two concurrent rotations of one
//     token are the same thing: one wins, and the other then revokes the
//     winner's new token.
//   - store.ErrNotFound if it is unknown, expired, or revoked otherwise
//     (logout, or its family's revocation).
//
// next.Username may be empty (it takes the owner); if set it must be the
// owner. next.Family is ignored.
func (s *Store) RotateRefreshToken(ctx context.Context, oldHash string, next store.RefreshToken, now time.Time) (string, error) {
	if err := s.check(ctx); err != nil {
		return "", err
	}
	if next.Hash == "" {
		return "", fmt.Errorf("postgres: refresh token needs Hash")
	}
	var username string
	var reused error
	err := s.withTx(ctx, func(tx pgx.Tx) error {
		var err error
		username, reused, err = storeutil.Rotate(ctx, refreshTx{tx}, oldHash, next, now)
		return err
	})
	if err != nil {
		return "", err
	}
	if reused != nil {
		return username, reused
	}
	return username, nil
}

// refreshTx is the SQL of storeutil.Rotate. Under READ COMMITTED a
// rotation that waited on the row's lock sees the winner's commit.
type refreshTx struct{ tx pgx.Tx }

func (r refreshTx) Spend(ctx context.Context, hash string, now int64) (username, family string, ok bool, err error) {
	// One conditional UPDATE both checks and spends the old token.
	err = r.tx.QueryRow(ctx, `UPDATE refresh_tokens SET revoked_at = $1, revoke_reason = $3
		WHERE hash = $2 AND revoked_at = 0 AND expires_at > $1 RETURNING username, family`,
		now, hash, storeutil.RevokedRotated).Scan(&username, &family)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", false, nil
	}
	return username, family, err == nil, err
}

func (r refreshTx) Lookup(ctx context.Context, hash string) (username, family, reason string, expires int64, err error) {
	err = r.tx.QueryRow(ctx, `SELECT username, family, revoke_reason, expires_at FROM refresh_tokens WHERE hash = $1`,
		hash).Scan(&username, &family, &reason, &expires)
	return // pgx.ErrNoRows maps to store.ErrNotFound
}

func (r refreshTx) RevokeFamily(ctx context.Context, family, reason string, now int64) (int64, error) {
	tag, err := r.tx.Exec(ctx, `UPDATE refresh_tokens SET revoked_at = $1, revoke_reason = $2
		WHERE family = $3 AND revoked_at = 0`, now, reason, family)
	return tag.RowsAffected(), err
}

func (r refreshTx) Insert(ctx context.Context, t store.RefreshToken, family string, now int64) error {
	_, err := r.tx.Exec(ctx, `INSERT INTO refresh_tokens (hash, username, expires_at, created_at, family)
		VALUES ($1, $2, $3, $4, $5)`, t.Hash, t.Username, nanos(t.ExpiresAt), now, family)
	return err
}

// RevokeRefreshTokenFamily revokes the token hash and every other token of
// its family: the logout of one device, whose tokens are one family, and
// only that device (the user's other logins are other families). It
// accepts any token of the family, even one already rotated, so a client
// holding a stale token still ends its chain. Revoking a revoked family
// succeeds; store.ErrNotFound if the hash is unknown.
func (s *Store) RevokeRefreshTokenFamily(ctx context.Context, hash string) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	return s.withTx(ctx, func(tx pgx.Tx) error {
		var family string
		if err := tx.QueryRow(ctx, `SELECT family FROM refresh_tokens WHERE hash = $1`, hash).Scan(&family); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE refresh_tokens SET revoked_at = $1, revoke_reason = $2
			WHERE family = $3 AND revoked_at = 0`, time.Now().UnixNano(), storeutil.RevokedLogout, family)
		return err
	})
}

// DeleteExpiredRefreshTokens removes tokens (revoked or not) that expired
// at or before now and returns how many. Until then revoked tokens are
// kept, which lets RotateRefreshToken tell a replayed token (reuse) from
// an unknown one. Deleting an expired token cannot hide reuse: an expired
// token is refused anyway, and the rest of its family are separate rows
// that expire on their own.
func (s *Store) DeleteExpiredRefreshTokens(ctx context.Context, now time.Time) (int64, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	// Unprepared, planned afresh each time (see qDeleteBefore).
	tag, err := s.db.Exec(ctx, `DELETE FROM refresh_tokens WHERE expires_at <= $1`, pgx.QueryExecModeExec, nanos(now))
	if err != nil {
		return 0, s.mapErr(err)
	}
	return tag.RowsAffected(), nil
}
