package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parleychat/parley/clients/go/parley"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/servertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Started by the in-process server, not by the CLI.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
		goleak.IgnoreTopFunction("github.com/desertbit/timer.timerRoutine"),
	)
}

const waitFor = 15 * time.Second

// syncBuffer is a bytes.Buffer safe for a command writing while the test
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// user is one CLI user: its own config directory and environment.
type user struct {
	t    *testing.T
	name string
	dir  string
	vars map[string]string
}

func newUser(t *testing.T, srv *servertest.Server, name string) *user {
	return &user{t: t, name: name, dir: t.TempDir(), vars: map[string]string{
		"PARLEY_SERVER": srv.GRPCAddr(), "PARLEY_PASSWORD": "password of " + name,
	}}
}

func (u *user) env(stdin io.Reader, stdout, stderr io.Writer) *env {
	return &env{stdin: stdin, stdout: stdout, stderr: stderr, configDir: u.dir,
		getenv: func(k string) string { return u.vars[k] }}
}

// run runs one command in-process and returns its output and exit code.
func (u *user) run(args ...string) (stdout, stderr string, code int) {
	u.t.Helper()
	var out, errOut bytes.Buffer
	code = run(u.t.Context(), args, u.env(strings.NewReader(""), &out, &errOut))
	return out.String(), errOut.String(), code
}

// ok runs a command that must succeed and returns its output.
func (u *user) ok(args ...string) string {
	u.t.Helper()
	out, errOut, code := u.run(args...)
	if code != 0 {
		u.t.Fatalf("%s: parley %s: exit %d\n%s%s", u.name, strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func (u *user) fails(wantCode int, wantErr string, args ...string) {
	u.t.Helper()
	out, errOut, code := u.run(args...)
	if code != wantCode || !strings.Contains(errOut, wantErr) {
		u.t.Fatalf("%s: parley %s: exit %d, want %d with %q\n%s%s", u.name, strings.Join(args, " "), code, wantCode, wantErr, out, errOut)
	}
}

func mustContain(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Fatalf("output lacks %q:\n%s", w, out)
		}
	}
}

func TestLoginAndCredentials(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	alice := newUser(t, srv, "alice")

	alice.fails(2, "--user is required", "register")
	out := alice.ok("register", "--user", "alice")
	mustContain(t, out, "logged in as alice (user) on "+srv.GRPCAddr())

	path := filepath.Join(alice.dir, "credentials.json")
	info, err := os.Stat(path)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v, %v", info, err)
	}
	var creds credentials
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &creds); err != nil || creds.Default != srv.GRPCAddr() || creds.Servers[srv.GRPCAddr()].RefreshToken == "" {
		t.Fatalf("credentials = %s, %v", b, err)
	}

	// Without PARLEY_SERVER the last login's server is used.
	delete(alice.vars, "PARLEY_SERVER")
	alice.ok("history", "--room", "general")

	// A wrong password fails; the right one logs in again. The password
	// comes from stdin when PARLEY_PASSWORD is unset and there is no
	// terminal.
	alice.vars["PARLEY_PASSWORD"] = "wrong password"
	alice.fails(1, "invalid username or password", "login", "--user", "alice")
	delete(alice.vars, "PARLEY_PASSWORD")
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"login", "--user", "alice"}, alice.env(strings.NewReader("password of alice\n"), &stdout, &stderr)); code != 0 {
		t.Fatalf("login with the password on stdin: %d %s", code, stderr.String())
	}

	alice.ok("logout")
	alice.fails(1, "not logged in", "history", "--room", "general")
	b, _ = os.ReadFile(path)
	if strings.Contains(string(b), "refresh_token") {
		t.Fatalf("tokens kept after logout: %s", b)
	}

	// An access token in PARLEY_TOKEN works without a login.
	alice.vars["PARLEY_SERVER"] = srv.GRPCAddr()
	alice.vars["PARLEY_TOKEN"] = srv.TokenAs(t, "alice", chatv1.Role_ROLE_USER)
	alice.ok("history", "--room", "general")

	alice.fails(2, "unknown command", "frobnicate")
}

func TestSendHistoryFiles(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	alice, bob := newUser(t, srv, "alice"), newUser(t, srv, "bob")
	alice.ok("register", "--user", "alice")
	bob.ok("register", "--user", "bob")

	mustContain(t, alice.ok("send", "--room", "general", "hello", "world"), "sent to #general as #1")
	mustContain(t, alice.ok("send", "hello", "--room", "general", "--", "--again"), "sent to #general as #2")
	mustContain(t, alice.ok("send", "--to", "bob", "psst"), "sent to @bob as #1")
	alice.fails(2, "--room or --to is required", "send", "hi")
	alice.fails(1, "not a member", "send", "--room", "secret", "hi")

	out := bob.ok("history", "--room", "general")
	if !regexp.MustCompile(`\d\d:\d\d:\d\d #general <alice> hello world\n.*<alice> hello --again\n`).MatchString(out) {
		t.Fatalf("history:\n%s", out)
	}
	mustContain(t, bob.ok("history", "--user", "alice"), "<alice> psst")
	mustContain(t, bob.ok("history", "--room", "general", "--limit", "1"), "(older messages: --before 2)", "hello --again")

	// Upload, post to a room, download as someone who can read it.
	content := bytes.Repeat([]byte("parley "), 30_000) // several chunks
	file := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(file, content, 0o600); err != nil {
		t.Fatal(err)
	}
	out = alice.ok("upload", file, "--room", "general")
	id := regexp.MustCompile(`[0-9a-f]{64}`).FindString(out)
	mustContain(t, out, "uploaded notes.txt (205.1 KiB): ", "posted to #general as #3")
	mustContain(t, bob.ok("history", "--room", "general"), "<alice> [file notes.txt, 205.1 KiB, id "+id+"]")
	dst := filepath.Join(t.TempDir(), "copy.txt")
	mustContain(t, bob.ok("download", id, "-o", dst), "downloaded notes.txt")
	if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("downloaded %d bytes, %v", len(got), err)
	}
	if out := bob.ok("download", "-o", "-", id); out != string(content) {
		t.Fatalf("download to stdout: %d bytes", len(out))
	}
	bob.fails(1, "exists", "download", id, "-o", dst) // never overwrites
	carol := newUser(t, srv, "carol")
	carol.ok("register", "--user", "carol")
	carol.ok("download", id, "-o", filepath.Join(t.TempDir(), "carol.txt")) // posted in general, which carol reads

	// Uploaded but not posted: only its uploader may read it.
	private := filepath.Join(t.TempDir(), "private.bin")
	if err := os.WriteFile(private, []byte("for my eyes only"), 0o600); err != nil {
		t.Fatal(err)
	}
	out = alice.ok("upload", private)
	if strings.Contains(out, "posted") {
		t.Fatalf("upload without --room posted it: %s", out)
	}
	pid := regexp.MustCompile(`[0-9a-f]{64}`).FindString(out)
	carol.fails(1, "PermissionDenied", "download", pid, "-o", "-")
	alice.ok("download", pid, "-o", "-")
}

func TestAdmin(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	root := newUser(t, srv, "root")
	root.vars["PARLEY_TOKEN"] = srv.TokenAs(t, "root", chatv1.Role_ROLE_ADMIN)
	alice := newUser(t, srv, "alice")
	alice.ok("register", "--user", "alice")

	// alice online, to see the broadcast and be kicked.
	c, err := parley.Dial(t.Context(), srv.GRPCAddr(), parley.WithToken(srv.TokenAs(t, "alice", chatv1.Role_ROLE_USER)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := c.Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	mustContain(t, root.ok("admin", "stats"), "NODE", "total", "CONNECTIONS")
	mustContain(t, root.ok("admin", "broadcast", "maintenance", "at", "noon"), "broadcast to 1 session(s)")
	for ev := range s.Events() {
		if b := ev.GetAdminBroadcast(); b != nil {
			if b.GetText() != "maintenance at noon" || b.GetFrom() != "root" {
				t.Fatalf("broadcast = %v", b)
			}
			break
		}
	}
	alice.fails(1, "PermissionDenied", "admin", "stats")
	mustContain(t, root.ok("admin", "role", "alice", "moderator"), "alice is now moderator")
	alice.ok("admin", "stats")
	root.fails(2, "role is user, moderator or admin", "admin", "role", "alice", "king")
	mustContain(t, root.ok("admin", "kick", "alice", "--reason", "spam"), "disconnected 1 session(s) of alice")
	for range s.Events() {
	}
	mustContain(t, root.ok("admin", "deactivate", "alice"), "deactivated alice")
	alice.fails(1, "deactivated", "history", "--room", "general")
	mustContain(t, root.ok("admin", "activate", "alice"), "activated alice")
	root.fails(2, "unknown admin command", "admin", "explode")
}

func TestChat(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	alice := newUser(t, srv, "alice")
	alice.ok("register", "--user", "alice")

	// bob, through the SDK, is the other side.
	c, err := parley.Dial(t.Context(), srv.GRPCAddr(), parley.WithToken(srv.TokenAs(t, "bob", chatv1.Role_ROLE_USER)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bob, err := c.Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	if _, err := bob.Join(t.Context(), "lobby"); err != nil {
		t.Fatal(err)
	}
	bobSees := func(match func(*chatv1.ServerEvent) bool) {
		t.Helper()
		timeout := time.After(waitFor)
		for {
			select {
			case ev := <-bob.Events():
				if match(ev) {
					return
				}
			case <-timeout:
				t.Fatal("bob did not see it")
			}
		}
	}

	stdin, typed := io.Pipe()
	var out, errOut syncBuffer
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"chat", "--room", "lobby"}, alice.env(stdin, &out, &errOut)) }()
	defer typed.Close()
	waitOut := func(want string) {
		t.Helper()
		deadline := time.Now().Add(waitFor)
		for !strings.Contains(out.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in chat output:\n%s%s", want, out.String(), errOut.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	say := func(line string) {
		t.Helper()
		if _, err := io.WriteString(typed, line+"\n"); err != nil {
			t.Fatal(err)
		}
	}

	waitOut("talking in #lobby")
	waitOut("connected as alice (user)")
	say("hello lobby")
	bobSees(func(ev *chatv1.ServerEvent) bool { return ev.GetMessage().GetText() == "hello lobby" })
	waitOut("#lobby <alice> hello lobby")

	if _, err := bob.Send(t.Context(), "lobby", "hi alice"); err != nil {
		t.Fatal(err)
	}
	waitOut("#lobby <bob> hi alice")
	if err := bob.Typing(t.Context(), parley.Room("lobby"), true); err != nil {
		t.Fatal(err)
	}
	waitOut("bob is typing in #lobby")
	if _, err := bob.SendPrivate(t.Context(), "alice", "a secret"); err != nil {
		t.Fatal(err)
	}
	waitOut("@bob <bob> a secret")

	say("/msg bob psst")
	bobSees(func(ev *chatv1.ServerEvent) bool { return ev.GetMessage().GetText() == "psst" })
	waitOut("@bob <alice> psst")
	// History names a direct conversation as chat does: the peer, from
	// the reader's side, whoever sent each message.
	mustContain(t, alice.ok("history", "--user", "bob"), "@bob <bob> a secret", "@bob <alice> psst")

	// Only a line starting with / is a command: a plain word is a message,
	// a mistyped command an error listing the commands, // a literal slash.
	say("clear")
	bobSees(func(ev *chatv1.ServerEvent) bool { return ev.GetMessage().GetText() == "clear" })
	say("/clear")
	waitOut("unknown command /clear; commands: /join /leave /dm /msg /conversations /rooms /who /help /quit")
	say("//join is how you join")
	bobSees(func(ev *chatv1.ServerEvent) bool {
		return ev.GetMessage().GetText() == "/join is how you join" && ev.GetMessage().GetConversation().GetRoom() == "lobby"
	})

	say("/rooms")
	waitOut("* #lobby (2 members · 2 online)")
	say("/who")
	waitOut("online: alice, bob")
	say("/join other")
	waitOut("joined #other: alice")
	say("in other")
	waitOut("#other <alice> in other")
	say("/leave")
	waitOut("left #other; talking in #general")
	say("/leave general")
	waitOut("! the general room cannot be left")

	// Presence.
	bob2, err := parley.Dial(t.Context(), srv.GRPCAddr(), parley.WithToken(srv.TokenAs(t, "carol", chatv1.Role_ROLE_USER)))
	if err != nil {
		t.Fatal(err)
	}
	defer bob2.Close()
	carol, err := bob2.Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	waitOut("carol is online (3 online)")
	carol.Close()
	waitOut("carol went offline (2 online)")

	say("/quit")
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("chat exited %d: %s", code, errOut.String())
		}
	case <-time.After(waitFor):
		t.Fatal("chat did not quit")
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	e := &env{stderr: io.Discard, getenv: func(string) string { return "" }}
	fs, _ := newFlags(e, "x")
	room := fs.String("room", "", "")
	pos, err := parse(fs, []string{"a", "--room", "r", "b", "--", "--c", "-d"})
	if err != nil || *room != "r" || strings.Join(pos, " ") != "a b --c -d" {
		t.Fatalf("parse = %q, room %q, %v", pos, *room, err)
	}
}

// selfSigned writes a certificate for 127.0.0.1 (its own CA) and its key.
func selfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "parley test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestTLSRemembered: --tls and --ca given at login are stored with the
// server, so later commands (and a later login) reach it without them,
// from another working directory too; --tls=false still overrides.
func TestTLSRemembered(t *testing.T) {
	t.Parallel()
	certFile, keyFile := selfSigned(t)
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
		c.TLSCertFile, c.TLSKeyFile = certFile, keyFile
	}})
	alice := newUser(t, srv, "alice")
	delete(alice.vars, "PARLEY_SERVER")

	// Without TLS the server cannot be reached at all.
	alice.fails(1, "", "register", "--server", srv.GRPCAddr(), "--user", "alice")
	mustContain(t, alice.ok("register", "--server", srv.GRPCAddr(), "--user", "alice", "--tls", "--ca", certFile), "logged in as alice")

	// The remembered server, reached as at login.
	mustContain(t, alice.ok("send", "--room", "general", "over", "tls"), "sent to #general")
	mustContain(t, alice.ok("history", "--server", srv.GRPCAddr(), "--room", "general"), "<alice> over tls")
	alice.ok("login", "--user", "alice")
	var creds credentials
	b, _ := os.ReadFile(filepath.Join(alice.dir, "credentials.json"))
	if err := json.Unmarshal(b, &creds); err != nil || !creds.Transports[srv.GRPCAddr()].TLS || !filepath.IsAbs(creds.Transports[srv.GRPCAddr()].CA) {
		t.Fatalf("credentials = %s, %v", b, err)
	}
	// An explicit flag wins over what is stored.
	alice.fails(1, "", "history", "--room", "general", "--tls=false")
	// Logout forgets how to reach it along with the tokens.
	alice.ok("logout")
	b, _ = os.ReadFile(filepath.Join(alice.dir, "credentials.json"))
	if strings.Contains(string(b), certFile) {
		t.Fatalf("transport kept after logout: %s", b)
	}
}

// TestChatTerminal: on a terminal, a message that arrives while a line is
// being typed prints above the prompt, and the prompt and the partial line
// are drawn again, so typing carries on where it was.
func TestChatTerminal(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	alice := newUser(t, srv, "alice")
	alice.ok("register", "--user", "alice")
	c, err := parley.Dial(t.Context(), srv.GRPCAddr(), parley.WithToken(srv.TokenAs(t, "bob", chatv1.Role_ROLE_USER)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bob, err := c.Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()

	keys, typed := io.Pipe()
	defer typed.Close()
	var screen syncBuffer
	e := alice.env(strings.NewReader(""), io.Discard, io.Discard)
	restored := make(chan struct{})
	e.openTerminal = func() (io.ReadWriter, func(), error) {
		return struct {
			io.Reader
			io.Writer
		}{keys, &screen}, func() { close(restored) }, nil
	}
	done := make(chan int, 1)
	go func() { done <- run(t.Context(), []string{"chat"}, e) }()
	waitScreen := func(want string) {
		t.Helper()
		deadline := time.Now().Add(waitFor)
		for !strings.Contains(screen.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q on the screen:\n%q", want, screen.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	press := func(s string) {
		t.Helper()
		if _, err := io.WriteString(typed, s); err != nil {
			t.Fatal(err)
		}
	}

	waitScreen("talking in #general; /help for commands\r\n")
	press("hel")
	waitScreen("#general> hel")
	if _, err := bob.Send(t.Context(), "general", "interrupting"); err != nil {
		t.Fatal(err)
	}
	// The message on its own line, then the prompt with "hel" again.
	waitScreen("#general <bob> interrupting\r\n#general> hel")
	press("lo\r")
	for ev := range bob.Events() {
		if ev.GetMessage().GetText() == "hello" {
			break
		}
	}
	press("\x04") // Ctrl-D on an empty line ends the chat
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("chat exited %d", code)
		}
	case <-time.After(waitFor):
		t.Fatal("chat did not end on Ctrl-D")
	}
	select {
	case <-restored:
	default:
		t.Fatal("the terminal was not restored")
	}
}

// TestConversationsAfterRestart: a new chat (a restart) lists the direct
// conversations with people who are offline, /conversations shows each with
// its last message, and /dm makes one current so typed lines go there.
func TestConversationsAfterRestart(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	alice, carol := newUser(t, srv, "alice"), newUser(t, srv, "carol")
	alice.ok("register", "--user", "alice")
	carol.ok("register", "--user", "carol")
	alice.ok("send", "--to", "carol", "hi carol")
	mustContain(t, alice.ok("conversations"), "conversations:", "@carol", "<alice> hi carol", "#general", "(no messages)")

	stdin, typed := io.Pipe()
	defer typed.Close()
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(t.Context(), []string{"chat"}, alice.env(stdin, &out, &errOut)) }()
	waitOut := func(want string) {
		t.Helper()
		deadline := time.Now().Add(waitFor)
		for !strings.Contains(out.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in chat output:\n%s%s", want, out.String(), errOut.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	say := func(line string) {
		t.Helper()
		if _, err := io.WriteString(typed, line+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	waitOut("* direct conversations: carol (/dm USER")
	say("/conversations")
	waitOut("  @carol")
	waitOut("<alice> hi carol")
	say("/dm carol")
	waitOut("* talking with @carol")
	waitOut("@carol <alice> hi carol") // its history, labelled as everywhere
	say("are you there?")
	waitOut("@carol <alice> are you there?") // the echo of the stored message
	say("/quit")
	if code := <-done; code != 0 {
		t.Fatalf("chat exited %d: %s", code, errOut.String())
	}
	mustContain(t, carol.ok("history", "--user", "alice"), "@alice <alice> hi carol", "@alice <alice> are you there?")
}
