// Package testenv finds the services the tests run against (this machine's
// PostgreSQL and NATS, or the ones PARLEY_TEST_POSTGRES_URL and
// PARLEY_TEST_NATS_URL name) and gives each test a place of its own on
// them: a fresh PostgreSQL schema, dropped when the test ends, and NATS
// subject prefixes no other test uses. It is for tests only.
//
// Its functions are safe for concurrent use.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

// PostgresURL is the test PostgreSQL (trust authentication, database test).
func PostgresURL() string {
	if u := os.Getenv("PARLEY_TEST_POSTGRES_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// NATSURL is the test NATS server.
func NATSURL() string {
	if u := os.Getenv("PARLEY_TEST_NATS_URL"); u != "" {
		return u
	}
	return "nats://127.0.0.1:4222"
}

// Unique returns prefix followed by 12 random hex digits.
func Unique(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// PostgresSchema makes a fresh schema (named prefix + random) on the test
// PostgreSQL, drops it when tb ends, and returns a URL whose search_path
// points at it.
func PostgresSchema(tb testing.TB, prefix string) string {
	tb.Helper()
	base := PostgresURL()
	schema := Unique(prefix)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		tb.Fatalf("PostgreSQL (set PARLEY_TEST_POSTGRES_URL): %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if c, err := pgx.Connect(context.Background(), base); err == nil {
			c.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
			c.Close(context.Background())
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		tb.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
