package parley

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// Session is one live Connect stream. Its events arrive on [Session.Events];
// its commands send a ClientEvent and, except Typing and Resume, wait for
// the server's answer.
//
// A Session is safe for concurrent use: commands from many goroutines are
// queued to its one writer goroutine, and its one reader goroutine hands
// each answer to the command waiting for it. It does not reconnect; see
// [ResilientSession].
type Session struct {
	c       *Client
	log     *slog.Logger
	parent  context.Context // the ctx given to Connect
	ctx     context.Context
	cancel  context.CancelFunc
	stream  grpc.BidiStreamingClient[chatv1.ClientEvent, chatv1.ServerEvent]
	welcome *chatv1.Welcome

	events   chan *chatv1.ServerEvent
	out      chan *chatv1.ClientEvent
	expiring chan struct{} // pokes the refresher on a TOKEN_EXPIRING notice
	done     chan struct{}
	err      error // why it ended; written before done is closed
	closed   atomic.Bool
	disc     atomic.Pointer[chatv1.Disconnect] // the server's last word, if it came
	wg       sync.WaitGroup
	ids      atomic.Uint64

	mu      sync.Mutex
	pending map[string]chan *chatv1.ServerEvent
}

// Connect opens a live session and returns once the server has welcomed
// it, or with the status that refused it (Unauthenticated for a missing,
// expired or revoked token; ResourceExhausted when rate limited).
//
// ctx bounds the session's whole life, as with any gRPC stream: cancelling
// it ends the session as Close does. When the client refreshes its tokens
// ([WithAutoRefresh], [WithTokenSource]) the session hands each new access
// token to the server in band, before the one it was opened with expires.
func (c *Client) Connect(ctx context.Context) (*Session, error) {
	tok, err := c.token(ctx)
	if err != nil {
		return nil, fmt.Errorf("parley: token: %w", err)
	}
	sctx, cancel := context.WithCancel(ctx)
	stream, err := c.chat.Connect(withBearer(sctx, tok))
	if err != nil {
		cancel()
		return nil, err
	}
	first, err := stream.Recv()
	if err != nil {
		cancel()
		return nil, err
	}
	if first.GetWelcome() == nil {
		cancel()
		return nil, fmt.Errorf("parley: the server opened with %T, not Welcome", first.GetEvent())
	}
	s := &Session{
		c: c, log: c.log, parent: ctx, ctx: sctx, cancel: cancel, stream: stream, welcome: first.GetWelcome(),
		events:   make(chan *chatv1.ServerEvent, c.eventBuffer),
		out:      make(chan *chatv1.ClientEvent),
		expiring: make(chan struct{}, 1),
		done:     make(chan struct{}),
		pending:  map[string]chan *chatv1.ServerEvent{},
	}
	s.events <- first
	s.wg.Add(2)
	go s.readLoop()
	go s.writeLoop()
	if _, static := c.tokens.(staticToken); c.tokens != nil && !static {
		s.wg.Add(1)
		go s.refreshLoop(tok)
	}
	c.log.Debug("parley: session open", "session", s.welcome.GetSessionId(), "user", s.welcome.GetUser().GetUsername())
	return s, nil
}

// Welcome is the event that opened the session: who the server says we
// are, its session id, and when the access token expires.
func (s *Session) Welcome() *chatv1.Welcome { return s.welcome }

// Events delivers the session's server events in the order the server sent
// them, starting with Welcome, then OnlineUsers, the recent messages of
// general, missed direct messages and StateRestored. The answers to this
// Session's commands (Ack, RoomJoined, RoomLeft, RoomsList, Pong,
// TokenRefreshed, and errors answering a command) go to the command, not
// here, unless the command's ctx ended before its answer came. Failures of
// Typing and Resume come here as ServerEvent.error with the request id.
//
// The channel buffers [WithEventBuffer] events (default 256). When the
// application stops reading and the buffer fills, the reader stops: answers
// to commands wait behind the unread events (so commands wait until their
// ctx ends), the server's queue for this session fills, and the server
// disconnects it as a slow consumer. The application finds out when it
// reads again: the buffered events, then the channel closes and Err is
// ResourceExhausted. So read Events from its own goroutine, never from the
// one waiting on a command.
//
// The channel is closed when the session ends; [Session.Err] then says why.
func (s *Session) Events() <-chan *chatv1.ServerEvent { return s.events }

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns nil while the session is live and after Close; the error of
// Connect's ctx when that ended it; otherwise why the server ended it: a
// gRPC status error such as Unavailable (server shutdown; a
// ServerNotice with reconnect_after came first), ResourceExhausted (slow
// consumer or too many refused commands), Aborted (disconnected by an
// administrator) or Unauthenticated (token expired).
func (s *Session) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Disconnect returns the Disconnect event the server ended the session
// with: its code, reason, and whether and when to reconnect. It is nil
// while the session is live, after Close, and when the connection dropped
// without one (network loss). The event is kept here, not sent on Events.
func (s *Session) Disconnect() *chatv1.Disconnect { return s.disc.Load() }

// Close ends the session and waits for its goroutines. Commands waiting
// for an answer return ErrClosed. Safe to call more than once.
func (s *Session) Close() error {
	s.closed.Store(true)
	s.cancel()
	s.wg.Wait()
	return nil
}

func (s *Session) readLoop() {
	defer s.wg.Done()
	var err error
	for {
		var ev *chatv1.ServerEvent
		if ev, err = s.stream.Recv(); err != nil {
			break
		}
		if s.route(ev) {
			continue
		}
		if d := ev.GetDisconnect(); d != nil {
			s.disc.Store(d) // the stream's status follows
			continue
		}
		if n := ev.GetServerNotice(); n.GetKind() == chatv1.NoticeKind_NOTICE_KIND_TOKEN_EXPIRING {
			select {
			case s.expiring <- struct{}{}:
			default:
			}
		}
		select {
		case s.events <- ev:
			continue
		case <-s.ctx.Done():
			err = s.ctx.Err()
		}
		break
	}
	switch {
	case errors.Is(err, io.EOF) || s.closed.Load():
		err = nil
	case s.parent.Err() != nil:
		err = s.parent.Err()
	}
	s.err = err
	s.cancel()
	if err != nil {
		s.log.Info("parley: session ended", "session", s.welcome.GetSessionId(), "err", err)
	}
	// Done first: a caller that has drained Events must find Err set.
	close(s.done)
	close(s.events)
}

// route hands ev to the command waiting for it; false if none is.
func (s *Session) route(ev *chatv1.ServerEvent) bool {
	id := ev.GetRequestId()
	if id == "" {
		return false
	}
	s.mu.Lock()
	ch, ok := s.pending[id]
	delete(s.pending, id)
	s.mu.Unlock()
	if ok {
		ch <- ev // buffered: never blocks
	}
	return ok
}

// writeLoop is the only caller of stream.Send.
func (s *Session) writeLoop() {
	defer s.wg.Done()
	for {
		select {
		case ev := <-s.out:
			if err := s.stream.Send(ev); err != nil {
				// io.EOF: the stream has ended and the reader will get its
				// status; anything else leaves the stream unusable.
				if !errors.Is(err, io.EOF) {
					s.log.Warn("parley: send failed", "err", err)
					s.cancel()
				}
				return
			}
		case <-s.done:
			return
		case <-s.ctx.Done():
			return
		}
	}
}

// refreshLoop hands the server a new access token before the current one
// expires: when the token manager says it is due, and whenever the server
// warns that the token is expiring.
func (s *Session) refreshLoop(last string) {
	defer s.wg.Done()
	m, managed := s.c.tokens.(*tokenManager)
	backoff := time.Second
	for {
		var due <-chan time.Time
		var timer *time.Timer
		if managed {
			timer = time.NewTimer(time.Until(m.refreshAt()))
			due = timer.C
		}
		select {
		case <-s.done:
		case <-s.expiring:
		case <-due:
		}
		if timer != nil {
			timer.Stop()
		}
		if s.ctx.Err() != nil {
			return
		}
		tok, err := s.c.tokens.Token(s.ctx)
		if err == nil && tok != last {
			if _, err = s.RefreshToken(s.ctx, tok); err == nil {
				last, backoff = tok, time.Second
				continue
			}
		}
		if err == nil {
			continue // nothing new: wait for the next due time or notice
		}
		if s.ctx.Err() != nil {
			return
		}
		s.log.Warn("parley: in-band token refresh failed", "err", err, "retry_in", backoff)
		select {
		case <-s.done:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func (s *Session) closedErr() error {
	if s.err != nil {
		return fmt.Errorf("%w: %w", ErrClosed, s.err)
	}
	return ErrClosed
}

// enqueue hands ev to the writer.
func (s *Session) enqueue(ctx context.Context, ev *chatv1.ClientEvent) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case s.out <- ev:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return s.closedErr()
	}
}

// request sends ev with a new request id and waits for its answer; an
// in-band error answer is returned as *Error.
func (s *Session) request(ctx context.Context, ev *chatv1.ClientEvent) (_ *chatv1.ServerEvent, err error) {
	if err := ctx.Err(); err != nil { // a select below might pick the ready send
		return nil, err
	}
	ctx, span := s.traceCommand(ctx, ev)
	defer func() { endSpan(span, err) }()
	id := strconv.FormatUint(s.ids.Add(1), 10)
	ev.RequestId = id
	ch := make(chan *chatv1.ServerEvent, 1)
	s.mu.Lock()
	s.pending[id] = ch
	s.mu.Unlock()
	forget := func() {
		s.mu.Lock()
		delete(s.pending, id)
		s.mu.Unlock()
	}
	if err := s.enqueue(ctx, ev); err != nil {
		forget()
		return nil, err
	}
	select {
	case r := <-ch:
		return answer(r)
	case <-ctx.Done():
		forget()
		return nil, ctx.Err()
	case <-s.done:
		select {
		case r := <-ch:
			return answer(r)
		default:
		}
		forget()
		return nil, s.closedErr()
	}
}

func answer(r *chatv1.ServerEvent) (*chatv1.ServerEvent, error) {
	if r.GetError() != nil {
		return nil, errorFromEvent(r)
	}
	return r, nil
}

// notify sends ev without waiting for an answer; it gets a request id so a
// refusal on Events can be matched to it.
func (s *Session) notify(ctx context.Context, ev *chatv1.ClientEvent) (err error) {
	ev.RequestId = strconv.FormatUint(s.ids.Add(1), 10)
	ctx, span := s.traceCommand(ctx, ev)
	defer func() { endSpan(span, err) }()
	return s.enqueue(ctx, ev)
}

func unexpected(r *chatv1.ServerEvent) error {
	return fmt.Errorf("parley: unexpected answer %T", r.GetEvent())
}

// NewClientMsgID returns a random client_msg_id. Sending again with the
// same id is safe: the server stores the message once and answers the
// retry with the original (Ack.duplicate set).
func NewClientMsgID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func ackOf(r *chatv1.ServerEvent, err error) (*chatv1.Ack, error) {
	if err != nil {
		return nil, err
	}
	if r.GetAck() == nil {
		return nil, unexpected(r)
	}
	return r.GetAck(), nil
}

// Send posts text to a room the user is a member of (every user is in
// general) and returns the Ack once the message is stored. The message
// itself also arrives on Events, before the Ack. A refusal (not a member,
// rate limited, too long) is an *Error.
func (s *Session) Send(ctx context.Context, room, text string) (*chatv1.Ack, error) {
	return s.SendWithID(ctx, room, text, NewClientMsgID())
}

// SendWithID is Send with the caller's client_msg_id, so a send can be
// retried (on this or a later session) without posting twice.
func (s *Session) SendWithID(ctx context.Context, room, text, clientMsgID string) (*chatv1.Ack, error) {
	return ackOf(s.request(ctx, &chatv1.ClientEvent{Event: &chatv1.ClientEvent_SendMessage{SendMessage: &chatv1.SendMessage{
		Room: room, Text: text, ClientMsgId: clientMsgID,
	}}}))
}

// SendPrivate sends text to one user and returns the Ack once stored.
func (s *Session) SendPrivate(ctx context.Context, to, text string) (*chatv1.Ack, error) {
	return s.sendPrivate(ctx, to, text, NewClientMsgID())
}

// SendPrivateWithID is SendPrivate with the caller's client_msg_id, so a
// send can be retried (on this or a later session) without posting twice.
func (s *Session) SendPrivateWithID(ctx context.Context, to, text, clientMsgID string) (*chatv1.Ack, error) {
	return s.sendPrivate(ctx, to, text, clientMsgID)
}

func (s *Session) sendPrivate(ctx context.Context, to, text, clientMsgID string) (*chatv1.Ack, error) {
	return ackOf(s.request(ctx, &chatv1.ClientEvent{Event: &chatv1.ClientEvent_SendPrivateMessage{SendPrivateMessage: &chatv1.SendPrivateMessage{
		To: to, Text: text, ClientMsgId: clientMsgID,
	}}}))
}

// SendFile posts a file uploaded with [Client.UploadFile] to a room or a
// direct conversation.
func (s *Session) SendFile(ctx context.Context, conv *chatv1.Conversation, fileID string) (*chatv1.Ack, error) {
	return s.sendFile(ctx, conv, fileID, NewClientMsgID())
}

func (s *Session) sendFile(ctx context.Context, conv *chatv1.Conversation, fileID, clientMsgID string) (*chatv1.Ack, error) {
	return ackOf(s.request(ctx, &chatv1.ClientEvent{Event: &chatv1.ClientEvent_SendFile{SendFile: &chatv1.SendFile{
		Conversation: conv, FileId: fileID, ClientMsgId: clientMsgID,
	}}}))
}

// Join joins a room, creating it if needed; the membership is stored.
func (s *Session) Join(ctx context.Context, room string) (*chatv1.RoomJoined, error) {
	r, err := s.request(ctx, &chatv1.ClientEvent{Event: &chatv1.ClientEvent_JoinRoom{JoinRoom: &chatv1.JoinRoom{Room: room}}})
	if err != nil {
		return nil, err
	}
	if r.GetRoomJoined() == nil {
		return nil, unexpected(r)
	}
	return r.GetRoomJoined(), nil
}

// Leave leaves a room; general cannot be left.
func (s *Session) Leave(ctx context.Context, room string) error {
	r, err := s.request(ctx, &chatv1.ClientEvent{Event: &chatv1.ClientEvent_LeaveRoom{LeaveRoom: &chatv1.LeaveRoom{Room: room}}})
	if err == nil && r.GetRoomLeft() == nil {
		err = unexpected(r)
	}
	return err
}

// Typing starts or stops the typing indicator in a conversation. A start
// expires by itself after a few seconds. It does not wait: a refusal comes
// on Events.
func (s *Session) Typing(ctx context.Context, conv *chatv1.Conversation, typing bool) error {
	return s.notify(ctx, &chatv1.ClientEvent{Event: &chatv1.ClientEvent_Typing{Typing: &chatv1.Typing{Conversation: conv, Typing: typing}}})
}

// ListRooms lists every room as [Client.Rooms] does, over the stream.
func (s *Session) ListRooms(ctx context.Context) ([]*chatv1.RoomInfo, error) {
	r, err := s.request(ctx, &chatv1.ClientEvent{Event: &chatv1.ClientEvent_ListRooms{ListRooms: &chatv1.ListRoomsCommand{}}})
	if err != nil {
		return nil, err
	}
	if r.GetRoomsList() == nil {
		return nil, unexpected(r)
	}
	return r.GetRoomsList().GetRooms(), nil
}

// Ping asks for a Pong. Every event the server queued for this session
// before it read the ping has been delivered to Events when Ping returns.
func (s *Session) Ping(ctx context.Context) (*chatv1.Pong, error) {
	r, err := s.request(ctx, &chatv1.ClientEvent{Event: &chatv1.ClientEvent_Ping{Ping: &chatv1.Ping{}}})
	if err != nil {
		return nil, err
	}
	if r.GetPong() == nil {
		return nil, unexpected(r)
	}
	return r.GetPong(), nil
}

// Resume asks for every message after each cursor's last_seq (up to a
// server cap). It does not wait: the messages arrive on Events as
// RecentMessages, followed by StateRestored (complete=false when the cap
// cut it short; resume again from the new cursors).
func (s *Session) Resume(ctx context.Context, cursors []*chatv1.ConversationCursor) error {
	return s.notify(ctx, &chatv1.ClientEvent{Event: &chatv1.ClientEvent_Resume{Resume: &chatv1.Resume{Cursors: cursors}}})
}

// RefreshToken hands the server a new access token for the same user, so
// the stream outlives the token it was opened with, and returns the new
// expiry. Sessions of clients with a token source do this themselves.
func (s *Session) RefreshToken(ctx context.Context, accessToken string) (time.Time, error) {
	r, err := s.request(ctx, &chatv1.ClientEvent{Event: &chatv1.ClientEvent_RefreshToken{RefreshToken: &chatv1.RefreshToken{AccessToken: accessToken}}})
	if err != nil {
		return time.Time{}, err
	}
	if r.GetTokenRefreshed() == nil {
		return time.Time{}, unexpected(r)
	}
	return r.GetTokenRefreshed().GetExpiresAt().AsTime(), nil
}
