package parley

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// ChunkSize is the size of the chunks UploadFile sends: the server's limit.
const ChunkSize = 64 << 10

// DefaultEventBuffer is how many events a session holds for the
// application before its reader stops reading.
const DefaultEventBuffer = 256

// Option configures a Client.
type Option func(*options)

type options struct {
	tokens      tokenProvider
	tls         *tls.Config
	useTLS      bool
	log         *slog.Logger
	dialOpts    []grpc.DialOption
	eventBuffer int
	// autoRefresh is set by WithAutoRefresh; the manager needs the
	// connection, so it is built in Dial.
	autoRefresh *Tokens
	onRefresh   func(Tokens)
	tracer      trace.TracerProvider // nil: otel's global
}

// WithToken authenticates every call with a fixed access token. A session
// opened with it ends when the token expires; use [WithAutoRefresh] or
// [WithTokenSource] for longer lives. The last credential option wins.
func WithToken(accessToken string) Option {
	return func(o *options) { o.tokens = staticToken(accessToken); o.autoRefresh = nil }
}

// WithTokenSource authenticates every call with the token src returns; it
// is called before each call and when a live session is told its token is
// expiring (a new token is then sent in band). src must be safe for
// concurrent use and should cache. The last credential option wins.
func WithTokenSource(src func(ctx context.Context) (string, error)) Option {
	return func(o *options) { o.tokens = funcToken(src); o.autoRefresh = nil }
}

// WithAutoRefresh authenticates with t and keeps it fresh: when the access
// token nears expiry (a third of its life left, at most one minute) the
// client trades t's refresh token for new tokens with Auth.Refresh, and each
// live session sends the new access token in band. t may hold only a
// refresh token; the first call then refreshes.
//
// Refresh tokens are single-use: each trade replaces the refresh token, and
// onRefresh, when not nil, is called with the new tokens (from the
// refreshing goroutine) so the application can store them. [Client.Tokens]
// returns the current ones. The last credential option wins.
func WithAutoRefresh(t Tokens, onRefresh func(Tokens)) Option {
	return func(o *options) { o.autoRefresh = &t; o.onRefresh = onRefresh; o.tokens = nil }
}

// WithTLS speaks TLS with cfg; nil means the system roots and the target's
// host name. The default is plaintext, which suits a server on loopback or
// behind a TLS-terminating proxy; anything else should use TLS.
func WithTLS(cfg *tls.Config) Option {
	return func(o *options) {
		o.useTLS = true
		if cfg != nil {
			o.tls = cfg.Clone()
		}
	}
}

// WithLogger logs connection lifecycle, token refreshes and reconnects to
// l; default: nothing is logged. Tokens and message text are never logged.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.log = l }
}

// WithDialOptions adds gRPC dial options after the SDK's own, so they can
// override them (keepalive, connect backoff, transport credentials).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOpts = append(o.dialOpts, opts...) }
}

// WithEventBuffer sets how many events each session buffers for the
// application; default [DefaultEventBuffer]. See [Session.Events] for what
// happens when it fills.
func WithEventBuffer(n int) Option {
	return func(o *options) { o.eventBuffer = n }
}

// Client is a connection to a Parley server with its credentials. It is
// safe for concurrent use; close it when done.
type Client struct {
	conn        *grpc.ClientConn
	chat        chatv1.ChatClient
	auth        chatv1.AuthClient
	admin       chatv1.AdminClient
	log         *slog.Logger
	tokens      tokenProvider // nil: calls carry no token
	eventBuffer int
	tracer      trace.Tracer
}

// Dial returns a Client for target ("host:port", or any gRPC target).
// Like grpc.NewClient it does not wait for the connection: the first call
// connects, and a lost connection is re-established by later calls. ctx is
// not retained.
func Dial(ctx context.Context, target string, opts ...Option) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o := options{eventBuffer: DefaultEventBuffer}
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	if o.eventBuffer <= 0 {
		o.eventBuffer = DefaultEventBuffer
	}
	creds := insecure.NewCredentials()
	if o.useTLS {
		cfg := o.tls
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		creds = credentials.NewTLS(cfg)
	}
	c := &Client{log: o.log, tokens: o.tokens, eventBuffer: o.eventBuffer, tracer: o.tracerOf()}
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithChainUnaryInterceptor(c.unaryAuth),
		grpc.WithChainStreamInterceptor(c.streamAuth),
		// The server answers history pages of up to 8 MiB.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8 << 20)),
		// Notice a dead peer within a minute; the server permits pings
		// every 10s.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 20 * time.Second, PermitWithoutStream: false}),
		// Static flow-control windows: grpc's dynamic ones ping the server
		// after each burst received and send window updates every 16 KiB
		// or so, a write each way per few events on a busy stream. 1 MiB
		// lets a chat stream run without waiting on window updates.
		grpc.WithInitialWindowSize(1 << 20),
		grpc.WithInitialConnWindowSize(1 << 20),
		// Reconnect to a restarted server promptly; ResilientSession adds
		// its own backoff on top.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 10 * time.Second},
			MinConnectTimeout: 10 * time.Second,
		}),
	}
	conn, err := grpc.NewClient(target, append(dial, o.dialOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("parley: dial %s: %w", target, err)
	}
	c.conn = conn
	c.chat = chatv1.NewChatClient(conn)
	c.auth = chatv1.NewAuthClient(conn)
	c.admin = chatv1.NewAdminClient(conn)
	if o.autoRefresh != nil {
		c.tokens = newTokenManager(c.auth, *o.autoRefresh, o.onRefresh, o.log)
	}
	return c, nil
}

// Close closes the connection; live sessions end with it.
func (c *Client) Close() error { return c.conn.Close() }

// Conn is the underlying connection, for calls the SDK does not wrap.
// Calls made on it carry the client's token too.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Tokens returns the current tokens of a client made with
// [WithAutoRefresh]; ok is false for other clients.
func (c *Client) Tokens() (t Tokens, ok bool) {
	m, ok := c.tokens.(*tokenManager)
	if !ok {
		return Tokens{}, false
	}
	return m.current(), true
}

// token returns the access token for a call, or "" when the client has no
// credentials.
func (c *Client) token(ctx context.Context) (string, error) {
	if c.tokens == nil {
		return "", nil
	}
	return c.tokens.Token(ctx)
}

// withAuth adds `authorization: Bearer` unless the call is to the Auth
// service (which needs none) or already carries one.
func (c *Client) withAuth(ctx context.Context, method string) (context.Context, error) {
	if c.tokens == nil || strings.HasPrefix(method, "/"+chatv1.Auth_ServiceDesc.ServiceName+"/") {
		return ctx, nil
	}
	if md, ok := metadata.FromOutgoingContext(ctx); ok && len(md.Get("authorization")) > 0 {
		return ctx, nil
	}
	tok, err := c.tokens.Token(ctx)
	if err != nil {
		return nil, fmt.Errorf("parley: token: %w", err)
	}
	return withBearer(ctx, tok), nil
}

func withBearer(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

func (c *Client) unaryAuth(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	ctx, err := c.withAuth(ctx, method)
	if err != nil {
		return err
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

func (c *Client) streamAuth(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	ctx, err := c.withAuth(ctx, method)
	if err != nil {
		return nil, err
	}
	return streamer(ctx, desc, cc, method, opts...)
}

// Room names a room conversation.
func Room(name string) *chatv1.Conversation {
	return &chatv1.Conversation{Kind: &chatv1.Conversation_Room{Room: name}}
}

// Direct names the direct conversation with peer.
func Direct(peer string) *chatv1.Conversation {
	return &chatv1.Conversation{Kind: &chatv1.Conversation_User{User: peer}}
}

// HistoryOptions page through a conversation. The zero value asks for the
// latest page of 50.
//
// To read forwards, oldest first, set Forward: the page holds the messages
// after AfterSeq, so HistoryOptions{Forward: true} reads from the start of
// the conversation and HistoryOptions{Forward: true, AfterSeq: n} goes on
// after seq n. An AfterSeq above 0 reads forwards by itself.
type HistoryOptions struct {
	// BeforeSeq pages backwards: messages with seq < BeforeSeq.
	BeforeSeq int64
	// Forward pages forwards from AfterSeq, 0 meaning from the start.
	Forward bool
	// AfterSeq is where a forward page starts: messages with seq >
	// AfterSeq. Set BeforeSeq or read forwards, not both.
	AfterSeq int64
	// Limit is the page size; 0 means 50, at most 100.
	Limit int
}

// History returns one page of a conversation the caller may read, oldest
// first, and whether there is more in the direction asked.
func (c *Client) History(ctx context.Context, conv *chatv1.Conversation, opts HistoryOptions) (msgs []*chatv1.Message, more bool, err error) {
	req := &chatv1.GetHistoryRequest{Conversation: conv, BeforeSeq: opts.BeforeSeq, Limit: int32(opts.Limit)}
	if opts.Forward || opts.AfterSeq > 0 {
		after := max(opts.AfterSeq, 0)
		req.AfterSeq = &after
	}
	resp, err := c.chat.GetHistory(ctx, req)
	if err != nil {
		return nil, false, err
	}
	return resp.GetMessages(), resp.GetHasMore(), nil
}

// OnlinePageOptions ask for one page of online users. The zero value asks
// for the first page of 100.
type OnlinePageOptions struct {
	// PageSize is the page size; 0 means 100, at most 1000.
	PageSize int
	// PageToken is a previous page's next token (or the OnlineUsers
	// event's NextPageToken); empty for the first page.
	PageToken string
}

// OnlinePage is one page of online users, sorted by username.
type OnlinePage struct {
	Users []*chatv1.User
	// NextPageToken is the PageToken of the next page; empty on the last.
	NextPageToken string
	// OnlineCount counts every user online, on every page.
	OnlineCount int
}

// OnlineUsersPage returns one page of the users with at least one live
// session, sorted by username.
func (c *Client) OnlineUsersPage(ctx context.Context, opts OnlinePageOptions) (OnlinePage, error) {
	resp, err := c.chat.ListOnlineUsers(ctx, &chatv1.ListOnlineUsersRequest{PageSize: int32(opts.PageSize), PageToken: opts.PageToken})
	if err != nil {
		return OnlinePage{}, err
	}
	return OnlinePage{Users: resp.GetUsers(), NextPageToken: resp.GetNextPageToken(), OnlineCount: int(resp.GetOnlineCount())}, nil
}

// OnlineUsers lists every user with at least one live session, sorted by
// username, paging through [Client.OnlineUsersPage] 1000 at a time; with
// many users online, prefer the pages.
func (c *Client) OnlineUsers(ctx context.Context) ([]*chatv1.User, error) {
	var out []*chatv1.User
	opts := OnlinePageOptions{PageSize: 1000}
	for {
		page, err := c.OnlineUsersPage(ctx, opts)
		if err != nil {
			return nil, err
		}
		out = append(out, page.Users...)
		if page.NextPageToken == "" {
			return out, nil
		}
		opts.PageToken = page.NextPageToken
	}
}

// Rooms lists every room, the user's and the others (all rooms are
// public), sorted by name: MemberCount counts stored members, OnlineCount
// those online, Joined marks the user's.
func (c *Client) Rooms(ctx context.Context) ([]*chatv1.RoomInfo, error) {
	resp, err := c.chat.ListRooms(ctx, &chatv1.ListRoomsRequest{})
	return resp.GetRooms(), err
}

// ConversationsOptions ask for one page of the user's conversations. The
// zero value asks for the first page of 50.
type ConversationsOptions struct {
	// PageSize is the page size; 0 means 50, at most 200.
	PageSize int
	// PageToken is a previous page's NextPageToken; empty for the first
	// page. It is opaque.
	PageToken string
}

// ConversationsPage is one page of the user's conversations.
type ConversationsPage struct {
	// Conversations are the most recently active first (then by name),
	// those without a message last. A direct conversation names the peer.
	Conversations []*chatv1.ConversationSummary
	// NextPageToken is the PageToken of the next page; empty on the last.
	NextPageToken string
}

// Conversations returns one page of the rooms and direct conversations
// the user is in, each with its last message and last sequence: what a
// conversation list shows, and where a [Session.Resume] cursor or a
// [Client.History] page can start.
func (c *Client) Conversations(ctx context.Context, opts ConversationsOptions) (ConversationsPage, error) {
	resp, err := c.chat.ListConversations(ctx, &chatv1.ListConversationsRequest{PageSize: int32(opts.PageSize), PageToken: opts.PageToken})
	if err != nil {
		return ConversationsPage{}, err
	}
	return ConversationsPage{Conversations: resp.GetConversations(), NextPageToken: resp.GetNextPageToken()}, nil
}

// UploadFile stores size bytes read from r under name and returns the
// stored file: a new file id with this upload's name (reduced to a safe
// display name) and type, even when the content was uploaded before. Post it with
// [Session.SendFile]. The server refuses files over its limit (default
// 10 MiB) and content that is not exactly size bytes.
func (c *Client) UploadFile(ctx context.Context, name, contentType string, r io.Reader, size int64) (*chatv1.FileRef, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream if we return early
	stream, err := c.chat.UploadFile(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&chatv1.UploadFileRequest{Data: &chatv1.UploadFileRequest_Info{Info: &chatv1.FileInfo{Name: name, ContentType: contentType, Size: size}}}); err != nil {
		return nil, uploadErr(stream, err)
	}
	buf := make([]byte, ChunkSize)
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if err := stream.Send(&chatv1.UploadFileRequest{Data: &chatv1.UploadFileRequest_Chunk{Chunk: buf[:n]}}); err != nil {
				return nil, uploadErr(stream, err)
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("parley: upload %s: %w", name, rerr)
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return nil, err
	}
	return resp.GetFile(), nil
}

// uploadErr turns a Send error into the stream's status: io.EOF from Send
// means the server has already answered.
func uploadErr(stream grpc.ClientStreamingClient[chatv1.UploadFileRequest, chatv1.UploadFileResponse], err error) error {
	if errors.Is(err, io.EOF) {
		if _, rerr := stream.CloseAndRecv(); rerr != nil {
			return rerr
		}
	}
	return err
}

// DownloadFile writes the content of file id to w and returns its
// description. Only its uploader and readers of a conversation it was
// posted in may download it.
func (c *Client) DownloadFile(ctx context.Context, id string, w io.Writer) (*chatv1.FileRef, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.chat.DownloadFile(ctx, &chatv1.DownloadFileRequest{FileId: id})
	if err != nil {
		return nil, err
	}
	var ref *chatv1.FileRef
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if ref == nil {
				return nil, errors.New("parley: download ended before the file description")
			}
			return ref, nil
		}
		if err != nil {
			return nil, err
		}
		switch d := resp.GetData().(type) {
		case *chatv1.DownloadFileResponse_Info:
			ref = d.Info
		case *chatv1.DownloadFileResponse_Chunk:
			if _, err := w.Write(d.Chunk); err != nil {
				return nil, fmt.Errorf("parley: download %s: %w", id, err)
			}
		}
	}
}

// Stats reports the server's live counters (moderators and admins).
func (c *Client) Stats(ctx context.Context) (*chatv1.GetStatsResponse, error) {
	return c.admin.GetStats(ctx, &chatv1.GetStatsRequest{})
}

// Broadcast sends an AdminBroadcast to everyone, or to one room when room
// is not empty, and returns how many sessions it was queued to
// (moderators and admins).
func (c *Client) Broadcast(ctx context.Context, room, text string) (int64, error) {
	resp, err := c.admin.Broadcast(ctx, &chatv1.BroadcastRequest{Room: room, Text: text})
	return resp.GetSessions(), err
}

// DisconnectUser closes every live session of username and returns how
// many (moderators and admins).
func (c *Client) DisconnectUser(ctx context.Context, username, reason string) (int, error) {
	resp, err := c.admin.DisconnectUser(ctx, &chatv1.DisconnectUserRequest{Username: username, Reason: reason})
	return int(resp.GetSessions()), err
}

// SetUserActive activates or deactivates an account; deactivating also
// disconnects it and refuses its tokens (moderators and admins).
func (c *Client) SetUserActive(ctx context.Context, username string, active bool) error {
	_, err := c.admin.SetUserActive(ctx, &chatv1.SetUserActiveRequest{Username: username, Active: active})
	return err
}

// SetUserRole changes a user's role (admins only).
func (c *Client) SetUserRole(ctx context.Context, username string, role chatv1.Role) error {
	_, err := c.admin.SetUserRole(ctx, &chatv1.SetUserRoleRequest{Username: username, Role: role})
	return err
}
