package server_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testenv"

	"github.com/parleychat/parley/clients/go/check"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/servertest"
)

// TestClusterCheck runs the delivery checker on three nodes that share a
// PostgreSQL schema, a NATS subject of their own and the token secret:
// six publishers spread over the nodes, at 40 messages a second each for
// five seconds, into two rooms and direct messages, with a subscriber on
// each node. Nothing acknowledged may be lost, delivered twice or out of
// order, skipped live, or missing from history.
func TestClusterCheck(t *testing.T) {
	t.Parallel()
	b := make([]byte, 6)
	rand.Read(b)
	subject := "parley.test.check." + hex.EncodeToString(b)
	databaseURL := testenv.PostgresSchema(t, "parley_test_")
	secret := make([]byte, 32)
	rand.Read(secret)
	var addrs []string
	for range 3 {
		n := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
			c.NATSURL, c.NATSSubject = testenv.NATSURL(), subject
			c.DatabaseURL = databaseURL
			c.JWTSecret = secret
			c.RateLimits = "message=unlimited,join=unlimited,connect=unlimited,other=unlimited"
		}})
		addrs = append(addrs, n.GRPCAddr())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	rep, err := check.Check(ctx, check.Config{
		Addrs:      addrs,
		Publishers: 6, Subscribers: 3, Rooms: 2, DMs: true,
		Duration: 5 * time.Second, Rate: 40, SendTimeout: 15 * time.Second, Settle: 5 * time.Second,
		ServerOnly: true, // the server's stream itself, not the SDK's repair of it
	})
	if err != nil {
		t.Fatalf("check: %v (report %+v)", err, rep)
	}
	t.Logf("acked %d (unacked %d, refused %d, retries %d, reconnects %d); lost %d (deliveries %d, history %d), duplicated %d, reordered %d, live gaps %d, history gaps %d, stored duplicates %d; live %d, replayed %d (filled live %d), repaired by resume %d",
		rep.Acked, rep.Unacked, rep.Refused, rep.Retries, rep.Reconnects,
		rep.AckedLost, rep.LostDeliveries, rep.LostFromHistory, rep.Duplicated, rep.Reordered, rep.LiveGaps, rep.HistoryGaps, rep.StoredDuplicates,
		rep.LiveDeliveries, rep.ReplayedDeliveries, rep.FilledLive, rep.RepairedByResume)
	for _, n := range rep.Nodes {
		t.Logf("node %s: members %d, sessions %d, acked %d, live %d, replayed %d", n.Addr, n.Members, n.Sessions, n.Acked, n.LiveDeliveries, n.ReplayedDeliveries)
		if n.Acked == 0 || n.LiveDeliveries == 0 {
			t.Errorf("node %s: %d acknowledgements, %d live deliveries; want publishers and subscribers on every node", n.Addr, n.Acked, n.LiveDeliveries)
		}
	}
	for _, c := range []struct {
		name string
		n    int
	}{
		{"acked lost", rep.AckedLost}, {"duplicated", rep.Duplicated}, {"reordered", rep.Reordered},
		{"live gaps", rep.LiveGaps}, {"history gaps", rep.HistoryGaps}, {"stored duplicates", rep.StoredDuplicates},
		{"refused", rep.Refused},
		// The SDK fills a gap it sees from history; here the server must
		// not have left one for it to fill.
		{"filled live", rep.FilledLive},
	} {
		if c.n != 0 {
			t.Errorf("%s: %d, want 0", c.name, c.n)
		}
	}
}
