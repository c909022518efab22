package storeutil

import (
	"context"
	"fmt"
	"time"

	"github.com/parleychat/parley/server/internal/store"
)

// Why a refresh token was revoked (refresh_tokens.revoke_reason).
const (
	RevokedRotated = "rotated" // spent by RotateRefreshToken: presenting it again is reuse
	RevokedLogout  = "logout"  // RevokeRefreshTokenFamily, SetUserPassword
	RevokedReuse   = "reuse"   // its family was revoked because one of its tokens was reused
)

// RefreshTx is the SQL of refresh-token rotation, run by a store inside
// one write transaction. Times are Nanos.
type RefreshTx interface {
	// Spend revokes the token hash as RevokedRotated if it is unrevoked
	// and expires after now, returning its owner and family; ok is false
	// (with a nil error) when no row qualified.
	Spend(ctx context.Context, hash string, now int64) (username, family string, ok bool, err error)
	// Lookup reads the token hash whatever its state; the store's
	// not-found error when it is unknown.
	Lookup(ctx context.Context, hash string) (username, family, reason string, expires int64, err error)
	// RevokeFamily revokes every unrevoked token of family with reason,
	// returning how many.
	RevokeFamily(ctx context.Context, family, reason string, now int64) (int64, error)
	// Insert stores t (its Username set to the owner) in family, created
	// at now.
	Insert(ctx context.Context, t store.RefreshToken, family string, now int64) error
}

// Rotate is RotateRefreshToken's logic on tx (see the stores' doc): spend
// oldHash and store next in its family, returning the owner. When oldHash
// cannot be spent it tells reuse from the rest: a token that was rotated
// and has not expired is a replay, so its family is revoked and the owner
// comes back with reused set to a store.ErrRefreshTokenReused error; the
// caller must then commit (the revocation must stick) and return reused.
// Anything else is store.ErrNotFound as err. Under READ COMMITTED each
// statement sees what committed before it began, so a rotation that won a
// race is seen by Lookup, and so is the token it stored, which is revoked.
func Rotate(ctx context.Context, tx RefreshTx, oldHash string, next store.RefreshToken, now time.Time) (username string, reused, err error) {
	at := Nanos(now)
	username, family, ok, err := tx.Spend(ctx, oldHash, at)
	if err != nil {
		return "", nil, err
	}
	if !ok {
		return detectReuse(ctx, tx, oldHash, at)
	}
	if next.Username != "" && next.Username != username {
		return "", nil, fmt.Errorf("rotating %s's refresh token to user %q", username, next.Username)
	}
	next.Username = username
	return username, nil, tx.Insert(ctx, next, family, at)
}

func detectReuse(ctx context.Context, tx RefreshTx, hash string, now int64) (username string, reused, err error) {
	username, family, reason, expires, err := tx.Lookup(ctx, hash)
	if err != nil {
		return "", nil, err
	}
	if reason != RevokedRotated || expires <= now {
		return "", nil, store.ErrNotFound
	}
	n, err := tx.RevokeFamily(ctx, family, RevokedReuse, now)
	if err != nil {
		return "", nil, err
	}
	return username, fmt.Errorf("%w: family %s, %d tokens revoked", store.ErrRefreshTokenReused, family[:min(8, len(family))], n), nil
}
