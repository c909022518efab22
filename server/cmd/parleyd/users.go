package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/internal/store"
)

// adminStore is what the token and user commands need from storage.
type adminStore interface {
	server.UserStore
	SetUserActive(ctx context.Context, username string, active bool) error
	SetUserPassword(ctx context.Context, username, passwordHash string) error
	ListUsers(ctx context.Context) ([]store.User, error)
	Close() error
}

// openStore opens the server's store as the server would (PostgreSQL when
// --database-url or PARLEY_DATABASE_URL is set, else SQLite in the data
// dir), so a command never makes a database the server does not use.
func openStore(ctx context.Context, sf storeFlags) (adminStore, error) {
	st, err := server.OpenStore(ctx, *sf.dataDir, *sf.databaseURL, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	as, ok := st.(adminStore)
	if !ok {
		st.Close()
		return nil, errors.New("this store cannot manage users")
	}
	return as, nil
}

const tokenUsage = `Usage: parleyd token --user NAME [--role ROLE] [--ttl D]

Prints an access token for NAME signed with the server's secret (the
--jwt-secret-file, else the one in the data dir). A missing account is
created with that role and an unusable password (a token-only account).
An existing account keeps its role: --role, when given, must match it
(change it with "parleyd user set-role"). A deactivated account gets no
token.
`

func (c cli) token(args []string) error {
	fs := newFlags("parleyd token", c.env, c.stderr, tokenUsage)
	user := fs.String("user", "", "username (required)")
	role := fs.String("role", "", "user, moderator or admin; default the account's role, or user for a new account")
	ttl := fs.Duration("ttl", time.Hour, "token lifetime")
	sf := fs.storeFlags()
	secretFile := fs.str("jwt-secret-file", "", "file holding the server's HS256 secret (hex); default the secret in the data dir")
	issuer := fs.str("jwt-issuer", "parley", "token issuer (the server's --jwt-issuer)")
	audience := fs.str("jwt-audience", "parley", "token audience (the server's --jwt-audience)")
	if err := c.parseFlags(fs, args); err != nil {
		return err
	}
	if err := auth.ValidateUsername(*user); err != nil {
		return usageErrorf("--user: %v", err)
	}
	var want auth.Role
	if *role != "" {
		r, err := auth.ParseRole(*role)
		if err != nil {
			return usageErrorf("--role %q: want user, moderator or admin", *role)
		}
		want = r
	}
	if *ttl <= 0 {
		return usageErrorf("--ttl must be positive")
	}
	// The secret first: a bad secret file must not leave an account behind.
	var secret []byte
	var err error
	if *secretFile != "" {
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			return err
		}
		if secret, err = server.DecodeSecret(b); err != nil {
			return fmt.Errorf("%s: %w", *secretFile, err)
		}
	} else if secret, err = server.LoadOrCreateSecret(*sf.dataDir); err != nil {
		return err
	}
	iss, err := auth.NewIssuer(auth.IssuerConfig{Secret: secret, Issuer: *issuer, Audience: *audience, TTL: *ttl})
	if err != nil {
		return err
	}

	ctx := context.Background()
	st, err := openStore(ctx, sf)
	if err != nil {
		return err
	}
	defer st.Close()
	u, err := st.GetUser(ctx, *user)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if want == 0 {
			want = auth.RoleUser
		}
		if err := server.EnsureUser(ctx, st, *user, want); err != nil {
			return err
		}
		fmt.Fprintf(c.stderr, "created token-only account %s (%s)\n", *user, want)
	case err != nil:
		return err
	default:
		have, perr := auth.ParseRole(u.Role)
		if perr != nil {
			return fmt.Errorf("user %q has an unknown stored role %q", *user, u.Role)
		}
		if want != 0 && want != have {
			return fmt.Errorf("user %q has role %s, not %s; mint with --role %s, or change the role first: parleyd user set-role --username %s --role %s",
				*user, have, want, have, *user, want)
		}
		if !u.Active {
			return fmt.Errorf("user %q is deactivated; activate it first: parleyd user activate --username %s", *user, *user)
		}
		want = have
	}
	tok, _, err := iss.Issue(*user, want)
	if err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, tok)
	return nil
}

const userUsage = `Usage:
  parleyd user add --username NAME --password PW [--role ROLE]
  parleyd user list
  parleyd user set-role --username NAME --role ROLE
  parleyd user set-password --username NAME --password PW
  parleyd user deactivate --username NAME
  parleyd user activate --username NAME

Manages accounts in the server's database. --password-file FILE (or "-"
for the first line of standard input) may replace --password, which other
local users can see in the process list. set-password also ends every
login (refresh token) of the account. Run "parleyd help user SUBCOMMAND"
for a subcommand's flags.
`

var userCommands = []string{"add", "list", "set-role", "set-password", "deactivate", "activate"}

func (c cli) user(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(c.stderr, userUsage)
		return usageErrorf("user: a subcommand is required: %s", strings.Join(userCommands, ", "))
	}
	sub := args[0]
	switch sub {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(c.stdout, userUsage)
		return nil
	case "add", "list", "set-role", "set-password", "deactivate", "activate":
	default:
		return usageErrorf("unknown user subcommand %q; subcommands: %s", sub, strings.Join(userCommands, ", "))
	}
	fs := newFlags("parleyd user "+sub, c.env, c.stderr, userUsage)
	var username, role, password, passwordFile *string
	if sub != "list" {
		username = fs.String("username", "", "username (required)")
	}
	if sub == "add" || sub == "set-role" {
		def, what := "user", "user, moderator or admin"
		if sub == "set-role" {
			def, what = "", "user, moderator or admin (required)"
		}
		role = fs.String("role", def, what)
	}
	if sub == "add" || sub == "set-password" {
		password = fs.str("password", "", "the password, at least 8 characters")
		passwordFile = fs.String("password-file", "", `read the password from this file's first line ("-": standard input)`)
	}
	sf := fs.storeFlags()
	if err := c.parseFlags(fs, args[1:]); err != nil {
		return err
	}
	var r auth.Role
	if role != nil {
		var err error
		if r, err = auth.ParseRole(*role); err != nil {
			return usageErrorf("--role %q: want user, moderator or admin", *role)
		}
	}
	var hash string
	if password != nil {
		pw, err := c.readPassword(*password, *passwordFile)
		if err != nil {
			return err
		}
		if hash, err = auth.HashPassword(pw); err != nil {
			return err
		}
	}
	if username != nil {
		if *username == "" {
			return usageErrorf("--username is required")
		}
		// Only a new account must have a valid name: the others name
		// accounts that exist, and one made before names were checked must
		// stay reachable, to be deactivated.
		if sub == "add" {
			if err := auth.ValidateUsername(*username); err != nil {
				return usageErrorf("--username: %v", err)
			}
		}
	}

	ctx := context.Background()
	st, err := openStore(ctx, sf)
	if err != nil {
		return err
	}
	defer st.Close()
	notFound := func(err error) error {
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("no user %q", *username)
		}
		return err
	}
	switch sub {
	case "add":
		err := st.CreateUser(ctx, store.User{Username: *username, PasswordHash: hash, Role: r.String(), Active: true, CreatedAt: time.Now().UTC()})
		if errors.Is(err, store.ErrExists) {
			return fmt.Errorf("user %q already exists", *username)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "created %s (%s)\n", *username, r)
	case "list":
		users, err := st.ListUsers(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "USERNAME\tROLE\tACTIVE\tCREATED\tLAST SEEN\tNOTE")
		for _, u := range users {
			seen, note := "never", ""
			if !u.LastSeenAt.IsZero() {
				seen = u.LastSeenAt.UTC().Format(time.RFC3339)
			}
			if auth.ValidateUsername(u.Username) != nil {
				note = "name not allowed by the protocol; deactivate it"
			}
			fmt.Fprintf(tw, "%q\t%s\t%t\t%s\t%s\t%s\n", u.Username, u.Role, u.Active, u.CreatedAt.UTC().Format(time.RFC3339), seen, note)
		}
		return tw.Flush()
	case "set-role":
		if err := st.SetUserRole(ctx, *username, r.String()); err != nil {
			return notFound(err)
		}
		fmt.Fprintf(c.stdout, "%s is now %s\n", *username, r)
	case "set-password":
		if err := st.SetUserPassword(ctx, *username, hash); err != nil {
			return notFound(err)
		}
		fmt.Fprintf(c.stdout, "password of %s changed; its logins are ended\n", *username)
	case "deactivate", "activate":
		active := sub == "activate"
		if err := st.SetUserActive(ctx, *username, active); err != nil {
			return notFound(err)
		}
		fmt.Fprintf(c.stdout, "%s %sd\n", *username, sub)
	}
	return nil
}

// readPassword takes the password from --password or --password-file (one
// of them), at least 8 characters.
func (c cli) readPassword(flagValue, file string) (string, error) {
	pw := flagValue
	switch {
	case file != "" && flagValue != "":
		return "", usageErrorf("give --password or --password-file, not both")
	case file == "-":
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		pw = strings.TrimRight(line, "\r\n")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", err
		}
		pw, _, _ = strings.Cut(string(b), "\n")
		pw = strings.TrimRight(pw, "\r")
	}
	if pw == "" {
		return "", usageErrorf("--password (or --password-file) is required")
	}
	if len([]rune(pw)) < 8 {
		return "", usageErrorf("the password must have at least 8 characters")
	}
	if len(pw) > 128 {
		return "", usageErrorf("the password must have at most 128 bytes")
	}
	return pw, nil
}
