package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/prototext"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/servertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The pure-Go SQLite driver and grpc keep process-wide helpers.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
		// improbable-eng/grpc-web's timer package starts one at init.
		goleak.IgnoreTopFunction("github.com/desertbit/timer.timerRoutine"),
	)
}

// waitFor bounds how long a test waits for an event that must come; it is
// a liveness guard, not a performance assertion.
const waitFor = 10 * time.Second

// client is one Connect stream read by a goroutine into a channel, so the
// test goroutine can wait for events without blocking forever.
type client struct {
	t      testing.TB
	name   string
	stream grpc.BidiStreamingClient[chatv1.ClientEvent, chatv1.ServerEvent]
	events chan *chatv1.ServerEvent
	end    chan error
	cancel context.CancelFunc
	reqs   int
	// backlog holds events next skipped, so a later next can still find
	// them (a message arrives before its own ack, for example).
	backlog []*chatv1.ServerEvent
}

func connect(t testing.TB, conn *grpc.ClientConn, name, token string, opts ...grpc.CallOption) *client {
	t.Helper()
	c, err := tryConnect(t, conn, name, token, opts...)
	if err != nil {
		t.Fatalf("%s: connect: %v", name, err)
	}
	c.next(isWelcome)
	return c
}

func tryConnect(t testing.TB, conn *grpc.ClientConn, name, token string, opts ...grpc.CallOption) (*client, error) {
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := chatv1.NewChatClient(conn).Connect(servertest.WithToken(ctx, token), opts...)
	if err != nil {
		cancel()
		return nil, err
	}
	c := &client{t: t, name: name, stream: stream, events: make(chan *chatv1.ServerEvent, 10000), end: make(chan error, 1), cancel: cancel}
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				close(c.events)
				c.end <- err
				return
			}
			c.events <- ev
		}
	}()
	t.Cleanup(c.close)
	return c, nil
}

func (c *client) close() { c.cancel() }

// send sends one command and returns its request id.
func (c *client) send(ev *chatv1.ClientEvent) string {
	c.t.Helper()
	c.reqs++
	if ev.RequestId == "" {
		ev.RequestId = fmt.Sprintf("%s-%d", c.name, c.reqs)
	}
	if err := c.stream.Send(ev); err != nil {
		c.t.Fatalf("%s: send: %v", c.name, err)
	}
	return ev.RequestId
}

// next returns the first event matching; the others stay in the backlog.
func (c *client) next(match func(*chatv1.ServerEvent) bool) *chatv1.ServerEvent {
	c.t.Helper()
	for i, ev := range c.backlog {
		if match(ev) {
			c.backlog = append(c.backlog[:i:i], c.backlog[i+1:]...)
			return ev
		}
	}
	evs := c.receive(match)
	c.backlog = append(c.backlog, evs[:len(evs)-1]...)
	return evs[len(evs)-1]
}

// until returns the backlog and every new event up to and including the
// first matching one, and empties the backlog.
func (c *client) until(match func(*chatv1.ServerEvent) bool) []*chatv1.ServerEvent {
	c.t.Helper()
	seen := c.backlog
	c.backlog = nil
	for i, ev := range seen {
		if match(ev) {
			c.backlog = seen[i+1:]
			return seen[:i+1]
		}
	}
	return append(seen, c.receive(match)...)
}

// receive reads events up to and including the first matching one.
func (c *client) receive(match func(*chatv1.ServerEvent) bool) []*chatv1.ServerEvent {
	c.t.Helper()
	var seen []*chatv1.ServerEvent
	timeout := time.After(waitFor)
	for {
		select {
		case ev, ok := <-c.events:
			if !ok {
				c.t.Fatalf("%s: stream ended (%v) while waiting; saw %s", c.name, c.peekEnd(), describe(seen))
			}
			seen = append(seen, ev)
			if match(ev) {
				return seen
			}
		case <-timeout:
			c.t.Fatalf("%s: no matching event within %s; saw %s", c.name, waitFor, describe(seen))
		}
	}
}

func (c *client) peekEnd() error {
	select {
	case err := <-c.end:
		c.end <- err
		return err
	default:
		return nil
	}
}

// sync sends a ping and returns everything that arrived before the pong:
// anything queued for this client before the ping was read is in it.
func (c *client) sync() []*chatv1.ServerEvent {
	c.t.Helper()
	id := c.send(&chatv1.ClientEvent{Event: &chatv1.ClientEvent_Ping{Ping: &chatv1.Ping{}}})
	evs := c.until(func(ev *chatv1.ServerEvent) bool { return ev.GetPong() != nil && ev.GetRequestId() == id })
	return evs[:len(evs)-1]
}

// ended waits for the stream to end and returns its final error.
func (c *client) ended() error {
	c.t.Helper()
	timeout := time.After(waitFor)
	for {
		select {
		case _, ok := <-c.events:
			if !ok {
				err := <-c.end
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
		case <-timeout:
			c.t.Fatalf("%s: stream did not end within %s", c.name, waitFor)
		}
	}
}

func describe(evs []*chatv1.ServerEvent) string {
	if len(evs) > 20 {
		evs = evs[len(evs)-20:]
	}
	s := ""
	for _, ev := range evs {
		s += "\n  " + prototext.MarshalOptions{}.Format(ev)
	}
	if s == "" {
		return "nothing"
	}
	return s
}

func isWelcome(ev *chatv1.ServerEvent) bool { return ev.GetWelcome() != nil }

func replyTo(id string) func(*chatv1.ServerEvent) bool {
	return func(ev *chatv1.ServerEvent) bool { return ev.GetRequestId() == id }
}

func textIn(room, text string) func(*chatv1.ServerEvent) bool {
	return func(ev *chatv1.ServerEvent) bool {
		m := ev.GetMessage()
		return m != nil && m.GetConversation().GetRoom() == room && m.GetText() == text
	}
}

func sendRoom(room, text, cmid string) *chatv1.ClientEvent {
	return &chatv1.ClientEvent{Event: &chatv1.ClientEvent_SendMessage{SendMessage: &chatv1.SendMessage{Room: room, Text: text, ClientMsgId: cmid}}}
}

func sendPrivate(to, text string) *chatv1.ClientEvent {
	return &chatv1.ClientEvent{Event: &chatv1.ClientEvent_SendPrivateMessage{SendPrivateMessage: &chatv1.SendPrivateMessage{To: to, Text: text}}}
}

func join(room string) *chatv1.ClientEvent {
	return &chatv1.ClientEvent{Event: &chatv1.ClientEvent_JoinRoom{JoinRoom: &chatv1.JoinRoom{Room: room}}}
}

func roomConv(room string) *chatv1.Conversation {
	return &chatv1.Conversation{Kind: &chatv1.Conversation_Room{Room: room}}
}

func userConv(u string) *chatv1.Conversation {
	return &chatv1.Conversation{Kind: &chatv1.Conversation_User{User: u}}
}

func errorCode(ev *chatv1.ServerEvent) chatv1.ErrorCode { return ev.GetError().GetCode() }

// cameOnline matches an announcement that name is online, alone
// (UserOnline) or in a coalesced PresenceChanged.
func cameOnline(name string) func(*chatv1.ServerEvent) bool {
	return func(ev *chatv1.ServerEvent) bool {
		return ev.GetUserOnline().GetUser().GetUsername() == name || hasUser(ev.GetPresenceChanged().GetOnline(), name)
	}
}

// wentOffline matches an announcement that name went offline.
func wentOffline(name string) func(*chatv1.ServerEvent) bool {
	return func(ev *chatv1.ServerEvent) bool {
		return ev.GetUserOffline().GetUser().GetUsername() == name || hasUser(ev.GetPresenceChanged().GetOffline(), name)
	}
}

func hasUser(us []*chatv1.User, name string) bool {
	for _, u := range us {
		if u.GetUsername() == name {
			return true
		}
	}
	return false
}
