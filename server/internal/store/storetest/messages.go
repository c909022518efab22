package storetest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/server/internal/sealer"
	"github.com/parleychat/parley/server/internal/store"
)

// Keyring is a sealer keyring of keys sealing under active.
func Keyring(t testing.TB, active string, keys map[string][]byte) *sealer.Keyring {
	t.Helper()
	k, err := sealer.New(sealer.Config{Keys: keys, Active: active})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// RandKey is a random 32-byte sealing key.
func RandKey() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}

// AppendAssigns checks what AppendMessage assigns (seq, id, time) and
// keeps (a caller's id and time) on an empty store.
func AppendAssigns(t *testing.T, s Store) {
	t.Helper()
	ctx := context.Background()
	room := store.RoomKey("general")
	before := time.Now().UTC()
	var prev store.Message
	for i := 1; i <= 5; i++ {
		m := MustAppend(t, s, store.Message{Conversation: room, Sender: "alice", Text: fmt.Sprint("hi ", i), Seq: 99})
		if m.Seq != int64(i) || len(m.ID) != 32 || m.ID <= prev.ID || m.SentAt.Before(before) || m.SentAt.Location() != time.UTC {
			t.Fatalf("message %d: %+v (previous id %s)", i, m, prev.ID)
		}
		prev = m
	}
	other := MustAppend(t, s, store.Message{Conversation: store.RoomKey("other"), Sender: "bob"})
	if other.Seq != 1 {
		t.Fatalf("second conversation starts at seq %d", other.Seq)
	}
	// Caller-chosen ID and SentAt are kept; a taken ID fails alone.
	sent := time.Date(2020, 2, 2, 2, 2, 2, 2, time.FixedZone("x", 3600))
	m := MustAppend(t, s, store.Message{ID: "custom", Conversation: room, Sender: "alice", SentAt: sent,
		FileID: "f1", FileName: "a.png", FileSize: 3, FileType: "image/png", Recipient: ""})
	if m.ID != "custom" || !m.SentAt.Equal(sent) || m.Seq != 6 {
		t.Fatalf("custom: %+v", m)
	}
	if _, _, err := s.AppendMessage(ctx, store.Message{ID: "custom", Conversation: room, Sender: "alice"}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("taken id: %v, want ErrExists", err)
	}
	if next := MustAppend(t, s, store.Message{Conversation: room, Sender: "alice"}); next.Seq != 7 {
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

// History checks paging through a conversation, and LastSeq.
func History(t *testing.T, s Store) {
	t.Helper()
	ctx := context.Background()
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
	MustAppend(t, s, store.Message{Conversation: store.RoomKey("noise"), Sender: "a"})
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

// SeqContiguousUnderConcurrency appends from many goroutines at once: every
// conversation's seqs run 1..n without a gap or a duplicate.
func SeqContiguousUnderConcurrency(t *testing.T, s Store) {
	t.Helper()
	ctx := context.Background()
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
		total += CheckContiguous(t, s, c)
	}
	if total != writers*perWriter {
		t.Fatalf("%d messages stored, want %d", total, writers*perWriter)
	}
}

// Dedup checks client message ids: a retry returns the original, across
// batches and within one.
func Dedup(t *testing.T, b Backend) {
	t.Helper()
	ctx := context.Background()
	s, db := b.open(t, Options{Sealer: Keyring(t, "k", map[string][]byte{"k": RandKey()}), NoCommitDelay: true})
	room := store.RoomKey("r")
	orig := MustAppend(t, s, store.Message{Conversation: room, Sender: "alice", ClientMsgID: "c1", Text: "first"})

	// A retry, even with other content, returns the original.
	got, dup, err := s.AppendMessage(ctx, store.Message{Conversation: room, Sender: "alice", ClientMsgID: "c1", Text: "retry"})
	if err != nil || !dup || got != orig {
		t.Fatalf("retry = %+v dup=%v err=%v; want original %+v", got, dup, err, orig)
	}
	// The same client id from another sender is a different message.
	if m := MustAppend(t, s, store.Message{Conversation: room, Sender: "bob", ClientMsgID: "c1"}); m.Seq != 2 {
		t.Fatalf("bob's message seq %d", m.Seq)
	}
	// Messages without a client id are never duplicates.
	MustAppend(t, s, store.Message{Conversation: room, Sender: "alice"})
	MustAppend(t, s, store.Message{Conversation: room, Sender: "alice"})

	// Two copies in one batch: stall the writer on a first request so the
	// copies queue up behind it and are taken together.
	release := b.Stall(t, s, db, room)
	q0 := b.Queue(s)
	plug := AppendAsync(ctx, s, store.Message{Conversation: room, Sender: "carol"})
	WaitFor(t, "the plug to be taken", func() bool { return b.Queue(s).Taken == q0.Taken+1 })
	a := AppendAsync(ctx, s, store.Message{Conversation: room, Sender: "alice", ClientMsgID: "c2", Text: "once"})
	c := AppendAsync(ctx, s, store.Message{Conversation: room, Sender: "alice", ClientMsgID: "c2", Text: "once"})
	// A copy of a stored message and a taken caller-chosen id, in the same batch.
	d := AppendAsync(ctx, s, store.Message{Conversation: room, Sender: "alice", ClientMsgID: "c1", Text: "late retry"})
	e := AppendAsync(ctx, s, store.Message{ID: orig.ID, Conversation: room, Sender: "dave"})
	WaitFor(t, "the copies to queue", func() bool { return b.Queue(s).Queued == 4 })
	release()
	if r := <-plug; r.Err != nil {
		t.Fatal(r.Err)
	}
	ra, rc := <-a, <-c
	if ra.Err != nil || rc.Err != nil || ra.Dup == rc.Dup || ra.Msg != rc.Msg || ra.Msg.Text != "once" {
		t.Fatalf("in-batch duplicates: %+v / %+v", ra, rc)
	}
	if rd := <-d; rd.Err != nil || !rd.Dup || rd.Msg != orig {
		t.Fatalf("in-batch copy of a stored message: %+v, want %+v", rd, orig)
	}
	if re := <-e; !errors.Is(re.Err, store.ErrExists) {
		t.Fatalf("in-batch taken id: %+v, want ErrExists", re)
	}
	if n := b.Queue(s).Batches - q0.Batches; n != 2 {
		t.Fatalf("%d batches, want 2 (plug, then the copies together)", n)
	}
	if last, _ := s.LastSeq(ctx, room); last != 6 {
		t.Fatalf("LastSeq = %d, want 6", last)
	}
}

// DirectMessagesSince checks reading a user's direct messages since a time.
func DirectMessagesSince(t *testing.T, s Store, maxLimit int) {
	t.Helper()
	ctx := context.Background()
	base := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	dm := func(from, to string, minute int) store.Message {
		return MustAppend(t, s, store.Message{Conversation: store.DirectKey(from, to), Sender: from, Recipient: to,
			SentAt: base.Add(time.Duration(minute) * time.Minute), Text: fmt.Sprint(from, "->", to, "@", minute)})
	}
	m1 := dm("bob", "alice", 1)
	m2 := dm("carol", "alice", 2)
	dm("alice", "bob", 3)
	m4 := dm("bob", "alice", 4)
	MustAppend(t, s, store.Message{Conversation: store.RoomKey("general"), Sender: "bob", SentAt: base.Add(5 * time.Minute)})

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
		{"limit above the cap is the cap", "alice", time.Time{}, maxLimit + 1, []store.Message{m1, m2, m4}, false},
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

// DeleteMessagesBefore checks retention: old messages go, seqs do not
// restart.
func DeleteMessagesBefore(t *testing.T, b Backend) {
	t.Helper()
	ctx := context.Background()
	s, _ := b.open(t, Options{})
	b.SetDeleteChunk(s, 3) // exercise several chunks
	cutoff := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	room := store.RoomKey("r")
	for i := range 10 {
		MustAppend(t, s, store.Message{Conversation: room, Sender: "a", SentAt: cutoff.Add(time.Duration(i-7) * time.Hour)})
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
	if m := MustAppend(t, s, store.Message{Conversation: room, Sender: "a"}); m.Seq != 11 {
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

// AppendContext checks an append's context: done before the call, or
// while the append waits in the queue, it fails the append; once the
// writer took it, it changes nothing.
func AppendContext(t *testing.T, b Backend) {
	t.Helper()
	room := store.RoomKey("r")

	t.Run("done before the call", func(t *testing.T) {
		t.Parallel()
		s, _ := b.open(t, Options{})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, _, err := s.AppendMessage(ctx, store.Message{Conversation: room, Sender: "a"}); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v", err)
		}
	})

	t.Run("cancelled while queued", func(t *testing.T) {
		t.Parallel()
		s, db := b.open(t, Options{})
		release := b.Stall(t, s, db, room)
		plugCtx, cancelPlug := context.WithCancel(context.Background())
		plug := AppendAsync(plugCtx, s, store.Message{Conversation: room, Sender: "plug"})
		WaitFor(t, "the plug to be taken", func() bool { return b.Queue(s).Taken == 1 })

		ctx, cancel := context.WithCancel(context.Background())
		queuedMsg := AppendAsync(ctx, s, store.Message{Conversation: room, Sender: "queued"})
		WaitFor(t, "the message to queue", func() bool { return b.Queue(s).Queued == 1 })
		cancel()
		if r := <-queuedMsg; !errors.Is(r.Err, context.Canceled) {
			t.Fatalf("queued append after cancel: %+v", r)
		}
		// The plug was already taken: cancelling it now changes nothing.
		cancelPlug()
		release()
		if r := <-plug; r.Err != nil || r.Msg.Seq != 1 {
			t.Fatalf("taken append after cancel: %+v", r)
		}
		if n, _ := s.CountMessages(context.Background()); n != 1 {
			t.Fatalf("%d messages stored, want only the plug", n)
		}
		if m := MustAppend(t, s, store.Message{Conversation: room, Sender: "after"}); m.Seq != 2 {
			t.Fatalf("next seq %d", m.Seq)
		}
	})
}

// CloseDrains checks that Close refuses new appends but commits and
// answers every one already queued.
func CloseDrains(t *testing.T, b Backend) {
	t.Helper()
	ctx := context.Background()
	s, db := b.open(t, Options{MaxBatch: 4})
	room := store.RoomKey("r")
	release := b.Stall(t, s, db, room)
	var pending []<-chan AppendOutcome
	for i := range 21 {
		pending = append(pending, AppendAsync(ctx, s, store.Message{Conversation: room, Sender: fmt.Sprint(i)}))
	}
	// The writer takes a first batch and stalls on it; the rest queue.
	WaitFor(t, "appends to queue", func() bool { q := b.Queue(s); return q.Queued+int(q.Taken) == 21 })
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	WaitFor(t, "Close to start", func() bool { return b.Queue(s).Closing })
	if _, _, err := s.AppendMessage(ctx, store.Message{Conversation: room, Sender: "late"}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("append after Close: %v, want ErrClosed", err)
	}
	release()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	for i, ch := range pending {
		if r := <-ch; r.Err != nil {
			t.Fatalf("pending append %d: %v", i, r.Err)
		}
	}
	s = b.mustOpen(t, db, Options{})
	if n, _ := s.CountMessages(ctx); n != 21 {
		t.Fatalf("%d messages after Close and reopen, want 21", n)
	}
	CheckContiguous(t, s, room)
}

// EncryptionAtRest checks sealing message text: nothing readable in the
// table, rows from before encryption and under rotated keys still read,
// and a missing key is an error that says so.
func EncryptionAtRest(t *testing.T, b Backend) {
	t.Helper()
	ctx := context.Background()
	db := b.NewDB(t)
	k1, k2 := RandKey(), RandKey()
	const secret = "the eagle lands at midnight"
	room := store.RoomKey("ops")

	// A message stored before encryption was turned on.
	plainStore := b.mustOpen(t, db, Options{})
	legacy := MustAppend(t, plainStore, store.Message{Conversation: room, Sender: "a", Text: "legacy plaintext"})
	plainStore.Close()

	s1 := b.mustOpen(t, db, Options{Sealer: Keyring(t, "k1", map[string][]byte{"k1": k1})})
	sealedMsg := MustAppend(t, s1, store.Message{Conversation: room, Sender: "a", Text: secret, ClientMsgID: "c"})
	if sealedMsg.Text != secret {
		t.Fatalf("returned text %q", sealedMsg.Text)
	}
	s1.Close()

	var text string
	var sealed []byte
	b.QueryRow(t, db, "SELECT text, text_sealed FROM messages WHERE id = "+quote(sealedMsg.ID), &text, &sealed)
	if text != "" || len(sealed) == 0 || strings.Contains(string(sealed), secret) || strings.Contains(string(sealed), "eagle") {
		t.Fatalf("in the table: text=%q sealed=%q", text, sealed)
	}

	// Rotated: k2 seals, k1 still opens.
	s2 := b.mustOpen(t, db, Options{Sealer: Keyring(t, "k2", map[string][]byte{"k1": k1, "k2": k2})})
	msgs, _, err := s2.History(ctx, room, store.HistoryQuery{})
	if err != nil || len(msgs) != 2 || msgs[0] != legacy || msgs[1] != sealedMsg {
		t.Fatalf("after rotation: %+v, %v", msgs, err)
	}
	dup, isDup, err := s2.AppendMessage(ctx, store.Message{Conversation: room, Sender: "a", ClientMsgID: "c"})
	if err != nil || !isDup || dup.Text != secret {
		t.Fatalf("dedup of a sealed original: %+v dup=%v %v", dup, isDup, err)
	}
	MustAppend(t, s2, store.Message{Conversation: room, Sender: "a", Text: "sealed with k2"})
	s2.Close()

	// Without the keys the sealed rows cannot be read, and say so.
	s3 := b.mustOpen(t, db, Options{})
	if _, _, err := s3.History(ctx, room, store.HistoryQuery{}); err == nil || !strings.Contains(err.Error(), "no key") {
		t.Fatalf("History without a key: %v", err)
	}
	s3.Close()
	s4 := b.mustOpen(t, db, Options{Sealer: Keyring(t, "k2", map[string][]byte{"k2": k2})})
	if _, _, err := s4.History(ctx, room, store.HistoryQuery{}); !errors.Is(err, sealer.ErrUnknownKey) {
		t.Fatalf("History with k1 dropped: %v, want ErrUnknownKey", err)
	}
}
