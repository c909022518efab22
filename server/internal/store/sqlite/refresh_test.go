package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

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
	storetest.RefreshTokens(t, newStore(t, Config{}))
}

func TestRefreshTokenReuse(t *testing.T) {
	t.Parallel()
	s := newStore(t, Config{})
	storetest.RefreshTokenReuse(t, s, func(prefix string) int {
		var n int
		if err := s.r.QueryRow("SELECT count(*) FROM refresh_tokens WHERE hash LIKE ?", prefix+"%").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	})
}

// TestRotateRace rotates one token from two goroutines: exactly one wins,
// the other is reuse, which revokes the winner's new token too.
func TestRotateRace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t, Config{})
	mustUser(t, s, "alice")
	now := time.Now()
	mustToken(t, s, "t0", "alice", now.Add(time.Hour))
	mustToken(t, s, "other", "alice", now.Add(time.Hour))
	const n = 2
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
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
	if _, err := s.RotateRefreshToken(ctx, fmt.Sprint("next", winner), store.RefreshToken{Hash: "after"}, now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the winner's token after the race: %v, want ErrNotFound", err)
	}
	if _, err := s.RotateRefreshToken(ctx, "other", store.RefreshToken{Hash: "other2"}, now); err != nil {
		t.Fatalf("another login after the race: %v", err)
	}
}

// openVersion creates a database at path migrated only up to version, as
// an older binary would have left it, and returns a connection to it.
func openVersion(t testing.TB, path string, version int) *sql.DB {
	t.Helper()
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", dsn(path, url.Values{
		"_pragma": {"journal_mode(WAL)", "foreign_keys(1)"},
		"_txlock": {"immediate"},
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if v, _, err := applyMigrations(context.Background(), db, ms[:version]); err != nil || v != version {
		t.Fatalf("migrate to %d: %d, %v", version, v, err)
	}
	return db
}

// TestUpgradeRefreshTokens opens a database written before refresh token
// families existed: every old token becomes a family of its own, old
// revocations are refused without being taken for reuse, and new
// rotations form families.
func TestUpgradeRefreshTokens(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "parley.db")
	now := time.Now()
	later := now.Add(time.Hour)
	db := openVersion(t, path, 1)
	for _, q := range []string{
		`INSERT INTO users (username, password_hash, role, active, created_at) VALUES ('alice', 'h', 'user', 1, 1)`,
		fmt.Sprintf(`INSERT INTO refresh_tokens (hash, username, expires_at, created_at) VALUES ('live1', 'alice', %d, 1)`, later.UnixNano()),
		fmt.Sprintf(`INSERT INTO refresh_tokens (hash, username, expires_at, created_at) VALUES ('live2', 'alice', %d, 1)`, later.UnixNano()),
		fmt.Sprintf(`INSERT INTO refresh_tokens (hash, username, expires_at, revoked_at, created_at) VALUES ('spent', 'alice', %d, 5, 1)`, later.UnixNano()),
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	s := openAt(t, path, Config{})
	ms, _ := migrations()
	var versions, families, tokens int
	s.r.QueryRow("SELECT count(*) FROM schema_version").Scan(&versions)
	if versions != len(ms) {
		t.Fatalf("%d schema_version rows after the upgrade, want %d", versions, len(ms))
	}
	s.r.QueryRow("SELECT count(DISTINCT family), count(*) FROM refresh_tokens WHERE length(family) = 32").Scan(&families, &tokens)
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
