package postgres

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/parleychat/parley/server/internal/store/storetest"
)

// TestStore runs the store suite (every behaviour the stores share)
// against the test server, each check in a schema of its own; the
// concurrency checks run two nodes on one schema.
func TestStore(t *testing.T) {
	t.Parallel()
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	storetest.Run(t, storetest.Backend{
		NewDB: func(t *testing.T) string { return newSchema(t) },
		NewDBAt: func(t *testing.T, version int) string {
			schema := newSchema(t)
			migrateTo(t, schema, version)
			return schema
		},
		Open: func(t *testing.T, schema string, o storetest.Options) (storetest.Store, error) {
			s, err := Open(context.Background(), testConfig(schema, Config{Sealer: o.Sealer, MaxBatch: o.MaxBatch}))
			if err != nil {
				return nil, err
			}
			t.Cleanup(func() { s.Close() })
			return s, nil
		},
		Exec: func(t *testing.T, schema, q string) {
			t.Helper()
			if _, err := rawConn(t, schema).Exec(context.Background(), q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		},
		QueryRow: func(t *testing.T, schema, q string, dest ...any) {
			t.Helper()
			if err := rawConn(t, schema).QueryRow(context.Background(), q).Scan(dest...); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		},
		Stall: func(t *testing.T, _ storetest.Store, schema, conversation string) func() {
			return stallWriter(t, schema, conversation)
		},
		Queue: func(s storetest.Store) storetest.Queue {
			st := s.(*Store)
			return storetest.Queue{Taken: st.q.Taken(), Queued: st.q.Queued(), Batches: st.batches.Load(), Closing: st.closed.Load()}
		},
		SetDeleteChunk:   func(s storetest.Store, n int) { s.(*Store).deleteChunk = n },
		Migrations:       len(ms),
		MaxExistingFiles: maxExistingFiles,
		MaxDirectLimit:   MaxDirectLimit,
		Nodes:            2,
	})
}

// migrateTo migrates schema only up to version, as an older binary would
// have left it.
func migrateTo(t testing.TB, schema string, version int) {
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
}
