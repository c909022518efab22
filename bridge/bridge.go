package bridge

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/improbable-eng/grpc-web/go/grpcweb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/parleychat/parley/server/session"
)

// Defaults for the zero values of Config.
const (
	// DefaultPingInterval is how often an idle WebSocket (/ws or gRPC-Web)
	// is pinged so that proxies do not cut it and dead peers are noticed.
	DefaultPingInterval = 25 * time.Second

	// DefaultMaxFrameBytes bounds one WebSocket message read from a client,
	// on /ws and on the gRPC-Web WebSocket transport. 128 KiB fits, with
	// room to spare, the largest valid ClientEvent in either encoding (a
	// Resume with 500 cursors is about 63 KB of compact JSON; a 4,000-char
	// text is at most 48 KB even if every char is a \u-escaped surrogate
	// pair) and a 64 KiB UploadFile chunk in a gRPC-Web frame (64 KiB + 11
	// bytes). TestDefaultMaxFrameBytesFitsLargestEvent checks the figures.
	DefaultMaxFrameBytes = 128 << 10

	// DefaultSendQueue is the per-/ws-connection outbound queue, in events.
	DefaultSendQueue = 256

	// DefaultClientIPHeader is the metadata key carrying the browser's
	// address to the gRPC server.
	DefaultClientIPHeader = "x-parley-client-ip"

	// DefaultMaxUploadBytes bounds the body of POST /api/files.
	DefaultMaxUploadBytes = 32 << 20
)

// Config configures a Bridge. The zero value of each field means its
// default; Conn is required.
type Config struct {
	// GRPCServer, when set, is the in-process *grpc.Server: gRPC-Web is
	// served by wrapping it with improbable-eng/grpc-web, so its
	// interceptors run unchanged. When nil, gRPC-Web is served by a
	// transparent proxy over Conn (standalone bridge in front of a remote
	// parleyd).
	GRPCServer *grpc.Server

	// Conn is a client connection to the gRPC server (in-process or
	// remote). /ws and /api call Chat and Auth through it, forwarding the
	// caller's token as `authorization` metadata. Required.
	Conn grpc.ClientConnInterface

	// Sessions, when set, attaches /ws connections to the server's sessions
	// directly instead of opening Chat.Connect over Conn: no HTTP/2 hop, no
	// re-encoding of binary frames, fewer goroutines per connection. The
	// server runs the interceptors' own policy code on it (see session.Attacher).
	// parleyd sets it; a standalone bridge leaves it nil.
	Sessions session.Attacher

	// AllowedOrigins lists the exact browser origins ("scheme://host[:port]",
	// e.g. "http://localhost:8080") allowed to call gRPC-Web, /ws and /api.
	// Requests without an Origin header (non-browser clients) are allowed;
	// a browser request whose Origin is not listed is refused with 403 and
	// a message naming the origin and the --allowed-origins entry that
	// admits it (JSON on /api and /ws, grpc-status 7 and grpc-message on
	// gRPC-Web), and logged as a warning at most once per origin a minute.
	// There is no same-host default: the origin the web app is served from
	// must be listed too. "*" is refused by New.
	AllowedOrigins []string

	// Static holds the web app served at "/", with index.html as the
	// fallback for client-side routes. Nil serves no app (404).
	Static fs.FS

	// Logger receives lifecycle and error logs; never tokens. Nil discards.
	Logger *slog.Logger

	// PingInterval is how often WebSockets are pinged. Default 25s;
	// minimum 1s.
	PingInterval time.Duration

	// MaxFrameBytes bounds one WebSocket message from a client; a larger
	// one closes the WebSocket with 1009. Default DefaultMaxFrameBytes.
	MaxFrameBytes int64

	// SendQueue bounds the events queued to one /ws connection; when it is
	// full the connection is closed with 1008 "slow consumer". Default 256.
	SendQueue int

	// ClientIPHeader is the metadata key used to pass the browser's address
	// (the host of http.Request.RemoteAddr, never X-Forwarded-For nor a
	// header sent by the client) to the gRPC server. Any client-supplied
	// value is removed. Default "x-parley-client-ip".
	ClientIPHeader string

	// MaxUploadBytes bounds the body of POST /api/files. The gRPC server
	// applies its own file-size policy. Default 32 MiB.
	MaxUploadBytes int64
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.PingInterval == 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.MaxFrameBytes == 0 {
		c.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if c.SendQueue == 0 {
		c.SendQueue = DefaultSendQueue
	}
	if c.ClientIPHeader == "" {
		c.ClientIPHeader = DefaultClientIPHeader
	}
	if c.MaxUploadBytes == 0 {
		c.MaxUploadBytes = DefaultMaxUploadBytes
	}
	return c
}

// Validate reports whether c, with defaults applied, is usable.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.Conn == nil {
		errs = append(errs, errors.New("bridge: Config.Conn is required"))
	}
	if c.PingInterval < time.Second {
		errs = append(errs, fmt.Errorf("bridge: PingInterval %s is below 1s", c.PingInterval))
	}
	if c.MaxFrameBytes < 4<<10 {
		errs = append(errs, fmt.Errorf("bridge: MaxFrameBytes %d is below 4 KiB", c.MaxFrameBytes))
	}
	if c.SendQueue < 1 {
		errs = append(errs, fmt.Errorf("bridge: SendQueue %d must be positive", c.SendQueue))
	}
	if c.MaxUploadBytes < 1 {
		errs = append(errs, fmt.Errorf("bridge: MaxUploadBytes %d must be positive", c.MaxUploadBytes))
	}
	if h := strings.ToLower(c.ClientIPHeader); h != c.ClientIPHeader || strings.HasPrefix(h, "grpc-") || strings.HasPrefix(h, ":") || h == "authorization" {
		errs = append(errs, fmt.Errorf("bridge: ClientIPHeader %q must be a lower-case, non-reserved metadata key", c.ClientIPHeader))
	}
	if _, err := newOriginList(c.AllowedOrigins); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Bridge serves gRPC-Web, /ws, /api and the web app on one http.Handler.
// Every call reaches the gRPC server, so its interceptors (auth, roles,
// rate limits, validation) apply to every path; the bridge enforces only
// transport limits. A Bridge is safe for concurrent use.
type Bridge struct {
	cfg     Config
	log     *slog.Logger
	origins originList
	// refusals logs refused origins, a line per origin per minute.
	refusals *refusalLog
	grpcWeb  *grpcweb.WrappedGrpcServer
	proxy    *grpc.Server // non-nil in standalone mode
	handler  http.Handler
	static   *staticHandler

	// Transport timeouts; fields so that tests can shorten them.
	firstFrameTimeout  time.Duration
	headerFrameTimeout time.Duration

	mu       sync.Mutex
	closed   bool
	sessions map[*wsSession]struct{}
	wg       sync.WaitGroup // one per running /ws session
}

// New returns a Bridge for cfg, or an error when cfg is invalid.
func New(cfg Config) (*Bridge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	origins, _ := newOriginList(cfg.AllowedOrigins)
	b := &Bridge{
		cfg:      cfg,
		log:      cfg.Logger,
		origins:  origins,
		refusals: newRefusalLog(cfg.Logger),
		sessions: make(map[*wsSession]struct{}),

		firstFrameTimeout:  firstFrameTimeout,
		headerFrameTimeout: headerFrameTimeout,
	}
	b.grpcWeb, b.proxy = b.newGRPCWeb()
	if cfg.Static != nil {
		b.static = &staticHandler{fsys: cfg.Static}
	}
	b.handler = b.routes()
	return b, nil
}

// Handler returns the bridge's one handler: gRPC-Web (HTTP and WebSocket
// transports, detected by content type and subprotocol), /ws, /api/... and
// the web app at "/".
func (b *Bridge) Handler() http.Handler { return b.handler }

func (b *Bridge) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", b.serveWS)
	b.apiRoutes(mux)
	mux.HandleFunc("/api/", b.apiNotFound)
	mux.HandleFunc("/", b.serveStatic)

	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b.isGRPCWeb(r) {
			b.serveGRPCWeb(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// Close ends every /ws session with 1001 (going away) and waits for them
// to finish; new /ws connections are refused with 503. In standalone mode
// it also stops the gRPC-Web proxy, ending its streams. gRPC-Web streams
// on an in-process GRPCServer end when that server stops. Close is safe to
// call more than once.
func (b *Bridge) Close() error {
	b.mu.Lock()
	b.closed = true
	sessions := make([]*wsSession, 0, len(b.sessions))
	for s := range b.sessions {
		sessions = append(sessions, s)
	}
	b.mu.Unlock()

	for _, s := range sessions {
		if s.grpcWeb != nil {
			// The table's 1001: Unavailable, in the call's trailers.
			s.endGRPCWeb(status.New(codes.Unavailable, "server shutting down"))
			continue
		}
		s.endFor(session.Disconnect{Code: session.CodeGoingAway, Reason: "server shutting down"})
	}
	b.wg.Wait()
	if b.proxy != nil {
		b.proxy.Stop()
	}
	return nil
}

// addSession registers s, or reports false when the bridge is closed.
func (b *Bridge) addSession(s *wsSession) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.sessions[s] = struct{}{}
	b.wg.Add(1)
	return true
}

func (b *Bridge) removeSession(s *wsSession) {
	b.mu.Lock()
	delete(b.sessions, s)
	b.mu.Unlock()
	b.wg.Done()
}
