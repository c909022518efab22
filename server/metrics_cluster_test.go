package server_test

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testenv"

	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/servertest"
)

// cutProxy forwards TCP to upstream until cut, which drops every
// connection and refuses new ones until restore: a NATS outage for one
// node, without touching the machine's NATS.
type cutProxy struct {
	lis      net.Listener
	upstream string
	mu       sync.Mutex
	down     bool
	conns    map[net.Conn]struct{}
	wg       sync.WaitGroup
}

func newCutProxy(t *testing.T, upstream string) *cutProxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{lis: lis, upstream: upstream, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() { lis.Close(); p.cut(); p.wg.Wait() })
	return p
}

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.upstream)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			io.Copy(dst, src)
			dst.Close()
			src.Close()
		}
		go pipe(up, c)
		go pipe(c, up)
	}
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

func (p *cutProxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

// TestMetricsNATS: two nodes see each other as peers; when one loses
// NATS, its gauge says so, and once NATS is back its reconnect is counted.
func TestMetricsNATS(t *testing.T) {
	t.Parallel()
	proxy := newCutProxy(t, strings.TrimPrefix(testenv.NATSURL(), "nats://"))
	b := make([]byte, 6)
	rand.Read(b)
	subject := "parley.test.metrics." + hex.EncodeToString(b)
	dir := t.TempDir()
	a := servertest.Start(t, servertest.Options{DataDir: dir, Configure: func(c *server.Config) {
		c.NATSURL, c.NATSSubject, c.MetricsAddr = "nats://"+proxy.lis.Addr().String(), subject, "127.0.0.1:0"
	}})
	servertest.Start(t, servertest.Options{DataDir: dir, Configure: func(c *server.Config) {
		c.NATSURL, c.NATSSubject = testenv.NATSURL(), subject
	}})

	waitMetric := func(what string, ok func(m map[string]map[string]float64) bool) {
		t.Helper()
		for deadline := time.Now().Add(waitFor); ; time.Sleep(50 * time.Millisecond) {
			m := scrape(t, a.MetricsAddr())
			if ok(m) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: connected %v, reconnects %v, peers %v", what,
					m["parley_nats_connected"], m["parley_nats_reconnects_total"], m["parley_cluster_peers"])
			}
		}
	}
	waitMetric("both up", func(m map[string]map[string]float64) bool {
		return m["parley_nats_connected"][""] == 1 && m["parley_cluster_peers"][""] == 1 && m["parley_nats_reconnects_total"][""] == 0
	})
	proxy.cut()
	waitMetric("NATS cut", func(m map[string]map[string]float64) bool { return m["parley_nats_connected"][""] == 0 })
	proxy.restore()
	waitMetric("NATS back", func(m map[string]map[string]float64) bool {
		return m["parley_nats_connected"][""] == 1 && m["parley_nats_reconnects_total"][""] == 1
	})
}
