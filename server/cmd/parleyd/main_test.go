package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parleychat/parley/internal/testenv"

	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/internal/auth"
)

// runCLI runs one command line with env as the whole environment.
func runCLI(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	c := cli{stdout: &out, stderr: &errb, env: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}
	code = c.run(args)
	return code, out.String(), errb.String()
}

func TestHelpVersionAndUnknownCommands(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}, {"help", "help"}} {
		code, out, _ := runCLI(t, nil, args...)
		if code != 0 || !strings.Contains(out, "parleyd user set-role --username NAME --role ROLE") {
			t.Errorf("%v: exit %d, stdout %q; want 0 and the usage", args, code, out)
		}
	}
	for _, args := range [][]string{{"help", "token"}, {"token", "--help"}, {"help", "user", "add"}, {"user", "deactivate", "-h"}, {"serve", "--help"}, {"help", "serve"}, {"help", "version"}, {"user", "help"}} {
		code, out, _ := runCLI(t, nil, args...)
		if code != 0 || !strings.Contains(out, "Usage") {
			t.Errorf("%v: exit %d, stdout %q; want 0 and usage", args, code, out)
		}
	}
	if code, out, _ := runCLI(t, nil, "version"); code != 0 || !strings.HasPrefix(out, "parleyd ") || !strings.Contains(out, "go1.") {
		t.Errorf("version: exit %d, %q", code, out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, "commands: serve, help, version, token, user"},
		{[]string{"user"}, "add, list, set-role, set-password, deactivate, activate"},
		{[]string{"user", "remove"}, "add, list, set-role, set-password, deactivate, activate"},
		{[]string{"help", "nope"}, "commands: serve, help, version, token, user"},
		{[]string{"version", "extra"}, "no arguments"},
		// A flag before a command used to start the server, ignoring it.
		{[]string{"--data-dir", t.TempDir(), "token"}, `unexpected argument "token"`},
		{[]string{"token", "--no-such-flag"}, "flag provided but not defined"},
	} {
		code, _, errOut := runCLI(t, nil, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, errOut, tc.want)
		}
	}
}

// badNames are usernames the protocol forbids.
var badNames = []string{"", "a", "ab", "with space", "../../etc", "a/b", strings.Repeat("x", 33), strings.Repeat("n", 100), "zoë", "名前", "tab\tname", "semi;colon", " lead"}

func TestBadUsernamesAreRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := map[string]string{"PARLEY_DATA_DIR": dir}
	for _, name := range badNames {
		if code, _, errOut := runCLI(t, env, "token", "--user", name); code != 2 || !strings.Contains(errOut, "invalid username") {
			t.Errorf("token --user %q: exit %d, %q; want 2, invalid username", name, code, errOut)
		}
		if code, _, errOut := runCLI(t, env, "user", "add", "--username", name, "--password", "correct horse"); code != 2 || !strings.Contains(errOut, "username") {
			t.Errorf("user add --username %q: exit %d, %q; want 2", name, code, errOut)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "parley.db")); !os.IsNotExist(err) {
		t.Errorf("a refused name still opened the database: %v", err)
	}
	// And through the library call the test servers and tools use.
	st, err := server.OpenStore(context.Background(), dir, "", nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, name := range badNames {
		if err := server.EnsureUser(context.Background(), st, name, auth.RoleUser); err == nil {
			t.Errorf("EnsureUser(%q) = nil, want an invalid-username error", name)
		}
	}
	as := st.(adminStore)
	if users, err := as.ListUsers(context.Background()); err != nil || len(users) != 0 {
		t.Errorf("users after refused names = %v, %v", users, err)
	}
}

// tokenRole verifies tok with the data dir's secret and returns its role.
func tokenRole(t *testing.T, dir, tok string) (string, auth.Role) {
	t.Helper()
	secret, err := server.LoadOrCreateSecret(dir)
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(auth.VerifierConfig{HMACSecret: secret, Issuer: "parley", Audience: "parley"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := v.Verify(strings.TrimSpace(tok))
	if err != nil {
		t.Fatalf("token does not verify: %v", err)
	}
	return p.Subject, p.Role
}

func testAccounts(t *testing.T, env map[string]string, dir string) {
	ok := func(args ...string) string {
		t.Helper()
		code, out, errOut := runCLI(t, env, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut)
		}
		return out
	}
	fails := func(want string, args ...string) {
		t.Helper()
		code, _, errOut := runCLI(t, env, args...)
		if code == 0 || !strings.Contains(errOut, want) {
			t.Fatalf("%v: exit %d, %q; want a failure saying %q", args, code, errOut, want)
		}
	}
	ok("user", "add", "--username", "alice", "--password", "correct horse", "--role", "admin")
	fails("already exists", "user", "add", "--username", "alice", "--password", "correct horse")
	fails("at least 8", "user", "add", "--username", "bob", "--password", "short")

	// token keeps the stored role: a different --role is refused, and says
	// how to change it; no --role takes the stored one.
	fails("parleyd user set-role --username alice --role user", "token", "--user", "alice", "--role", "user")
	if row := listRow(ok("user", "list"), "alice"); row[1] != "admin" {
		t.Fatalf("alice's role changed by a refused token: %v", row)
	}
	if name, role := tokenRole(t, dir, ok("token", "--user", "alice")); name != "alice" || role != auth.RoleAdmin {
		t.Fatalf("token for alice = %s %s", name, role)
	}
	ok("token", "--user", "alice", "--role", "admin")
	// A new account is made with the role asked for.
	if _, role := tokenRole(t, dir, ok("token", "--user", "carol", "--role", "moderator")); role != auth.RoleModerator {
		t.Fatalf("carol's token role = %s", role)
	}

	ok("user", "set-role", "--username", "alice", "--role", "user")
	if _, role := tokenRole(t, dir, ok("token", "--user", "alice", "--role", "user")); role != auth.RoleUser {
		t.Fatalf("after set-role, token role = %s", role)
	}
	ok("user", "deactivate", "--username", "alice")
	fails("parleyd user activate --username alice", "token", "--user", "alice")
	if row := listRow(ok("user", "list"), "alice"); row[1] != "user" || row[2] != "false" {
		t.Fatalf("list after deactivate: %v", row)
	}
	ok("user", "activate", "--username", "alice")
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("a new passphrase\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok("user", "set-password", "--username", "alice", "--password-file", pwFile)
	fails(`no user "nobody"`, "user", "set-password", "--username", "nobody", "--password", "whatever123")
	fails(`no user "nobody"`, "user", "deactivate", "--username", "nobody")
	fails("--role", "user", "set-role", "--username", "alice", "--role", "root")

	st, err := server.OpenStore(context.Background(), dir, env["PARLEY_DATABASE_URL"], nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	u, err := st.GetUser(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if !auth.CheckPassword(u.PasswordHash, "a new passphrase") || !u.Active {
		t.Fatalf("alice after set-password: active %v, new password accepted %v", u.Active, auth.CheckPassword(u.PasswordHash, "a new passphrase"))
	}
}

// listRow returns the columns of `user list` for name.
func listRow(out, name string) []string {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 5 && f[0] == `"`+name+`"` {
			return f
		}
	}
	return []string{"", "(missing)", "(missing)"}
}

func TestAccountsSQLite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	testAccounts(t, map[string]string{"PARLEY_DATA_DIR": dir}, dir)
}

// TestAccountsPostgres: with PARLEY_DATABASE_URL set, every command uses
// PostgreSQL and no SQLite file appears in the data dir.
func TestAccountsPostgres(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := map[string]string{"PARLEY_DATA_DIR": dir, "PARLEY_DATABASE_URL": testenv.PostgresSchema(t, "parleyd_test_")}
	testAccounts(t, env, dir)
	if _, err := os.Stat(filepath.Join(dir, "parley.db")); !os.IsNotExist(err) {
		t.Fatalf("a command made a SQLite file although PostgreSQL is configured: %v", err)
	}
}
