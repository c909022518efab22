package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/parleychat/parley/server/internal/store"
)

func mustToken(t testing.TB, s *Store, hash, user string, expires time.Time) {
	t.Helper()
	if err := s.CreateRefreshToken(context.Background(), store.RefreshToken{Hash: hash, Username: user, ExpiresAt: expires}); err != nil {
		t.Fatal(err)
	}
}

func TestRefreshTokens(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t, Config{})
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

// TestRefreshTokenReuse replays a rotated token: its family is revoked,
// other logins (the same user's and another user's) are not.
func TestRefreshTokenReuse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, schema := newStore(t, Config{})
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
	var stored int
	rawConn(t, schema).QueryRow(ctx, "SELECT count(*) FROM refresh_tokens WHERE hash LIKE 'x%'").Scan(&stored)
	if stored != 0 {
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

// TestRotateRace spends one token from many goroutines on two nodes:
// exactly one rotation wins; every other is reuse, which revokes the
// winner's new token too.
func TestRotateRace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s1, schema := newStore(t, Config{})
	s2 := openIn(t, schema, Config{})
	mustUser(t, s1, "alice")
	now := time.Now()
	mustToken(t, s1, "t0", "alice", now.Add(time.Hour))
	mustToken(t, s1, "other", "alice", now.Add(time.Hour))
	const n = 16
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		s := []*Store{s1, s2}[i%2]
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
	if _, err := s2.RotateRefreshToken(ctx, "other", store.RefreshToken{Hash: "other2"}, now); err != nil {
		t.Fatalf("another login after the race: %v", err)
	}
}

// openVersion creates schema migrated only up to version, as an older
// binary would have left it, and returns a connection to it.
func openVersion(t testing.TB, schema string, version int) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	pcfg, err := pgxpool.ParseConfig(testURL())
	if err != nil {
		t.Fatal(err)
	}
	pcfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{schema}.Sanitize()
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if res, err := applyMigrations(ctx, pool, schema, ms[:version]); err != nil || res.version != version {
		t.Fatalf("migrate to %d: %+v, %v", version, res, err)
	}
	return rawConn(t, schema)
}

// TestUpgradeRefreshTokens opens a database written before refresh token
// families existed: every old token becomes a family of its own, old
// revocations are refused without being taken for reuse, and new
// rotations form families.
func TestUpgradeRefreshTokens(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	schema := newSchema(t)
	now := time.Now()
	later := now.Add(time.Hour)
	db := openVersion(t, schema, 1)
	for _, q := range []string{
		`INSERT INTO users (username, password_hash, role, active, created_at) VALUES ('alice', 'h', 'user', true, 1)`,
		fmt.Sprintf(`INSERT INTO refresh_tokens (hash, username, expires_at, created_at) VALUES ('live1', 'alice', %d, 1)`, later.UnixNano()),
		fmt.Sprintf(`INSERT INTO refresh_tokens (hash, username, expires_at, created_at) VALUES ('live2', 'alice', %d, 1)`, later.UnixNano()),
		fmt.Sprintf(`INSERT INTO refresh_tokens (hash, username, expires_at, revoked_at, created_at) VALUES ('spent', 'alice', %d, 5, 1)`, later.UnixNano()),
	} {
		if _, err := db.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}

	s := openIn(t, schema, Config{})
	ms, _ := migrations()
	var versions, families, tokens int
	db.QueryRow(ctx, "SELECT count(*) FROM schema_version").Scan(&versions)
	if versions != len(ms) {
		t.Fatalf("%d schema_version rows after the upgrade, want %d", versions, len(ms))
	}
	db.QueryRow(ctx, "SELECT count(DISTINCT family), count(*) FROM refresh_tokens WHERE length(family) = 32").Scan(&families, &tokens)
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
