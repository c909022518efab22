package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/parleychat/parley/server/internal/sealer"
	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/store/sqlite"
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

func mustAppend(t testing.TB, s *Store, m store.Message) store.Message {
	t.Helper()
	got, dup, err := s.AppendMessage(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if dup {
		t.Fatalf("append %+v reported duplicate", m)
	}
	return got
}

func keyring(t testing.TB, active string, keys map[string][]byte) *sealer.Keyring {
	t.Helper()
	k, err := sealer.New(sealer.Config{Keys: keys, Active: active})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func randKey() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}

// waitFor polls cond until it holds or the test has waited too long.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
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
	waitFor(t, fmt.Sprintf("%d writers to wait on a lock", n), func() bool {
		var waiting int
		err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE application_name = $1 AND wait_event_type = 'Lock'`, schema).Scan(&waiting)
		return err == nil && waiting == n
	})
}

type appendOutcome struct {
	msg store.Message
	dup bool
	err error
}

// appendAsync starts an append and returns where its outcome will arrive.
func appendAsync(ctx context.Context, s *Store, m store.Message) <-chan appendOutcome {
	ch := make(chan appendOutcome, 1)
	go func() {
		msg, dup, err := s.AppendMessage(ctx, m)
		ch <- appendOutcome{msg, dup, err}
	}()
	return ch
}

// seqsOf pages backwards through a conversation, as a client scrolling up
// would, and returns every seq in order.
func seqsOf(t testing.TB, s *Store, conv string) []int64 {
	t.Helper()
	var seqs []int64
	for before := int64(0); ; {
		msgs, more, err := s.History(context.Background(), conv, store.HistoryQuery{BeforeSeq: before, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		page := make([]int64, 0, len(msgs))
		for _, m := range msgs {
			page = append(page, m.Seq)
		}
		seqs = append(page, seqs...)
		if !more {
			return seqs
		}
		before = msgs[0].Seq
	}
}

// checkContiguous fails unless seqs run 1, 2, ... n and LastSeq is n.
func checkContiguous(t testing.TB, s *Store, conv string, seqs []int64) {
	t.Helper()
	for i, seq := range seqs {
		if seq != int64(i+1) {
			t.Fatalf("%s: seq %d at position %d: gap or duplicate", conv, seq, i)
		}
	}
	if last, err := s.LastSeq(context.Background(), conv); err != nil || last != int64(len(seqs)) {
		t.Fatalf("%s: LastSeq %d (%v), %d messages", conv, last, err, len(seqs))
	}
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

func TestUsers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t, Config{})
	created := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	alice := store.User{Username: "alice", PasswordHash: "$argon2id$x", Role: store.RoleAdmin, Active: true, CreatedAt: created}
	if err := s.CreateUser(ctx, alice); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(ctx, alice); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate CreateUser: %v, want ErrExists", err)
	}
	if err := s.CreateUser(ctx, store.User{Username: "bob"}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []store.User{{}, {Username: "carol", Role: "root"}} {
		if err := s.CreateUser(ctx, bad); err == nil {
			t.Errorf("CreateUser(%+v) succeeded", bad)
		}
	}
	got, err := s.GetUser(ctx, "alice")
	if err != nil || got != alice {
		t.Fatalf("GetUser = %+v, %v; want %+v", got, err, alice)
	}
	bob, _ := s.GetUser(ctx, "bob")
	if bob.Role != store.RoleUser || bob.Active || bob.CreatedAt.IsZero() || !bob.LastSeenAt.IsZero() {
		t.Fatalf("defaults not applied: %+v", bob)
	}
	if _, err := s.GetUser(ctx, "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetUser(nobody) = %v", err)
	}
	if _, err := s.GetUser(ctx, "Alice"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetUser(Alice) = %v: usernames compare exactly", err)
	}

	seen := time.Date(2025, 1, 1, 0, 0, 0, 1, time.UTC)
	steps := []struct {
		name string
		do   func(user string) error
	}{
		{"SetUserActive", func(u string) error { return s.SetUserActive(ctx, u, false) }},
		{"SetUserRole", func(u string) error { return s.SetUserRole(ctx, u, store.RoleModerator) }},
		{"TouchLastSeen", func(u string) error { return s.TouchLastSeen(ctx, u, seen) }},
	}
	for _, st := range steps {
		if err := st.do("alice"); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if err := st.do("nobody"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("%s(nobody) = %v, want ErrNotFound", st.name, err)
		}
	}
	if err := s.SetUserRole(ctx, "alice", "root"); err == nil {
		t.Fatal("SetUserRole accepted an unknown role")
	}
	got, _ = s.GetUser(ctx, "alice")
	if got.Active || got.Role != store.RoleModerator || !got.LastSeenAt.Equal(seen) {
		t.Fatalf("after updates: %+v", got)
	}
	if n, err := s.CountUsers(ctx); err != nil || n != 2 {
		t.Fatalf("CountUsers = %d, %v", n, err)
	}
}

func TestAppendAssigns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t, Config{})
	room := store.RoomKey("general")
	before := time.Now().UTC()
	var prev store.Message
	for i := 1; i <= 5; i++ {
		m := mustAppend(t, s, store.Message{Conversation: room, Sender: "alice", Text: fmt.Sprint("hi ", i), Seq: 99})
		if m.Seq != int64(i) || len(m.ID) != 32 || m.ID <= prev.ID || m.SentAt.Before(before) || m.SentAt.Location() != time.UTC {
			t.Fatalf("message %d: %+v (previous id %s)", i, m, prev.ID)
		}
		prev = m
	}
	other := mustAppend(t, s, store.Message{Conversation: store.RoomKey("other"), Sender: "bob"})
	if other.Seq != 1 {
		t.Fatalf("second conversation starts at seq %d", other.Seq)
	}
	// Caller-chosen ID and SentAt are kept; a taken ID fails alone.
	sent := time.Date(2020, 2, 2, 2, 2, 2, 2, time.FixedZone("x", 3600))
	m := mustAppend(t, s, store.Message{ID: "custom", Conversation: room, Sender: "alice", SentAt: sent,
		FileID: "f1", FileName: "a.png", FileSize: 3, FileType: "image/png", Recipient: ""})
	if m.ID != "custom" || !m.SentAt.Equal(sent) || m.Seq != 6 {
		t.Fatalf("custom: %+v", m)
	}
	if _, _, err := s.AppendMessage(ctx, store.Message{ID: "custom", Conversation: room, Sender: "alice"}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("taken id: %v, want ErrExists", err)
	}
	if next := mustAppend(t, s, store.Message{Conversation: room, Sender: "alice"}); next.Seq != 7 {
		t.Fatalf("seq after a failed append = %d, want 7 (no gap)", next.Seq)
	}
	for _, bad := range []store.Message{
		{Sender: "a"},
		{Conversation: room},
		{Conversation: room, Sender: "a", Text: "nul\x00byte"},
		{Conversation: room, Sender: "a", FileName: "bad\xffutf8"},
	} {
		if _, _, err := s.AppendMessage(ctx, bad); err == nil {
			t.Errorf("AppendMessage(%+v) succeeded", bad)
		}
	}
	msgs, _, err := s.History(ctx, room, store.HistoryQuery{AfterSeq: store.After(5), BeforeSeq: 7})
	if err != nil || len(msgs) != 1 {
		t.Fatalf("History = %v, %v", msgs, err)
	}
	if got := msgs[0]; got != m {
		t.Fatalf("stored %+v\nread   %+v", m, got)
	}
	if n, err := s.CountMessages(ctx); err != nil || n != 8 {
		t.Fatalf("CountMessages = %d, %v", n, err)
	}
}

func TestHistory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t, Config{})
	room := store.RoomKey("r")
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 40 {
				s.AppendMessage(ctx, store.Message{Conversation: room, Sender: "a"})
			}
		})
	}
	wg.Wait()
	mustAppend(t, s, store.Message{Conversation: store.RoomKey("noise"), Sender: "a"})
	// 160 messages, seq 1..160.

	seqRange := func(from, to int64) []int64 {
		var r []int64
		for i := from; i <= to; i++ {
			r = append(r, i)
		}
		return r
	}
	tests := []struct {
		name    string
		conv    string
		q       store.HistoryQuery
		want    []int64
		hasMore bool
	}{
		{"latest", room, store.HistoryQuery{Limit: 3}, seqRange(158, 160), true},
		{"latest default limit", room, store.HistoryQuery{}, seqRange(111, 160), true},
		{"latest limit clamped to 100", room, store.HistoryQuery{Limit: 1000}, seqRange(61, 160), true},
		{"negative limit is 1", room, store.HistoryQuery{Limit: -5}, seqRange(160, 160), true},
		{"before", room, store.HistoryQuery{BeforeSeq: 8, Limit: 3}, seqRange(5, 7), true},
		{"before reaching start", room, store.HistoryQuery{BeforeSeq: 3, Limit: 3}, seqRange(1, 2), false},
		{"before exactly to start", room, store.HistoryQuery{BeforeSeq: 4, Limit: 3}, seqRange(1, 3), false},
		{"after", room, store.HistoryQuery{AfterSeq: store.After(2), Limit: 3}, seqRange(3, 5), true},
		{"after reaching end", room, store.HistoryQuery{AfterSeq: store.After(157), Limit: 10}, seqRange(158, 160), false},
		{"after the end", room, store.HistoryQuery{AfterSeq: store.After(160)}, nil, false},
		{"between", room, store.HistoryQuery{AfterSeq: store.After(10), BeforeSeq: 20, Limit: 5}, seqRange(11, 15), true},
		{"between all", room, store.HistoryQuery{AfterSeq: store.After(10), BeforeSeq: 20, Limit: 50}, seqRange(11, 19), false},
		{"all fit", room, store.HistoryQuery{BeforeSeq: 51, Limit: 100}, seqRange(1, 50), false},
		{"unknown conversation", store.RoomKey("none"), store.HistoryQuery{}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			msgs, hasMore, err := s.History(ctx, tt.conv, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			var got []int64
			for _, m := range msgs {
				got = append(got, m.Seq)
			}
			if !slices.Equal(got, tt.want) || hasMore != tt.hasMore {
				t.Fatalf("got %v hasMore=%v, want %v hasMore=%v", got, hasMore, tt.want, tt.hasMore)
			}
		})
	}
	if seq, err := s.LastSeq(ctx, room); err != nil || seq != 160 {
		t.Fatalf("LastSeq = %d, %v", seq, err)
	}
	if seq, err := s.LastSeq(ctx, store.RoomKey("none")); err != nil || seq != 0 {
		t.Fatalf("LastSeq(none) = %d, %v", seq, err)
	}
}

func TestSeqContiguousUnderConcurrency(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t, Config{})
	convs := []string{store.RoomKey("a"), store.RoomKey("b"), store.DirectKey("x", "y")}
	const writers, perWriter = 50, 20
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				m := store.Message{Conversation: convs[(w+i)%len(convs)], Sender: fmt.Sprint("user", w),
					ClientMsgID: fmt.Sprint(i)}
				if _, dup, err := s.AppendMessage(ctx, m); err != nil || dup {
					errs <- fmt.Errorf("writer %d message %d: dup=%v err=%v", w, i, dup, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := 0
	for _, c := range convs {
		seqs := seqsOf(t, s, c)
		checkContiguous(t, s, c, seqs)
		total += len(seqs)
	}
	if total != writers*perWriter {
		t.Fatalf("%d messages stored, want %d", total, writers*perWriter)
	}
	t.Logf("%d appends in %d batches", s.appended.Load(), s.batches.Load())
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
		checkContiguous(t, nodes[0], c, seqsOf(t, nodes[0], c))
		if seqs := seqsOf(t, nodes[1], c); len(seqs) != writers*perWriter {
			t.Fatalf("%s: %d messages, want %d", c, len(seqs), writers*perWriter)
		}
	}

	// Both nodes get every (sender, client id) at once: each is stored once.
	type pair struct{ a, b appendOutcome }
	results := make([][perWriter]pair, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				m := store.Message{Conversation: convs[i%2], Sender: fmt.Sprint("retrier", w), ClientMsgID: fmt.Sprint(i)}
				a, b := appendAsync(ctx, nodes[0], m), appendAsync(ctx, nodes[1], m)
				results[w][i] = pair{<-a, <-b}
			}
		})
	}
	wg.Wait()
	for w := range results {
		for i, p := range results[w] {
			if p.a.err != nil || p.b.err != nil || p.a.dup == p.b.dup || p.a.msg != p.b.msg {
				t.Fatalf("retrier %d message %d sent to both nodes:\n%+v\n%+v", w, i, p.a, p.b)
			}
		}
	}
	total := 0
	for _, c := range convs {
		seqs := seqsOf(t, nodes[1], c)
		checkContiguous(t, nodes[1], c, seqs)
		total += len(seqs)
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
	slow := appendAsync(ctx, s1, m)
	waitLockWait(t, schema, 1) // s1 looked c1 up, found nothing, and waits on the lock

	m.Conversation = store.RoomKey("b") // the same message, as a client retrying elsewhere
	won := mustAppend(t, s2, m)
	release()
	r := <-slow
	if r.err != nil || !r.dup || r.msg != won {
		t.Fatalf("losing append: %+v, want duplicate of %+v", r, won)
	}
	if n := s1.retries.Load(); n != 1 {
		t.Fatalf("%d retries, want 1", n)
	}
	if last, _ := s1.LastSeq(ctx, store.RoomKey("a")); last != 0 {
		t.Fatalf("LastSeq of the lost conversation = %d, want 0 (the failed bump rolled back)", last)
	}
	if got := mustAppend(t, s1, store.Message{Conversation: store.RoomKey("a"), Sender: "alice"}); got.Seq != 1 {
		t.Fatalf("next seq = %d, want 1", got.Seq)
	}
}

func TestDedup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, schema := newStore(t, Config{Sealer: keyring(t, "k", map[string][]byte{"k": randKey()})})
	room := store.RoomKey("r")
	orig := mustAppend(t, s, store.Message{Conversation: room, Sender: "alice", ClientMsgID: "c1", Text: "first"})

	// A retry, even with other content, returns the original.
	got, dup, err := s.AppendMessage(ctx, store.Message{Conversation: room, Sender: "alice", ClientMsgID: "c1", Text: "retry"})
	if err != nil || !dup || got != orig {
		t.Fatalf("retry = %+v dup=%v err=%v; want original %+v", got, dup, err, orig)
	}
	// The same client id from another sender is a different message.
	if m := mustAppend(t, s, store.Message{Conversation: room, Sender: "bob", ClientMsgID: "c1"}); m.Seq != 2 {
		t.Fatalf("bob's message seq %d", m.Seq)
	}
	// Messages without a client id are never duplicates.
	mustAppend(t, s, store.Message{Conversation: room, Sender: "alice"})
	mustAppend(t, s, store.Message{Conversation: room, Sender: "alice"})

	// Two copies in one batch: stall the writer on a first request so the
	// copies queue up behind it and are taken together.
	release := stallWriter(t, schema, room)
	batches, taken := s.batches.Load(), s.q.Taken()
	plug := appendAsync(ctx, s, store.Message{Conversation: room, Sender: "carol"})
	waitFor(t, "the plug to be taken", func() bool { return s.q.Taken() == taken+1 })
	a := appendAsync(ctx, s, store.Message{Conversation: room, Sender: "alice", ClientMsgID: "c2", Text: "once"})
	b := appendAsync(ctx, s, store.Message{Conversation: room, Sender: "alice", ClientMsgID: "c2", Text: "once"})
	// A copy of a stored message and a taken caller-chosen id, in the same batch.
	c := appendAsync(ctx, s, store.Message{Conversation: room, Sender: "alice", ClientMsgID: "c1", Text: "late retry"})
	d := appendAsync(ctx, s, store.Message{ID: orig.ID, Conversation: room, Sender: "dave"})
	waitFor(t, "the copies to queue", func() bool { return s.queued() == 4 })
	release()
	if r := <-plug; r.err != nil {
		t.Fatal(r.err)
	}
	ra, rb := <-a, <-b
	if ra.err != nil || rb.err != nil || ra.dup == rb.dup || ra.msg != rb.msg || ra.msg.Text != "once" {
		t.Fatalf("in-batch duplicates: %+v / %+v", ra, rb)
	}
	if rc := <-c; rc.err != nil || !rc.dup || rc.msg != orig {
		t.Fatalf("in-batch copy of a stored message: %+v, want %+v", rc, orig)
	}
	if rd := <-d; !errors.Is(rd.err, store.ErrExists) {
		t.Fatalf("in-batch taken id: %+v, want ErrExists", rd)
	}
	if n := s.batches.Load() - batches; n != 2 {
		t.Fatalf("%d batches, want 2 (plug, then the copies together)", n)
	}
	if last, _ := s.LastSeq(ctx, room); last != 6 {
		t.Fatalf("LastSeq = %d, want 6", last)
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
	plug := appendAsync(ctx, s, store.Message{Conversation: a, Sender: "plug"})
	waitFor(t, "the plug to be taken", func() bool { return s.q.Taken() == 1 })
	type want struct {
		conv string
		seq  int64
	}
	wants := []want{{b, 1}, {a, 2}, {b, 2}, {a, 3}, {a, 4}, {b, 3}}
	var outs []<-chan appendOutcome
	for i, w := range wants {
		// Senders and client ids sort against the queue order.
		m := store.Message{Conversation: w.conv, Sender: fmt.Sprint("u", 9-i), ClientMsgID: fmt.Sprint(9 - i)}
		outs = append(outs, appendAsync(ctx, s, m))
		waitFor(t, "the message to queue", func() bool { return s.queued() == i+1 })
	}
	release()
	if r := <-plug; r.err != nil || r.msg.Seq != 1 {
		t.Fatalf("plug: %+v", r)
	}
	for i, w := range wants {
		if r := <-outs[i]; r.err != nil || r.msg.Conversation != w.conv || r.msg.Seq != w.seq {
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
	plug := appendAsync(ctx, s, store.Message{Conversation: room, Sender: "plug"})
	waitFor(t, "the plug to be taken", func() bool { return s.q.Taken() == 1 })
	var outs []<-chan appendOutcome
	for i, name := range []string{"ok", "poison", "ok"} {
		outs = append(outs, appendAsync(ctx, s, store.Message{Conversation: room, Sender: fmt.Sprint("u", i), FileName: name}))
		waitFor(t, "the message to queue", func() bool { return s.queued() == i+1 })
	}
	release()
	if r := <-plug; r.err != nil || r.msg.Seq != 1 {
		t.Fatalf("plug: %+v", r)
	}
	r0, r1, r2 := <-outs[0], <-outs[1], <-outs[2]
	if r0.err != nil || r2.err != nil || r0.msg.Seq != 2 || r2.msg.Seq != 3 {
		t.Fatalf("good messages: %+v / %+v", r0, r2)
	}
	if r1.err == nil || !strings.Contains(r1.err.Error(), "no_poison") {
		t.Fatalf("poison message: %+v", r1)
	}
	checkContiguous(t, s, room, seqsOf(t, s, room))
}

func TestReopenKeepsEverything(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	schema := newSchema(t)
	s, err := Open(ctx, testConfig(schema, Config{}))
	if err != nil {
		t.Fatal(err)
	}
	mustUser(t, s, "alice")
	s.AddMembership(ctx, "alice", "general")
	s.CreateRefreshToken(ctx, store.RefreshToken{Hash: "t1", Username: "alice", ExpiresAt: time.Now().Add(time.Hour)})
	s.PutFile(ctx, store.File{ID: "f", BlobID: "f", Name: "n", Uploader: "alice"})
	var want []store.Message
	for i := range 10 {
		want = append(want, mustAppend(t, s, store.Message{Conversation: store.RoomKey("general"), Sender: "alice", Text: fmt.Sprint(i)}))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openIn(t, schema, Config{})
	if u, err := s.GetUser(ctx, "alice"); err != nil || u.Username != "alice" {
		t.Fatalf("user after reopen: %+v, %v", u, err)
	}
	if rooms, _ := s.Memberships(ctx, "alice"); !slices.Equal(rooms, []string{"general"}) {
		t.Fatalf("memberships after reopen: %v", rooms)
	}
	if _, err := s.GetFile(ctx, "f"); err != nil {
		t.Fatalf("file after reopen: %v", err)
	}
	if _, err := s.RotateRefreshToken(ctx, "t1", store.RefreshToken{Hash: "t2"}, time.Now()); err != nil {
		t.Fatalf("token after reopen: %v", err)
	}
	got, _, err := s.History(ctx, store.RoomKey("general"), store.HistoryQuery{})
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("history after reopen:\n%v\nwant\n%v (%v)", got, want, err)
	}
	if m := mustAppend(t, s, store.Message{Conversation: store.RoomKey("general"), Sender: "alice"}); m.Seq != 11 || m.ID <= want[9].ID {
		t.Fatalf("append after reopen: %+v", m)
	}
	var versions int
	rawConn(t, schema).QueryRow(ctx, "SELECT count(*) FROM schema_version").Scan(&versions)
	if ms, _ := migrations(); versions != len(ms) {
		t.Fatalf("%d schema_version rows after reopen, want %d", versions, len(ms))
	}
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
		mustAppend(t, s, store.Message{Conversation: "r:x", Sender: "a"})
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
	mustAppend(t, first, store.Message{Conversation: "r:x", Sender: "a"})
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

func TestRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, schema := newStore(t, Config{})
	s.Close()
	if _, err := rawConn(t, schema).Exec(ctx, "INSERT INTO schema_version (version, applied_at) VALUES (999, 0)"); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(ctx, testConfig(schema, Config{})); err == nil || !strings.Contains(err.Error(), "newer") {
		if s != nil {
			s.Close()
		}
		t.Fatalf("opening a database from a newer binary: %v", err)
	}
}

func TestEncryptionAtRest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	schema := newSchema(t)
	k1, k2 := randKey(), randKey()
	const secret = "the eagle lands at midnight"
	room := store.RoomKey("ops")

	// A message stored before encryption was turned on.
	plainStore := openIn(t, schema, Config{})
	legacy := mustAppend(t, plainStore, store.Message{Conversation: room, Sender: "a", Text: "legacy plaintext"})
	plainStore.Close()

	s1 := openIn(t, schema, Config{Sealer: keyring(t, "k1", map[string][]byte{"k1": k1})})
	sealedMsg := mustAppend(t, s1, store.Message{Conversation: room, Sender: "a", Text: secret, ClientMsgID: "c"})
	if sealedMsg.Text != secret {
		t.Fatalf("returned text %q", sealedMsg.Text)
	}
	s1.Close()

	var text string
	var sealed []byte
	err := rawConn(t, schema).QueryRow(ctx, "SELECT text, text_sealed FROM messages WHERE id = $1", sealedMsg.ID).Scan(&text, &sealed)
	if err != nil {
		t.Fatal(err)
	}
	if text != "" || len(sealed) == 0 || strings.Contains(string(sealed), secret) || strings.Contains(string(sealed), "eagle") {
		t.Fatalf("in the table: text=%q sealed=%q", text, sealed)
	}

	// Rotated: k2 seals, k1 still opens.
	s2 := openIn(t, schema, Config{Sealer: keyring(t, "k2", map[string][]byte{"k1": k1, "k2": k2})})
	msgs, _, err := s2.History(ctx, room, store.HistoryQuery{})
	if err != nil || len(msgs) != 2 || msgs[0] != legacy || msgs[1] != sealedMsg {
		t.Fatalf("after rotation: %+v, %v", msgs, err)
	}
	dup, isDup, err := s2.AppendMessage(ctx, store.Message{Conversation: room, Sender: "a", ClientMsgID: "c"})
	if err != nil || !isDup || dup.Text != secret {
		t.Fatalf("dedup of a sealed original: %+v dup=%v %v", dup, isDup, err)
	}
	mustAppend(t, s2, store.Message{Conversation: room, Sender: "a", Text: "sealed with k2"})
	s2.Close()

	// Without the keys the sealed rows cannot be read, and say so.
	s3 := openIn(t, schema, Config{})
	if _, _, err := s3.History(ctx, room, store.HistoryQuery{}); err == nil || !strings.Contains(err.Error(), "no key") {
		t.Fatalf("History without a key: %v", err)
	}
	s3.Close()
	s4 := openIn(t, schema, Config{Sealer: keyring(t, "k2", map[string][]byte{"k2": k2})})
	if _, _, err := s4.History(ctx, room, store.HistoryQuery{}); !errors.Is(err, sealer.ErrUnknownKey) {
		t.Fatalf("History with k1 dropped: %v, want ErrUnknownKey", err)
	}
}

func TestDirectMessagesSince(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t, Config{})
	base := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	dm := func(from, to string, minute int) store.Message {
		return mustAppend(t, s, store.Message{Conversation: store.DirectKey(from, to), Sender: from, Recipient: to,
			SentAt: base.Add(time.Duration(minute) * time.Minute), Text: fmt.Sprint(from, "->", to, "@", minute)})
	}
	m1 := dm("bob", "alice", 1)
	m2 := dm("carol", "alice", 2)
	dm("alice", "bob", 3)
	m4 := dm("bob", "alice", 4)
	mustAppend(t, s, store.Message{Conversation: store.RoomKey("general"), Sender: "bob", SentAt: base.Add(5 * time.Minute)})

	tests := []struct {
		name  string
		user  string
		since time.Time
		limit int
		want  []store.Message
		more  bool
	}{
		{"all", "alice", time.Time{}, 0, []store.Message{m1, m2, m4}, false},
		{"since is exclusive", "alice", m1.SentAt, 10, []store.Message{m2, m4}, false},
		{"limit keeps the oldest", "alice", time.Time{}, 2, []store.Message{m1, m2}, true},
		{"limit exactly", "alice", time.Time{}, 3, []store.Message{m1, m2, m4}, false},
		{"limit above the cap is the cap", "alice", time.Time{}, MaxDirectLimit + 1, []store.Message{m1, m2, m4}, false},
		{"nothing new", "alice", m4.SentAt, 10, nil, false},
		{"no messages", "dave", time.Time{}, 10, nil, false},
		{"room messages are not direct", "", time.Time{}, 10, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, more, err := s.DirectMessagesSince(ctx, tt.user, tt.since, tt.limit)
			if err != nil || !slices.Equal(got, tt.want) || more != tt.more {
				t.Fatalf("got %v, more %v, %v\nwant %v, more %v", got, more, err, tt.want, tt.more)
			}
		})
	}
}

func TestMemberships(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t, Config{})
	mustUser(t, s, "alice")
	// "Zeta" sorts before "alpha" byte by byte, whatever the database's collation.
	for _, room := range []string{"zeta", "alpha", "mid", "alpha", "Zeta"} {
		if err := s.AddMembership(ctx, "alice", room); err != nil {
			t.Fatalf("AddMembership(%s): %v", room, err)
		}
	}
	if rooms, err := s.Memberships(ctx, "alice"); err != nil || !slices.Equal(rooms, []string{"Zeta", "alpha", "mid", "zeta"}) {
		t.Fatalf("Memberships = %v, %v", rooms, err)
	}
	if err := s.AddMembership(ctx, "nobody", "alpha"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("membership for unknown user: %v", err)
	}
	if err := s.AddMembership(ctx, "alice", ""); err == nil {
		t.Fatal("membership of no room accepted")
	}
	if err := s.RemoveMembership(ctx, "alice", "mid"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveMembership(ctx, "alice", "mid"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("removing twice: %v", err)
	}
	if rooms, _ := s.Memberships(ctx, "alice"); !slices.Equal(rooms, []string{"Zeta", "alpha", "zeta"}) {
		t.Fatalf("after remove: %v", rooms)
	}
	if rooms, err := s.Memberships(ctx, "nobody"); err != nil || len(rooms) != 0 {
		t.Fatalf("Memberships(nobody) = %v, %v", rooms, err)
	}
}

func TestFiles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t, Config{})
	created := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	f := store.File{ID: strings.Repeat("ab", 32), BlobID: strings.Repeat("cd", 32), Name: "cat.png", Size: 1234, ContentType: "image/png", Uploader: "alice", CreatedAt: created}
	got, err := s.PutFile(ctx, f)
	if err != nil || got != f {
		t.Fatalf("PutFile = %+v, %v", got, err)
	}
	// Same content uploaded again by someone else under another name: an
	// upload of its own, over the same blob (storetest.Uploads has more).
	again, err := s.PutFile(ctx, store.File{BlobID: f.BlobID, Name: "other.png", Size: 1234, ContentType: "image/webp", Uploader: "bob"})
	if err != nil || again.ID == f.ID || again.Name != "other.png" || again.ContentType != "image/webp" || again.Uploader != "bob" {
		t.Fatalf("second PutFile = %+v, %v; want a new upload with its own metadata", again, err)
	}
	if got, err := s.GetFile(ctx, f.ID); err != nil || got != f {
		t.Fatalf("GetFile = %+v, %v", got, err)
	}
	if _, err := s.GetFile(ctx, "missing"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetFile(missing) = %v", err)
	}
	for _, tt := range []struct {
		user string
		want bool
	}{{"alice", true}, {"bob", false}, {"carol", false}} {
		if ok, err := s.IsFileUploader(ctx, f.ID, tt.user); err != nil || ok != tt.want {
			t.Errorf("IsFileUploader(%s) = %v, %v", tt.user, ok, err)
		}
	}
	if _, err := s.PutFile(ctx, store.File{ID: "x", BlobID: "x"}); err == nil {
		t.Fatal("PutFile without uploader succeeded")
	}

	share := func(conv string) {
		mustAppend(t, s, store.Message{Conversation: conv, Sender: "alice", FileID: f.ID, FileName: f.Name})
	}
	share(store.RoomKey("b"))
	share(store.RoomKey("a"))
	share(store.RoomKey("b"))
	share(store.DirectKey("alice", "bob"))
	mustAppend(t, s, store.Message{Conversation: store.RoomKey("c"), Sender: "alice", Text: "no file"})
	convs, err := s.FileConversations(ctx, f.ID)
	want := []string{store.DirectKey("alice", "bob"), store.RoomKey("a"), store.RoomKey("b")}
	if err != nil || !slices.Equal(convs, want) {
		t.Fatalf("FileConversations = %v, %v; want %v", convs, err, want)
	}
	if convs, err := s.FileConversations(ctx, "missing"); err != nil || len(convs) != 0 {
		t.Fatalf("FileConversations(missing) = %v, %v", convs, err)
	}
}

func TestDeleteMessagesBefore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t, Config{})
	s.deleteChunk = 3 // exercise several chunks
	cutoff := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	room := store.RoomKey("r")
	for i := range 10 {
		mustAppend(t, s, store.Message{Conversation: room, Sender: "a", SentAt: cutoff.Add(time.Duration(i-7) * time.Hour)})
	}
	// Seq 1..7 are before the cutoff, 8..10 at or after it.
	n, err := s.DeleteMessagesBefore(ctx, cutoff)
	if err != nil || n != 7 {
		t.Fatalf("DeleteMessagesBefore = %d, %v; want 7", n, err)
	}
	msgs, more, _ := s.History(ctx, room, store.HistoryQuery{})
	if len(msgs) != 3 || msgs[0].Seq != 8 || more {
		t.Fatalf("left: %v more=%v", msgs, more)
	}
	if last, _ := s.LastSeq(ctx, room); last != 10 {
		t.Fatalf("LastSeq after retention = %d, want 10", last)
	}
	if m := mustAppend(t, s, store.Message{Conversation: room, Sender: "a"}); m.Seq != 11 {
		t.Fatalf("seq after retention = %d, want 11", m.Seq)
	}
	if n, err := s.DeleteMessagesBefore(ctx, cutoff); err != nil || n != 0 {
		t.Fatalf("second DeleteMessagesBefore = %d, %v", n, err)
	}
	if c, _ := s.CountMessages(ctx); c != 4 {
		t.Fatalf("CountMessages = %d, want 4", c)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.DeleteMessagesBefore(cctx, time.Now()); !errors.Is(err, context.Canceled) {
		t.Fatalf("DeleteMessagesBefore with a cancelled context: %v", err)
	}
}

func TestAppendContext(t *testing.T) {
	t.Parallel()
	room := store.RoomKey("r")

	t.Run("done before the call", func(t *testing.T) {
		t.Parallel()
		s, _ := newStore(t, Config{})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, _, err := s.AppendMessage(ctx, store.Message{Conversation: room, Sender: "a"}); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v", err)
		}
	})

	t.Run("cancelled while queued", func(t *testing.T) {
		t.Parallel()
		s, schema := newStore(t, Config{})
		release := stallWriter(t, schema, room)
		plugCtx, cancelPlug := context.WithCancel(context.Background())
		plug := appendAsync(plugCtx, s, store.Message{Conversation: room, Sender: "plug"})
		waitFor(t, "the plug to be taken", func() bool { return s.q.Taken() == 1 })

		ctx, cancel := context.WithCancel(context.Background())
		queuedMsg := appendAsync(ctx, s, store.Message{Conversation: room, Sender: "queued"})
		waitFor(t, "the message to queue", func() bool { return s.queued() == 1 })
		cancel()
		if r := <-queuedMsg; !errors.Is(r.err, context.Canceled) {
			t.Fatalf("queued append after cancel: %+v", r)
		}
		// The plug was already taken: cancelling it now changes nothing.
		cancelPlug()
		release()
		if r := <-plug; r.err != nil || r.msg.Seq != 1 {
			t.Fatalf("taken append after cancel: %+v", r)
		}
		if n, _ := s.CountMessages(context.Background()); n != 1 {
			t.Fatalf("%d messages stored, want only the plug", n)
		}
		if m := mustAppend(t, s, store.Message{Conversation: room, Sender: "after"}); m.Seq != 2 {
			t.Fatalf("next seq %d", m.Seq)
		}
	})
}

func TestCloseDrains(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	schema := newSchema(t)
	s, err := Open(ctx, testConfig(schema, Config{MaxBatch: 4}))
	if err != nil {
		t.Fatal(err)
	}
	room := store.RoomKey("r")
	release := stallWriter(t, schema, room)
	var pending []<-chan appendOutcome
	for i := range 21 {
		pending = append(pending, appendAsync(ctx, s, store.Message{Conversation: room, Sender: fmt.Sprint(i)}))
	}
	// The writer takes a first batch and stalls on it; the rest queue.
	waitFor(t, "appends to queue", func() bool { return s.queued()+int(s.q.Taken()) == 21 })
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	waitFor(t, "Close to start", s.closed.Load)
	if _, _, err := s.AppendMessage(ctx, store.Message{Conversation: room, Sender: "late"}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("append after Close: %v, want ErrClosed", err)
	}
	release()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	for i, ch := range pending {
		if r := <-ch; r.err != nil {
			t.Fatalf("pending append %d: %v", i, r.err)
		}
	}
	s = openIn(t, schema, Config{})
	if n, _ := s.CountMessages(ctx); n != 21 {
		t.Fatalf("%d messages after Close and reopen, want 21", n)
	}
	checkContiguous(t, s, room, seqsOf(t, s, room))
}

func TestClosed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t, Config{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	calls := map[string]func() error{
		"AppendMessage": func() error {
			_, _, err := s.AppendMessage(ctx, store.Message{Conversation: "r:x", Sender: "a"})
			return err
		},
		"CreateUser":    func() error { return s.CreateUser(ctx, store.User{Username: "a"}) },
		"GetUser":       func() error { _, err := s.GetUser(ctx, "a"); return err },
		"SetUserActive": func() error { return s.SetUserActive(ctx, "a", true) },
		"CountUsers":    func() error { _, err := s.CountUsers(ctx); return err },
		"RotateRefreshToken": func() error {
			_, err := s.RotateRefreshToken(ctx, "x", store.RefreshToken{Hash: "y"}, time.Now())
			return err
		},
		"DeleteExpiredRefreshTokens": func() error { _, err := s.DeleteExpiredRefreshTokens(ctx, time.Now()); return err },
		"History":                    func() error { _, _, err := s.History(ctx, "r:x", store.HistoryQuery{}); return err },
		"LastSeq":                    func() error { _, err := s.LastSeq(ctx, "r:x"); return err },
		"DirectMessagesSince":        func() error { _, _, err := s.DirectMessagesSince(ctx, "a", time.Time{}, 0); return err },
		"Memberships":                func() error { _, err := s.Memberships(ctx, "a"); return err },
		"PutFile":                    func() error { _, err := s.PutFile(ctx, store.File{ID: "f", BlobID: "f", Uploader: "a"}); return err },
		"FileConversations":          func() error { _, err := s.FileConversations(ctx, "f"); return err },
		"DeleteMessagesBefore": func() error {
			_, err := s.DeleteMessagesBefore(ctx, time.Now())
			return err
		},
		"TouchFile":                func() error { _, err := s.TouchFile(ctx, "f", time.Now()); return err },
		"DeleteUnusedFiles":        func() error { _, err := s.DeleteUnusedFiles(ctx, time.Now(), 1); return err },
		"ExistingFiles":            func() error { _, err := s.ExistingFiles(ctx, []string{"f"}); return err },
		"RevokeRefreshTokenFamily": func() error { return s.RevokeRefreshTokenFamily(ctx, "x") },
		"CountMessages":            func() error { _, err := s.CountMessages(ctx); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
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
