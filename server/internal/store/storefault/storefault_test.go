package storefault_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	_ "modernc.org/sqlite"

	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/store/storefault"
)

// refusedAddr is a loopback port nothing listens on.
func refusedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestKindOf classifies real failures of both drivers and the store's own
// errors: what a retry may fix is a storage failure; a request's own
// failure or a caller's cancellation is not.
func TestKindOf(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, refused := pgx.Connect(ctx, "postgres://postgres@"+refusedAddr(t)+"/test?sslmode=disable&connect_timeout=5")
	if refused == nil {
		t.Fatal("connecting to a closed port succeeded")
	}
	db, err := sql.Open("sqlite", "file:"+t.TempDir()+"/x.db")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, syntax := db.Exec("SELEC 1") // SQLITE_ERROR: the request's own fault
	if syntax == nil {
		t.Fatal("bad SQL accepted")
	}
	dctx, cancel := context.WithTimeout(ctx, time.Nanosecond)
	defer cancel()
	<-dctx.Done()

	for _, tc := range []struct {
		name string
		err  error
		want storefault.Kind
	}{
		{"connection refused", refused, storefault.KindConnection},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, storefault.KindConnection},
		{"connection failure", &pgconn.PgError{Code: "08006"}, storefault.KindConnection},
		{"disk full (PostgreSQL)", fmt.Errorf("append: %w", &pgconn.PgError{Code: "53100"}), storefault.KindDiskFull},
		{"too many connections", &pgconn.PgError{Code: "53300"}, storefault.KindBusy},
		{"unique violation", &pgconn.PgError{Code: "23505"}, storefault.KindNone},
		{"deadline", dctx.Err(), storefault.KindTimeout},
		{"cancelled", context.Canceled, storefault.KindNone},
		{"closed", store.ErrClosed, storefault.KindClosed},
		{"not found", store.ErrNotFound, storefault.KindNone},
		{"bad SQL", syntax, storefault.KindNone},
		{"nil", nil, storefault.KindNone},
	} {
		if got := storefault.KindOf(tc.err); got != tc.want {
			t.Errorf("%s: KindOf(%v) = %q, want %q", tc.name, tc.err, got, tc.want)
		}
		classified := storefault.Classify(tc.err)
		if got := errors.Is(classified, store.ErrUnavailable); got != (tc.want != storefault.KindNone) {
			t.Errorf("%s: Classify(%v) is ErrUnavailable = %v", tc.name, tc.err, got)
		}
		if tc.err != nil && !errors.Is(classified, tc.err) {
			t.Errorf("%s: Classify lost the cause", tc.name)
		}
	}
}
