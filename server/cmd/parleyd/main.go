// Command parleyd is the Parley chat server: native gRPC, the HTTP bridge
// (gRPC-Web, WebSocket, REST, the web app) and metrics in one binary.
//
//	parleyd [flags]                      run the server (embedded SQLite in ./data)
//	parleyd token --user NAME --role R   mint an access token for testing
//	parleyd user add --username NAME --password PW [--role R]
//
// Every flag has a PARLEY_* environment fallback (shown in -help).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/parleychat/parley/clients/web"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/internal/store"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "parleyd:", err)
		}
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "token":
			return tokenCmd(args[1:])
		case "user":
			if len(args) > 1 && args[1] == "add" {
				return userAddCmd(args[2:])
			}
			return errors.New("usage: parleyd user add --username NAME --password PW [--role user|moderator|admin]")
		}
	}
	return serve(args)
}

// env returns the PARLEY_ variable for a flag, or def.
func env(name, def string) string {
	if v, ok := os.LookupEnv("PARLEY_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))); ok {
		return v
	}
	return def
}

type flags struct {
	*flag.FlagSet
}

func newFlags(name string) flags { return flags{flag.NewFlagSet(name, flag.ContinueOnError)} }

func (f flags) str(name, def, usage string) *string {
	return f.String(name, env(name, def), usage+" (env PARLEY_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))+")")
}

func (f flags) dur(name string, def time.Duration, usage string) *time.Duration {
	d := def
	if v := env(name, ""); v != "" {
		if p, err := time.ParseDuration(v); err == nil {
			d = p
		}
	}
	return f.Duration(name, d, usage+" (env PARLEY_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))+")")
}

func (f flags) num(name string, def int64, usage string) *int64 {
	n := def
	if v := env(name, ""); v != "" {
		if p, err := strconv.ParseInt(v, 10, 64); err == nil {
			n = p
		}
	}
	return f.Int64(name, n, usage+" (env PARLEY_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))+")")
}

func (f flags) boolean(name string, usage string) *bool {
	b, _ := strconv.ParseBool(env(name, "false"))
	return f.Bool(name, b, usage+" (env PARLEY_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))+")")
}

func list(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func serve(args []string) error {
	fs := newFlags("parleyd")
	grpcAddr := fs.str("grpc-addr", ":50051", "native gRPC listen address")
	httpAddr := fs.str("http-addr", ":8080", `HTTP bridge and web app listen address, or "off"`)
	metricsAddr := fs.str("metrics-addr", "127.0.0.1:9090", `Prometheus /metrics and pprof listen address, or "off"`)
	otlpEndpoint := fs.str("otlp-endpoint", "", "OTLP/gRPC collector for traces (http://host:4317, https://host:4317 or host:port); default $OTEL_EXPORTER_OTLP_ENDPOINT, and no tracing when unset")
	dataDir := fs.str("data-dir", "data", "directory for the database, files and generated secret")
	dbURL := fs.str("database-url", "", "PostgreSQL URL (postgres://user@host/db): keep messages and users there instead of SQLite in the data dir")
	secretFile := fs.str("jwt-secret-file", "", "file holding the HS256 secret (hex); default a random secret kept in the data dir")
	issuer := fs.str("jwt-issuer", "parley", "required token issuer")
	audience := fs.str("jwt-audience", "parley", "required token audience")
	pubKeys := fs.str("jwt-public-keys", "", "comma-separated PEM files of RS256/Ed25519 keys of an external identity provider (kid = file name without extension)")
	accessTTL := fs.dur("access-ttl", 15*time.Minute, "lifetime of issued access tokens")
	encKeys := fs.str("encryption-keys", "", "at-rest encryption keys id:base64(32 bytes),... (first is active)")
	maxFile := fs.num("max-file-size", 10<<20, "largest upload in bytes")
	retention := fs.dur("retention", 0, "delete messages older than this (0 keeps everything)")
	fileGrace := fs.dur("file-grace", 0, "with --retention: keep a file no message references this long after its last upload or post (0: the larger of 24h and --retention)")
	tlsCert := fs.str("tls-cert", "", "TLS certificate file (enables TLS on gRPC and HTTP)")
	tlsKey := fs.str("tls-key", "", "TLS key file")
	origins := fs.str("allowed-origins", "", "comma-separated browser origins allowed on the bridge; default this server's own localhost origins")
	ping := fs.dur("ping-interval", 25*time.Second, "how often WebSockets (/ws, gRPC-Web) are pinged; one unanswered by the next ping ends the connection")
	queue := fs.num("queue-size", 256, "outbound queue per session, in events; a client that falls this far behind is disconnected")
	coalesce := fs.dur("write-coalesce", 20*time.Millisecond, "least time between two writes to a busy connection, any transport (what queues meanwhile goes in one write); negative for none")
	snapshot := fs.num("online-snapshot-limit", 100, "online users listed to a new session (the first by username); clients page Chat.ListOnlineUsers for the rest; at most 1000")
	namesLimit := fs.num("presence-names-limit", 1000, "above this many users online, presence changes carry only the count (names_omitted), and so do a room's member changes above this many members; negative always sends names")
	noRegister := fs.boolean("disable-registration", "refuse Auth.Register")
	natsURL := fs.str("nats-url", "", "NATS server URL: join the nodes that share it (and the database) into one cluster")
	natsSubject := fs.str("nats-subject", "parley.events", "the cluster's NATS subject")
	rates := fs.str("rate-limits", "", "per-user limits kind=rate/s:burst,... kinds: message,typing,join,upload,connect,other")
	logLevel := fs.str("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("log level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	slog.SetDefault(logger)

	cfg := server.Config{
		GRPCAddr: *grpcAddr, HTTPAddr: *httpAddr, MetricsAddr: *metricsAddr, DataDir: *dataDir, DatabaseURL: *dbURL,
		JWTIssuer: *issuer, JWTAudience: *audience, PublicKeyFiles: list(*pubKeys), AccessTTL: *accessTTL,
		EncryptionKeys: *encKeys, MaxFileSize: *maxFile, Retention: *retention, FileGrace: *fileGrace,
		TLSCertFile: *tlsCert, TLSKeyFile: *tlsKey, AllowedOrigins: list(*origins), PingInterval: *ping,
		QueueSize: int(*queue), WriteCoalesce: *coalesce, OnlineSnapshotLimit: int(*snapshot), PresenceNamesLimit: int(*namesLimit), DisableRegistration: *noRegister, RateLimits: *rates, NATSURL: *natsURL, NATSSubject: *natsSubject, Logger: logger, Static: web.Dist,
	}
	cfg.OTLPEndpoint = *otlpEndpoint
	if *secretFile != "" {
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			return err
		}
		if cfg.JWTSecret, err = server.DecodeSecret(b); err != nil {
			return fmt.Errorf("%s: %w", *secretFile, err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := server.New(ctx, cfg)
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}

// adminStore is what the token and user subcommands need.
type adminStore interface {
	server.UserStore
	Close() error
}

func openStore(ctx context.Context, dataDir, databaseURL string) (adminStore, error) {
	return server.OpenStore(ctx, dataDir, databaseURL, nil, slog.New(slog.DiscardHandler))
}

// tokenCmd mints an access token for testers, creating the user (with an
// unusable password) or updating its role so the token's user exists.
func tokenCmd(args []string) error {
	fs := newFlags("parleyd token")
	user := fs.String("user", "", "username")
	role := fs.String("role", "user", "user, moderator or admin")
	ttl := fs.Duration("ttl", time.Hour, "token lifetime")
	dataDir := fs.str("data-dir", "data", "the server's data directory")
	dbURL := fs.str("database-url", "", "the server's PostgreSQL URL, if it uses one")
	issuer := fs.str("jwt-issuer", "parley", "token issuer")
	audience := fs.str("jwt-audience", "parley", "token audience")
	if err := fs.Parse(args); err != nil {
		return err
	}
	r, err := auth.ParseRole(*role)
	if err != nil {
		return err
	}
	ctx := context.Background()
	st, err := openStore(ctx, *dataDir, *dbURL)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := server.EnsureUser(ctx, st, *user, r); err != nil {
		return err
	}
	secret, err := server.LoadOrCreateSecret(*dataDir)
	if err != nil {
		return err
	}
	iss, err := auth.NewIssuer(auth.IssuerConfig{Secret: secret, Issuer: *issuer, Audience: *audience, TTL: *ttl})
	if err != nil {
		return err
	}
	tok, _, err := iss.Issue(*user, r)
	if err != nil {
		return err
	}
	fmt.Println(tok)
	return nil
}

func userAddCmd(args []string) error {
	fs := newFlags("parleyd user add")
	user := fs.String("username", "", "username")
	pw := fs.String("password", "", "password (at least 8 characters)")
	role := fs.String("role", "user", "user, moderator or admin")
	dataDir := fs.str("data-dir", "data", "the server's data directory")
	dbURL := fs.str("database-url", "", "the server's PostgreSQL URL, if it uses one")
	if err := fs.Parse(args); err != nil {
		return err
	}
	r, err := auth.ParseRole(*role)
	if err != nil {
		return err
	}
	if len(*pw) < 8 {
		return errors.New("the password must have at least 8 characters")
	}
	hash, err := auth.HashPassword(*pw)
	if err != nil {
		return err
	}
	ctx := context.Background()
	st, err := openStore(ctx, *dataDir, *dbURL)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.CreateUser(ctx, store.User{Username: *user, PasswordHash: hash, Role: r.String(), Active: true, CreatedAt: time.Now().UTC()}); err != nil {
		if errors.Is(err, store.ErrExists) {
			return fmt.Errorf("user %q already exists", *user)
		}
		return err
	}
	fmt.Printf("created %s (%s)\n", *user, r)
	return nil
}
