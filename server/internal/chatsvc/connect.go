// Package chatsvc implements the chat.v1.Chat service: the Connect stream
// (a thin adapter of the gRPC stream onto the session engine, package
// server/session, and the dispatch of each command), history, and file
// upload and download. Policy (auth, roles, limits, validation) has
// already run in the interceptors' gate when a call gets here.
package chatsvc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/apierr"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/internal/blob"
	"github.com/parleychat/parley/server/internal/hub"
	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/tracing"
	"github.com/parleychat/parley/server/session"
)

// Store is what the service needs from storage besides the hub.
type Store interface {
	History(ctx context.Context, conversation string, q store.HistoryQuery) ([]store.Message, bool, error)
	PutFile(ctx context.Context, f store.File) (store.File, error)
	GetFile(ctx context.Context, id string) (store.File, error)
	ListConversations(ctx context.Context, username, everyone string, q store.ConversationsQuery) ([]store.ConversationSummary, bool, error)
}

// Blobs stores file contents by SHA-256, shared by uploads of the same
// content (each upload is a store.File of its own).
type Blobs interface {
	Stage(ctx context.Context, r io.Reader) (*blob.Staged, error)
	Open(ctx context.Context, id string) (io.ReadCloser, error)
}

// Config configures the service.
type Config struct {
	Hub    *hub.Hub
	Store  Store
	Blobs  Blobs
	Logger *slog.Logger
	// MaxFileSize bounds uploads; default 10 MiB (the blob store enforces
	// its own limit too).
	MaxFileSize int64
	// TokenWarning is how long before its token expires a stream is told to
	// refresh in band; default 30s.
	TokenWarning time.Duration
	// Coalesce is the least time between two writes to a busy connection,
	// gRPC stream or bridged (see writer.linger); default 20ms, negative
	// for none.
	Coalesce time.Duration
	// Observer is told of each session's start and end and of each burst
	// its writer drains (package metrics counts them); nil means none.
	Observer Observer
}

// Observer watches sessions for the metrics (package metrics).
type Observer = session.Observer

// EndReasons lists the reasons Observer.SessionEnded reports.
func EndReasons() []string { return session.EndReasons() }

// Service implements chatv1.ChatServer.
type Service struct {
	chatv1.UnimplementedChatServer
	cfg      Config
	hub      *hub.Hub
	log      *slog.Logger
	sessions *session.Engine
}

// New returns the service.
func New(cfg Config) (*Service, error) {
	if cfg.Hub == nil || cfg.Store == nil || cfg.Blobs == nil {
		return nil, errors.New("chatsvc: Hub, Store and Blobs are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxFileSize <= 0 {
		cfg.MaxFileSize = 10 << 20
	}
	s := &Service{cfg: cfg, hub: cfg.Hub, log: cfg.Logger}
	var err error
	s.sessions, err = session.New(session.Config{Hub: cfg.Hub, Handle: s.handle, Logger: cfg.Logger,
		TokenWarning: cfg.TokenWarning, Coalesce: cfg.Coalesce, Observer: cfg.Observer})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Sessions is the engine that runs the service's Connect sessions, for
// transports attached without a gRPC stream.
func (s *Service) Sessions() *session.Engine { return s.sessions }

func principal(ctx context.Context) (*auth.Principal, error) {
	p, ok := auth.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "token required")
	}
	return p, nil
}

// grpcTransport adapts the Chat.Connect stream to the session's
// Transport: Close hands the Disconnect to the handler, whose return is the
// only thing that ends a gRPC stream (and unblocks its Recv and Send).
type grpcTransport struct {
	stream grpc.ServerStream
	once   sync.Once
	final  session.Disconnect
	closed chan struct{}
}

func (t *grpcTransport) Recv(ev *chatv1.ClientEvent) error { return t.stream.RecvMsg(ev) }

func (t *grpcTransport) Write(frames ...*hub.Frame) error {
	for _, f := range frames {
		if err := t.stream.SendMsg(f); err != nil {
			return err
		}
	}
	return nil
}

func (t *grpcTransport) Close(d session.Disconnect) {
	t.once.Do(func() { t.final = d; close(t.closed) })
}

// Connect runs one live session over the gRPC stream until the session
// ends it (through Close) with its Disconnect's status.
func (s *Service) Connect(stream grpc.BidiStreamingServer[chatv1.ClientEvent, chatv1.ServerEvent]) error {
	ctx := stream.Context()
	p, err := principal(ctx)
	if err != nil {
		return err
	}
	sess, err := s.sessions.Open(ctx, p)
	if err != nil {
		return err
	}
	t := &grpcTransport{stream: stream, closed: make(chan struct{})}
	s.sessions.Start(ctx, p, sess, t)
	<-t.closed
	return t.final.Err()
}

// handle runs one command and returns the event that answers it, if any.
func (s *Service) handle(ctx context.Context, sess *hub.Session, ev *chatv1.ClientEvent) (reply *chatv1.ServerEvent) {
	// The command's span continues the client's trace when the event
	// carries one: a stream's context cannot, as it carries many commands.
	ctx, span := tracing.Start(tracing.Extract(ctx, ev.GetTraceParent(), ev.GetTraceState()), commandSpan(ev), trace.WithSpanKind(trace.SpanKindServer))
	defer func() {
		if e := reply.GetError(); e != nil {
			span.SetStatus(otelcodes.Error, e.GetCode().String())
		}
		span.End()
	}()
	// Commands run on the session's reader, which the interceptors'
	// recovery does not cover: a bug must cost one command, not the
	// process.
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic in chat command", "panic", r, "user", sess.Username, "stack", string(debug.Stack()))
			reply = apierr.Internal().Event("")
		}
	}()
	reply, err := s.dispatch(ctx, sess, ev)
	if err != nil {
		return s.errorEvent(err)
	}
	return reply
}

func (s *Service) dispatch(ctx context.Context, sess *hub.Session, ev *chatv1.ClientEvent) (*chatv1.ServerEvent, error) {
	switch e := ev.GetEvent().(type) {
	case *chatv1.ClientEvent_JoinRoom:
		j, err := s.hub.Join(ctx, sess, e.JoinRoom.GetRoom())
		if err != nil {
			return nil, err
		}
		return &chatv1.ServerEvent{Event: &chatv1.ServerEvent_RoomJoined{RoomJoined: j}}, nil
	case *chatv1.ClientEvent_LeaveRoom:
		if err := s.hub.Leave(ctx, sess, e.LeaveRoom.GetRoom()); err != nil {
			return nil, err
		}
		return &chatv1.ServerEvent{Event: &chatv1.ServerEvent_RoomLeft{RoomLeft: &chatv1.RoomLeft{Room: e.LeaveRoom.GetRoom()}}}, nil
	case *chatv1.ClientEvent_SendMessage:
		m := e.SendMessage
		return ack(s.hub.SendRoom(ctx, sess, m.GetRoom(), m.GetText(), m.GetClientMsgId()))
	case *chatv1.ClientEvent_SendPrivateMessage:
		m := e.SendPrivateMessage
		if m.GetTo() == sess.Username {
			return nil, apierr.InvalidArgument("cannot send a private message to yourself")
		}
		return ack(s.hub.SendDirect(ctx, sess, m.GetTo(), m.GetText(), m.GetClientMsgId()))
	case *chatv1.ClientEvent_SendFile:
		m := e.SendFile
		if m.GetConversation().GetUser() == sess.Username {
			return nil, apierr.InvalidArgument("cannot send a private message to yourself")
		}
		return ack(s.hub.SendFile(ctx, sess, m.GetConversation(), m.GetFileId(), m.GetClientMsgId()))
	case *chatv1.ClientEvent_Typing:
		return nil, s.hub.Typing(sess, e.Typing.GetConversation(), e.Typing.GetTyping())
	case *chatv1.ClientEvent_ListRooms:
		rooms, err := s.hub.ListRooms(ctx, sess.Username)
		if err != nil {
			return nil, err
		}
		return &chatv1.ServerEvent{Event: &chatv1.ServerEvent_RoomsList{RoomsList: &chatv1.RoomsList{Rooms: rooms}}}, nil
	case *chatv1.ClientEvent_Resume:
		return nil, s.hub.Resume(ctx, sess, ev.GetRequestId(), e.Resume.GetCursors())
	case *chatv1.ClientEvent_Ping:
		return &chatv1.ServerEvent{Event: &chatv1.ServerEvent_Pong{Pong: &chatv1.Pong{ServerTime: timestamppb.Now()}}}, nil
	case *chatv1.ClientEvent_RefreshToken:
		// The auth interceptor verified the token and moved the expiry.
		p, err := principal(ctx)
		if err != nil {
			return nil, err
		}
		return &chatv1.ServerEvent{Event: &chatv1.ServerEvent_TokenRefreshed{TokenRefreshed: &chatv1.TokenRefreshed{ExpiresAt: timestamppb.New(p.ExpiresAt())}}}, nil
	}
	return nil, apierr.InvalidArgument("unknown or empty event")
}

// commandSpans names each command's span after its oneof field, made
// once so that naming a span allocates nothing.
var (
	eventOneof   = (&chatv1.ClientEvent{}).ProtoReflect().Descriptor().Oneofs().ByName("event")
	commandSpans = func() map[protoreflect.Name]string {
		m := map[protoreflect.Name]string{}
		fields := eventOneof.Fields()
		for i := range fields.Len() {
			m[fields.Get(i).Name()] = "chat." + string(fields.Get(i).Name())
		}
		return m
	}()
)

func commandSpan(ev *chatv1.ClientEvent) string {
	if fd := ev.ProtoReflect().WhichOneof(eventOneof); fd != nil {
		return commandSpans[fd.Name()]
	}
	return "chat.unknown"
}

func ack(sent hub.Sent, err error) (*chatv1.ServerEvent, error) {
	if err != nil {
		return nil, err
	}
	m := sent.Message
	return &chatv1.ServerEvent{Event: &chatv1.ServerEvent_Ack{Ack: &chatv1.Ack{
		MessageId: m.GetId(), Seq: m.GetSeq(), Duplicate: sent.Duplicate, Conversation: m.GetConversation(),
	}}}, nil
}

// errorEvent maps a command's failure to its in-band error; causes of
// internal errors are logged, never sent.
func (s *Service) errorEvent(err error) *chatv1.ServerEvent {
	var e *apierr.Error
	if !errors.As(err, &e) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			e = apierr.New(chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE, "request cancelled")
		} else {
			s.log.Error("chat command failed", "err", err)
			e = apierr.Internal()
		}
	}
	return e.Event("")
}

// toStatus maps an error to a gRPC status at a call boundary (apierr's
// one mapping), logging the cause of what the client is not told.
func toStatus(log *slog.Logger, err error) error {
	return apierr.StatusLog(log, "chat call failed", err)
}
