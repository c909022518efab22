package bridge

import (
	"errors"
	"io"
	"testing"
	"unicode/utf8"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/bridge/wsframe"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/session"
)

// The fuzz targets here drive the whole /ws inbound path as parleyd runs
// it: raw client bytes into the frame reader (wsConn), through the
// transport a directly attached session reads (directTransport.Recv), to
// what the session gets out: a ClientEvent, an in-band *session.InBandError, or
// the end (io.EOF, with the close code the session recorded). What comes
// out must be something the server can encode (proto.Marshal is what its
// encoder, hub.Encode, runs; it fails only on invalid UTF-8), so no frame
// can panic the session.

// pathSession returns a transport reading in, as a session attached to
// parleyd reads it, and the session it ends.
func pathSession(t *testing.T, in []byte) (*directTransport, *wsSession) {
	c, _ := rawConn(t, in, 1<<16)
	s := &wsSession{conn: c, done: make(chan struct{}), closed: make(chan struct{})}
	return &directTransport{s: s}, s
}

// recvOne reads one command and checks that what came out can go back to
// the client: an event that encodes, or an in-band error that does. It
// returns the event (nil unless decoded), the in-band error, and whether
// the session ended.
func recvOne(t *testing.T, tr *directTransport) (*chatv1.ClientEvent, *session.InBandError, bool) {
	t.Helper()
	ev := new(chatv1.ClientEvent)
	err := tr.Recv(ev)
	var ce *session.InBandError
	switch {
	case err == nil:
		if _, err := proto.Marshal(ev); err != nil {
			t.Fatalf("the session got an event it cannot encode: %v", err)
		}
		return ev, nil, false
	case errors.As(err, &ce):
		reply := &chatv1.ServerEvent{RequestId: ce.RequestID, Event: &chatv1.ServerEvent_Error{Error: &chatv1.Error{Code: ce.Code, Message: ce.Message}}}
		if _, err := proto.Marshal(reply); err != nil {
			t.Fatalf("in-band error %q (request %q) cannot be encoded: %v", ce.Message, ce.RequestID, err)
		}
		if len(ce.Message) > maxInBandMessage || !utf8.ValidString(ce.Message) {
			t.Fatalf("in-band error %q: over %d bytes or not UTF-8", ce.Message, maxInBandMessage)
		}
		return nil, ce, false
	case errors.Is(err, io.EOF):
		return nil, nil, true
	}
	t.Fatalf("Recv returned %v: want an event, a *session.InBandError or io.EOF", err)
	return nil, nil, false
}

// message frames payload as one client message of type op, split into
// two fragments at split (modulo its length) when split is odd.
func message(op byte, payload []byte, split uint16) []byte {
	key := [4]byte{0x5a, 0x11, 0xc3, 0x7e}
	if split%2 == 0 || len(payload) < 2 {
		return clientFrame(0x80|op, payload, key)
	}
	at := int(split/2) % len(payload)
	return append(clientFrame(op, payload[:at], key), clientFrame(0x80|wsframe.Continuation, payload[at:], key)...)
}

// FuzzWSTextPath sends one text message (fragmented or not), then a ping
// command. Not UTF-8: the session ends with 1007 and nothing else. UTF-8:
// the session gets the event protojson decodes, or an in-band error, and
// then reads the ping.
func FuzzWSTextPath(f *testing.F) {
	for _, s := range []string{
		`{"requestId":"r1","ping":{}}`,
		`{"requestId":"r1","sendMessage":{"room":"general","text":"caf` + "\xe9" + `"}}`,
		"\xc3\x28", "{\"requestId\":\"\xed\xa0\x80\"}", `{"requestId":"r1","sendMessage":`,
		`{"requestId":"r1","` + "ééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé" + `":1}`,
		`{"requestId":"é","sendMessage":{"room":"r","text":"\ud800"}}`,
	} {
		f.Add([]byte(s), uint16(0))
		f.Add([]byte(s), uint16(7))
	}
	ping := []byte(`{"requestId":"after","ping":{}}`)
	f.Fuzz(func(t *testing.T, payload []byte, split uint16) {
		tr, s := pathSession(t, append(message(wsframe.Text, payload, split), message(wsframe.Text, ping, 0)...))
		ev, _, ended := recvOne(t, tr)
		if !utf8.Valid(payload) {
			if !ended || s.code != websocket.StatusInvalidFramePayloadData {
				t.Fatalf("text not UTF-8: ended %v with %d, want 1007", ended, s.code)
			}
			return
		}
		if ended {
			t.Fatalf("a UTF-8 text message ended the session (%d %q)", s.code, s.reason)
		}
		if ev != nil {
			want := new(chatv1.ClientEvent)
			if err := jsonIn.Unmarshal(payload, want); err != nil || !proto.Equal(ev, want) {
				t.Fatalf("session got %v; protojson decodes %v, %v", ev, want, err)
			}
		}
		if next, _, _ := recvOne(t, tr); next.GetPing() == nil || next.GetRequestId() != "after" {
			t.Fatalf("after the message the session got %v, want the ping", next)
		}
	})
}

// FuzzWSBinaryPath sends one binary message (fragmented or not), then a
// ping command: the session gets the event protobuf decodes, or an
// in-band error, and then reads the ping.
func FuzzWSBinaryPath(f *testing.F) {
	good, _ := proto.Marshal(&chatv1.ClientEvent{RequestId: "r1", Event: &chatv1.ClientEvent_SendMessage{SendMessage: &chatv1.SendMessage{Room: "general", Text: "héllo"}}})
	f.Add(good, uint16(0))
	f.Add(good, uint16(9))
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff}, uint16(0))
	f.Add([]byte{0x0a, 0x02, 0xc3, 0x28}, uint16(0)) // request id not UTF-8
	f.Add([]byte{}, uint16(0))
	ping, _ := proto.Marshal(&chatv1.ClientEvent{RequestId: "after", Event: &chatv1.ClientEvent_Ping{Ping: &chatv1.Ping{}}})
	f.Fuzz(func(t *testing.T, payload []byte, split uint16) {
		tr, s := pathSession(t, append(message(wsframe.Binary, payload, split), message(wsframe.Binary, ping, 0)...))
		ev, _, ended := recvOne(t, tr)
		if ended {
			t.Fatalf("a binary message ended the session (%d %q)", s.code, s.reason)
		}
		if ev != nil {
			want := new(chatv1.ClientEvent)
			if err := proto.Unmarshal(payload, want); err != nil || !proto.Equal(ev, want) {
				t.Fatalf("session got %v; protobuf decodes %v, %v", ev, want, err)
			}
		}
		if next, _, _ := recvOne(t, tr); next.GetPing() == nil || next.GetRequestId() != "after" {
			t.Fatalf("after the message the session got %v, want the ping", next)
		}
	})
}

// FuzzWSSessionRaw feeds arbitrary bytes to the session's reader: every
// command out is encodable, and the session ends with a close code a
// server may send (or none, echoing a close without one).
func FuzzWSSessionRaw(f *testing.F) {
	key := [4]byte{1, 2, 3, 4}
	f.Add(clientFrame(0x80|wsframe.Text, []byte(`{"requestId":"r","ping":{}}`), key))
	f.Add(clientFrame(0x80|wsframe.Text, []byte("\xff"), key))
	f.Add(append(clientFrame(wsframe.Text, []byte("\xc3"), key), clientFrame(0x80|wsframe.Continuation, []byte("\xa9"), key)...))
	f.Add(clientFrame(0x80|wsframe.Binary, []byte{0x0a, 0x01, 0x80}, key))
	f.Add(clientFrame(0x80|wsframe.Close, []byte{0x03, 0xe8}, key))
	f.Fuzz(func(t *testing.T, in []byte) {
		tr, s := pathSession(t, in)
		for range 32 {
			if _, _, ended := recvOne(t, tr); ended {
				// 1005: the peer's close had no code; none is echoed.
				if s.code != closeGoingAway && s.code != websocket.StatusNoStatusRcvd && !validCloseCode(s.code) {
					t.Fatalf("session ended with close code %d", s.code)
				}
				return
			}
		}
	})
}
