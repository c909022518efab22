// Package grpcwebws is a Go client of improbable-eng/grpc-web's WebSocket
// transport (v0.15.0), for tests: it speaks to the bridge the way the
// browser's grpc.WebsocketTransport does. Written from
// go/grpcweb/websocket_wrapper.go:
//
//   - subprotocol "grpc-websockets"; the first message is binary and holds
//     the request headers as "key: value\r\n" lines;
//   - each later client message is binary, one control byte first: 0 then
//     a gRPC frame (flag byte, 4-byte big-endian length, message), or a
//     lone 1 when the client has finished sending;
//   - the server sends a byte stream cut into binary messages at arbitrary
//     points: gRPC-Web frames whose flag 0x00 is a message and 0x80 a
//     header block (the response headers, and last the trailers carrying
//     grpc-status).
//
// A Conn is one call. Send and CloseSend may be called concurrently with
// Recv, but neither from two goroutines at once.
package grpcwebws

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Conn is one gRPC call over the WebSocket transport.
type Conn struct {
	WS      *websocket.Conn
	buf     []byte
	Header  textproto.MIMEHeader // response headers, once received
	Trailer textproto.MIMEHeader // trailers, once the call ended
}

// Dial opens method (e.g. "/chat.v1.Chat/Connect") on the server at
// baseURL ("http://host:port"). headers go in the header frame; upgrade
// are extra HTTP headers on the upgrade request (Origin among them).
func Dial(ctx context.Context, baseURL, method string, headers map[string]string, upgrade http.Header) (*Conn, *http.Response, error) {
	u := "ws" + strings.TrimPrefix(baseURL, "http") + method
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: upgrade, Subprotocols: []string{"grpc-websockets"}})
	if err != nil {
		return nil, resp, err
	}
	c.SetReadLimit(8 << 20)
	var sb strings.Builder
	sb.WriteString("content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n")
	for k, v := range headers {
		sb.WriteString(k + ": " + v + "\r\n")
	}
	if err := c.Write(ctx, websocket.MessageBinary, []byte(sb.String())); err != nil {
		_ = c.CloseNow()
		return nil, resp, err
	}
	return &Conn{WS: c}, resp, nil
}

// Frame returns m as a gRPC frame: flag, length, message.
func Frame(flag byte, payload []byte) []byte {
	f := make([]byte, 5+len(payload))
	f[0] = flag
	binary.BigEndian.PutUint32(f[1:5], uint32(len(payload)))
	copy(f[5:], payload)
	return f
}

// Send sends one request message.
func (c *Conn) Send(ctx context.Context, m proto.Message) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	return c.WS.Write(ctx, websocket.MessageBinary, append([]byte{0}, Frame(0, b)...))
}

// CloseSend tells the server the client has finished sending.
func (c *Conn) CloseSend(ctx context.Context) error {
	return c.WS.Write(ctx, websocket.MessageBinary, []byte{1})
}

// Recv reads the next response message into m. When the call ends it
// returns io.EOF for OK, or the status error the trailers carry; if the
// WebSocket ends without trailers, its error.
func (c *Conn) Recv(ctx context.Context, m proto.Message) error {
	for {
		if len(c.buf) >= 5 {
			n := int(binary.BigEndian.Uint32(c.buf[1:5]))
			if len(c.buf) >= 5+n {
				flag, payload := c.buf[0], c.buf[5:5+n]
				c.buf = c.buf[5+n:]
				if flag&0x80 == 0 {
					return proto.Unmarshal(payload, m)
				}
				hdr, err := ParseHeaderBlock(payload)
				if err != nil {
					return err
				}
				if hdr.Get("Grpc-Status") == "" {
					c.Header = hdr
					continue
				}
				c.Trailer = hdr
				return StatusFrom(hdr)
			}
		}
		typ, data, err := c.WS.Read(ctx)
		if err != nil {
			return err
		}
		if typ != websocket.MessageBinary {
			return fmt.Errorf("grpcwebws: unexpected %v message", typ)
		}
		c.buf = append(c.buf, data...)
	}
}

// Close drops the connection without a close handshake.
func (c *Conn) Close() { _ = c.WS.CloseNow() }

// ParseHeaderBlock parses "key: value\r\n" lines.
func ParseHeaderBlock(b []byte) (textproto.MIMEHeader, error) {
	hdr, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(append(append([]byte(nil), b...), "\r\n"...)))).ReadMIMEHeader()
	if err != nil {
		return nil, fmt.Errorf("grpcwebws: bad header block %q: %w", b, err)
	}
	return hdr, nil
}

// StatusFrom returns io.EOF for grpc-status 0, else the status error.
func StatusFrom(hdr textproto.MIMEHeader) error {
	code, err := strconv.Atoi(hdr.Get("Grpc-Status"))
	if err != nil {
		return fmt.Errorf("grpcwebws: bad grpc-status %q", hdr.Get("Grpc-Status"))
	}
	if code == 0 {
		return io.EOF
	}
	msg, _ := url.PathUnescape(hdr.Get("Grpc-Message"))
	return status.Error(codes.Code(code), msg)
}
