package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// Transports the bench speaks.
const (
	trGRPC     = "grpc"      // native gRPC, Chat.Connect
	trGRPCWeb  = "grpcweb"   // gRPC-Web over improbable's WebSocket transport
	trWSJSON   = "ws-json"   // /ws, protojson text frames
	trWSBinary = "ws-binary" // /ws, protobuf binary frames
	trSocketIO = "socketio"  // the Socket.IO reference server (Engine.IO v4 over WebSocket)
)

// parleyTransports are the transports of a Parley server, in smoke order.
var parleyTransports = []string{trGRPC, trGRPCWeb, trWSJSON, trWSBinary}

func knownTransport(t string) bool {
	return t == trSocketIO || slices.Contains(parleyTransports, t)
}

// maxRead bounds one message read from the server.
const maxRead = 64 << 20

// evKind is the kind of a server event, as far as the bench cares.
type evKind uint8

const (
	evOther   evKind = iota
	evReady          // Parley Welcome; Socket.IO namespace connect
	evJoined         // RoomJoined / room_joined
	evLeft           // RoomLeft
	evMessage        // a room message
	evAck            // Ack of a stored message
	evError          // an in-band error
)

// event is one server event. Its byte slices are valid until the next recv.
type event struct {
	kind evKind
	room []byte // evJoined, evLeft, evMessage
	text []byte // evMessage: the text; evError: the message
}

// wire is one connection speaking one transport. Commands (join, leave,
// publish) are called by one goroutine at a time; recv only by the
// session's reader. close may be called at any time, more than once.
type wire interface {
	join(ctx context.Context, room string) error
	leave(ctx context.Context, room string) error
	publish(ctx context.Context, room, text string) error
	recv(ctx context.Context) (event, error)
	close()
}

// endpoints are the servers' addresses.
type endpoints struct {
	grpcAddr, httpAddr, sioAddr string
}

// dialWire opens one connection; the caller then waits for evReady.
func dialWire(ctx context.Context, transport string, ep endpoints, token string) (wire, error) {
	switch transport {
	case trGRPC:
		return dialGRPC(ctx, ep.grpcAddr, token)
	case trGRPCWeb:
		return dialGRPCWeb(ctx, ep.httpAddr, token)
	case trWSJSON, trWSBinary:
		return dialWS(ctx, ep.httpAddr, token, transport == trWSBinary)
	case trSocketIO:
		return dialSocketIO(ctx, ep.sioAddr, token)
	}
	return nil, fmt.Errorf("unknown transport %q", transport)
}

// Parley commands, shared by the protobuf transports.

func joinEvent(room string) *chatv1.ClientEvent {
	return &chatv1.ClientEvent{RequestId: "j", Event: &chatv1.ClientEvent_JoinRoom{JoinRoom: &chatv1.JoinRoom{Room: room}}}
}

func leaveEvent(room string) *chatv1.ClientEvent {
	return &chatv1.ClientEvent{RequestId: "l", Event: &chatv1.ClientEvent_LeaveRoom{LeaveRoom: &chatv1.LeaveRoom{Room: room}}}
}

func sendEvent(room, text string) *chatv1.ClientEvent {
	return &chatv1.ClientEvent{Event: &chatv1.ClientEvent_SendMessage{SendMessage: &chatv1.SendMessage{Room: room, Text: text}}}
}

// scanParley reads what the bench needs from a protobuf ServerEvent
// without building one: welcome (1), message (6: conversation 2 {room 1},
// text 7), room_joined (7: room 1), ack (12), error (13: message 2),
// room_left (18: room 1).
func scanParley(b []byte) (event, error) {
	var ev event
	err := eachBytesField(b, func(num protowire.Number, v []byte) error {
		switch num {
		case 1:
			ev.kind = evReady
		case 6:
			ev.kind = evMessage
			return eachBytesField(v, func(num protowire.Number, v []byte) error {
				switch num {
				case 2:
					ev.room = bytesField(v, 1)
				case 7:
					ev.text = v
				}
				return nil
			})
		case 7:
			ev.kind, ev.room = evJoined, bytesField(v, 1)
		case 12:
			ev.kind = evAck
		case 13:
			ev.kind, ev.text = evError, bytesField(v, 2)
		case 18:
			ev.kind, ev.room = evLeft, bytesField(v, 1)
		}
		return nil
	})
	return ev, err
}

// eachBytesField calls f for every length-delimited field of b.
func eachBytesField(b []byte, f func(protowire.Number, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := f(num, v); err != nil {
			return err
		}
	}
	return nil
}

// bytesField returns the last length-delimited field num of b.
func bytesField(b []byte, num protowire.Number) []byte {
	var out []byte
	_ = eachBytesField(b, func(n protowire.Number, v []byte) error {
		if n == num {
			out = v
		}
		return nil
	})
	return out
}

// jsonEvent is the part of a protojson ServerEvent the bench reads.
type jsonEvent struct {
	Welcome json.RawMessage `json:"welcome"`
	Message *struct {
		Conversation struct {
			Room string `json:"room"`
		} `json:"conversation"`
		Text string `json:"text"`
	} `json:"message"`
	RoomJoined *struct {
		Room string `json:"room"`
	} `json:"roomJoined"`
	RoomLeft *struct {
		Room string `json:"room"`
	} `json:"roomLeft"`
	Ack   json.RawMessage `json:"ack"`
	Error *struct {
		Message string `json:"message"`
	} `json:"error"`
}

func scanParleyJSON(b []byte) (event, error) {
	var j jsonEvent
	if err := json.Unmarshal(b, &j); err != nil {
		return event{}, err
	}
	switch {
	case j.Welcome != nil:
		return event{kind: evReady}, nil
	case j.Message != nil:
		return event{kind: evMessage, room: []byte(j.Message.Conversation.Room), text: []byte(j.Message.Text)}, nil
	case j.RoomJoined != nil:
		return event{kind: evJoined, room: []byte(j.RoomJoined.Room)}, nil
	case j.RoomLeft != nil:
		return event{kind: evLeft, room: []byte(j.RoomLeft.Room)}, nil
	case j.Ack != nil:
		return event{kind: evAck}, nil
	case j.Error != nil:
		return event{kind: evError, text: []byte(j.Error.Message)}, nil
	}
	return event{}, nil
}

// Native gRPC.

// rawFrame is a received message left encoded; rawCodec fills it.
type rawFrame struct{ b []byte }

// rawCodec marshals requests as protobuf and hands responses over
// undecoded, so that receivers scan them with scanParley. Its name is
// "proto", so the wire is plain application/grpc.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) ([]byte, error) { return proto.Marshal(v.(proto.Message)) }

func (rawCodec) Unmarshal(data []byte, v any) error {
	f := v.(*rawFrame)
	f.b = append(f.b[:0], data...)
	return nil
}

type grpcWire struct {
	cc     *grpc.ClientConn
	stream grpc.ClientStream
	cancel context.CancelFunc
	in     rawFrame
}

// dialGRPC opens Chat.Connect on its own ClientConn (one TCP connection
// per client, as real clients have).
func dialGRPC(ctx context.Context, addr, token string) (wire, error) {
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		// The SDK's windows (parley.Dial): static, so grpc does not ping
		// the server after each burst it receives.
		grpc.WithInitialWindowSize(1<<20), grpc.WithInitialConnWindowSize(1<<20))
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancel) // bound the dial by ctx, not the stream
	defer stop()
	sctx = metadata.AppendToOutgoingContext(sctx, "authorization", "Bearer "+token)
	stream, err := cc.NewStream(sctx, &chatv1.Chat_ServiceDesc.Streams[0], chatv1.Chat_Connect_FullMethodName,
		grpc.ForceCodec(rawCodec{}))
	if err != nil {
		cancel()
		_ = cc.Close()
		return nil, err
	}
	return &grpcWire{cc: cc, stream: stream, cancel: cancel}, nil
}

func (w *grpcWire) join(_ context.Context, room string) error {
	return w.stream.SendMsg(joinEvent(room))
}

func (w *grpcWire) leave(_ context.Context, room string) error {
	return w.stream.SendMsg(leaveEvent(room))
}

func (w *grpcWire) publish(_ context.Context, room, text string) error {
	return w.stream.SendMsg(sendEvent(room, text))
}

func (w *grpcWire) recv(context.Context) (event, error) {
	if err := w.stream.RecvMsg(&w.in); err != nil {
		return event{}, err
	}
	return scanParley(w.in.b)
}

func (w *grpcWire) close() {
	w.cancel()
	_ = w.cc.Close()
}

// gRPC-Web over improbable-eng/grpc-web's WebSocket transport: subprotocol
// "grpc-websockets"; the first message holds the request headers as
// "key: value\r\n" lines; each later client message is binary, a 0 byte
// then one gRPC frame (flag, 4-byte big-endian length, message), or a lone
// 1 for end of sending. The server sends a byte stream cut at arbitrary
// points into gRPC-Web frames: flag 0x00 a message, 0x80 a header block
// (the response headers, and last the trailers with grpc-status).

type grpcWebWire struct {
	ws  *websocket.Conn
	buf []byte // received bytes not yet consumed
	off int
}

func dialGRPCWeb(ctx context.Context, addr, token string) (wire, error) {
	ws, _, err := websocket.Dial(ctx, "ws://"+addr+chatv1.Chat_Connect_FullMethodName,
		&websocket.DialOptions{Subprotocols: []string{"grpc-websockets"}})
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(maxRead)
	hdr := "content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\nauthorization: Bearer " + token + "\r\n"
	if err := ws.Write(ctx, websocket.MessageBinary, []byte(hdr)); err != nil {
		_ = ws.CloseNow()
		return nil, err
	}
	return &grpcWebWire{ws: ws}, nil
}

func (w *grpcWebWire) send(ctx context.Context, ev *chatv1.ClientEvent) error {
	b := make([]byte, 6, 6+proto.Size(ev))
	b, err := proto.MarshalOptions{}.MarshalAppend(b, ev)
	if err != nil {
		return err
	}
	binary.BigEndian.PutUint32(b[2:6], uint32(len(b)-6)) // b[0]=0 (data), b[1]=0 (message flag)
	return w.ws.Write(ctx, websocket.MessageBinary, b)
}

func (w *grpcWebWire) join(ctx context.Context, room string) error {
	return w.send(ctx, joinEvent(room))
}
func (w *grpcWebWire) leave(ctx context.Context, room string) error {
	return w.send(ctx, leaveEvent(room))
}
func (w *grpcWebWire) publish(ctx context.Context, room, text string) error {
	return w.send(ctx, sendEvent(room, text))
}

func (w *grpcWebWire) recv(ctx context.Context) (event, error) {
	for {
		if rest := w.buf[w.off:]; len(rest) >= 5 {
			n := int(binary.BigEndian.Uint32(rest[1:5]))
			if len(rest) >= 5+n {
				flag, payload := rest[0], rest[5:5+n]
				w.off += 5 + n
				if flag&0x80 == 0 {
					return scanParley(payload)
				}
				if err := trailerStatus(payload); err != nil {
					return event{}, err
				}
				continue // response headers
			}
		}
		// Keep the unconsumed tail, then read more.
		w.buf = append(w.buf[:0], w.buf[w.off:]...)
		w.off = 0
		_, r, err := w.ws.Reader(ctx)
		if err != nil {
			return event{}, err
		}
		bb := bytes.NewBuffer(w.buf)
		if _, err := bb.ReadFrom(r); err != nil {
			return event{}, err
		}
		w.buf = bb.Bytes()
	}
}

// trailerStatus returns nil for a header block without grpc-status, io.EOF
// for status 0, else the status error.
func trailerStatus(block []byte) error {
	var code = -1
	var msg string
	for line := range strings.SplitSeq(string(block), "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "grpc-status":
			code, _ = strconv.Atoi(strings.TrimSpace(v))
		case "grpc-message":
			msg, _ = url.PathUnescape(strings.TrimSpace(v))
		}
	}
	switch code {
	case -1:
		return nil
	case 0:
		return io.EOF
	}
	return status.Error(codes.Code(code), msg)
}

func (w *grpcWebWire) close() { _ = w.ws.CloseNow() }

// /ws: one WebSocket is one Chat.Connect stream; the token travels in the
// "bearer.<token>" subprotocol and the first frame, a hello `{}`, fixes
// the connection's format (text: protojson, binary: protobuf).
