package bridge

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/parleychat/parley/bridge/wsframe"
)

// The hand-written RFC 6455 server (wsConn) against gobwas/ws, the
// library built for low memory per connection, on the same read path: an
// HTTP handler upgrades, starts one goroutine that blocks reading the
// next message, and returns. gobwas is used as its README shows
// (ws.UpgradeHTTP, then wsutil.ReadClientData / WriteServerMessage). It
// is imported by this file only: the server binary does not contain it.
// docs/performance.md has the figures and the commands.

// wsImpl is a server side under test.
type wsImpl struct {
	name string
	// serve upgrades and starts the connection's reader; read is called
	// with each message.
	serve func(w http.ResponseWriter, r *http.Request, read func([]byte))
	// writer upgrades and returns a function that writes one binary
	// message to the client.
	writer func(w http.ResponseWriter, r *http.Request) func([]byte) error
}

var wsImpls = []wsImpl{
	{
		name: "handwritten",
		serve: func(w http.ResponseWriter, r *http.Request, read func([]byte)) {
			c := upgradeWS(w, r, "", DefaultMaxFrameBytes)
			if c == nil {
				return
			}
			go func() {
				defer c.cork.Conn.Close()
				for {
					_, msg, err := c.ReadMessage()
					if err != nil {
						return
					}
					read(msg)
				}
			}()
		},
		writer: func(w http.ResponseWriter, r *http.Request) func([]byte) error {
			c := upgradeWS(w, r, "", DefaultMaxFrameBytes)
			if c == nil {
				return nil
			}
			return func(p []byte) error {
				if err := c.cork.WriteFrame(websocket.MessageBinary, p); err != nil {
					return err
				}
				return c.cork.Uncork()
			}
		},
	},
	{
		name: "gobwas",
		serve: func(w http.ResponseWriter, r *http.Request, read func([]byte)) {
			conn, _, _, err := ws.UpgradeHTTP(r, w)
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				for {
					msg, _, err := wsutil.ReadClientData(conn)
					if err != nil {
						return
					}
					read(msg)
				}
			}()
		},
		writer: func(w http.ResponseWriter, r *http.Request) func([]byte) error {
			conn, _, _, err := ws.UpgradeHTTP(r, w)
			if err != nil {
				return nil
			}
			return func(p []byte) error { return wsutil.WriteServerMessage(conn, ws.OpBinary, p) }
		},
	},
	{
		// gobwas reading through a buffer of the hand-written one's size:
		// fewer read(2) calls a frame, at 512 bytes more per connection.
		name: "gobwas-bufio",
		serve: func(w http.ResponseWriter, r *http.Request, read func([]byte)) {
			conn, _, _, err := ws.UpgradeHTTP(r, w)
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				rw := struct {
					io.Reader
					io.Writer
				}{bufio.NewReaderSize(conn, 512), conn}
				for {
					msg, _, err := wsutil.ReadClientData(rw)
					if err != nil {
						return
					}
					read(msg)
				}
			}()
		},
	},
}

// rawDial opens a WebSocket as a minimal client: a net.Conn and nothing
// else kept, so that the client's share of the memory is the same for
// every server side.
func rawDial(tb testing.TB, addr string) (net.Conn, *bufio.Reader) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	var key [16]byte
	_, _ = rand.Read(key[:])
	k := base64.StdEncoding.EncodeToString(key[:])
	if _, err := io.WriteString(nc, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "+k+"\r\nSec-WebSocket-Version: 13\r\n\r\n"); err != nil {
		tb.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		tb.Fatalf("upgrade: %v %v", resp, err)
	}
	return nc, br
}

// serveHTTP serves h on loopback until the benchmark ends.
func serveHTTP(tb testing.TB, h http.Handler) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(lis) }()
	tb.Cleanup(func() { _ = srv.Close() })
	return lis.Addr().String()
}

// rssBytes is this process's resident set (VmRSS).
func rssBytes(tb testing.TB) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	tb.Fatal("no VmRSS")
	return 0
}

type memSample struct{ heap, stack, rss uint64 }

func sampleMem(tb testing.TB) memSample {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{heap: ms.HeapAlloc, stack: ms.StackInuse, rss: rssBytes(tb)}
}

// idleConns is how many connections BenchmarkIdleConn holds open.
const idleConns = 5000

// BenchmarkIdleConn opens idleConns WebSockets, each with a server
// reader blocked on its next message, and reports what each costs once
// idle: live heap, goroutine stacks and RSS, server and minimal client
// together. "tcp" is the floor: a plain TCP server whose goroutine per
// connection blocks in Read on a 1-byte buffer. One iteration is one
// whole measurement; run it with -benchtime=1x.
func BenchmarkIdleConn(b *testing.B) {
	impls := append([]wsImpl{{name: "tcp"}}, wsImpls...)
	for _, impl := range impls {
		b.Run(impl.name, func(b *testing.B) {
			for range b.N {
				measureIdle(b, impl)
			}
		})
	}
}

func measureIdle(b *testing.B, impl wsImpl) {
	b.StopTimer()
	var addr string
	var wg sync.WaitGroup
	if impl.serve == nil {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer lis.Close()
		go func() {
			for {
				c, err := lis.Accept()
				if err != nil {
					return
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer c.Close()
					var one [1]byte
					_, _ = c.Read(one[:])
				}()
			}
		}()
		addr = lis.Addr().String()
	} else {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			impl.serve(w, r, func([]byte) {})
		})}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go func() { _ = srv.Serve(lis) }()
		defer srv.Close()
		addr = lis.Addr().String()
	}
	conns := make([]net.Conn, 0, idleConns)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// The first connections warm up what every later one shares.
	for range 100 {
		c, _ := dialFor(b, impl, addr)
		conns = append(conns, c)
	}
	time.Sleep(200 * time.Millisecond)
	before := sampleMem(b)
	for range idleConns {
		c, _ := dialFor(b, impl, addr)
		conns = append(conns, c)
	}
	time.Sleep(time.Second) // handlers return, readers park
	after := sampleMem(b)
	n := float64(idleConns)
	b.ReportMetric(float64(after.heap-before.heap)/n, "heap-B/conn")
	b.ReportMetric(float64(after.stack-before.stack)/n, "stack-B/conn")
	b.ReportMetric(float64(after.rss-before.rss)/n, "rss-B/conn")
	b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines")
}

func dialFor(b *testing.B, impl wsImpl, addr string) (net.Conn, *bufio.Reader) {
	if impl.serve == nil {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		return c, nil
	}
	return rawDial(b, addr)
}

// BenchmarkWSRead is the server reading masked client messages of each
// size, one op a message; the client writes them in batches.
func BenchmarkWSRead(b *testing.B) {
	for _, size := range []int{64, 1024, 16 << 10} {
		for _, impl := range wsImpls {
			b.Run(fmt.Sprintf("%s/%dB", impl.name, size), func(b *testing.B) {
				got := make(chan struct{}, 1024)
				addr := serveHTTP(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					impl.serve(w, r, func([]byte) { got <- struct{}{} })
				}))
				nc, _ := rawDial(b, addr)
				defer nc.Close()
				payload := bytes.Repeat([]byte{'x'}, size)
				h := wsframe.Header{Fin: true, Opcode: wsframe.Binary, Masked: true, Mask: [4]byte{1, 2, 3, 4}, Length: int64(size)}
				f := wsframe.AppendHeader(nil, h)
				start := len(f)
				f = append(f, payload...)
				wsframe.Mask(f[start:], h.Mask)
				const batch = 64
				burst := bytes.Repeat(f, batch)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				errc := make(chan error, 1)
				go func() {
					for sent := 0; sent < b.N; sent += batch {
						k := min(batch, b.N-sent)
						if _, err := nc.Write(burst[:k*len(f)]); err != nil {
							errc <- err
							return
						}
					}
					errc <- nil
				}()
				for range b.N {
					<-got
				}
				b.StopTimer()
				if err := <-errc; err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}

// BenchmarkWSWrite is the server writing one binary message a call (one
// write(2) each), the client discarding them.
func BenchmarkWSWrite(b *testing.B) {
	for _, size := range []int{64, 1024, 16 << 10} {
		for _, impl := range wsImpls {
			if impl.writer == nil {
				continue
			}
			b.Run(fmt.Sprintf("%s/%dB", impl.name, size), func(b *testing.B) {
				writers := make(chan func([]byte) error, 1)
				addr := serveHTTP(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					writers <- impl.writer(w, r)
				}))
				nc, br := rawDial(b, addr)
				defer nc.Close()
				write := <-writers
				go func() { _, _ = io.Copy(io.Discard, br) }()
				payload := bytes.Repeat([]byte{'x'}, size)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					if err := write(payload); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
