package sqlite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parleychat/parley/server/internal/sealer"
	"github.com/parleychat/parley/server/internal/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func openAt(t testing.TB, path string, cfg Config) *Store {
	t.Helper()
	cfg.Path = path
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	return openAt(t, filepath.Join(t.TempDir(), "parley.db"), cfg)
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

// stallWriter holds the only writer connection, so the writer goroutine
// blocks in BeginTx after taking its next batch. It returns the release.
func stallWriter(t testing.TB, s *Store) func() {
	t.Helper()
	conn, err := s.w.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release := func() { once.Do(func() { conn.Close() }) }
	t.Cleanup(release)
	return release
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

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, cfg := range []Config{{}, {Path: ":memory:"}, {Path: "file:x.db"}, {Path: "x.db", MaxBatch: -1}} {
		if _, err := Open(context.Background(), cfg); err == nil {
			t.Errorf("Open(%+v) succeeded", cfg)
		}
	}
}

func TestUsers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t, Config{})
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
	s := newStore(t, Config{})
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
	for _, bad := range []store.Message{{Sender: "a"}, {Conversation: room}} {
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
	s := newStore(t, Config{})
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
	s := newStore(t, Config{})
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
		// Page backwards from the latest, as a client scrolling up would.
		var seqs []int64
		for before := int64(0); ; {
			msgs, more, err := s.History(ctx, c, store.HistoryQuery{BeforeSeq: before, Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			page := make([]int64, 0, len(msgs))
			for _, m := range msgs {
				page = append(page, m.Seq)
			}
			seqs = append(page, seqs...)
			if !more {
				break
			}
			before = msgs[0].Seq
		}
		for i, seq := range seqs {
			if seq != int64(i+1) {
				t.Fatalf("%s: seq %d at position %d: gap or duplicate", c, seq, i)
			}
		}
		if last, _ := s.LastSeq(ctx, c); last != int64(len(seqs)) {
			t.Fatalf("%s: LastSeq %d, %d messages", c, last, len(seqs))
		}
		total += len(seqs)
	}
	if total != writers*perWriter {
		t.Fatalf("%d messages stored, want %d", total, writers*perWriter)
	}
	t.Logf("%d appends in %d batches", s.appended.Load(), s.batches.Load())
}

func TestDedup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// No commit delay: the test decides which appends share a batch.
	s := newStore(t, Config{Sealer: keyring(t, "k", map[string][]byte{"k": randKey()}), CommitDelay: -1})
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
	release := stallWriter(t, s)
	batches, taken := s.batches.Load(), s.q.Taken()
	plug := appendAsync(ctx, s, store.Message{Conversation: room, Sender: "carol"})
	waitFor(t, "the plug to be taken", func() bool { return s.q.Taken() == taken+1 })
	a := appendAsync(ctx, s, store.Message{Conversation: room, Sender: "alice", ClientMsgID: "c2", Text: "once"})
	b := appendAsync(ctx, s, store.Message{Conversation: room, Sender: "alice", ClientMsgID: "c2", Text: "once"})
	waitFor(t, "both copies to queue", func() bool { return s.queued() == 2 })
	release()
	if r := <-plug; r.err != nil {
		t.Fatal(r.err)
	}
	ra, rb := <-a, <-b
	if ra.err != nil || rb.err != nil || ra.dup == rb.dup || ra.msg != rb.msg {
		t.Fatalf("in-batch duplicates: %+v / %+v", ra, rb)
	}
	if n := s.batches.Load() - batches; n != 2 {
		t.Fatalf("%d batches, want 2 (plug, then both copies together)", n)
	}
	if last, _ := s.LastSeq(ctx, room); last != 6 {
		t.Fatalf("LastSeq = %d, want 6", last)
	}
}

// TestCommitDelay: appends that queued up while a commit ran wait for the
// commit delay, and appends arriving meanwhile join their commit.
func TestCommitDelay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t, Config{CommitDelay: 2 * time.Second})
	room := store.RoomKey("r")
	release := stallWriter(t, s)
	taken := s.q.Taken()
	plug := appendAsync(ctx, s, store.Message{Conversation: room, Sender: "carol"})
	waitFor(t, "the plug's commit to start", func() bool { return s.q.Taken() == taken+1 && s.inCommit.Load() })
	var results []<-chan appendOutcome
	// One append queued while the plug commits: a second caller.
	results = append(results, appendAsync(ctx, s, store.Message{Conversation: room, Sender: "alice", ClientMsgID: "early"}))
	waitFor(t, "an append to queue behind the plug", func() bool { return s.queued() == 1 })
	release()
	if r := <-plug; r.err != nil {
		t.Fatal(r.err)
	}
	batches := s.batches.Load()
	// The writer now holds it for the delay; these join it.
	for i := range 3 {
		results = append(results, appendAsync(ctx, s, store.Message{Conversation: room, Sender: "alice", ClientMsgID: fmt.Sprint("late", i)}))
	}
	seqs := map[int64]bool{}
	for _, r := range results {
		res := <-r
		if res.err != nil || res.dup {
			t.Fatalf("append: %+v", res)
		}
		seqs[res.msg.Seq] = true
	}
	if len(seqs) != 4 {
		t.Fatalf("%d distinct seqs, want 4", len(seqs))
	}
	if got := s.batches.Load() - batches; got != 1 {
		t.Fatalf("4 appends in %d commits, want 1", got)
	}
}

// TestCommitDelayNotForALoneSender: a sender that waits for each append
// has at most one queued at a time and is never held, however long the
// delay.
func TestCommitDelayNotForALoneSender(t *testing.T) {
	t.Parallel()
	s := newStore(t, Config{CommitDelay: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 20 {
		if _, _, err := s.AppendMessage(ctx, store.Message{Conversation: store.RoomKey("r"), Sender: "alice", ClientMsgID: fmt.Sprint(i)}); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "parley.db")
	s, err := Open(ctx, Config{Path: path})
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

	s = openAt(t, path, Config{})
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
	s.r.QueryRow("SELECT count(*) FROM schema_version").Scan(&versions)
	if ms, _ := migrations(); versions != len(ms) {
		t.Fatalf("%d schema_version rows after reopen, want %d", versions, len(ms))
	}
}

func TestFilePermissions(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "new", "dir", "parley.db")
	s := openAt(t, path, Config{})
	mustAppend(t, s, store.Message{Conversation: "r:x", Sender: "a"})
	for _, p := range []string{path, path + "-wal"} {
		info, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if perm := info.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s has mode %v, want no group or other access", filepath.Base(p), perm)
		}
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "parley.db")
	s, err := Open(context.Background(), Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	s.w.Exec("INSERT INTO schema_version (version, applied_at) VALUES (999, 0)")
	s.Close()
	if s, err := Open(context.Background(), Config{Path: path}); err == nil {
		s.Close()
		t.Fatal("opened a database from a newer binary")
	}
}

func TestEncryptionAtRest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "parley.db")
	k1, k2 := randKey(), randKey()
	const secret = "the eagle lands at midnight"
	room := store.RoomKey("ops")

	// A message stored before encryption was turned on.
	plainStore, err := Open(ctx, Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	legacy := mustAppend(t, plainStore, store.Message{Conversation: room, Sender: "a", Text: "legacy plaintext"})
	plainStore.Close()

	s1, err := Open(ctx, Config{Path: path, Sealer: keyring(t, "k1", map[string][]byte{"k1": k1})})
	if err != nil {
		t.Fatal(err)
	}
	sealedMsg := mustAppend(t, s1, store.Message{Conversation: room, Sender: "a", Text: secret, ClientMsgID: "c"})
	if sealedMsg.Text != secret {
		t.Fatalf("returned text %q", sealedMsg.Text)
	}
	s1.Close()

	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	var text string
	var sealed []byte
	err = raw.QueryRow("SELECT text, text_sealed FROM messages WHERE id = ?", sealedMsg.ID).Scan(&text, &sealed)
	raw.Close()
	if err != nil {
		t.Fatal(err)
	}
	if text != "" || len(sealed) == 0 || strings.Contains(string(sealed), secret) || strings.Contains(string(sealed), "eagle") {
		t.Fatalf("on disk: text=%q sealed=%q", text, sealed)
	}

	// Rotated: k2 seals, k1 still opens.
	s2 := openAt(t, path, Config{Sealer: keyring(t, "k2", map[string][]byte{"k1": k1, "k2": k2})})
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
	s3 := openAt(t, path, Config{})
	if _, _, err := s3.History(ctx, room, store.HistoryQuery{}); err == nil || !strings.Contains(err.Error(), "no key") {
		t.Fatalf("History without a key: %v", err)
	}
	s3.Close()
	s4 := openAt(t, path, Config{Sealer: keyring(t, "k2", map[string][]byte{"k2": k2})})
	if _, _, err := s4.History(ctx, room, store.HistoryQuery{}); !errors.Is(err, sealer.ErrUnknownKey) {
		t.Fatalf("History with k1 dropped: %v, want ErrUnknownKey", err)
	}
}

func TestDirectMessagesSince(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t, Config{})
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
	s := newStore(t, Config{})
	mustUser(t, s, "alice")
	for _, room := range []string{"zeta", "alpha", "mid", "alpha"} {
		if err := s.AddMembership(ctx, "alice", room); err != nil {
			t.Fatalf("AddMembership(%s): %v", room, err)
		}
	}
	if rooms, err := s.Memberships(ctx, "alice"); err != nil || !slices.Equal(rooms, []string{"alpha", "mid", "zeta"}) {
		t.Fatalf("Memberships = %v, %v", rooms, err)
	}
	if err := s.AddMembership(ctx, "nobody", "alpha"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("membership for unknown user: %v", err)
	}
	if err := s.RemoveMembership(ctx, "alice", "mid"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveMembership(ctx, "alice", "mid"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("removing twice: %v", err)
	}
	if rooms, _ := s.Memberships(ctx, "alice"); !slices.Equal(rooms, []string{"alpha", "zeta"}) {
		t.Fatalf("after remove: %v", rooms)
	}
	if rooms, err := s.Memberships(ctx, "nobody"); err != nil || len(rooms) != 0 {
		t.Fatalf("Memberships(nobody) = %v, %v", rooms, err)
	}
}

func TestFiles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t, Config{})
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
}

func TestDeleteMessagesBefore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t, Config{})
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
}

func TestAppendContext(t *testing.T) {
	t.Parallel()
	room := store.RoomKey("r")

	t.Run("done before the call", func(t *testing.T) {
		t.Parallel()
		s := newStore(t, Config{})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, _, err := s.AppendMessage(ctx, store.Message{Conversation: room, Sender: "a"}); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v", err)
		}
	})

	t.Run("cancelled while queued", func(t *testing.T) {
		t.Parallel()
		s := newStore(t, Config{})
		release := stallWriter(t, s)
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
	path := filepath.Join(t.TempDir(), "parley.db")
	s, err := Open(ctx, Config{Path: path, MaxBatch: 4})
	if err != nil {
		t.Fatal(err)
	}
	release := stallWriter(t, s)
	var pending []<-chan appendOutcome
	for i := range 21 {
		pending = append(pending, appendAsync(ctx, s, store.Message{Conversation: store.RoomKey("r"), Sender: fmt.Sprint(i)}))
	}
	// The writer takes a first batch and stalls on it; the rest queue.
	waitFor(t, "appends to queue", func() bool { return s.queued()+int(s.q.Taken()) == 21 })
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	waitFor(t, "Close to start", s.closed.Load)
	if _, _, err := s.AppendMessage(ctx, store.Message{Conversation: store.RoomKey("r"), Sender: "late"}); !errors.Is(err, store.ErrClosed) {
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
	s = openAt(t, path, Config{})
	if n, _ := s.CountMessages(ctx); n != 21 {
		t.Fatalf("%d messages after Close and reopen, want 21", n)
	}
}

func TestClosed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t, Config{})
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
		"CreateUser":  func() error { return s.CreateUser(ctx, store.User{Username: "a"}) },
		"GetUser":     func() error { _, err := s.GetUser(ctx, "a"); return err },
		"History":     func() error { _, _, err := s.History(ctx, "r:x", store.HistoryQuery{}); return err },
		"LastSeq":     func() error { _, err := s.LastSeq(ctx, "r:x"); return err },
		"Memberships": func() error { _, err := s.Memberships(ctx, "a"); return err },
		"PutFile":     func() error { _, err := s.PutFile(ctx, store.File{ID: "f", BlobID: "f", Uploader: "a"}); return err },
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
// index, not a table scan.
func TestQueryPlans(t *testing.T) {
	t.Parallel()
	s := newStore(t, Config{})
	queries := map[string][]any{
		qDedup:           {"a", "c"},
		qHistoryBackward: {"r:x", 10, 5},
		qHistoryForward:  {"r:x", 1, 10, 5},
		qLastSeq:         {"r:x"},
		qDirectSince:     {"a", 0, 10},
		qDeleteBefore:    {0, 10},
		`SELECT room FROM memberships WHERE username = ? ORDER BY room`:                                    {"a"},
		`SELECT DISTINCT conversation FROM messages WHERE file_id = ? ORDER BY conversation`:               {"f"},
		`SELECT EXISTS (SELECT 1 FROM file_uploaders WHERE file_id = ? AND username = ?)`:                  {"f", "a"},
		`SELECT ` + fileCols + ` FROM files WHERE id = ?`:                                                  {"f"},
		`UPDATE refresh_tokens SET revoked_at = ?1 WHERE hash = ?2 AND revoked_at = 0 AND expires_at > ?1`: {0, "h"},
		`DELETE FROM refresh_tokens WHERE expires_at <= ?`:                                                 {0},
		qTouchFile:         {0, "f"},
		qDeleteUnusedFiles: {0, 10},
		qExistingFiles(3):  {"a", "b", "c"},
		`UPDATE refresh_tokens SET revoked_at = ?, revoke_reason = ? WHERE family = ? AND revoked_at = 0`: {0, "r", "f"},
		`SELECT username, family, revoke_reason, expires_at FROM refresh_tokens WHERE hash = ?`:           {"h"},
	}
	for q, args := range queries {
		rows, err := s.r.Query("EXPLAIN QUERY PLAN "+q, args...)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			rows.Scan(&id, &parent, &notused, &detail)
			plan = append(plan, detail)
		}
		rows.Close()
		for _, step := range plan {
			if (strings.HasPrefix(step, "SCAN ") && step != "SCAN CONSTANT ROW") || strings.Contains(step, "USE TEMP B-TREE") {
				t.Errorf("query\n%s\nplan %q: step %q is a scan or sort", q, plan, step)
			}
		}
	}
}
