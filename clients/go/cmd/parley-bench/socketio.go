package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/coder/websocket"
)

// The Socket.IO adapter speaks the small part of Engine.IO v4 and
// Socket.IO v5 the reference server needs, over a WebSocket only (no
// polling): the server opens with "0{...}"; the client connects to the
// main namespace with "40{"token":...}" and gets "40{"sid":...}" or
// "44{"message":...}"; events are "42[name,data]"; the server pings with
// "2" and the client answers "3". Binary packets are not used.

type sioWire struct {
	ws *websocket.Conn
	in bytes.Buffer
}

func dialSocketIO(ctx context.Context, addr, token string) (wire, error) {
	ws, _, err := websocket.Dial(ctx, "ws://"+addr+"/socket.io/?EIO=4&transport=websocket", nil)
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(maxRead)
	_, open, err := ws.Read(ctx)
	if err != nil || len(open) == 0 || open[0] != '0' {
		_ = ws.CloseNow()
		return nil, fmt.Errorf("socket.io: no open packet (%q): %v", open, err)
	}
	auth, _ := json.Marshal(map[string]string{"token": token})
	if err := ws.Write(ctx, websocket.MessageText, append([]byte("40"), auth...)); err != nil {
		_ = ws.CloseNow()
		return nil, err
	}
	return &sioWire{ws: ws}, nil
}

func (w *sioWire) emit(ctx context.Context, name string, data any) error {
	b, err := json.Marshal([]any{name, data})
	if err != nil {
		return err
	}
	return w.ws.Write(ctx, websocket.MessageText, append([]byte("42"), b...))
}

func (w *sioWire) join(ctx context.Context, room string) error { return w.emit(ctx, "join_room", room) }

func (w *sioWire) leave(ctx context.Context, room string) error {
	return w.emit(ctx, "leave_room", room)
}

func (w *sioWire) publish(ctx context.Context, room, text string) error {
	return w.emit(ctx, "send_room_message", sioSend{RoomID: room, Message: text})
}

type sioSend struct {
	RoomID  string `json:"roomId"`
	Message string `json:"message"`
}

// sioPayload is the part of the reference server's payloads the bench reads.
type sioPayload struct {
	RoomID  string `json:"roomId"`
	Text    string `json:"text"`
	Message string `json:"message"`
}

func (w *sioWire) recv(ctx context.Context) (event, error) {
	_, r, err := w.ws.Reader(ctx)
	if err != nil {
		return event{}, err
	}
	w.in.Reset()
	if _, err := w.in.ReadFrom(r); err != nil {
		return event{}, err
	}
	p := w.in.Bytes()
	switch {
	case len(p) == 1 && p[0] == '2': // ping
		return event{}, w.ws.Write(ctx, websocket.MessageText, []byte("3"))
	case bytes.HasPrefix(p, []byte("40")):
		return event{kind: evReady}, nil
	case bytes.HasPrefix(p, []byte("44")):
		var e sioPayload
		_ = json.Unmarshal(p[2:], &e)
		return event{}, fmt.Errorf("socket.io: connect refused: %s", e.Message)
	case bytes.HasPrefix(p, []byte("41")), len(p) > 0 && p[0] == '1':
		return event{}, errors.New("socket.io: disconnected by server")
	case !bytes.HasPrefix(p, []byte("42")):
		return event{}, nil
	}
	var args []json.RawMessage
	if err := json.Unmarshal(p[2:], &args); err != nil || len(args) == 0 {
		return event{}, fmt.Errorf("socket.io: bad event %.80q", p)
	}
	var name string
	_ = json.Unmarshal(args[0], &name)
	var d sioPayload
	if len(args) > 1 {
		_ = json.Unmarshal(args[1], &d)
	}
	switch name {
	case "room_message":
		return event{kind: evMessage, room: []byte(d.RoomID), text: []byte(d.Text)}, nil
	case "room_joined":
		return event{kind: evJoined, room: []byte(d.RoomID)}, nil
	case "room_left":
		return event{kind: evLeft, room: []byte(d.RoomID)}, nil
	case "error":
		return event{kind: evError, text: []byte(d.Message)}, nil
	}
	return event{}, nil
}

func (w *sioWire) close() { _ = w.ws.CloseNow() }

// mintHS256 returns a JWT for the reference server, signed as jsonwebtoken
// verifies it.
func mintHS256(secret []byte, user string, ttl time.Duration) string {
	enc := base64.RawURLEncoding
	now := time.Now().Unix()
	claims, _ := json.Marshal(map[string]any{"id": user, "email": user + "@bench.local", "iat": now, "exp": now + int64(ttl/time.Second)})
	s := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(claims)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(s))
	return s + "." + enc.EncodeToString(mac.Sum(nil))
}
