package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/parleychat/parley/server/internal/store"
)

// BenchText is a typical chat message for the benchmarks.
const BenchText = "a typical chat message of a few dozen bytes, give or take"

// BenchHistory fills s with a 20,000-message conversation from 64
// senders, then reads random 50-message pages of it from parallel
// readers.
func BenchHistory(b *testing.B, s Store) {
	const total = 20_000
	ctx := context.Background()
	room := store.RoomKey("history")
	var wg sync.WaitGroup
	for w := range 64 {
		wg.Go(func() {
			for range total / 64 {
				if _, _, err := s.AppendMessage(ctx, store.Message{Conversation: room, Sender: fmt.Sprint("u", w), Text: BenchText}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	last, _ := s.LastSeq(ctx, room)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			q := store.HistoryQuery{BeforeSeq: 1 + rand.Int64N(last), Limit: 50}
			if _, _, err := s.History(ctx, room, q); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
