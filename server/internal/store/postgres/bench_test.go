package postgres

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/store/storetest"
)

// The benchmarks run against the same server as the tests, with its
// settings (synchronous_commit on: every commit waits for a WAL flush).
// Run them with
//
//	go test -run '^$' -bench . -benchtime 2s ./server/internal/store/postgres/

func reportBatching(b *testing.B, stores ...*Store) {
	var batches, appended int64
	for _, s := range stores {
		batches += s.batches.Load()
		appended += s.appended.Load()
	}
	if batches > 0 {
		b.ReportMetric(float64(appended)/float64(batches), "msgs/commit")
	}
}

// BenchmarkAppendSerial: one caller at a time, so every append is its own
// transaction and pays a full commit, and (with a client message id, as
// clients send) its own dedup lookup. sync=off (synchronous_commit off, an
// ack before the WAL flush: never to be run so) shows what is not the
// flush.
func BenchmarkAppendSerial(b *testing.B) {
	for _, mode := range []string{"on", "off"} {
		b.Run("sync="+mode, func(b *testing.B) {
			s, _ := newStore(b, Config{MaxConns: DefaultMaxConns, synchronousCommit: mode})
			ctx := context.Background()
			m := store.Message{Conversation: store.RoomKey("bench"), Sender: "alice", Text: storetest.BenchText}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				m.ClientMsgID = fmt.Sprint(i)
				if _, _, err := s.AppendMessage(ctx, m); err != nil {
					b.Fatal(err)
				}
			}
			reportBatching(b, s)
		})
	}
}

// BenchmarkAppendParallel: many concurrent callers (as many connected
// senders would be) spread over 16 conversations with client message ids,
// so group commit shares each transaction among the callers waiting at the
// time. nodes=2 splits the callers between two Stores on one schema, as
// two parleyd nodes sharing the database, contending for the same
// conversations' counters.
func BenchmarkAppendParallel(b *testing.B) {
	for _, bc := range []struct {
		name   string
		nodes  int
		sealed bool
	}{
		{"plaintext", 1, false},
		{"sealed", 1, true},
		{"nodes=2", 2, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := Config{MaxConns: DefaultMaxConns}
			if bc.sealed {
				cfg.Sealer = storetest.Keyring(b, "k", map[string][]byte{"k": storetest.RandKey()})
			}
			s, schema := newStore(b, cfg)
			stores := []*Store{s}
			for len(stores) < bc.nodes {
				stores = append(stores, openIn(b, schema, cfg))
			}
			ctx := context.Background()
			var worker atomic.Int64
			b.SetParallelism(32) // goroutines per GOMAXPROCS
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				w := worker.Add(1)
				s := stores[int(w)%len(stores)]
				m := store.Message{Conversation: store.RoomKey(fmt.Sprint("room", w%16)),
					Sender: fmt.Sprint("user", w), Text: storetest.BenchText}
				for i := 0; pb.Next(); i++ {
					m.ClientMsgID = fmt.Sprint(i)
					if _, _, err := s.AppendMessage(ctx, m); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportBatching(b, stores...)
		})
	}
}

// BenchmarkHistory reads random 50-message pages of a 20,000-message
// conversation from parallel readers.
func BenchmarkHistory(b *testing.B) {
	for _, sealed := range []bool{false, true} {
		name, cfg := "plaintext", Config{MaxConns: DefaultMaxConns}
		if sealed {
			name = "sealed"
			cfg.Sealer = storetest.Keyring(b, "k", map[string][]byte{"k": storetest.RandKey()})
		}
		b.Run(name, func(b *testing.B) {
			s, _ := newStore(b, cfg)
			storetest.BenchHistory(b, s)
		})
	}
}
