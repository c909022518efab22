// Command parley is a command-line client for a Parley server, built on the
// Go SDK (clients/go/parley).
//
//	parley register --server host:50051 --user alice   # or login
//	parley chat [--room general | --to USER]
//	parley conversations
//	parley send --room general hello there
//	parley history --room general
//	parley upload plan.pdf --room team
//	parley download ID -o plan.pdf
//	parley admin stats|broadcast|kick|deactivate|activate|role
//	parley logout
//
// Every command takes --server (default $PARLEY_SERVER, then the server of
// the last login, then localhost:50051), --token (default $PARLEY_TOKEN: a
// raw access token, used instead of the stored login), --tls and --ca.
// register and login read the password from $PARLEY_PASSWORD or prompt for
// it, and store the tokens in os.UserConfigDir()/parley/credentials.json
// (mode 0600) with how the server was reached (--tls, --ca), so later
// commands dial a remembered server the same way without the flags;
// commands keep the tokens fresh and store each refresh.
//
// chat on a terminal edits the typed line with golang.org/x/term's
// Terminal: messages arriving while you type print above the prompt, which
// is drawn again with what you had typed. x/term is the Go team's package,
// already a dependency here for password prompts; it gives line editing,
// history and the redraw on asynchronous output without cgo or a terminfo
// database. Fuller libraries (chzyer/readline, peterh/liner) add completion
// and key maps this client does not need, and one more dependency. Only a
// line starting with "/" is a command; "//" sends a leading slash.
//
// Concurrency: each command runs on the goroutine that calls run; chat adds
// one goroutine that prints events and one that reads lines.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/parleychat/parley/clients/go/parley"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e := &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, readPassword: terminalPassword, openTerminal: rawTerminal}
	os.Exit(run(ctx, os.Args[1:], e))
}

// env is everything a command touches outside the process, so tests can
// run commands in-process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	// configDir holds credentials.json; default os.UserConfigDir()/parley.
	configDir string
	// readPassword prompts for a password; nil reads a line from stdin.
	readPassword func(prompt string) (string, error)
	// openTerminal gives the terminal chat edits lines on, and a function
	// that restores it; nil, or an error, means plain lines on stdin.
	openTerminal func() (io.ReadWriter, func(), error)
}

// errUsage marks an error the usage text explains.
var errUsage = errors.New("usage")

const usage = `usage: parley <command> [flags] [args]

commands:
  register --user NAME           create an account and log in
  login --user NAME              log in and store the tokens
  logout                         revoke the stored refresh token and forget it
  chat [--room ROOM | --to USER] interactive chat (type /help)
  conversations                  your rooms and direct conversations, last message first
  send (--room ROOM | --to USER) TEXT...
  history (--room ROOM | --user USER) [--limit N] [--before SEQ]
  upload FILE [--room ROOM | --to USER] [--type CONTENT-TYPE]
  download ID -o FILE            (-o - writes to stdout)
  admin stats
  admin broadcast [--room ROOM] TEXT...
  admin kick USER [--reason TEXT]
  admin deactivate USER | admin activate USER
  admin role USER user|moderator|admin

common flags:
  --server HOST:PORT   default $PARLEY_SERVER, the last login's server, localhost:50051
  --token TOKEN        access token to use instead of the stored login (default $PARLEY_TOKEN)
  --tls                use TLS (system roots); --ca FILE adds a CA certificate
                       (login and register remember both for the server)
`

func run(ctx context.Context, args []string, e *env) int {
	if e.configDir == "" {
		dir, err := os.UserConfigDir()
		if err != nil {
			fmt.Fprintln(e.stderr, "parley:", err)
			return 1
		}
		e.configDir = filepath.Join(dir, "parley")
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(e.stdout, usage)
		return 0
	}
	cmds := map[string]func(context.Context, *env, []string) error{
		"register":      func(ctx context.Context, e *env, a []string) error { return cmdAuth(ctx, e, a, true) },
		"login":         func(ctx context.Context, e *env, a []string) error { return cmdAuth(ctx, e, a, false) },
		"logout":        cmdLogout,
		"chat":          cmdChat,
		"conversations": cmdConversations,
		"send":          cmdSend,
		"history":       cmdHistory,
		"upload":        cmdUpload,
		"download":      cmdDownload,
		"admin":         cmdAdmin,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(e.stderr, "parley: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	err := cmd(ctx, e, args[1:])
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(e.stderr, "parley %s: %v\n\n%s", args[0], err, usage)
		return 2
	}
	fmt.Fprintf(e.stderr, "parley %s: %s\n", args[0], errText(err))
	return 1
}

// errText is err for a person: an in-band refusal's message, or a gRPC
// status's message and code.
func errText(err error) string {
	var perr *parley.Error
	if errors.As(err, &perr) {
		if perr.RetryAfter > 0 {
			return fmt.Sprintf("%s (try again in %s)", perr.Message, perr.RetryAfter.Round(100*time.Millisecond))
		}
		return perr.Message
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.OK {
		return fmt.Sprintf("%s (%s)", st.Message(), st.Code())
	}
	return err.Error()
}

// common are the flags every command takes.
type common struct {
	e      *env
	fs     *flag.FlagSet
	server string
	token  string
	tls    bool
	ca     string
}

func newFlags(e *env, name string) (*flag.FlagSet, *common) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	c := &common{e: e, fs: fs}
	fs.StringVar(&c.server, "server", e.getenv("PARLEY_SERVER"), "server `host:port`")
	fs.StringVar(&c.token, "token", e.getenv("PARLEY_TOKEN"), "access `token` (instead of the stored login)")
	fs.BoolVar(&c.tls, "tls", false, "use TLS")
	fs.StringVar(&c.ca, "ca", "", "PEM `file` of a CA to trust (implies --tls)")
	return fs, c
}

// parse parses flags wherever they appear among the arguments and returns
// the positional ones; everything after "--" is positional.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	if i := slices.Index(args, "--"); i >= 0 {
		args, rest = args[:i], args[i+1:]
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return append(pos, rest...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func (c *common) store() *store {
	return &store{path: filepath.Join(c.e.configDir, "credentials.json")}
}

// target is the server to talk to.
func (c *common) target() string {
	if c.server != "" {
		return c.server
	}
	if s, err := c.store().load(); err == nil && s.Default != "" {
		return s.Default
	}
	return "localhost:50051"
}

// transport is how to reach the target: --tls and --ca when either was
// given, else what login stored for that server.
func (c *common) transport() (transport, error) {
	explicit := false
	c.fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "tls" || f.Name == "ca" })
	if explicit {
		return c.flagTransport()
	}
	t, _, err := c.store().transport(c.target())
	return t, err
}

// flagTransport is --tls and --ca, the CA as an absolute path so it still
// names the file when stored and used from another directory.
func (c *common) flagTransport() (transport, error) {
	t := transport{TLS: c.tls || c.ca != ""}
	if c.ca != "" {
		abs, err := filepath.Abs(c.ca)
		if err != nil {
			return transport{}, err
		}
		t.CA = abs
	}
	return t, nil
}

func (c *common) dialOptions() ([]parley.Option, error) {
	tr, err := c.transport()
	if err != nil {
		return nil, err
	}
	if !tr.TLS {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if tr.CA != "" {
		pem, err := os.ReadFile(tr.CA)
		if err != nil {
			return nil, err
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate", tr.CA)
		}
		cfg.RootCAs = pool
	}
	return []parley.Option{parley.WithTLS(cfg)}, nil
}

// anonymous dials without credentials (for register and login).
func (c *common) anonymous(ctx context.Context) (*parley.Client, error) {
	opts, err := c.dialOptions()
	if err != nil {
		return nil, err
	}
	return parley.Dial(ctx, c.target(), opts...)
}

// client dials with --token, or with the stored login kept fresh.
func (c *common) client(ctx context.Context) (*parley.Client, error) {
	opts, err := c.dialOptions()
	if err != nil {
		return nil, err
	}
	target := c.target()
	if c.token != "" {
		opts = append(opts, parley.WithToken(c.token))
	} else {
		st := c.store()
		t, ok, err := st.get(target)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("not logged in to %s: run `parley login --server %s --user NAME`", target, target)
		}
		opts = append(opts, parley.WithAutoRefresh(t, func(t parley.Tokens) {
			if err := st.put(target, t, false); err != nil {
				fmt.Fprintln(c.e.stderr, "parley: storing refreshed tokens:", err)
			}
		}))
	}
	return parley.Dial(ctx, target, opts...)
}

func terminalPassword(prompt string) (string, error) {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return "", errNoTerminal
	}
	fmt.Fprint(os.Stderr, prompt)
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(os.Stderr)
	return string(b), err
}

var errNoTerminal = errors.New("not a terminal")

// rawTerminal puts the terminal in raw mode for line editing when both
// stdin and stdout are one.
func rawTerminal() (io.ReadWriter, func(), error) {
	in, out := int(os.Stdin.Fd()), int(os.Stdout.Fd())
	if !term.IsTerminal(in) || !term.IsTerminal(out) {
		return nil, nil, errNoTerminal
	}
	old, err := term.MakeRaw(in)
	if err != nil {
		return nil, nil, err
	}
	return tty{os.Stdin, os.Stdout}, func() { _ = term.Restore(in, old) }, nil
}

// tty is the terminal chat runs on; its size lets long lines wrap where the
// terminal wraps them.
type tty struct {
	in, out *os.File
}

func (t tty) Read(p []byte) (int, error)  { return t.in.Read(p) }
func (t tty) Write(p []byte) (int, error) { return t.out.Write(p) }
func (t tty) size() (width, height int, err error) {
	return term.GetSize(int(t.out.Fd()))
}

// password reads $PARLEY_PASSWORD, or prompts on a terminal, or reads one
// line from stdin.
func (e *env) password(prompt string) (string, error) {
	if p := e.getenv("PARLEY_PASSWORD"); p != "" {
		return p, nil
	}
	if e.readPassword != nil {
		p, err := e.readPassword(prompt)
		if !errors.Is(err, errNoTerminal) {
			return p, err
		}
	}
	line, err := readLine(e.stdin)
	if err != nil {
		return "", fmt.Errorf("reading the password from stdin: %w", err)
	}
	return line, nil
}

// readLine reads one line byte by byte, so nothing after it is consumed.
func readLine(r io.Reader) (string, error) {
	var sb strings.Builder
	b := make([]byte, 1)
	for {
		n, err := r.Read(b)
		if n == 1 {
			if b[0] == '\n' {
				return strings.TrimSuffix(sb.String(), "\r"), nil
			}
			sb.WriteByte(b[0])
		}
		if err == io.EOF && sb.Len() > 0 {
			return sb.String(), nil
		}
		if err != nil {
			return "", err
		}
	}
}
