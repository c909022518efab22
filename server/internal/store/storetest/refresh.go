package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/server/internal/store"
)

// Refresh is what the refresh-token checks use of a store.
type Refresh interface {
	CreateUser(ctx context.Context, u store.User) error
	CreateRefreshToken(ctx context.Context, t store.RefreshToken) error
	RotateRefreshToken(ctx context.Context, oldHash string, next store.RefreshToken, now time.Time) (string, error)
	RevokeRefreshTokenFamily(ctx context.Context, hash string) error
	DeleteExpiredRefreshTokens(ctx context.Context, now time.Time) (int64, error)
}

func mustUser(t testing.TB, s Refresh, name string) {
	t.Helper()
	if err := s.CreateUser(context.Background(), store.User{Username: name, PasswordHash: "h", Active: true}); err != nil {
		t.Fatal(err)
	}
}

func mustToken(t testing.TB, s Refresh, hash, user string, expires time.Time) {
	t.Helper()
	if err := s.CreateRefreshToken(context.Background(), store.RefreshToken{Hash: hash, Username: user, ExpiresAt: expires}); err != nil {
		t.Fatal(err)
	}
}

// RefreshTokens checks creating, rotating, revoking and expiring refresh
// tokens on an empty store.
func RefreshTokens(t *testing.T, s Refresh) {
	t.Helper()
	ctx := context.Background()
	mustUser(t, s, "alice")
	now := time.Now()
	later := now.Add(time.Hour)

	if err := s.CreateRefreshToken(ctx, store.RefreshToken{Hash: "x", Username: "nobody", ExpiresAt: later}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("token for unknown user: %v, want ErrNotFound", err)
	}
	mustToken(t, s, "t1", "alice", later)
	if err := s.CreateRefreshToken(ctx, store.RefreshToken{Hash: "t1", Username: "alice", ExpiresAt: later}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate hash: %v, want ErrExists", err)
	}
	if err := s.CreateRefreshToken(ctx, store.RefreshToken{Hash: "t9"}); err == nil {
		t.Fatal("token without a user accepted")
	}
	user, err := s.RotateRefreshToken(ctx, "t1", store.RefreshToken{Hash: "t2", ExpiresAt: later}, now)
	if err != nil || user != "alice" {
		t.Fatalf("rotate = %q, %v", user, err)
	}
	if _, err := s.RotateRefreshToken(ctx, "t2", store.RefreshToken{Hash: "t3", Username: "mallory", ExpiresAt: later}, now); err == nil {
		t.Fatal("rotation to another user succeeded")
	}
	if _, err := s.RotateRefreshToken(ctx, "t2", store.RefreshToken{Hash: "t2", ExpiresAt: later}, now); !errors.Is(err, store.ErrExists) {
		t.Fatalf("rotating to a stored hash: %v, want ErrExists", err)
	}
	if _, err := s.RotateRefreshToken(ctx, "t2", store.RefreshToken{Hash: "t3", Username: "alice", ExpiresAt: later}, now); err != nil {
		t.Fatalf("rotating the current token (after failed attempts): %v", err)
	}
	// Expired: valid until "later", presented after it.
	if _, err := s.RotateRefreshToken(ctx, "t3", store.RefreshToken{Hash: "t4", ExpiresAt: later}, later); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("expired token: %v, want ErrNotFound", err)
	}
	if _, err := s.RotateRefreshToken(ctx, "unknown", store.RefreshToken{Hash: "t4", ExpiresAt: later}, now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown token: %v, want ErrNotFound", err)
	}
	// Logout with a stale token of the chain ends the whole chain.
	if err := s.RevokeRefreshTokenFamily(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeRefreshTokenFamily(ctx, "t3"); err != nil {
		t.Fatalf("revoking twice: %v", err)
	}
	if err := s.RevokeRefreshTokenFamily(ctx, "unknown"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoke unknown: %v", err)
	}
	if _, err := s.RotateRefreshToken(ctx, "t3", store.RefreshToken{Hash: "t4", ExpiresAt: later}, now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("token revoked by logout: %v, want ErrNotFound", err)
	}
	if n, err := s.DeleteExpiredRefreshTokens(ctx, now); err != nil || n != 0 {
		t.Fatalf("DeleteExpiredRefreshTokens before expiry = %d, %v", n, err)
	}
	if n, err := s.DeleteExpiredRefreshTokens(ctx, later.Add(time.Second)); err != nil || n != 3 {
		t.Fatalf("DeleteExpiredRefreshTokens = %d, %v; want 3", n, err)
	}
}

// RefreshTokenReuse replays a rotated token on an empty store: its family
// is revoked, other logins (the same user's and another user's) are not.
// countHashes counts the stored tokens whose hash starts with prefix,
// straight from the database.
func RefreshTokenReuse(t *testing.T, s Refresh, countHashes func(prefix string) int) {
	t.Helper()
	ctx := context.Background()
	mustUser(t, s, "alice")
	mustUser(t, s, "bob")
	now := time.Now()
	later := now.Add(time.Hour)
	rotate := func(old, next string, at time.Time) (string, error) {
		return s.RotateRefreshToken(ctx, old, store.RefreshToken{Hash: next, ExpiresAt: later}, at)
	}

	mustToken(t, s, "a1", "alice", later) // alice's phone
	mustToken(t, s, "b1", "alice", later) // alice's laptop: another family
	mustToken(t, s, "c1", "bob", later)
	for _, r := range [][2]string{{"a1", "a2"}, {"a2", "a3"}, {"b1", "b2"}} {
		if _, err := rotate(r[0], r[1], now); err != nil {
			t.Fatalf("rotate %s: %v", r[0], err)
		}
	}

	user, err := rotate("a1", "x1", now)
	if !errors.Is(err, store.ErrRefreshTokenReused) || user != "alice" {
		t.Fatalf("replaying a1 = %q, %v; want alice, ErrRefreshTokenReused", user, err)
	}
	if _, err := rotate("a3", "x2", now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a3 after its family was revoked: %v, want ErrNotFound", err)
	}
	if _, err := rotate("a2", "x3", now); !errors.Is(err, store.ErrRefreshTokenReused) {
		t.Fatalf("replaying a2: %v, want ErrRefreshTokenReused", err)
	}
	if stored := countHashes("x"); stored != 0 {
		t.Fatalf("%d tokens stored by refused rotations", stored)
	}
	// The other families live on.
	if _, err := rotate("b2", "b3", now); err != nil {
		t.Fatalf("alice's other login: %v", err)
	}
	if _, err := rotate("c1", "c2", now); err != nil {
		t.Fatalf("bob's login: %v", err)
	}

	// A rotated token presented after it expired is refused as expired:
	// reuse is only what could have worked, and the family stays.
	soon := now.Add(time.Minute)
	if err := s.CreateRefreshToken(ctx, store.RefreshToken{Hash: "d1", Username: "bob", ExpiresAt: soon}); err != nil {
		t.Fatal(err)
	}
	if _, err := rotate("d1", "d2", now); err != nil {
		t.Fatal(err)
	}
	if _, err := rotate("d1", "x4", soon); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("expired rotated token: %v, want ErrNotFound", err)
	}
	if _, err := rotate("d2", "d3", soon); err != nil {
		t.Fatalf("family of an expired replay: %v", err)
	}
	// Deleting expired tokens keeps reuse detectable for the rest.
	if n, err := s.DeleteExpiredRefreshTokens(ctx, soon); err != nil || n != 1 {
		t.Fatalf("DeleteExpiredRefreshTokens = %d, %v; want 1 (d1)", n, err)
	}
	if _, err := rotate("d2", "x5", soon); !errors.Is(err, store.ErrRefreshTokenReused) {
		t.Fatalf("replaying d2 after the sweep: %v, want ErrRefreshTokenReused", err)
	}
	if _, err := rotate("d3", "x6", soon); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("d3 after its family was revoked: %v, want ErrNotFound", err)
	}
}

// RefreshTokenReuseIn is RefreshTokenReuse on a new database of b,
// counting stored tokens straight from it.
func RefreshTokenReuseIn(t *testing.T, b Backend) {
	t.Helper()
	s, db := b.open(t, Options{})
	RefreshTokenReuse(t, s, func(prefix string) int {
		var n int
		b.QueryRow(t, db, "SELECT count(*) FROM refresh_tokens WHERE hash LIKE "+quote(prefix+"%"), &n)
		return n
	})
}

// RotateRace spends one token from many goroutines, over b.Nodes stores on
// one database: exactly one rotation wins; every other is reuse, which
// revokes the winner's new token too.
func RotateRace(t *testing.T, b Backend) {
	t.Helper()
	ctx := context.Background()
	s1, db := b.open(t, Options{})
	nodes := []Store{s1}
	for len(nodes) < b.Nodes {
		nodes = append(nodes, b.mustOpen(t, db, Options{}))
	}
	mustUser(t, s1, "alice")
	now := time.Now()
	mustToken(t, s1, "t0", "alice", now.Add(time.Hour))
	mustToken(t, s1, "other", "alice", now.Add(time.Hour))
	const n = 16
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		s := nodes[i%len(nodes)]
		wg.Go(func() {
			_, errs[i] = s.RotateRefreshToken(ctx, "t0", store.RefreshToken{Hash: fmt.Sprint("next", i), ExpiresAt: now.Add(time.Hour)}, now)
		})
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("rotations %d and %d of one token both succeeded", winner, i)
			}
			winner = i
		case !errors.Is(err, store.ErrRefreshTokenReused):
			t.Errorf("losing rotation: %v, want ErrRefreshTokenReused", err)
		}
	}
	if winner < 0 {
		t.Fatal("no rotation succeeded")
	}
	if _, err := s1.RotateRefreshToken(ctx, fmt.Sprint("next", winner), store.RefreshToken{Hash: "after"}, now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the winner's token after the race: %v, want ErrNotFound", err)
	}
	if _, err := nodes[len(nodes)-1].RotateRefreshToken(ctx, "other", store.RefreshToken{Hash: "other2"}, now); err != nil {
		t.Fatalf("another login after the race: %v", err)
	}
}

// UpgradeRefreshTokens opens a database written before refresh token
// families existed (schema version 1): every old token becomes a family of
// its own, old revocations are refused without being taken for reuse, and
// new rotations form families.
func UpgradeRefreshTokens(t *testing.T, b Backend) {
	t.Helper()
	ctx := context.Background()
	now := time.Now()
	later := now.Add(time.Hour)
	db := b.NewDBAt(t, 1)
	for _, q := range []string{
		`INSERT INTO users (username, password_hash, role, active, created_at) VALUES ('alice', 'h', 'user', true, 1)`,
		fmt.Sprintf(`INSERT INTO refresh_tokens (hash, username, expires_at, created_at) VALUES ('live1', 'alice', %d, 1)`, later.UnixNano()),
		fmt.Sprintf(`INSERT INTO refresh_tokens (hash, username, expires_at, created_at) VALUES ('live2', 'alice', %d, 1)`, later.UnixNano()),
		fmt.Sprintf(`INSERT INTO refresh_tokens (hash, username, expires_at, revoked_at, created_at) VALUES ('spent', 'alice', %d, 5, 1)`, later.UnixNano()),
	} {
		b.Exec(t, db, q)
	}

	s := b.mustOpen(t, db, Options{})
	if n := schemaVersions(t, b, db); n != b.Migrations {
		t.Fatalf("%d schema_version rows after the upgrade, want %d", n, b.Migrations)
	}
	var families, tokens int
	b.QueryRow(t, db, "SELECT count(DISTINCT family), count(*) FROM refresh_tokens WHERE length(family) = 32", &families, &tokens)
	if families != 3 || tokens != 3 {
		t.Fatalf("after the upgrade: %d families over %d tokens with an id, want 3 and 3", families, tokens)
	}
	if _, err := s.RotateRefreshToken(ctx, "spent", store.RefreshToken{Hash: "x"}, now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("token revoked before the upgrade: %v, want ErrNotFound", err)
	}
	if _, err := s.RotateRefreshToken(ctx, "live1", store.RefreshToken{Hash: "next1", ExpiresAt: later}, now); err != nil {
		t.Fatalf("token from before the upgrade: %v", err)
	}
	if _, err := s.RotateRefreshToken(ctx, "live1", store.RefreshToken{Hash: "x"}, now); !errors.Is(err, store.ErrRefreshTokenReused) {
		t.Fatalf("replay after the upgrade: %v, want ErrRefreshTokenReused", err)
	}
	if _, err := s.RotateRefreshToken(ctx, "next1", store.RefreshToken{Hash: "x"}, now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the replayed token's successor: %v, want ErrNotFound", err)
	}
	if _, err := s.RotateRefreshToken(ctx, "live2", store.RefreshToken{Hash: "next2", ExpiresAt: later}, now); err != nil {
		t.Fatalf("another old token after a reuse: %v", err)
	}
}
