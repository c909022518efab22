package server_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/servertest"
)

// TestAuthService walks register, login, refresh rotation and logout.
func TestAuthService(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	conn := srv.Dial(t)
	ctx := context.Background()
	a := chatv1.NewAuthClient(conn)

	reg, err := a.Register(ctx, &chatv1.RegisterRequest{Username: "dana", Password: "correct horse"})
	if err != nil || reg.GetUser().GetRole() != chatv1.Role_ROLE_USER || reg.GetTokens().GetAccessToken() == "" || reg.GetTokens().GetRefreshToken() == "" {
		t.Fatalf("register = %v, %v", reg, err)
	}
	if _, err := a.Register(ctx, &chatv1.RegisterRequest{Username: "dana", Password: "another one"}); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("second register: %v", err)
	}
	if _, err := a.Register(ctx, &chatv1.RegisterRequest{Username: "x", Password: "correct horse"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("short username: %v", err)
	}
	if _, err := a.Register(ctx, &chatv1.RegisterRequest{Username: "eve", Password: "short"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("short password: %v", err)
	}

	// The registered user can chat with the access token.
	c := connect(t, conn, "dana", reg.GetTokens().GetAccessToken())
	c.sync()

	for _, bad := range []*chatv1.LoginRequest{{Username: "dana", Password: "wrong password"}, {Username: "nobody", Password: "correct horse"}} {
		_, err := a.Login(ctx, bad)
		if status.Code(err) != codes.Unauthenticated || status.Convert(err).Message() != "invalid username or password" {
			t.Fatalf("login %s: %v", bad.GetUsername(), err)
		}
	}
	login, err := a.Login(ctx, &chatv1.LoginRequest{Username: "dana", Password: "correct horse"})
	if err != nil {
		t.Fatal(err)
	}

	// Refresh rotates: the old refresh token stops working.
	ref, err := a.Refresh(ctx, &chatv1.RefreshRequest{RefreshToken: login.GetTokens().GetRefreshToken()})
	if err != nil || ref.GetTokens().GetRefreshToken() == login.GetTokens().GetRefreshToken() {
		t.Fatalf("refresh = %v, %v", ref, err)
	}
	if _, err := a.Refresh(ctx, &chatv1.RefreshRequest{RefreshToken: login.GetTokens().GetRefreshToken()}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("reused refresh token: %v", err)
	}
	if _, err := a.Logout(ctx, &chatv1.LogoutRequest{RefreshToken: ref.GetTokens().GetRefreshToken()}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Refresh(ctx, &chatv1.RefreshRequest{RefreshToken: ref.GetTokens().GetRefreshToken()}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("refresh after logout: %v", err)
	}

	// Deactivated users cannot log in.
	admin := servertest.WithToken(ctx, srv.Token(t, "root", auth.RoleAdmin))
	if _, err := chatv1.NewAdminClient(conn).SetUserActive(admin, &chatv1.SetUserActiveRequest{Username: "dana", Active: false}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Login(ctx, &chatv1.LoginRequest{Username: "dana", Password: "correct horse"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("deactivated login: %v", err)
	}
}

// TestAuthRefusals checks the transport-level refusals on a real server;
// the token edge cases (alg none, wrong key, issuer, audience, expiry) are
// table-tested in the interceptor package.
func TestAuthRefusals(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	conn := srv.Dial(t)
	ctx := context.Background()
	chat := chatv1.NewChatClient(conn)

	if _, err := chat.ListRooms(ctx, &chatv1.ListRoomsRequest{}); status.Code(err) != codes.Unauthenticated || status.Convert(err).Message() != "token required" {
		t.Fatalf("no token: %v", err)
	}
	if _, err := chat.ListRooms(servertest.WithToken(ctx, "not.a.jwt"), &chatv1.ListRoomsRequest{}); status.Code(err) != codes.Unauthenticated || status.Convert(err).Message() != "invalid token" {
		t.Fatalf("garbage token: %v", err)
	}
	if _, err := tryConnectStatus(t, chat, ""); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("stream without token: %v", err)
	}
	// Health and reflection need no token, so grpcurl can discover services.
	if r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v", r, err)
	}
}

// TestEncryptionAtRest: with a key configured, neither message text nor
// file content appears in plaintext anywhere in the data directory, and
// both read back after a restart.
func TestEncryptionAtRest(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keys := "k1:" + strings.Repeat("A", 43) + "="
	withKey := func(c *server.Config) { c.EncryptionKeys = keys }
	srv := servertest.Start(t, servertest.Options{DataDir: dir, Configure: withKey})
	conn := srv.Dial(t)
	tok := srv.Token(t, "alice", auth.RoleUser)
	c := connect(t, conn, "alice", tok)
	secretText := "the launch code is swordfish-4242"
	c.next(replyTo(c.send(sendRoom("general", secretText, ""))))
	secretFile := bytes.Repeat([]byte("TOP-SECRET-FILE-CONTENT "), 5000)
	ref := upload(t, conn, tok, "secret.txt", "text/plain", secretFile)
	srv.Stop()

	err := filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte("swordfish")) || bytes.Contains(b, []byte("TOP-SECRET-FILE")) {
			t.Errorf("%s holds plaintext", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	srv = servertest.Start(t, servertest.Options{DataDir: dir, Configure: withKey})
	conn = srv.Dial(t)
	h, err := chatv1.NewChatClient(conn).GetHistory(servertest.WithToken(context.Background(), tok), &chatv1.GetHistoryRequest{Conversation: roomConv("general")})
	if err != nil || len(h.GetMessages()) != 1 || h.GetMessages()[0].GetText() != secretText {
		t.Fatalf("history after restart = %v, %v", h, err)
	}
	got, err := download(conn, tok, ref.GetId())
	if err != nil || !bytes.Equal(got, secretFile) {
		t.Fatalf("download after restart: %d bytes, %v", len(got), err)
	}
}
