package server_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/servertest"
)

// BenchmarkAckDuringLoginFlood measures chat send→ack latency on a real
// server, quiet and while 60 clients flood it with wrong-password logins
// (rate limits lifted, as for a flood from many addresses). It reports
// the latency's p50 and p99, the logins answered per second (refused as
// busy or checked), and the peak heap in use during the run.
//
//	go test -run '^$' -bench AckDuringLoginFlood -benchtime 400x ./server/
func BenchmarkAckDuringLoginFlood(b *testing.B) {
	for _, flooders := range []int{0, 1, 60} {
		b.Run(fmt.Sprintf("flooders=%d", flooders), func(b *testing.B) {
			srv := servertest.Start(b, servertest.Options{Configure: func(c *server.Config) {
				c.RateLimits = "message=unlimited,other=unlimited"
				// Each send brings alice her message and its ack; with write
				// coalescing the ack waits up to 20ms whenever the message
				// went out first, which any slowness makes likelier and which
				// would hide the latency this measures.
				c.WriteCoalesce = -1
			}})
			conn := srv.Dial(b)
			authc := chatv1.NewAuthClient(conn)
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			if _, err := authc.Register(ctx, &chatv1.RegisterRequest{Username: "victim", Password: "correct horse"}); err != nil {
				b.Fatal(err)
			}
			alice := connect(b, conn, "alice", srv.Token(b, "alice", auth.RoleUser))

			var checked, busy atomic.Int64
			var wg sync.WaitGroup
			for range flooders {
				// Connections of their own, as attackers' are: on alice's,
				// their answers would keep it busy and her acks would wait
				// for its write coalescing (Config.WriteCoalesce).
				flood := chatv1.NewAuthClient(srv.Dial(b))
				wg.Go(func() {
					for ctx.Err() == nil {
						_, err := flood.Login(ctx, &chatv1.LoginRequest{Username: "victim", Password: "wrong password"})
						switch status.Code(err) {
						case codes.Unauthenticated:
							checked.Add(1)
						case codes.Unavailable:
							busy.Add(1)
							time.Sleep(10 * time.Millisecond) // impatient: not its RetryInfo
						}
					}
				})
			}
			var peak atomic.Uint64
			wg.Go(func() {
				var ms runtime.MemStats
				for ctx.Err() == nil {
					runtime.ReadMemStats(&ms)
					if ms.HeapInuse > peak.Load() {
						peak.Store(ms.HeapInuse)
					}
					time.Sleep(50 * time.Millisecond)
				}
			})
			time.Sleep(200 * time.Millisecond) // let the flood build up

			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				t0 := time.Now()
				id := alice.send(sendRoom("general", "ping", fmt.Sprint(i)))
				if alice.next(replyTo(id)).GetAck() == nil {
					b.Fatal("no ack")
				}
				lat = append(lat, time.Since(t0))
				alice.backlog = alice.backlog[:0] // its own messages
			}
			elapsed := time.Since(start)
			b.StopTimer()
			stop()
			wg.Wait()

			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(checked.Load())/elapsed.Seconds(), "logins-checked/s")
			b.ReportMetric(float64(busy.Load())/elapsed.Seconds(), "logins-busy/s")
			b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MiB")
		})
	}
}
