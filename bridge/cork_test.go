package bridge

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestCorkedFramesReachAClient writes frames of every header length
// through corkConn.WriteFrame, between coder/websocket's own pings, and
// reads them back with coder/websocket's client.
func TestCorkedFramesReachAClient(t *testing.T) {
	t.Parallel()
	sizes := []int{0, 1, 125, 126, 127, 4096, 65535, 65536, 70000, maxCorked + 10}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cork := &corkConn{}
		c, err := websocket.Accept(&corkingWriter{ResponseWriter: w, cork: cork}, r, nil)
		if err != nil {
			done <- err
			return
		}
		defer c.CloseNow()
		go func() { _, _, _ = c.Read(ctx) }() // answers the client's close
		for i, n := range sizes {
			typ := websocket.MessageBinary
			if i%2 == 1 {
				typ = websocket.MessageText
			}
			if err := cork.WriteFrame(typ, bytes.Repeat([]byte{'a' + byte(i)}, n)); err != nil {
				done <- err
				return
			}
			if i%3 == 2 { // a burst of three frames per write
				if err := cork.Uncork(); err != nil {
					done <- err
					return
				}
			}
		}
		done <- cork.Uncork()
		<-ctx.Done()
	}))
	defer srv.Close()

	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	for i, n := range sizes {
		typ, data, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("frame %d (%d bytes): %v", i, n, err)
		}
		wantType := websocket.MessageBinary
		if i%2 == 1 {
			wantType = websocket.MessageText
		}
		if typ != wantType || !bytes.Equal(data, bytes.Repeat([]byte{'a' + byte(i)}, n)) {
			t.Fatalf("frame %d: got %v of %d bytes, want %v of %d", i, typ, len(data), wantType, n)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	cancel()
}
