package conformance_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/servertest"
)

// BenchmarkParleydDelivery measures what one delivered event costs on a
// real parleyd, per transport: an admin broadcast fans out to 50 clients
// on that transport, and the clients decode every event. ns/op is per
// delivered event and includes the server, the bridge and the clients
// (one process, so it is an upper bound on the server's share).
func BenchmarkParleydDelivery(b *testing.B) {
	const receivers = 50
	for _, tr := range transports[:4] { // parleyd's own listeners
		b.Run(tr.name, func(b *testing.B) {
			srv := servertest.Start(b, servertest.Options{Configure: func(c *server.Config) { c.QueueSize = 4096; c.RateLimits = "connect=unlimited,other=unlimited" }})
			h := &harness{srv: srv, tr: tr, rec: &recorder{t: b, seen: map[string][]string{}}, toks: map[string]string{}}
			var ss []*session
			for i := range receivers {
				s := tr.open(b, h, srv.TokenAs(b, fmt.Sprintf("rcv%02d", i), chatv1.Role_ROLE_USER))
				s.sync(b)
				ss = append(ss, s)
			}
			admin := chatv1.NewAdminClient(srv.Dial(b))
			ctx := servertest.WithToken(context.Background(), srv.TokenAs(b, "boss", chatv1.Role_ROLE_ADMIN))
			done := make(chan int, receivers)
			b.ReportAllocs()
			b.ResetTimer()
			for _, s := range ss {
				go func() {
					n := 0
					for n < b.N {
						ev, ok := <-s.events
						if !ok {
							break
						}
						if ev.GetAdminBroadcast() != nil {
							n++
						}
					}
					done <- n
				}()
			}
			// Broadcasts go out from several goroutines so that the unary
			// call's round trip does not set the pace.
			var next atomic.Int64
			var wg sync.WaitGroup
			for range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						if _, err := admin.Broadcast(ctx, &chatv1.BroadcastRequest{Text: "a 128-byte payload ..........................................................................................."}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			for range receivers {
				if n := <-done; n != b.N {
					b.Fatalf("a receiver got %d of %d", n, b.N)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*receivers), "ns/delivery")
		})
	}
}
