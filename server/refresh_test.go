package server_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/parleychat/parley/internal/testenv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/servertest"
)

// syncBuffer is a bytes.Buffer safe for the server's concurrent logging.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestRefreshTokenReuse replays a rotated refresh token through
// Auth/Refresh on a real server, on each store: the replay and every token
// of that login are refused from then on, the user's other login is not,
// and the server logs a warning that names no token or hash. Logout with a
// stale token of a chain ends that chain only.
func TestRefreshTokenReuse(t *testing.T) {
	t.Parallel()
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			t.Parallel()
			var logs syncBuffer
			url := ""
			if db == "postgres" {
				url = testenv.PostgresSchema(t, "parley_test_")
			}
			srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
				c.DatabaseURL = url
				c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
			}})
			testRefreshTokenReuse(t, chatv1.NewAuthClient(srv.Dial(t)), &logs)
		})
	}
}

func testRefreshTokenReuse(t *testing.T, a chatv1.AuthClient, logs *syncBuffer) {
	ctx := context.Background()
	var seen []string // every refresh token handed out, for the log check
	refresh := func(tok string) (string, error) {
		resp, err := a.Refresh(ctx, &chatv1.RefreshRequest{RefreshToken: tok})
		if err != nil {
			return "", err
		}
		seen = append(seen, resp.GetTokens().GetRefreshToken())
		return resp.GetTokens().GetRefreshToken(), nil
	}
	mustRefresh := func(what, tok string) string {
		t.Helper()
		next, err := refresh(tok)
		if err != nil {
			t.Fatalf("refresh %s: %v", what, err)
		}
		return next
	}
	wantRefused := func(what, tok, msg string) {
		t.Helper()
		_, err := refresh(tok)
		if status.Code(err) != codes.Unauthenticated || status.Convert(err).Message() != msg {
			t.Fatalf("refresh %s: %v; want Unauthenticated %q", what, err, msg)
		}
	}
	const (
		reused  = "refresh token reuse detected; log in again"
		invalid = "refresh token invalid, expired or already used"
	)
	login := func() string {
		t.Helper()
		resp, err := a.Login(ctx, &chatv1.LoginRequest{Username: "dana", Password: "correct horse"})
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, resp.GetTokens().GetRefreshToken())
		return resp.GetTokens().GetRefreshToken()
	}

	reg, err := a.Register(ctx, &chatv1.RegisterRequest{Username: "dana", Password: "correct horse"})
	if err != nil {
		t.Fatal(err)
	}
	phone0 := reg.GetTokens().GetRefreshToken()
	seen = append(seen, phone0)
	laptop0 := login()

	phone1 := mustRefresh("phone0", phone0)
	phone2 := mustRefresh("phone1", phone1)
	// A thief replays phone0: the phone's whole chain is revoked.
	wantRefused("replayed phone0", phone0, reused)
	wantRefused("phone2 after the replay", phone2, invalid)
	wantRefused("phone1, replayed too", phone1, reused)
	// The laptop's login is another family.
	laptop1 := mustRefresh("laptop0", laptop0)

	// Logging out the laptop, even with its stale first token, ends its
	// chain, and only it.
	tablet0 := login()
	if _, err := a.Logout(ctx, &chatv1.LogoutRequest{RefreshToken: laptop0}); err != nil {
		t.Fatal(err)
	}
	wantRefused("laptop1 after logout", laptop1, invalid)
	mustRefresh("tablet0 after the laptop's logout", tablet0)
	// The phone logs in again and works.
	mustRefresh("a new phone login", login())

	out := logs.String()
	if n := strings.Count(out, "refresh token reuse detected"); n != 2 {
		t.Errorf("%d reuse warnings logged, want 2:\n%s", n, out)
	}
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "user=dana") {
		t.Errorf("reuse warning lacks its level or user:\n%s", out)
	}
	for _, tok := range seen {
		if strings.Contains(out, tok) || strings.Contains(out, auth.HashRefreshToken(tok)) {
			t.Fatalf("the log holds a refresh token or its hash:\n%s", out)
		}
	}
}
