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
	"github.com/parleychat/parley/server/internal/store/storetest"
)

func mustToken(t testing.TB, s *Store, hash, user string, expires time.Time) {
	t.Helper()
	if err := s.CreateRefreshToken(context.Background(), store.RefreshToken{Hash: hash, Username: user, ExpiresAt: expires}); err != nil {
		t.Fatal(err)
	}
}

func TestRefreshTokens(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, Config{})
	storetest.RefreshTokens(t, s)
}

func TestRefreshTokenReuse(t *testing.T) {
	t.Parallel()
	s, schema := newStore(t, Config{})
	storetest.RefreshTokenReuse(t, s, func(prefix string) int {
		var n int
		if err := rawConn(t, schema).QueryRow(context.Background(), "SELECT count(*) FROM refresh_tokens WHERE hash LIKE $1", prefix+"%").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	})
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
