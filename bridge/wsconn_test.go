package bridge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/parleychat/parley/bridge/wsframe"
)

// wsServer serves one upgraded connection per request with handle.
func wsServer(t *testing.T, handle func(c *wsConn)) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, v1, _ := subprotocols(r)
		echo := ""
		if v1 {
			echo = Subprotocol
		}
		c := upgradeWS(w, r, echo, 1<<20)
		if c == nil {
			return
		}
		handle(c)
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// TestCorkedFramesReachAClient writes frames of every header length
// through corkConn.WriteFrame, with pings between them, and reads them
// back with coder/websocket's client.
func TestCorkedFramesReachAClient(t *testing.T) {
	t.Parallel()
	sizes := []int{0, 1, 125, 126, 127, 4096, 65535, 65536, 70000, maxCorked + 10}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	url := wsServer(t, func(c *wsConn) {
		go func() { _, _, _ = c.ReadMessage() }() // takes the pongs and the client's close
		for i, n := range sizes {
			typ := websocket.MessageBinary
			if i%2 == 1 {
				typ = websocket.MessageText
			}
			if err := c.cork.WriteFrame(typ, bytes.Repeat([]byte{'a' + byte(i)}, n)); err != nil {
				done <- err
				return
			}
			if i%3 == 1 { // corked with the frames around it
				if _, err := c.Ping(); err != nil {
					done <- err
					return
				}
			}
			if i%3 == 2 { // a burst of three frames per write
				if err := c.cork.Uncork(); err != nil {
					done <- err
					return
				}
			}
		}
		done <- c.cork.Uncork()
		<-ctx.Done()
		c.Close(websocket.StatusNormalClosure, "", time.Second)
	})

	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{Subprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != Subprotocol {
		t.Fatalf("subprotocol %q, want %q", got, Subprotocol)
	}
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
}

// TestWSConnWithAClient runs a real client against wsConn: whole and
// fragmented messages, pings both ways, and the close handshake started
// by either side.
func TestWSConnWithAClient(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	type got struct {
		typ  websocket.MessageType
		data []byte
		err  error
	}
	reads := make(chan got, 16)
	closeNow := make(chan struct{})
	closed := make(chan time.Duration, 1)
	url := wsServer(t, func(c *wsConn) {
		go func() {
			for {
				typ, data, err := c.ReadMessage()
				reads <- got{typ, data, err}
				if err != nil {
					return
				}
			}
		}()
		<-closeNow
		if ok, err := c.Ping(); !ok || err != nil {
			t.Errorf("ping: %v %v", ok, err)
		}
		start := time.Now()
		c.Close(4401, "token expired", 5*time.Second)
		closed <- time.Since(start)
	})
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()

	long := bytes.Repeat([]byte("x"), 70000)
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := c.Write(ctx, websocket.MessageBinary, long); err != nil {
		t.Fatal(err)
	}
	w, err := c.Writer(ctx, websocket.MessageBinary) // each Write is a frame
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range []string{"frag", "ment", "ed"} {
		if _, err := w.Write([]byte(part)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Write(ctx, websocket.MessageBinary, nil); err != nil {
		t.Fatal(err)
	}
	want := []got{
		{typ: websocket.MessageText, data: []byte(`{"a":1}`)},
		{typ: websocket.MessageBinary, data: long},
		{typ: websocket.MessageBinary, data: []byte("fragmented")},
		{typ: websocket.MessageBinary, data: []byte{}},
	}
	for i, w := range want {
		g := <-reads
		if g.err != nil || g.typ != w.typ || !bytes.Equal(g.data, w.data) {
			t.Fatalf("message %d: got %v %d bytes %v, want %v %d bytes", i, g.typ, len(g.data), g.err, w.typ, len(w.data))
		}
	}

	// The client's ping needs the server's reader; its read (below) answers
	// the server's ping and the close.
	pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
	pingErr := make(chan error, 1)
	go func() { pingErr <- c.Ping(pctx) }()
	go func() {
		time.Sleep(100 * time.Millisecond)
		close(closeNow)
	}()
	_, _, err = c.Read(ctx)
	pcancel()
	if code := websocket.CloseStatus(err); code != 4401 {
		t.Fatalf("client read: %v, want close 4401", err)
	}
	if err := <-pingErr; err != nil && !errors.Is(err, net.ErrClosed) && websocket.CloseStatus(err) == -1 {
		t.Fatalf("client ping: %v", err)
	}
	if d := <-closed; d > 4*time.Second {
		t.Fatalf("close waited %v for the client's close, which came at once", d)
	}
	if g := <-reads; websocket.CloseStatus(g.err) != 4401 {
		t.Fatalf("server read after close: %v, want the echoed 4401", g.err)
	}
}

// TestWSConnPeerClose: the client's close reaches the reader as a
// CloseError with its code and reason.
func TestWSConnPeerClose(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	url := wsServer(t, func(c *wsConn) {
		_, _, err := c.ReadMessage()
		errc <- err
		c.Close(websocket.CloseStatus(err), "", time.Second)
	})
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(websocket.StatusGoingAway, "bye"); err != nil {
		t.Fatalf("client close: %v", err)
	}
	var ce websocket.CloseError
	if err := <-errc; !errors.As(err, &ce) || ce.Code != websocket.StatusGoingAway || ce.Reason != "bye" {
		t.Fatalf("server read: %v, want close 1001 bye", err)
	}
}

// TestUpgradeRefusals: what is not a version-13 WebSocket handshake is
// answered in HTTP, with a reason.
func TestUpgradeRefusals(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c := upgradeWS(w, r, "", 1024); c != nil {
			c.Close(websocket.StatusNormalClosure, "", time.Second)
		}
	}))
	defer srv.Close()
	good := http.Header{}
	good.Set("Connection", "keep-alive, Upgrade")
	good.Set("Upgrade", "websocket")
	good.Set("Sec-WebSocket-Version", "13")
	good.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	for _, tc := range []struct {
		name   string
		method string
		change func(h http.Header)
		want   int
	}{
		{"post", http.MethodPost, func(http.Header) {}, http.StatusMethodNotAllowed},
		{"no upgrade", http.MethodGet, func(h http.Header) { h.Del("Upgrade") }, http.StatusUpgradeRequired},
		{"no connection upgrade", http.MethodGet, func(h http.Header) { h.Set("Connection", "keep-alive") }, http.StatusUpgradeRequired},
		{"version 8", http.MethodGet, func(h http.Header) { h.Set("Sec-WebSocket-Version", "8") }, http.StatusUpgradeRequired},
		{"no key", http.MethodGet, func(h http.Header) { h.Del("Sec-WebSocket-Key") }, http.StatusBadRequest},
		{"short key", http.MethodGet, func(h http.Header) { h.Set("Sec-WebSocket-Key", "c2hvcnQ=") }, http.StatusBadRequest},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL, nil)
		req.Header = good.Clone()
		tc.change(req.Header)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want || !strings.Contains(string(body), `"message"`) {
			t.Errorf("%s: %d %s, want %d with a message", tc.name, resp.StatusCode, body, tc.want)
		}
	}

	// RFC 6455's own example: this key must be answered with this accept.
	nc, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	io.WriteString(nc, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" || resp.Header.Get("Sec-WebSocket-Protocol") != "" {
		t.Fatalf("handshake answer %d %v", resp.StatusCode, resp.Header)
	}
}

// clientFrame builds a masked client frame.
func clientFrame(b0 byte, payload []byte, key [4]byte) []byte {
	h := wsframe.Header{Fin: b0&0x80 != 0, RSV: b0 & 0x70, Opcode: b0 & 0x0f, Masked: true, Mask: key, Length: int64(len(payload))}
	f := wsframe.AppendHeader(nil, h)
	start := len(f)
	f = append(f, payload...)
	wsframe.Mask(f[start:], key)
	return f
}

// rawConn returns a wsConn reading in, and a function that closes it and
// returns what it wrote.
func rawConn(t *testing.T, in []byte, limit int64) (*wsConn, func() []byte) {
	t.Helper()
	srv, cli := net.Pipe()
	t.Cleanup(func() { srv.Close(); cli.Close() })
	out := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(cli); out <- b }()
	c := &wsConn{br: bufio.NewReader(bytes.NewReader(in)), cork: &corkConn{Conn: srv}, limit: limit}
	return c, func() []byte { srv.Close(); return <-out }
}

// TestWSConnRefusesBadFrames: every frame RFC 6455 forbids from a client
// ends reading with a protocol error (or 1009 for size) and no message.
func TestWSConnRefusesBadFrames(t *testing.T) {
	t.Parallel()
	key := [4]byte{1, 2, 3, 4}
	unmasked := []byte{0x82, 0x01, 'x'}
	huge := append(binary.BigEndian.AppendUint64([]byte{0x82, 0x80 | 127}, 1<<62), key[:]...)
	topBit := binary.BigEndian.AppendUint64([]byte{0x82, 0x80 | 127}, 1<<63)
	cat := func(fs ...[]byte) []byte { return bytes.Join(fs, nil) }
	for _, tc := range []struct {
		name string
		in   []byte
		want error // a protocolError when nil
	}{
		{"unmasked", unmasked, nil},
		{"reserved bit", clientFrame(0x80|0x40|wsframe.Binary, []byte("x"), key), nil},
		{"unknown opcode", clientFrame(0x80|0x3, []byte("x"), key), nil},
		{"unknown control opcode", clientFrame(0x80|0xb, nil, key), nil},
		{"fragmented ping", clientFrame(wsframe.Ping, nil, key), nil},
		{"long ping", clientFrame(0x80|wsframe.Ping, make([]byte, 126), key), nil},
		{"lone continuation", clientFrame(0x80|wsframe.Continuation, []byte("x"), key), nil},
		{"message inside a message", cat(clientFrame(wsframe.Text, []byte("a"), key), clientFrame(0x80|wsframe.Text, []byte("b"), key)), nil},
		{"one-byte close", clientFrame(0x80|wsframe.Close, []byte{3}, key), nil},
		{"close code 1005", clientFrame(0x80|wsframe.Close, []byte{0x03, 0xed}, key), nil},
		{"close code 999", clientFrame(0x80|wsframe.Close, []byte{0x03, 0xe7}, key), nil},
		{"close reason not UTF-8", clientFrame(0x80|wsframe.Close, []byte{0x03, 0xe8, 0xff}, key), nil},
		{"length top bit", topBit, nil},
		{"over the limit", clientFrame(0x80|wsframe.Binary, make([]byte, 1025), key), websocket.ErrMessageTooBig},
		{"fragments over the limit", cat(clientFrame(wsframe.Binary, make([]byte, 1000), key), clientFrame(0x80|wsframe.Continuation, make([]byte, 25), key)), websocket.ErrMessageTooBig},
		{"2^62 bytes announced", huge, websocket.ErrMessageTooBig},
		{"truncated", clientFrame(0x80|wsframe.Binary, []byte("hello"), key)[:8], io.ErrUnexpectedEOF},
	} {
		c, _ := rawConn(t, tc.in, 1024)
		typ, data, err := c.ReadMessage()
		var perr protocolError
		switch {
		case tc.want == nil && !errors.As(err, &perr):
			t.Errorf("%s: got %v %q %v, want a protocol error", tc.name, typ, data, err)
		case tc.want != nil && !errors.Is(err, tc.want):
			t.Errorf("%s: got %v %q %v, want %v", tc.name, typ, data, err, tc.want)
		}
		if _, _, again := c.ReadMessage(); again != err {
			t.Errorf("%s: a second read returned %v, not the first error", tc.name, again)
		}
	}
}

// TestWSConnControlFrames: a ping between fragments is answered with its
// payload, a pong clears the due ping, and a close carries its code.
func TestWSConnControlFrames(t *testing.T) {
	t.Parallel()
	key := [4]byte{9, 8, 7, 6}
	in := bytes.Join([][]byte{
		clientFrame(wsframe.Text, []byte("hel"), key),
		clientFrame(0x80|wsframe.Ping, []byte("are you there"), key),
		clientFrame(0x80|wsframe.Pong, nil, key),
		clientFrame(0x80|wsframe.Continuation, []byte("lo"), key),
		clientFrame(0x80|wsframe.Close, nil, key),
	}, nil)
	c, written := rawConn(t, in, 1024)
	c.pingDue.Store(true)
	typ, data, err := c.ReadMessage()
	if err != nil || typ != websocket.MessageText || string(data) != "hello" {
		t.Fatalf("got %v %q %v", typ, data, err)
	}
	if c.pingDue.Load() {
		t.Error("the pong did not clear the due ping")
	}
	if _, _, err := c.ReadMessage(); websocket.CloseStatus(err) != websocket.StatusNoStatusRcvd {
		t.Fatalf("close without a code: %v, want 1005", err)
	}
	c.Close(websocket.StatusNoStatusRcvd, "", time.Second) // a close with no code, not 1005
	want := append([]byte{0x80 | wsframe.Pong, 13}, "are you there"...)
	want = append(want, 0x80|wsframe.Close, 0)
	if got := written(); !bytes.Equal(got, want) {
		t.Fatalf("wrote % x, want % x", got, want)
	}
}

// FuzzWSConnRead: whatever a client sends, reading neither panics nor
// returns a message over the limit, and stops at the first error.
func FuzzWSConnRead(f *testing.F) {
	key := [4]byte{1, 2, 3, 4}
	f.Add(clientFrame(0x80|wsframe.Binary, []byte("hello"), key))
	f.Add(append(clientFrame(wsframe.Text, []byte("a"), key), clientFrame(0x80|wsframe.Continuation, []byte("b"), key)...))
	f.Add(clientFrame(0x80|wsframe.Close, []byte{0x03, 0xe8, 'o', 'k'}, key))
	f.Add(clientFrame(0x80|wsframe.Ping, []byte("p"), key))
	f.Fuzz(func(t *testing.T, in []byte) {
		const limit = 256
		c, _ := rawConn(t, in, limit)
		for range 64 {
			_, data, err := c.ReadMessage()
			if err != nil {
				return
			}
			if len(data) > limit {
				t.Fatalf("message of %d bytes over the limit %d", len(data), limit)
			}
		}
	})
}

// TestWSConnTooBigClosesWith1009: a client sending a message over the
// limit hears 1009, even while the rest of its frame is still on the way
// (closing with it unread would reset the connection instead).
func TestWSConnTooBigClosesWith1009(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := upgradeWS(w, r, "", 1024)
		if c == nil {
			return
		}
		if _, _, err := c.ReadMessage(); errors.Is(err, websocket.ErrMessageTooBig) {
			c.Close(websocket.StatusMessageTooBig, "frame too large", 5*time.Second)
			return
		}
		c.Close(websocket.StatusInternalError, "expected a message too big", time.Second)
	}))
	defer srv.Close()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	// Larger than the socket buffers, so most of it is unread when the
	// server decides; read only once it is all sent, as a browser does.
	if err := c.Write(ctx, websocket.MessageBinary, make([]byte, 8<<20)); err != nil {
		t.Fatalf("client write: %v (the server reset the connection?)", err)
	}
	_, _, err = c.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusMessageTooBig || ce.Reason != "frame too large" {
		t.Fatalf("client read: %v, want close 1009 frame too large", err)
	}
}

// TestWSConnTooBigInFragmentsClosesWith1009: as above, for a message over
// the limit sent in fragments: the rest of the message is read past too,
// fragment by fragment, so the client hears 1009 instead of a reset.
func TestWSConnTooBigInFragmentsClosesWith1009(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := upgradeWS(w, r, "", 1024)
		if c == nil {
			return
		}
		if _, _, err := c.ReadMessage(); errors.Is(err, websocket.ErrMessageTooBig) {
			c.Close(websocket.StatusMessageTooBig, "frame too large", 5*time.Second)
			return
		}
		c.Close(websocket.StatusInternalError, "expected a message too big", time.Second)
	}))
	defer srv.Close()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	w, err := c.Writer(ctx, websocket.MessageBinary) // each Write is a frame
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 16<<10)
	for range (8 << 20) / len(chunk) {
		if _, err := w.Write(chunk); err != nil {
			t.Fatalf("client write: %v (the server reset the connection?)", err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatalf("client write: %v (the server reset the connection?)", err)
	}
	_, _, err = c.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusMessageTooBig || ce.Reason != "frame too large" {
		t.Fatalf("client read: %v, want close 1009 frame too large", err)
	}
}

// TestWSConnDrainSkipsRefusedFragments: closing after a fragmented message
// over the limit reads past its remaining fragments, and the control
// frames among them, to the peer's close.
func TestWSConnDrainSkipsRefusedFragments(t *testing.T) {
	t.Parallel()
	key := [4]byte{5, 6, 7, 8}
	in := bytes.Join([][]byte{
		clientFrame(wsframe.Binary, make([]byte, 1000), key),
		clientFrame(wsframe.Continuation, make([]byte, 100), key), // over the limit here
		clientFrame(wsframe.Continuation, make([]byte, 300), key),
		clientFrame(0x80|wsframe.Ping, []byte("p"), key),
		clientFrame(0x80|wsframe.Continuation, make([]byte, 10), key),
		clientFrame(0x80|wsframe.Close, []byte{0x03, 0xf1}, key), // 1009, echoed
	}, nil)
	c, written := rawConn(t, in, 1024)
	if _, _, err := c.ReadMessage(); !errors.Is(err, websocket.ErrMessageTooBig) {
		t.Fatalf("read: %v, want too big", err)
	}
	c.Close(websocket.StatusMessageTooBig, "frame too large", time.Second)
	if code := websocket.CloseStatus(c.readErr); code != websocket.StatusMessageTooBig {
		t.Fatalf("drain ended with %v, want the peer's close 1009", c.readErr)
	}
	want := append([]byte{0x80 | wsframe.Close, 17, 0x03, 0xf1}, "frame too large"...)
	if got := written(); !bytes.Equal(got, want) {
		t.Fatalf("wrote % x, want only the close % x (no pong once closing)", got, want)
	}
}
