package storetest

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/parleychat/parley/server/internal/store"
)

// Conversations is what the conversation and room list checks use of a
// store.
type Conversations interface {
	CreateUser(ctx context.Context, u store.User) error
	AddMembership(ctx context.Context, username, room string) error
	AppendMessage(ctx context.Context, m store.Message) (store.Message, bool, error)
	DeleteMessagesBefore(ctx context.Context, t time.Time) (int64, error)
	ListConversations(ctx context.Context, username, everyone string, q store.ConversationsQuery) ([]store.ConversationSummary, bool, error)
	RoomSummaries(ctx context.Context, username, everyone string) ([]store.RoomSummary, error)
}

// conversationWorld fills an empty store with alice's conversations and
// traps around them: users whose names start or end like hers, rooms and
// direct conversations she is not in. It returns the time before which
// messages were deleted by retention.
func conversationWorld(t *testing.T, s Conversations) {
	t.Helper()
	ctx := context.Background()
	for _, u := range []string{"alice", "aaron", "bob", "carol", "malice", "alice2", "alice_z", "b_b", "b0b"} {
		if err := s.CreateUser(ctx, store.User{Username: u, PasswordHash: "h", Active: true}); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range [][2]string{
		{"alice", "design"}, {"bob", "design"}, {"alice", "bob"}, {"alice", "zeta"}, {"carol", "other"},
		{"alice", "general"}, // stored as well as implied: listed once
	} {
		if err := s.AddMembership(ctx, m[0], m[1]); err != nil {
			t.Fatal(err)
		}
	}
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond).UTC()
	at := func(sec int) time.Time { return base.Add(time.Duration(sec) * time.Second) }
	post := func(conv, from, to, text string, sent time.Time) {
		t.Helper()
		if _, _, err := s.AppendMessage(ctx, store.Message{Conversation: conv, Sender: from, Recipient: to, Text: text, SentAt: sent}); err != nil {
			t.Fatal(err)
		}
	}
	post(store.DirectKey("alice", "bob"), "alice", "bob", "old 1", at(-2)) // both deleted by retention
	post(store.DirectKey("alice", "bob"), "bob", "alice", "old 2", at(-1))
	post(store.RoomKey("general"), "bob", "", "hello all", at(1))
	post(store.RoomKey("design"), "bob", "", "first", at(0))
	post(store.RoomKey("design"), "alice", "", "second", at(2))
	post(store.DirectKey("alice", "carol"), "carol", "alice", "hi alice", at(3))
	// alice sorts after aaron, so the key is d:aaron:alice; only she wrote.
	post(store.DirectKey("alice", "aaron"), "alice", "aaron", "hi aaron", at(4))
	post(store.DirectKey("bob", "carol"), "bob", "carol", "not alice's", at(5))
	post(store.RoomKey("other"), "carol", "", "not alice's", at(6))
	post(store.DirectKey("bob", "malice"), "bob", "malice", "ends like alice", at(7))
	post(store.DirectKey("alice2", "bob"), "bob", "alice2", "starts like alice", at(8))
	post(store.DirectKey("alice_z", "bob"), "bob", "alice_z", "starts like alice", at(9))
	// d:b0b:b_b: b_b sorts second, and "b_b" read as a LIKE pattern would
	// match b0b too.
	post(store.DirectKey("b0b", "b_b"), "b0b", "b_b", "underscore", at(10))
	if _, err := s.DeleteMessagesBefore(ctx, base); err != nil {
		t.Fatal(err)
	}
}

// brief is a summary as the checks compare it.
type brief struct {
	Key, Name string
	Room      bool
	LastSeq   int64
	LastText  string // "" when there is no last message
	LastFrom  string
}

func briefs(cs []store.ConversationSummary) []brief {
	out := make([]brief, len(cs))
	for i, c := range cs {
		out[i] = brief{Key: c.Key, Name: c.Name, Room: c.Room, LastSeq: c.LastSeq}
		if c.LastMessage != nil {
			out[i].LastText, out[i].LastFrom = c.LastMessage.Text, c.LastMessage.Sender
			if c.LastMessage.Conversation != c.Key || c.LastMessage.Seq != c.LastSeq || c.LastMessage.ID == "" {
				panic(fmt.Sprintf("last message of %s is %+v", c.Key, *c.LastMessage))
			}
		}
	}
	return out
}

// ListConversations checks a user's conversation list on an empty store:
// what is in it (her rooms, the room everyone is in, the direct
// conversations on either side of her name, nothing of anyone else's),
// the order (latest activity first, then name, then key, conversations
// without a message last), the last message and sequence, and paging.
func ListConversations(t *testing.T, s Conversations) {
	t.Helper()
	ctx := context.Background()
	conversationWorld(t, s)
	want := []brief{
		{Key: store.DirectKey("aaron", "alice"), Name: "aaron", LastSeq: 1, LastText: "hi aaron", LastFrom: "alice"},
		{Key: store.DirectKey("alice", "carol"), Name: "carol", LastSeq: 1, LastText: "hi alice", LastFrom: "carol"},
		{Key: "r:design", Name: "design", Room: true, LastSeq: 2, LastText: "second", LastFrom: "alice"},
		{Key: "r:general", Name: "general", Room: true, LastSeq: 1, LastText: "hello all", LastFrom: "bob"},
		// No message left (retention): after the active ones, by name then key.
		{Key: store.DirectKey("alice", "bob"), Name: "bob", LastSeq: 2},
		{Key: "r:bob", Name: "bob", Room: true},
		{Key: "r:zeta", Name: "zeta", Room: true},
	}
	all, more, err := s.ListConversations(ctx, "alice", "general", store.ConversationsQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if got := briefs(all); more || !reflect.DeepEqual(got, want) {
		t.Fatalf("alice's conversations (more %v):\n got %+v\nwant %+v", more, got, want)
	}

	// Every page size pages through the same list, each page after the last.
	for size := 1; size <= len(want); size++ {
		var got []brief
		q := store.ConversationsQuery{Limit: size}
		for pages := 0; ; pages++ {
			if pages > len(want) {
				t.Fatalf("page size %d: paging does not end", size)
			}
			page, more, err := s.ListConversations(ctx, "alice", "general", q)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) > size || (more && len(page) != size) {
				t.Fatalf("page size %d: got %d, more %v", size, len(page), more)
			}
			got = append(got, briefs(page)...)
			if !more {
				break
			}
			pos := page[len(page)-1].Pos()
			q.After = &pos
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("page size %d:\n got %+v\nwant %+v", size, got, want)
		}
	}

	// Without a room for everyone, only stored memberships count.
	carol, _, err := s.ListConversations(ctx, "carol", "", store.ConversationsQuery{})
	if err != nil {
		t.Fatal(err)
	}
	wantCarol := []brief{
		{Key: "r:other", Name: "other", Room: true, LastSeq: 1, LastText: "not alice's", LastFrom: "carol"},
		{Key: store.DirectKey("bob", "carol"), Name: "bob", LastSeq: 1, LastText: "not alice's", LastFrom: "bob"},
		{Key: store.DirectKey("alice", "carol"), Name: "alice", LastSeq: 1, LastText: "hi alice", LastFrom: "carol"},
	}
	if got := briefs(carol); !reflect.DeepEqual(got, wantCarol) {
		t.Fatalf("carol's conversations:\n got %+v\nwant %+v", got, wantCarol)
	}

	bb, _, err := s.ListConversations(ctx, "b_b", "", store.ConversationsQuery{})
	if got, want := briefs(bb), []brief{{Key: "d:b0b:b_b", Name: "b0b", LastSeq: 1, LastText: "underscore", LastFrom: "b0b"}}; !reflect.DeepEqual(got, want) || err != nil {
		t.Fatalf("b_b's conversations:\n got %+v, %v\nwant %+v", got, err, want)
	}

	// A user with nothing stored is in the room for everyone only.
	none, more, err := s.ListConversations(ctx, "nobody", "general", store.ConversationsQuery{})
	if err != nil || more || len(none) != 1 || none[0].Key != "r:general" {
		t.Fatalf("nobody's conversations = %+v, %v, %v", briefs(none), more, err)
	}
}

// RoomSummaries checks the room list on an empty store: every room with a
// stored member plus the room everyone is in (counting every user),
// stored member counts, joined for the asking user, sorted by name.
func RoomSummaries(t *testing.T, s Conversations) {
	t.Helper()
	conversationWorld(t, s)
	got, err := s.RoomSummaries(context.Background(), "alice", "general")
	if err != nil {
		t.Fatal(err)
	}
	want := []store.RoomSummary{
		{Name: "bob", Members: 1, Joined: true},
		{Name: "design", Members: 2, Joined: true},
		{Name: "general", Members: 9, Joined: true},
		{Name: "other", Members: 1},
		{Name: "zeta", Members: 1, Joined: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("rooms for alice:\n got %+v\nwant %+v", got, want)
	}
	got, err = s.RoomSummaries(context.Background(), "carol", "")
	if err != nil {
		t.Fatal(err)
	}
	want = []store.RoomSummary{
		{Name: "bob", Members: 1},
		{Name: "design", Members: 2},
		{Name: "general", Members: 1}, // a stored membership like any other
		{Name: "other", Members: 1, Joined: true},
		{Name: "zeta", Members: 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("rooms for carol without a room for everyone:\n got %+v\nwant %+v", got, want)
	}
}
