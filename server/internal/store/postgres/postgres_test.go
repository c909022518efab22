package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/store/sqlite"
	"github.com/parleychat/parley/server/internal/store/storetest"
)

// The tests run against a real PostgreSQL server, each in a schema of its
// own that it drops when done. An unreachable server fails the package:
// CI has one.
const defaultTestURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

func testURL() string {
	if u := os.Getenv("PARLEY_TEST_POSTGRES_URL"); u != "" {
		return u
	}
	return defaultTestURL
}

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	conn, err := pgx.Connect(ctx, testURL())
	if err == nil {
		err = conn.Ping(ctx)
		conn.Close(ctx)
	}
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: the postgres store tests need a PostgreSQL server where they may create and drop schemas.\n"+
			"Connecting to %s failed: %v\n"+
			"Start one, or point PARLEY_TEST_POSTGRES_URL at one.\n", redact(testURL()), err)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m)
}

// redact hides a URL's password for messages.
func redact(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		return u.Redacted()
	}
	return s
}

// withParam adds a connection parameter to a URL or keyword/value string.
func withParam(conn, key, value string) string {
	if u, err := url.Parse(conn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return conn + " " + key + "=" + value
}

func adminConn(t testing.TB) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), testURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// dbSlots caps how many tests use the server at once, whatever -parallel
// is: each opens up to ten connections, and max_connections is often 100.
var dbSlots = make(chan struct{}, 6)

// newSchema names a fresh schema (Open creates it) and drops it when the
// test is done, after the stores opened later have closed.
func newSchema(t testing.TB) string {
	t.Helper()
	dbSlots <- struct{}{}
	t.Cleanup(func() { <-dbSlots })
	b := make([]byte, 8)
	rand.Read(b)
	schema := "parley_test_" + hex.EncodeToString(b)
	t.Cleanup(func() {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, testURL())
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

// openIn opens a Store on schema. Its connections carry the schema as
// application_name, for waitLockWait.
func openIn(t testing.TB, schema string, cfg Config) *Store {
	t.Helper()
	s, err := Open(context.Background(), testConfig(schema, cfg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func testConfig(schema string, cfg Config) Config {
	cfg.URL = withParam(testURL(), "application_name", schema)
	cfg.Schema = schema
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 4 // many tests run at once against one server
	}
	return cfg
}

func newStore(t testing.TB, cfg Config) (*Store, string) {
	t.Helper()
	schema := newSchema(t)
	return openIn(t, schema, cfg), schema
}

// rawConn is a connection of the test's own (another node, or psql) to
// schema.
func rawConn(t testing.TB, schema string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), withParam(testURL(), "search_path", schema))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func mustUser(t testing.TB, s *Store, name string) {
	t.Helper()
	if err := s.CreateUser(context.Background(), store.User{Username: name, PasswordHash: "h", Active: true}); err != nil {
		t.Fatal(err)
	}
}

// queued counts requests waiting in the append queue (not yet taken).
func (s *Store) queued() int { return s.q.Queued() }

// stallWriter makes any append to conversation wait, as another node's
// transaction would: it holds the conversation counter's row lock until
// the release it returns is called.
func stallWriter(t testing.TB, schema, conversation string) func() {
	t.Helper()
	ctx := context.Background()
	tx, err := rawConn(t, schema).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO conversations (key, last_seq) VALUES ($1, 0)
		ON CONFLICT (key) DO UPDATE SET last_seq = conversations.last_seq`, conversation); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release := func() { once.Do(func() { tx.Rollback(ctx) }) }
	t.Cleanup(release)
	return release
}

// waitLockWait waits until n of the connections of stores opened on
// schema are waiting for a lock (a stalled writer is).
func waitLockWait(t testing.TB, schema string, n int) {
	t.Helper()
	conn := adminConn(t)
	storetest.WaitFor(t, fmt.Sprintf("%d writers to wait on a lock", n), func() bool {
		var waiting int
		err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE application_name = $1 AND wait_event_type = 'Lock'`, schema).Scan(&waiting)
		return err == nil && waiting == n
	})
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	url := testURL()
	for _, cfg := range []Config{
		{},
		{URL: "postgres://%zz"},
		{URL: url, MaxBatch: -1},
		{URL: url, MaxConns: 1},
		{URL: url, MaxConns: -3},
		{URL: url, Schema: strings.Repeat("s", 64)},
		{URL: url, Schema: "a\x00b"},
	} {
		if err := cfg.Validate(); err == nil {
			t.Errorf("Validate(%+v) succeeded", cfg)
		}
		if _, err := Open(context.Background(), cfg); err == nil {
			t.Errorf("Open(%+v) succeeded", cfg)
		}
	}
	if err := (Config{URL: url, Schema: strings.Repeat("s", 63), MaxConns: 2}).Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
}

func TestOpenUnreachable(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if s, err := Open(ctx, Config{URL: "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2"}); err == nil {
		s.Close()
		t.Fatal("Open succeeded without a server")
	}
}

// TestTwoNodes runs two Stores on one database, as two parleyd nodes
// would, appending at once to the same conversations (in opposite orders,
// which would deadlock without ordered locking), then both sending every
// client message id (as a client retrying against the other node would).
func TestTwoNodes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	schema := newSchema(t)
	// Open both at once: their migrations must not collide.
	var nodes [2]*Store
	var wg sync.WaitGroup
	opened := make(chan error, 2)
	for i := range nodes {
		wg.Go(func() {
			s, err := Open(ctx, testConfig(schema, Config{}))
			nodes[i] = s
			opened <- err
		})
	}
	wg.Wait()
	close(opened)
	for i, s := range nodes {
		if s != nil {
			t.Cleanup(func() { nodes[i].Close() })
		}
	}
	for err := range opened {
		if err != nil {
			t.Fatal(err)
		}
	}

	convs := []string{store.RoomKey("shared"), store.RoomKey("other")}
	const writers, perWriter = 16, 25 // per node
	errs := make(chan error, 2*writers)
	for n, s := range nodes {
		for w := range writers {
			wg.Go(func() {
				for i := range perWriter {
					c := convs[(n+i)%2] // node 0 goes shared, other, ...; node 1 the other way
					if _, dup, err := s.AppendMessage(ctx, store.Message{Conversation: c, Sender: fmt.Sprint("n", n, "w", w)}); err != nil || dup {
						errs <- fmt.Errorf("node %d writer %d: dup=%v err=%v", n, w, dup, err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, c := range convs {
		if n := storetest.CheckContiguous(t, nodes[0], c); n != writers*perWriter {
			t.Fatalf("%s: %d messages, want %d", c, n, writers*perWriter)
		}
	}

	// Both nodes get every (sender, client id) at once: each is stored once.
	type pair struct{ a, b storetest.AppendOutcome }
	results := make([][perWriter]pair, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				m := store.Message{Conversation: convs[i%2], Sender: fmt.Sprint("retrier", w), ClientMsgID: fmt.Sprint(i)}
				a, b := storetest.AppendAsync(ctx, nodes[0], m), storetest.AppendAsync(ctx, nodes[1], m)
				results[w][i] = pair{<-a, <-b}
			}
		})
	}
	wg.Wait()
	for w := range results {
		for i, p := range results[w] {
			if p.a.Err != nil || p.b.Err != nil || p.a.Dup == p.b.Dup || p.a.Msg != p.b.Msg {
				t.Fatalf("retrier %d message %d sent to both nodes:\n%+v\n%+v", w, i, p.a, p.b)
			}
		}
	}
	total := 0
	for _, c := range convs {
		total += storetest.CheckContiguous(t, nodes[1], c)
	}
	if want := 3 * writers * perWriter; total != want {
		t.Fatalf("%d messages, want %d", total, want)
	}
	t.Logf("node 0: %d appends in %d batches, %d retries; node 1: %d in %d, %d retries",
		nodes[0].appended.Load(), nodes[0].batches.Load(), nodes[0].retries.Load(),
		nodes[1].appended.Load(), nodes[1].batches.Load(), nodes[1].retries.Load())
}

// TestDedupRaceAcrossNodes makes one node's batch lose the race for a
// client message id deterministically: it has looked the id up and is
// waiting for a conversation lock when the other node commits the same id.
// The batch is retried and answers with the other node's message.
func TestDedupRaceAcrossNodes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s1, schema := newStore(t, Config{})
	s2 := openIn(t, schema, Config{})
	release := stallWriter(t, schema, store.RoomKey("a"))
	m := store.Message{Conversation: store.RoomKey("a"), Sender: "alice", ClientMsgID: "c1", Text: "hello"}
	slow := storetest.AppendAsync(ctx, s1, m)
	waitLockWait(t, schema, 1) // s1 looked c1 up, found nothing, and waits on the lock

	m.Conversation = store.RoomKey("b") // the same message, as a client retrying elsewhere
	won := storetest.MustAppend(t, s2, m)
	release()
	r := <-slow
	if r.Err != nil || !r.Dup || r.Msg != won {
		t.Fatalf("losing append: %+v, want duplicate of %+v", r, won)
	}
	if n := s1.retries.Load(); n != 1 {
		t.Fatalf("%d retries, want 1", n)
	}
	if last, _ := s1.LastSeq(ctx, store.RoomKey("a")); last != 0 {
		t.Fatalf("LastSeq of the lost conversation = %d, want 0 (the failed bump rolled back)", last)
	}
	if got := storetest.MustAppend(t, s1, store.Message{Conversation: store.RoomKey("a"), Sender: "alice"}); got.Seq != 1 {
		t.Fatalf("next seq = %d, want 1", got.Seq)
	}
}

// TestBatchKeepsQueueOrder: within one batch, seqs follow the order the
// appends were queued in, across conversations and whatever the senders.
func TestBatchKeepsQueueOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, schema := newStore(t, Config{})
	a, b := store.RoomKey("a"), store.RoomKey("b")
	release := stallWriter(t, schema, a)
	plug := storetest.AppendAsync(ctx, s, store.Message{Conversation: a, Sender: "plug"})
	storetest.WaitFor(t, "the plug to be taken", func() bool { return s.q.Taken() == 1 })
	type want struct {
		conv string
		seq  int64
	}
	wants := []want{{b, 1}, {a, 2}, {b, 2}, {a, 3}, {a, 4}, {b, 3}}
	var outs []<-chan storetest.AppendOutcome
	for i, w := range wants {
		// Senders and client ids sort against the queue order.
		m := store.Message{Conversation: w.conv, Sender: fmt.Sprint("u", 9-i), ClientMsgID: fmt.Sprint(9 - i)}
		outs = append(outs, storetest.AppendAsync(ctx, s, m))
		storetest.WaitFor(t, "the message to queue", func() bool { return s.queued() == i+1 })
	}
	release()
	if r := <-plug; r.Err != nil || r.Msg.Seq != 1 {
		t.Fatalf("plug: %+v", r)
	}
	for i, w := range wants {
		if r := <-outs[i]; r.Err != nil || r.Msg.Conversation != w.conv || r.Msg.Seq != w.seq {
			t.Errorf("message %d: %+v, want seq %d in %s", i, r, w.seq, w.conv)
		}
	}
	if n := s.batches.Load(); n != 2 {
		t.Fatalf("%d batches, want 2", n)
	}
}

// TestBatchIsolation: when PostgreSQL refuses one message of a batch, the
// others are still stored, with contiguous seqs.
func TestBatchIsolation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, schema := newStore(t, Config{})
	// Something the store does not check for, as a stand-in for any value
	// the server might refuse.
	if _, err := rawConn(t, schema).Exec(ctx, `ALTER TABLE messages ADD CONSTRAINT no_poison CHECK (file_name <> 'poison')`); err != nil {
		t.Fatal(err)
	}
	room := store.RoomKey("r")
	release := stallWriter(t, schema, room)
	plug := storetest.AppendAsync(ctx, s, store.Message{Conversation: room, Sender: "plug"})
	storetest.WaitFor(t, "the plug to be taken", func() bool { return s.q.Taken() == 1 })
	var outs []<-chan storetest.AppendOutcome
	for i, name := range []string{"ok", "poison", "ok"} {
		outs = append(outs, storetest.AppendAsync(ctx, s, store.Message{Conversation: room, Sender: fmt.Sprint("u", i), FileName: name}))
		storetest.WaitFor(t, "the message to queue", func() bool { return s.queued() == i+1 })
	}
	release()
	if r := <-plug; r.Err != nil || r.Msg.Seq != 1 {
		t.Fatalf("plug: %+v", r)
	}
	r0, r1, r2 := <-outs[0], <-outs[1], <-outs[2]
	if r0.Err != nil || r2.Err != nil || r0.Msg.Seq != 2 || r2.Msg.Seq != 3 {
		t.Fatalf("good messages: %+v / %+v", r0, r2)
	}
	if r1.Err == nil || !strings.Contains(r1.Err.Error(), "no_poison") {
		t.Fatalf("poison message: %+v", r1)
	}
	storetest.CheckContiguous(t, s, room)
}

// TestOpenConcurrently starts several nodes on a new schema at once: one
// migrates, the others wait for its advisory lock and find the work done.
func TestOpenConcurrently(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	schema := newSchema(t)
	const n = 4
	stores := make(chan *Store, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			s, err := Open(ctx, testConfig(schema, Config{MaxConns: 2}))
			if err != nil {
				errs <- err
				return
			}
			stores <- s
		})
	}
	wg.Wait()
	close(stores)
	close(errs)
	for s := range stores {
		storetest.MustAppend(t, s, store.Message{Conversation: "r:x", Sender: "a"})
		s.Close()
	}
	for err := range errs {
		t.Error(err)
	}
	var versions int
	rawConn(t, schema).QueryRow(ctx, "SELECT count(*) FROM schema_version").Scan(&versions)
	if ms, _ := migrations(); versions != len(ms) {
		t.Fatalf("%d schema_version rows, want %d (each migration applied once)", versions, len(ms))
	}
}

// TestSearchPathFromURL: with Config.Schema empty the store lives in the
// URL's search_path, which must exist.
func TestSearchPathFromURL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	first, schema := newStore(t, Config{}) // creates the schema
	storetest.MustAppend(t, first, store.Message{Conversation: "r:x", Sender: "a"})
	first.Close()

	cfg := Config{URL: withParam(testURL(), "search_path", schema), MaxConns: 2}
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if last, err := s.LastSeq(ctx, "r:x"); err != nil || last != 1 {
		t.Fatalf("LastSeq through the URL's search_path = %d, %v", last, err)
	}

	cfg.URL = withParam(testURL(), "search_path", schema+"_missing")
	if s, err := Open(ctx, cfg); err == nil || !strings.Contains(err.Error(), "no schema") {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Open with a search_path naming no schema: %v", err)
	}
}

// TestQueryPlans checks that every lookup the store makes is served by an
// index, without a table scan or a sort, in two ways:
//   - "index": with sequential scans and sorts discouraged, as on tables
//     this small the planner would rightly prefer them, but with them off
//     it still picks them when no index serves;
//   - "generic": the hot paths' generic plans on the empty tables, as a
//     connection caches them for a prepared statement (pgx prepares every
//     query) when the store is new and keeps them as the tables grow.
//     They must not scan a table (a join's generic plan, for one, was a
//     hash join over a sequential scan); sorting a few rows found through
//     an index (a user's rooms) is fine.
func TestQueryPlans(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, schema := newStore(t, Config{})
	conn := rawConn(t, schema)
	strs := []string{"a", "b"}
	queries := []struct {
		q       string
		args    []any
		generic bool // a hot path: check its generic plan too
	}{
		{qDedup, []any{strs, strs}, true},
		{qTakenIDs, []any{strs}, true},
		{qHistoryBackward, []any{"r:x", 10, 5}, true},
		{qHistoryForward, []any{"r:x", 1, 10, 5}, true},
		{qLastSeq, []any{"r:x"}, true},
		{qDirectSince, []any{"a", 0, 10}, true},
		{qDeleteBefore, []any{0, 10}, false}, // never prepared
		{qMemberships, []any{"a"}, true},
		{qFileConversations, []any{"f"}, true},
		{qIsFileUploader, []any{"f", "a"}, true},
		{qGetFile, []any{"f"}, true},
		{qTouchFile, []any{"f", 0}, true},
		{qDeleteUnusedFiles, []any{0, 10}, false}, // never prepared
		{qExistingFiles, []any{strs}, true},
		{qInsertMsgs, []any{strs, []int64{0, 0}, strs, strs, strs, strs, strs, [][]byte{nil, nil},
			strs, strs, []int64{0, 0}, strs, []int64{0, 0}}, true},
		{`SELECT username FROM users WHERE username = $1`, []any{"a"}, true},
		{`UPDATE refresh_tokens SET revoked_at = $1 WHERE hash = $2 AND revoked_at = 0 AND expires_at > $1`, []any{0, "h"}, true},
		{`DELETE FROM refresh_tokens WHERE expires_at <= $1`, []any{0}, false},
		{`UPDATE refresh_tokens SET revoked_at = $1, revoke_reason = $2 WHERE family = $3 AND revoked_at = 0`, []any{0, "r", "f"}, true},
		{`SELECT username, family, revoke_reason, expires_at FROM refresh_tokens WHERE hash = $1`, []any{"h"}, true},
		{`DELETE FROM refresh_tokens WHERE username = $1`, []any{"a"}, true}, // the cascade from users
		{`DELETE FROM memberships WHERE username = $1 AND room = $2`, []any{"a", "r"}, true},
	}
	check := func(mode, q string, rows pgx.Rows, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %s: %v", mode, q, err)
		}
		plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("%s: %s: %v", mode, q, err)
		}
		for _, line := range plan {
			node := strings.TrimLeft(line, " ->")
			if !strings.Contains(node, "(cost=") {
				continue // a detail line of the node above
			}
			sort := strings.HasPrefix(node, "Sort ") || strings.HasPrefix(node, "Incremental Sort ")
			if strings.HasPrefix(node, "Seq Scan ") || (sort && mode == "index") {
				t.Errorf("%s plan of\n%s\nis\n%s\nstep %q is a scan or a sort", mode, q, strings.Join(plan, "\n"), node)
			}
		}
	}

	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for _, set := range []string{"SET LOCAL enable_seqscan = off", "SET LOCAL enable_sort = off"} {
		if _, err := tx.Exec(ctx, set); err != nil {
			t.Fatal(err)
		}
	}
	for _, qq := range queries {
		rows, err := tx.Query(ctx, "EXPLAIN "+qq.q, qq.args...)
		check("index", qq.q, rows, err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	if _, err := conn.Exec(ctx, "SET plan_cache_mode = force_generic_plan"); err != nil {
		t.Fatal(err)
	}
	for i, qq := range queries {
		if !qq.generic {
			continue
		}
		name := fmt.Sprint("plan", i)
		if _, err := conn.Exec(ctx, "PREPARE "+name+" AS "+qq.q); err != nil {
			t.Fatalf("%s: %v", qq.q, err)
		}
		params := make([]string, len(qq.args))
		for j := range params {
			params[j] = fmt.Sprint("$", j+1)
		}
		rows, err := conn.Query(ctx, "EXPLAIN EXECUTE "+name+"("+strings.Join(params, ", ")+")",
			append([]any{pgx.QueryExecModeSimpleProtocol}, qq.args...)...)
		check("generic", qq.q, rows, err)
	}
}

// TestAppendRefusesBadText: PostgreSQL text holds neither NUL bytes nor
// invalid UTF-8, so such a message fails (alone) instead of being stored
// mangled. (SQLite stores them as given.)
func TestAppendRefusesBadText(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t, Config{})
	room := store.RoomKey("r")
	for _, bad := range []store.Message{
		{Conversation: room, Sender: "a", Text: "nul\x00byte"},
		{Conversation: room, Sender: "a", FileName: "bad\xffutf8"},
	} {
		if _, _, err := s.AppendMessage(ctx, bad); err == nil {
			t.Errorf("AppendMessage(%+v) succeeded", bad)
		}
	}
	if m := storetest.MustAppend(t, s, store.Message{Conversation: room, Sender: "a"}); m.Seq != 1 {
		t.Fatalf("seq after refused appends = %d, want 1 (no gap)", m.Seq)
	}
}

// TestSameMethodsAsSQLite keeps the two stores interchangeable: every
// method of the sqlite Store exists here with the same signature, and
// there are no others.
func TestSameMethodsAsSQLite(t *testing.T) {
	t.Parallel()
	pg, lite := reflect.TypeFor[*Store](), reflect.TypeFor[*sqlite.Store]()
	if pg.NumMethod() != lite.NumMethod() {
		t.Errorf("postgres.Store has %d methods, sqlite.Store %d", pg.NumMethod(), lite.NumMethod())
	}
	for i := range lite.NumMethod() {
		want := lite.Method(i)
		got, ok := pg.MethodByName(want.Name)
		if !ok {
			t.Errorf("missing method %s", want.Name)
			continue
		}
		// Compare without the receiver.
		gt, wt := got.Type, want.Type
		same := gt.NumIn() == wt.NumIn() && gt.NumOut() == wt.NumOut() && gt.IsVariadic() == wt.IsVariadic()
		for j := 1; same && j < gt.NumIn(); j++ {
			same = gt.In(j) == wt.In(j)
		}
		for j := 0; same && j < gt.NumOut(); j++ {
			same = gt.Out(j) == wt.Out(j)
		}
		if !same {
			t.Errorf("%s: %v, sqlite has %v", want.Name, gt, wt)
		}
	}
	for _, c := range [][2]int{
		{DefaultHistoryLimit, sqlite.DefaultHistoryLimit},
		{MaxHistoryLimit, sqlite.MaxHistoryLimit},
		{MaxDirectLimit, sqlite.MaxDirectLimit},
		{DefaultMaxBatch, sqlite.DefaultMaxBatch},
	} {
		if c[0] != c[1] {
			t.Errorf("limit %d here, %d in sqlite", c[0], c[1])
		}
	}
}
