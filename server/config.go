package server

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"time"

	"github.com/parleychat/parley/server/internal/filegc"
	"google.golang.org/grpc"
)

// ClientIPHeader is the metadata key the in-process bridge uses to pass the
// browser's address; it is trusted only on the in-process connection.
const ClientIPHeader = "x-parley-client-ip"

// DefaultStoreTimeout is Config.StoreTimeout's default: far above a
// healthy store's slowest call (a group commit's fsync), short enough that
// a client waiting on a hung database hears Unavailable within seconds.
const DefaultStoreTimeout = 5 * time.Second

// Config configures a Server. Zero values mean the documented defaults.
type Config struct {
	// GRPCAddr is the native gRPC listen address; default ":50051".
	GRPCAddr string
	// HTTPAddr is the bridge's listen address (gRPC-Web, /ws, REST, web
	// app, /healthz, /readyz); default ":8080"; "off" disables it.
	HTTPAddr string
	// MetricsAddr serves /metrics, /debug/pprof, /healthz and /readyz; default
	// "127.0.0.1:9090"; "off" disables it.
	MetricsAddr string
	// OTLPEndpoint, when set, exports traces over OTLP/gRPC to this
	// collector ("http://host:4317", "https://host:4317" or "host:port" for
	// plaintext). Empty means the standard OTEL_EXPORTER_OTLP_ENDPOINT
	// environment variable, and no tracing when that is unset too.
	OTLPEndpoint string
	// DataDir holds the database, files and generated secret; default "./data".
	DataDir string
	// DatabaseURL, when set, keeps messages, users and memberships in
	// PostgreSQL instead of SQLite in DataDir (files and the secret stay in
	// DataDir, which nodes of a cluster must then share or copy).
	DatabaseURL string

	// JWTSecret signs and verifies HS256 tokens; default: 32 random bytes
	// created on first start and kept in DataDir/jwt.secret.
	JWTSecret []byte
	// JWTIssuer and JWTAudience are required in every token; default "parley".
	JWTIssuer, JWTAudience string
	// PublicKeyFiles are PEM files of RS256/Ed25519 keys of an external
	// identity provider (selected by kid = file base name).
	PublicKeyFiles []string
	// AccessTTL is the lifetime of issued access tokens; default 15m.
	AccessTTL time.Duration

	// EncryptionKeys enables at-rest encryption: "id:base64key,..." with the
	// first key active.
	EncryptionKeys string
	// MaxFileSize bounds uploads; default 10 MiB.
	MaxFileSize int64
	// Retention deletes messages older than this, hourly; 0 keeps them.
	// With it set, files that no remaining message references are deleted
	// too (their rows and, once no row names their content, their blobs),
	// once FileGrace has passed since they were last uploaded or posted.
	Retention time.Duration
	// FileGrace is how long, with Retention set, a file that no message
	// references is kept after it was last uploaded or posted: an upload
	// must survive until its uploader posts it. Default the larger of 24h
	// and Retention (so no file goes sooner than messages would).
	FileGrace time.Duration

	// TLSCertFile and TLSKeyFile enable TLS on the gRPC and HTTP listeners.
	TLSCertFile, TLSKeyFile string
	// AllowedOrigins are the browser origins the bridge accepts; default the
	// HTTP listener's own http://localhost:PORT and http://127.0.0.1:PORT.
	// Any other origin is refused with a message naming it and the
	// --allowed-origins entry that admits it (and a warning in the log).
	AllowedOrigins []string
	// PingInterval is how often the bridge pings its WebSockets (/ws and
	// gRPC-Web); one unanswered by the next ends the connection. Default
	// bridge.DefaultPingInterval. Shorter suits proxies that close idle
	// connections sooner.
	PingInterval time.Duration
	// Static is the web app served at "/"; nil serves none.
	Static fs.FS

	// RateLimits overrides the default per-user (connect: per-IP) limits,
	// as "kind=N/unit[:burst],..." with kinds message, typing, join,
	// upload, connect and other, e.g. "message=5/s:10,upload=unlimited".
	RateLimits string
	// QueueSize bounds each session's outbound queue; default 256.
	QueueSize int
	// ReplayCap bounds the messages one Resume, or the direct messages one
	// connect, replays; StateRestored says complete=false when it cut the
	// replay short. Default 1000.
	ReplayCap int
	// WriteCoalesce is the least time between two writes to one busy
	// connection (/ws, gRPC-Web or native gRPC): what queues meanwhile goes
	// out in one write. A quiet connection is written at once. Default
	// 20ms; negative writes every burst at once.
	WriteCoalesce time.Duration

	// StreamPolicy adds stream interceptors to the policy gate, innermost
	// (after auth, roles, limits and validation, so ctx carries the
	// Principal): they run on every Chat.Connect whatever its transport
	// (gRPC, gRPC-Web, /ws). Nil means none.
	StreamPolicy []grpc.StreamServerInterceptor
	// TypingTimeout ends a typing indicator without a stop; default 5s.
	TypingTimeout time.Duration
	// PresenceWindow gathers presence changes into one event per window,
	// and each room's member changes into one event per room and window;
	// default 100ms; negative sends each change at once.
	PresenceWindow time.Duration
	// OnlineSnapshotLimit is how many online users (the first by username)
	// a new session's OnlineUsers snapshot lists; clients page
	// Chat.ListOnlineUsers for the rest. Default 100; at most 1000.
	OnlineSnapshotLimit int
	// PresenceNamesLimit: while more users than this are online, presence
	// changes go out as counts only (PresenceChanged.names_omitted), since
	// naming every arrival to every session costs O(N²); likewise a room's
	// member changes while it has more members than this
	// (RoomMembersChanged.names_omitted). Default 1000; negative always
	// sends names.
	PresenceNamesLimit int
	// NATSURL joins this node to a cluster over NATS: nodes that share the
	// NATS subject and the database serve one chat. Empty runs one node.
	NATSURL string
	// NATSSubject is the prefix of the cluster's NATS subjects (rooms,
	// users, presence, admin: see the hub's cluster.go); default "parley".
	NATSSubject string
	// DisableRegistration refuses Auth.Register.
	DisableRegistration bool
	// PasswordHashMemory is how many bytes the password hashes in flight
	// (logins, registrations) may hold at once; what does not fit waits
	// briefly, then is refused Unavailable with a retry delay. Their
	// number is also capped at half the cores. Default an eighth of the
	// memory the process may use (authsvc.HashMemoryBudget), at most 1 GiB.
	PasswordHashMemory int64
	// StoreTimeout bounds every store call (and each commit of the append
	// writer): a database that hangs makes commands fail as Unavailable,
	// with a retry hint, after this long instead of holding them. Default
	// DefaultStoreTimeout.
	StoreTimeout time.Duration
	// ShutdownGrace bounds the whole graceful stop (Run's Shutdown): new
	// clients are refused at once, sessions are told to reconnect and get
	// all but a third of it (at most 3s) to end, and the rest stops the
	// servers and closes storage. Default 10s.
	ShutdownGrace time.Duration
	// ReconnectAfter is the hint sent to clients on shutdown; default 2s.
	ReconnectAfter time.Duration

	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.GRPCAddr, ":50051")
	def(&c.HTTPAddr, ":8080")
	def(&c.MetricsAddr, "127.0.0.1:9090")
	def(&c.DataDir, "data")
	def(&c.JWTIssuer, "parley")
	def(&c.JWTAudience, "parley")
	if c.AccessTTL <= 0 {
		c.AccessTTL = 15 * time.Minute
	}
	if c.MaxFileSize <= 0 {
		c.MaxFileSize = 10 << 20
	}
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = 10 * time.Second
	}
	if c.StoreTimeout <= 0 {
		c.StoreTimeout = DefaultStoreTimeout
	}
	if c.ReconnectAfter <= 0 {
		c.ReconnectAfter = 2 * time.Second
	}
	if c.FileGrace == 0 {
		c.FileGrace = max(filegc.DefaultGrace, c.Retention)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return errors.New("TLS needs both a certificate and a key file")
	}
	if c.JWTSecret != nil && len(c.JWTSecret) < 32 {
		return errors.New("the JWT secret must be at least 32 bytes")
	}
	if c.Retention < 0 || c.FileGrace < 0 {
		return fmt.Errorf("retention (%v) and file grace (%v) must not be negative", c.Retention, c.FileGrace)
	}
	if c.PasswordHashMemory < 0 {
		return fmt.Errorf("the password hash memory must not be negative, not %d", c.PasswordHashMemory)
	}
	if c.ReplayCap < 0 {
		return fmt.Errorf("the replay cap must be positive (0 for the default 1000), not %d", c.ReplayCap)
	}
	if c.OnlineSnapshotLimit < 0 || c.OnlineSnapshotLimit > 1000 {
		return fmt.Errorf("the online snapshot limit must be between 1 and 1000 (0 for the default 100), not %d", c.OnlineSnapshotLimit)
	}
	for _, o := range c.AllowedOrigins {
		if o == "*" || strings.Contains(o, "*") {
			return errors.New("allowed origins must be exact; wildcards are refused")
		}
	}
	return nil
}
