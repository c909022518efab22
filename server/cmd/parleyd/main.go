// Command parleyd is the Parley chat server: native gRPC, the HTTP bridge
// (gRPC-Web, WebSocket, REST, the web app) and metrics in one binary, and
// the commands that manage its accounts offline (see usage below, or run
// `parleyd help`).
//
// The server's flags and the storage flags of every command have a
// PARLEY_* environment fallback (shown in each command's help), so the
// account commands act on the database the server uses.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/parleychat/parley/clients/web"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/internal/auth"
)

// usage is the top-level help; %s is the username pattern.
const usageFormat = `parleyd is the Parley chat server.

Usage:
  parleyd [serve] [flags]           run the server (the default command)
  parleyd help [command]            show help for a command
  parleyd version                   print the version and build
  parleyd token --user NAME [--role ROLE] [--ttl D]
                                    print an access token (the account is made if missing)
  parleyd user add --username NAME --password PW [--role ROLE]
  parleyd user list
  parleyd user set-role --username NAME --role ROLE
  parleyd user set-password --username NAME --password PW
  parleyd user deactivate --username NAME
  parleyd user activate --username NAME

ROLE is user, moderator or admin; a username matches %s.

Every command reads the server's storage flags (--data-dir,
--database-url), and those and every server flag fall back to
PARLEY_<FLAG> (e.g. PARLEY_DATABASE_URL), so the commands act on the
database the server uses. The user commands change the database
directly: a running server applies a deactivation or a role change to
the user's next call or connect, while live streams go on (the Admin API
also ends those).

Run "parleyd help COMMAND" (or "parleyd COMMAND --help") for its flags.
`

// usage is the top-level help, with the contract's username rule.
var usage = fmt.Sprintf(usageFormat, auth.UsernamePattern())

// commands are the known commands, in the order usage errors list them.
var commands = []string{"serve", "help", "version", "token", "user"}

// version is set with -ldflags "-X main.version=v1.2.3"; otherwise it
// comes from the module's build information.
var version = ""

func main() {
	os.Exit(cli{stdout: os.Stdout, stderr: os.Stderr, env: envOS}.run(os.Args[1:]))
}

// cli runs one command line; tests give it buffers and an environment.
type cli struct {
	stdout, stderr io.Writer
	env            lookupEnv
}

// run runs args and returns the exit status: 0, 1 for a failure, 2 for a
// usage mistake.
func (c cli) run(args []string) int {
	err := c.dispatch(args)
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(c.stderr, "parleyd:", err)
		return 2
	case errors.Is(err, errFlagParse):
		return 2 // flag has printed the mistake and the usage
	default:
		fmt.Fprintln(c.stderr, "parleyd:", err)
		return 1
	}
}

// errFlagParse marks an error the flag package has already reported.
var errFlagParse = errors.New("flag parse error")

func (c cli) dispatch(args []string) error {
	if len(args) == 0 || len(args[0]) > 0 && args[0][0] == '-' {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fmt.Fprint(c.stdout, usage)
			return nil
		}
		return c.serve(args)
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return c.serve(rest)
	case "help":
		return c.help(rest)
	case "version":
		if len(rest) > 0 {
			if rest[0] == "-h" || rest[0] == "--help" || rest[0] == "-help" {
				fmt.Fprintln(c.stdout, "Usage: parleyd version\n\nPrints the version, the VCS revision and the Go version of this build.")
				return nil
			}
			return usageErrorf("version takes no arguments")
		}
		fmt.Fprintln(c.stdout, versionString())
		return nil
	case "token":
		return c.token(rest)
	case "user":
		return c.user(rest)
	}
	return usageErrorf("unknown command %q; commands: %v (see parleyd help)", cmd, commandList())
}

func commandList() string {
	s := ""
	for i, c := range commands {
		if i > 0 {
			s += ", "
		}
		s += c
	}
	return s
}

// help prints usage: the top-level one, or a command's with its flags.
func (c cli) help(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(c.stdout, usage)
		return nil
	}
	switch args[0] {
	case "help":
		fmt.Fprint(c.stdout, usage)
		return nil
	case "version":
		return c.dispatch([]string{"version", "--help"})
	case "serve", "token", "user":
		h := append(append([]string{}, args...), "--help")
		if args[0] == "serve" {
			h = []string{"serve", "--help"}
		}
		return c.dispatch(h)
	}
	return usageErrorf("no help for %q; commands: %s", args[0], commandList())
}

// parseFlags parses, printing help to stdout for --help and mistakes to
// stderr.
func (c cli) parseFlags(f *flags, args []string) error {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			f.SetOutput(c.stdout)
			f.Usage()
			return flag.ErrHelp
		}
	}
	err := f.parse(args)
	var ue *usageError
	switch {
	case err == nil, errors.As(err, &ue):
		return err
	default:
		return fmt.Errorf("%w: %v", errFlagParse, err)
	}
}

// versionString is "parleyd VERSION (REVISION[, modified], TIME) GO OS/ARCH".
func versionString() string {
	v, rev, when, dirty := version, "", "", false
	goVersion := runtime.Version()
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" && bi.Main.Version != "" {
			v = bi.Main.Version
		}
		goVersion = bi.GoVersion
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	out := "parleyd " + v
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		out += " (" + rev
		if dirty {
			out += ", modified"
		}
		if when != "" {
			out += ", " + when
		}
		out += ")"
	}
	return out + " " + goVersion + " " + runtime.GOOS + "/" + runtime.GOARCH
}

const serveUsage = `Usage: parleyd [serve] [flags]

Runs the server: native gRPC, the HTTP bridge (gRPC-Web, /ws, REST, the
web app, /healthz, /readyz) and the metrics listener (/metrics, /healthz,
/readyz, pprof). SIGINT or SIGTERM stops it gracefully within
--shutdown-grace.
`

func (c cli) serve(args []string) error {
	fs := newFlags("parleyd serve", c.env, c.stderr, serveUsage)
	grpcAddr := fs.str("grpc-addr", ":50051", "native gRPC listen address")
	httpAddr := fs.str("http-addr", ":8080", `HTTP bridge and web app listen address, or "off"`)
	metricsAddr := fs.str("metrics-addr", "127.0.0.1:9090", `Prometheus /metrics and pprof listen address, or "off"`)
	sf := fs.storeFlags()
	otlpEndpoint := fs.str("otlp-endpoint", "", "OTLP/gRPC collector for traces (http://host:4317, https://host:4317 or host:port); default $OTEL_EXPORTER_OTLP_ENDPOINT, and no tracing when unset")
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
	natsSubject := fs.str("nats-subject", "parley", "prefix of the cluster's NATS subjects (clusters sharing a NATS server but not a database need their own)")
	rates := fs.str("rate-limits", "", "per-user limits kind=rate/s:burst,... kinds: message,typing,join,upload,connect,other")
	grace := fs.dur("shutdown-grace", 10*time.Second, "on SIGTERM: the whole graceful stop (refuse new clients, notify and drain sessions, close storage) ends within this")
	logLevel := fs.str("log-level", "info", "debug, info, warn or error")
	storeTimeout := fs.dur("store-timeout", server.DefaultStoreTimeout, "deadline of every store call: a database that hangs answers commands Unavailable (retry later) after this long")
	if err := c.parseFlags(fs, args); err != nil {
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return usageErrorf("--log-level: %v", err)
	}
	logger := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: lvl}))
	slog.SetDefault(logger)

	cfg := server.Config{
		GRPCAddr: *grpcAddr, HTTPAddr: *httpAddr, MetricsAddr: *metricsAddr, DataDir: *sf.dataDir, DatabaseURL: *sf.databaseURL,
		JWTIssuer: *issuer, JWTAudience: *audience, PublicKeyFiles: list(*pubKeys), AccessTTL: *accessTTL,
		EncryptionKeys: *encKeys, MaxFileSize: *maxFile, Retention: *retention, FileGrace: *fileGrace,
		TLSCertFile: *tlsCert, TLSKeyFile: *tlsKey, AllowedOrigins: list(*origins), PingInterval: *ping,
		QueueSize: int(*queue), WriteCoalesce: *coalesce, OnlineSnapshotLimit: int(*snapshot), PresenceNamesLimit: int(*namesLimit), DisableRegistration: *noRegister, RateLimits: *rates, NATSURL: *natsURL, NATSSubject: *natsSubject, Logger: logger, Static: web.Dist,
		ShutdownGrace: *grace,
	}
	cfg.StoreTimeout = *storeTimeout
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
