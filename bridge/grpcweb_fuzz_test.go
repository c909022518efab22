package bridge

import (
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/bridge/internal/grpcwebws"
	"github.com/parleychat/parley/bridge/wsframe"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/session"
)

// The fuzz targets here drive the inbound path of the gRPC-Web Connect
// attached to parleyd's sessions (grpcwebdirect.go) as the /ws ones
// (wspath_fuzz_test.go) drive /ws: raw client bytes into the frame reader,
// the header frame through parseGRPCWebHeaders as runGRPCWeb reads it,
// then every later message through grpcWebTransport.Recv, to what the
// session gets out. What comes out must be something the server can send
// back: an event that encodes, an in-band error that does, the
// half-close, a status that survives the trailers, or the end with a
// close code a server may send.

// grpcWebPathLimit is the message limit of the fuzzed connections.
const grpcWebPathLimit = 1 << 16

// grpcWebPath returns a transport reading in, as a gRPC-Web session
// attached to parleyd reads it, and the connection it ends.
func grpcWebPath(t *testing.T, in []byte) (*grpcWebTransport, *wsSession) {
	c, _ := rawConn(t, in, grpcWebPathLimit)
	s := &wsSession{conn: c, done: make(chan struct{}), closed: make(chan struct{}), format: formatBinary, grpcWeb: &grpcWebState{}}
	return &grpcWebTransport{s: s, cancel: func() {}}, s
}

// grpcWebOutcome is what one Recv gave the session.
type grpcWebOutcome int

const (
	gotEvent    grpcWebOutcome = iota
	gotInBand                  // an *session.InBandError: the session reads on
	gotHalfDone                // io.EOF: the client half-closed
	gotStatus                  // a status that ends the call
	gotGone                    // the connection failed (read error)
)

// recvGRPCWeb reads one command and checks that what came out can go back
// to the client. It returns the event (when decoded), the ending status
// (when one), and which of the outcomes it was.
func recvGRPCWeb(t *testing.T, tr *grpcWebTransport) (*chatv1.ClientEvent, *status.Status, grpcWebOutcome) {
	t.Helper()
	ev := new(chatv1.ClientEvent)
	err := tr.Recv(ev)
	var ib *session.InBandError
	switch {
	case err == nil:
		if _, err := proto.Marshal(ev); err != nil {
			t.Fatalf("the session got an event it cannot encode: %v", err)
		}
		return ev, nil, gotEvent
	case errors.As(err, &ib):
		reply := &chatv1.ServerEvent{RequestId: ib.RequestID, Event: &chatv1.ServerEvent_Error{Error: &chatv1.Error{Code: ib.Code, Message: ib.Message}}}
		if _, err := proto.Marshal(reply); err != nil {
			t.Fatalf("in-band error %q cannot be encoded: %v", ib.Message, err)
		}
		if len(ib.Message) > maxInBandMessage || !utf8.ValidString(ib.Message) {
			t.Fatalf("in-band error %q: over %d bytes or not UTF-8", ib.Message, maxInBandMessage)
		}
		return nil, nil, gotInBand
	case errors.Is(err, io.EOF):
		return nil, nil, gotHalfDone
	case err == errClientGone:
		s := tr.s
		if s.code != closeGoingAway && s.code != websocket.StatusNoStatusRcvd && !validCloseCode(s.code) {
			t.Fatalf("connection ended with close code %d", s.code)
		}
		checkSealed(t, s)
		return nil, nil, gotGone
	}
	st, ok := status.FromError(err)
	if !ok || (st.Code() != codes.InvalidArgument && st.Code() != codes.Unimplemented) {
		t.Fatalf("Recv returned %v: want an event, an in-band error, io.EOF, the end, or InvalidArgument/Unimplemented", err)
	}
	checkTrailer(t, st)
	return nil, st, gotStatus
}

// checkSealed: a connection that failed has its trailers decided by then:
// none, or (over the limit) the table's status for 1009 naming the limit.
func checkSealed(t *testing.T, s *wsSession) {
	t.Helper()
	st := s.grpcWeb.trailer.Load()
	switch {
	case s.code == websocket.StatusMessageTooBig:
		if st == nil || st.Code() != status.Code(session.Disconnect{Code: session.CodeTooBig}.Err()) || !strings.Contains(st.Message(), "65536-byte limit") {
			t.Fatalf("over the limit, trailers %v", st)
		}
		checkTrailer(t, st)
	case st != noTrailer:
		t.Fatalf("connection ended %d without a status, but trailers %v", s.code, st)
	}
}

// checkTrailer: st, written as the trailer block, reads back as st on the
// client (improbable's parser is a MIME header reader like ours).
func checkTrailer(t *testing.T, st *status.Status) {
	t.Helper()
	hdr, err := grpcwebws.ParseHeaderBlock(trailerBlock(st))
	if err != nil {
		t.Fatalf("trailers of %v do not parse: %v", st, err)
	}
	got := status.Convert(grpcwebws.StatusFrom(hdr))
	if got.Code() != st.Code() || got.Message() != st.Message() {
		t.Fatalf("trailers carry %v %q, want %v %q", got.Code(), got.Message(), st.Code(), st.Message())
	}
}

// checkHeaderFrame checks what parseGRPCWebHeaders made of data: a call
// whose authorization may go into metadata and whose deadline is not in
// the past, or an error that says which frame was bad and survives the
// trailers.
func checkHeaderFrame(t *testing.T, data []byte) bool {
	t.Helper()
	call, err := parseGRPCWebHeaders(data)
	if err != nil {
		if !strings.HasPrefix(err.Error(), "bad header frame: ") {
			t.Fatalf("header frame error %q", err)
		}
		checkTrailer(t, status.New(codes.InvalidArgument, err.Error()))
		return false
	}
	if !printableASCII(call.auth) {
		t.Fatalf("authorization %q is not printable ASCII", call.auth)
	}
	if call.timeout < 0 || (!call.hasTimeout && call.timeout != 0) {
		t.Fatalf("grpc-timeout gave %v (set %v)", call.timeout, call.hasTimeout)
	}
	return true
}

// clientGRPCWeb is msg as the client message a browser sends.
func clientGRPCWeb(msg []byte) []byte {
	return message(wsframe.Binary, append([]byte{0}, grpcwebws.Frame(0, msg)...), 0)
}

var grpcWebHeaderSeed = "content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\nauthorization: Bearer a.b.c\r\n"

// FuzzGRPCWebFrames sends a header frame, then arbitrary bytes: the
// header frame parses to a usable call or to an error the trailers carry,
// and every later frame comes out as something the session can answer or
// end with (see recvGRPCWeb).
func FuzzGRPCWebFrames(f *testing.F) {
	key := [4]byte{9, 8, 7, 6}
	ping, _ := proto.Marshal(&chatv1.ClientEvent{RequestId: "p", Event: &chatv1.ClientEvent_Ping{Ping: &chatv1.Ping{}}})
	bin := func(p []byte) []byte { return clientFrame(0x80|wsframe.Binary, p, key) }
	f.Add([]byte(grpcWebHeaderSeed), clientGRPCWeb(ping))
	f.Add([]byte(grpcWebHeaderSeed+"grpc-timeout: 10S\r\n"), append(clientGRPCWeb(ping), bin([]byte{1})...))
	f.Add([]byte(grpcWebHeaderSeed+"grpc-timeout: 99999999H\r\n"), bin([]byte{1}))
	f.Add([]byte(grpcWebHeaderSeed+"grpc-timeout: 1.5S\r\n"), []byte{})
	f.Add([]byte("no colon\r\n"), []byte{})
	f.Add([]byte(" folded: x\r\n"), []byte{})
	f.Add([]byte("authorization: a\r\nauthorization: b\r\n"), []byte{})
	f.Add([]byte("authorization: Bearer t\xf6k\r\n"), []byte{})
	f.Add([]byte(grpcWebHeaderSeed), bin(append([]byte{0, 1}, grpcwebws.Frame(0, ping)[1:]...)))              // compressed
	f.Add([]byte(grpcWebHeaderSeed), bin([]byte{0, 0, 0, 0, 0, 9, 'x'}))                                      // length too long
	f.Add([]byte(grpcWebHeaderSeed), bin(append([]byte{0}, grpcwebws.Frame(0, []byte{0x0a, 0xff, 0xff})...))) // bad protobuf
	f.Add([]byte(grpcWebHeaderSeed), bin([]byte{2}))
	f.Add([]byte(grpcWebHeaderSeed), clientFrame(0x80|wsframe.Close, []byte{0x03, 0xe8}, key))
	f.Add([]byte(grpcWebHeaderSeed), append(clientFrame(wsframe.Binary, []byte{0, 0}, key), clientFrame(0x80|wsframe.Continuation, grpcwebws.Frame(0, ping)[1:], key)...))
	f.Fuzz(func(t *testing.T, header, rest []byte) {
		tr, s := grpcWebPath(t, append(clientFrame(0x80|wsframe.Binary, header, key), rest...))
		_, data, err := s.conn.ReadMessage()
		if err != nil {
			s.grpcWebReadFailed(err)
			checkSealed(t, s)
			return
		}
		if !checkHeaderFrame(t, data) {
			return
		}
		for range 32 {
			if _, _, out := recvGRPCWeb(t, tr); out != gotEvent && out != gotInBand {
				return
			}
		}
	})
}

// FuzzGRPCWebMessage sends one client message (fragmented or not) after a
// good header frame, then a ping, and checks the message against the
// wire format: a lone 0x01 is the half-close; 0x00 and a whole,
// uncompressed gRPC frame give the session the event protobuf decodes
// (or an in-band error, after which the ping is read); anything else ends
// the call with the status that names the fault.
func FuzzGRPCWebMessage(f *testing.F) {
	ping, _ := proto.Marshal(&chatv1.ClientEvent{RequestId: "after", Event: &chatv1.ClientEvent_Ping{Ping: &chatv1.Ping{}}})
	good, _ := proto.Marshal(&chatv1.ClientEvent{RequestId: "r1", Event: &chatv1.ClientEvent_SendMessage{SendMessage: &chatv1.SendMessage{Room: "general", Text: "héllo"}}})
	for _, m := range [][]byte{
		append([]byte{0}, grpcwebws.Frame(0, good)...),
		append([]byte{0}, grpcwebws.Frame(1, good)...),
		append([]byte{0}, grpcwebws.Frame(0x80, good)...),
		append([]byte{0}, grpcwebws.Frame(0, []byte{0x0a, 0x02, 0xc3, 0x28})...), // request id not UTF-8
		{0, 0, 0, 0, 0, 0},
		{0, 0, 0, 0, 0, 1},
		{0, 0, 0, 0},
		{1},
		{1, 0},
		{},
	} {
		f.Add(m, uint16(0))
		f.Add(m, uint16(5))
	}
	f.Fuzz(func(t *testing.T, msg []byte, split uint16) {
		in := message(wsframe.Binary, []byte(grpcWebHeaderSeed), 0)
		in = append(in, message(wsframe.Binary, msg, split)...)
		tr, s := grpcWebPath(t, append(in, clientGRPCWeb(ping)...))
		if _, data, err := s.conn.ReadMessage(); err != nil || !checkHeaderFrame(t, data) {
			t.Fatalf("the good header frame: %v", err)
		}
		ev, st, out := recvGRPCWeb(t, tr)
		var want grpcWebOutcome
		var wantCode codes.Code
		switch {
		case len(msg) > grpcWebPathLimit:
			want = gotGone
		case len(msg) == 1 && msg[0] == 1:
			want = gotHalfDone
		case len(msg) < 6 || msg[0] != 0:
			want, wantCode = gotStatus, codes.InvalidArgument
		case msg[1] == 1:
			want, wantCode = gotStatus, codes.Unimplemented
		case msg[1] != 0 || int(binary.BigEndian.Uint32(msg[2:6])) != len(msg)-6:
			want, wantCode = gotStatus, codes.InvalidArgument
		default:
			if proto.Unmarshal(msg[6:], new(chatv1.ClientEvent)) == nil {
				want = gotEvent
			} else {
				want = gotInBand
			}
		}
		if out != want || (want == gotStatus && st.Code() != wantCode) {
			t.Fatalf("message %x: outcome %d (%v), want %d (%v)", msg, out, st, want, wantCode)
		}
		switch want {
		case gotEvent:
			decoded := new(chatv1.ClientEvent)
			if err := proto.Unmarshal(msg[6:], decoded); err != nil || !proto.Equal(ev, decoded) {
				t.Fatalf("session got %v; protobuf decodes %v, %v", ev, decoded, err)
			}
		case gotGone:
			if s.code != websocket.StatusMessageTooBig {
				t.Fatalf("over the limit: closed %d, want 1009", s.code)
			}
			return
		default:
			if want != gotInBand {
				return // the session ends here: the ping is never read
			}
		}
		if next, _, _ := recvGRPCWeb(t, tr); next.GetPing() == nil || next.GetRequestId() != "after" {
			t.Fatalf("after the message the session got %v, want the ping", next)
		}
	})
}

// TestGRPCTimeout pins the grpc-timeout grammar at its edges.
func TestGRPCTimeout(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in      string
		want    int64 // nanoseconds
		set, ok bool
	}{
		{"1S", 1e9, true, true},
		{"0n", 0, true, true},
		{"99999999n", 99999999, true, true},
		{"250m", 250e6, true, true},
		{"3u", 3000, true, true},
		{"2M", 120e9, true, true},
		{"1H", 3600e9, true, true},
		{"2562047H", 2562047 * 3600e9, true, true},
		{"2562048H", 0, false, true}, // past a time.Duration: no deadline
		{"99999999H", 0, false, true},
		{"S", 0, false, false},
		{"1", 0, false, false},
		{"123456789S", 0, false, false},
		{"1s", 0, false, false},
		{"+1S", 0, false, false},
		{" 1S", 0, false, false},
		{"1 S", 0, false, false},
		{"", 0, false, false},
	} {
		d, set, err := parseGRPCTimeout(tc.in)
		if (err == nil) != tc.ok || set != tc.set || int64(d) != tc.want {
			t.Errorf("parseGRPCTimeout(%q) = %v, %v, %v; want %v, %v, ok %v", tc.in, d, set, err, tc.want, tc.set, tc.ok)
		}
	}
	if _, err := parseGRPCWebHeaders([]byte("grpc-timeout: 5S\r\ngrpc-timeout: 5S\r\n")); err == nil {
		t.Error("grpc-timeout twice was accepted")
	}
	if call, err := parseGRPCWebHeaders([]byte("Grpc-Timeout: 5S\r\n")); err != nil || !call.hasTimeout || call.timeout.Seconds() != 5 {
		t.Errorf("header names are case-insensitive: %+v, %v", call, err)
	}
}
