package authsvc_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/internal/authsvc"
	"github.com/parleychat/parley/server/internal/interceptor"
	"github.com/parleychat/parley/server/internal/ratelimit"
	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/store/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var secret = []byte("authsvc-test-secret-of-32-bytes!")

// syncBuffer collects the service's log from the test's goroutines.
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

type env struct {
	svc      *authsvc.Service
	st       *sqlite.Store
	verifier *auth.Verifier
	log      *syncBuffer
}

// newEnv opens a service on a new SQLite store; mod adjusts its config.
func newEnv(t *testing.T, mod func(*authsvc.Config)) *env {
	t.Helper()
	st, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "auth.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	iss, err := auth.NewIssuer(auth.IssuerConfig{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(auth.VerifierConfig{HMACSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	log := &syncBuffer{}
	cfg := authsvc.Config{Store: st, Issuer: iss, Logger: slog.New(slog.NewTextHandler(log, nil))}
	if mod != nil {
		mod(&cfg)
	}
	svc, err := authsvc.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &env{svc: svc, st: st, verifier: v, log: log}
}

// addUser stores a user with a real password hash.
func (e *env) addUser(t *testing.T, name, password, role string, active bool) {
	t.Helper()
	h, err := auth.HashPassword(password)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.st.CreateUser(context.Background(), store.User{Username: name, PasswordHash: h, Role: role, Active: active, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

func (e *env) login(t *testing.T, name, password string) *chatv1.Tokens {
	t.Helper()
	r, err := e.svc.Login(context.Background(), &chatv1.LoginRequest{Username: name, Password: password})
	if err != nil {
		t.Fatalf("login %s: %v", name, err)
	}
	return r.GetTokens()
}

func (e *env) refresh(token string) (*chatv1.RefreshResponse, error) {
	return e.svc.Refresh(context.Background(), &chatv1.RefreshRequest{RefreshToken: token})
}

// wantStatus checks err's code and message.
func wantStatus(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	if st := status.Convert(err); st.Code() != code || st.Message() != msg {
		t.Fatalf("%s: %v %q, want %v %q", what, st.Code(), st.Message(), code, msg)
	}
}

// checkTokens verifies the access token names user with role and that the
// refresh token is there and lives as configured.
func (e *env) checkTokens(t *testing.T, tok *chatv1.Tokens, user string, role auth.Role) {
	t.Helper()
	c, err := e.verifier.Verify(tok.GetAccessToken())
	if err != nil || c.Subject != user || c.Role != role {
		t.Fatalf("access token: %+v, %v; want %s as %s", c, err, user, role)
	}
	if !c.ExpiresAt.Equal(tok.GetAccessExpiresAt().AsTime()) {
		t.Errorf("access_expires_at %v, token exp %v", tok.GetAccessExpiresAt().AsTime(), c.ExpiresAt)
	}
	if tok.GetRefreshToken() == "" || !tok.GetRefreshExpiresAt().AsTime().After(time.Now()) {
		t.Fatalf("refresh token %q expiring %v", tok.GetRefreshToken(), tok.GetRefreshExpiresAt().AsTime())
	}
}

func TestNewRequiresStoreAndIssuer(t *testing.T) {
	t.Parallel()
	if _, err := authsvc.New(authsvc.Config{}); err == nil {
		t.Fatal("New without Store and Issuer succeeded")
	}
}

// TestRegister: a new name gets an active user account and a login; a
// taken name and a server without registration are refused.
func TestRegister(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, nil)
	r, err := e.svc.Register(ctx, &chatv1.RegisterRequest{Username: "dana", Password: "correct horse"})
	if err != nil {
		t.Fatal(err)
	}
	if r.GetUser().GetUsername() != "dana" || r.GetUser().GetRole() != chatv1.Role_ROLE_USER {
		t.Fatalf("user %v", r.GetUser())
	}
	e.checkTokens(t, r.GetTokens(), "dana", auth.RoleUser)
	u, err := e.st.GetUser(ctx, "dana")
	if err != nil || !u.Active || u.Role != store.RoleUser || !auth.CheckPassword(u.PasswordHash, "correct horse") {
		t.Fatalf("stored %+v, %v", u, err)
	}
	if _, err := e.refresh(r.GetTokens().GetRefreshToken()); err != nil {
		t.Fatalf("the registration's refresh token: %v", err)
	}
	_, err = e.svc.Register(ctx, &chatv1.RegisterRequest{Username: "dana", Password: "another one"})
	wantStatus(t, "taken name", err, codes.AlreadyExists, `username "dana" is taken`)

	closed := newEnv(t, func(c *authsvc.Config) { c.DisableRegistration = true })
	_, err = closed.svc.Register(ctx, &chatv1.RegisterRequest{Username: "erin", Password: "correct horse"})
	wantStatus(t, "registration disabled", err, codes.PermissionDenied, "registration is disabled on this server")
	if _, err := closed.st.GetUser(ctx, "erin"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refused registration stored a user: %v", err)
	}
}

// TestLogin: the right password logs in with the stored role; a wrong
// password and an unknown user get the same answer; a deactivated user is
// refused only once the password is right.
func TestLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.addUser(t, "alice", "alice-password", store.RoleUser, true)
	e.addUser(t, "mod", "mod-password", store.RoleModerator, true)
	e.addUser(t, "ghost", "ghost-password", store.RoleUser, false)
	for _, tt := range []struct {
		name, user, password string
		role                 auth.Role // on success
		code                 codes.Code
		msg                  string
	}{
		{"user", "alice", "alice-password", auth.RoleUser, codes.OK, ""},
		{"moderator", "mod", "mod-password", auth.RoleModerator, codes.OK, ""},
		{"wrong password", "alice", "not-her-password", 0, codes.Unauthenticated, "invalid username or password"},
		{"unknown user", "nobody", "alice-password", 0, codes.Unauthenticated, "invalid username or password"},
		{"deactivated, right password", "ghost", "ghost-password", 0, codes.PermissionDenied, "account deactivated"},
		{"deactivated, wrong password", "ghost", "guess", 0, codes.Unauthenticated, "invalid username or password"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := e.svc.Login(context.Background(), &chatv1.LoginRequest{Username: tt.user, Password: tt.password})
			if tt.code != codes.OK {
				wantStatus(t, tt.name, err, tt.code, tt.msg)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.GetUser().GetUsername() != tt.user || r.GetUser().GetRole() != tt.role.Proto() {
				t.Fatalf("user %v", r.GetUser())
			}
			e.checkTokens(t, r.GetTokens(), tt.user, tt.role)
		})
	}
}

// TestRefreshRotation: each refresh hands out a new token and retires the
// one presented; presenting a retired one is reuse and revokes the whole
// family, but not the user's other logins; an expired, unknown or revoked
// token is refused alike. The refreshed tokens carry the role stored now.
func TestRefreshRotation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, nil)
	e.addUser(t, "alice", "alice-password", store.RoleUser, true)
	first := e.login(t, "alice", "alice-password")
	other := e.login(t, "alice", "alice-password") // a second device

	// A promotion since the login shows in the refreshed access token.
	if err := e.st.SetUserRole(ctx, "alice", store.RoleModerator); err != nil {
		t.Fatal(err)
	}
	r1, err := e.refresh(first.GetRefreshToken())
	if err != nil {
		t.Fatal(err)
	}
	if r1.GetUser().GetRole() != chatv1.Role_ROLE_MODERATOR {
		t.Fatalf("refreshed user %v", r1.GetUser())
	}
	e.checkTokens(t, r1.GetTokens(), "alice", auth.RoleModerator)
	second := r1.GetTokens().GetRefreshToken()
	if second == first.GetRefreshToken() {
		t.Fatal("refresh returned the same token")
	}
	r2, err := e.refresh(second)
	if err != nil {
		t.Fatalf("refresh of the rotated token: %v", err)
	}
	third := r2.GetTokens().GetRefreshToken()

	// Replaying the first token is reuse: the family ends, the newest too.
	_, err = e.refresh(first.GetRefreshToken())
	wantStatus(t, "replayed token", err, codes.Unauthenticated, "refresh token reuse detected; log in again")
	_, err = e.refresh(third)
	wantStatus(t, "newest token after reuse", err, codes.Unauthenticated, "refresh token invalid, expired or already used")
	if log := e.log.String(); !strings.Contains(log, "refresh token reuse detected") || strings.Contains(log, first.GetRefreshToken()) || strings.Contains(log, third) {
		t.Fatalf("reuse log (no token may appear):\n%s", log)
	}
	// The other device's login is its own family.
	if _, err := e.refresh(other.GetRefreshToken()); err != nil {
		t.Fatalf("the other login after reuse: %v", err)
	}

	_, err = e.refresh("never-issued")
	wantStatus(t, "unknown token", err, codes.Unauthenticated, "refresh token invalid, expired or already used")

	short := newEnv(t, func(c *authsvc.Config) { c.RefreshTTL = time.Nanosecond })
	short.addUser(t, "bob", "bob-password", store.RoleUser, true)
	expired := short.login(t, "bob", "bob-password")
	_, err = short.refresh(expired.GetRefreshToken())
	wantStatus(t, "expired token", err, codes.Unauthenticated, "refresh token invalid, expired or already used")
}

// TestRefreshDeactivated: a deactivated user's refresh is refused and
// ends that login, so a later attempt is reuse, not a new token.
func TestRefreshDeactivated(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.addUser(t, "alice", "alice-password", store.RoleUser, true)
	tok := e.login(t, "alice", "alice-password")
	if err := e.st.SetUserActive(context.Background(), "alice", false); err != nil {
		t.Fatal(err)
	}
	_, err := e.refresh(tok.GetRefreshToken())
	wantStatus(t, "deactivated", err, codes.PermissionDenied, "account deactivated")
	if err := e.st.SetUserActive(context.Background(), "alice", true); err != nil {
		t.Fatal(err)
	}
	_, err = e.refresh(tok.GetRefreshToken())
	wantStatus(t, "after reactivation", err, codes.Unauthenticated, "refresh token reuse detected; log in again")
}

// TestLogout ends one login, whichever of its tokens is given, leaves the
// others alone, and accepts a token it does not know.
func TestLogout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, nil)
	e.addUser(t, "alice", "alice-password", store.RoleUser, true)
	phone, laptop := e.login(t, "alice", "alice-password"), e.login(t, "alice", "alice-password")
	if _, err := e.svc.Logout(ctx, &chatv1.LogoutRequest{RefreshToken: phone.GetRefreshToken()}); err != nil {
		t.Fatal(err)
	}
	_, err := e.refresh(phone.GetRefreshToken())
	wantStatus(t, "logged-out token", err, codes.Unauthenticated, "refresh token invalid, expired or already used")

	// Logging out with a token already rotated ends the current one too.
	r, err := e.refresh(laptop.GetRefreshToken())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Logout(ctx, &chatv1.LogoutRequest{RefreshToken: laptop.GetRefreshToken()}); err != nil {
		t.Fatal(err)
	}
	_, err = e.refresh(r.GetTokens().GetRefreshToken())
	wantStatus(t, "current token of a logged-out family", err, codes.Unauthenticated, "refresh token invalid, expired or already used")

	tablet := e.login(t, "alice", "alice-password")
	if _, err := e.svc.Logout(ctx, &chatv1.LogoutRequest{RefreshToken: "never-issued"}); err != nil {
		t.Fatalf("unknown token: %v", err)
	}
	if _, err := e.refresh(tablet.GetRefreshToken()); err != nil {
		t.Fatalf("another login after logouts: %v", err)
	}
}

// TestStoreFailureIsUnavailable: with the store closed every call is
// Unavailable with a retry hint — never a refused password, an unknown
// token or an Internal error — and nothing is logged as an error per call.
func TestStoreFailureIsUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, nil)
	e.addUser(t, "alice", "alice-password", store.RoleUser, true)
	tok := e.login(t, "alice", "alice-password")
	if err := e.st.Close(); err != nil {
		t.Fatal(err)
	}
	calls := map[string]func() error{
		"register": func() error {
			_, err := e.svc.Register(ctx, &chatv1.RegisterRequest{Username: "dana", Password: "correct horse"})
			return err
		},
		"login": func() error {
			_, err := e.svc.Login(ctx, &chatv1.LoginRequest{Username: "alice", Password: "alice-password"})
			return err
		},
		"refresh": func() error { _, err := e.refresh(tok.GetRefreshToken()); return err },
		"logout": func() error {
			_, err := e.svc.Logout(ctx, &chatv1.LogoutRequest{RefreshToken: tok.GetRefreshToken()})
			return err
		},
	}
	for name, call := range calls {
		st := status.Convert(call())
		if st.Code() != codes.Unavailable || retryDelay(st) <= 0 {
			t.Errorf("%s on a closed store: %v %q, retry %v; want Unavailable with a retry hint", name, st.Code(), st.Message(), retryDelay(st))
		}
	}
	if log := e.log.String(); strings.Contains(log, "level=ERROR") {
		t.Errorf("store failures logged per call:\n%s", log)
	}
}

// TestCancelledLogin: a caller that went away is Canceled, not an error
// of the server.
func TestCancelledLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := e.svc.Login(ctx, &chatv1.LoginRequest{Username: "alice", Password: "alice-password"})
	if status.Code(err) != codes.Canceled {
		t.Fatalf("cancelled login: %v", err)
	}
	if log := e.log.String(); strings.Contains(log, "level=ERROR") {
		t.Errorf("a cancelled call logged as an error:\n%s", log)
	}
}

func retryDelay(st *status.Status) time.Duration {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	return 0
}

// slowHash is a stored argon2id hash with the most passes a stored hash
// may ask for: checking it holds the limiter's one slot about eight times
// as long as a new hash. Its key is not any password's; the check costs
// the same.
var slowHash = "$argon2id$v=19$m=19456,t=16,p=1$" +
	base64.RawStdEncoding.EncodeToString([]byte("slow-salt-16byte")) + "$" +
	base64.RawStdEncoding.EncodeToString(make([]byte, 32))

// TestHashLimiterFull: while the one hash slot is taken, Login and
// Register (and the dummy check for an unknown user) are refused
// Unavailable with the limiter's retry hint, and nothing is stored.
func TestHashLimiterFull(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	lim := auth.NewHashLimiter(auth.HashLimiterConfig{MaxConcurrent: 1, MaxWaiting: 1, MaxWait: 100 * time.Millisecond})
	e := newEnv(t, func(c *authsvc.Config) { c.Hashes = lim })
	if err := e.st.CreateUser(ctx, store.User{Username: "slow", PasswordHash: slowHash, Role: store.RoleUser, Active: true}); err != nil {
		t.Fatal(err)
	}
	e.addUser(t, "alice", "alice-password", store.RoleUser, true)
	probes := map[string]func() error{
		"login": func() error {
			_, err := e.svc.Login(ctx, &chatv1.LoginRequest{Username: "alice", Password: "alice-password"})
			return err
		},
		"login of an unknown user": func() error {
			_, err := e.svc.Login(ctx, &chatv1.LoginRequest{Username: "nobody", Password: "x"})
			return err
		},
		"register": func() error {
			_, err := e.svc.Register(ctx, &chatv1.RegisterRequest{Username: "dana", Password: "correct horse"})
			return err
		},
	}
	want := "too many logins in progress; retry in 200ms"
	for name, probe := range probes {
		// The slot is held by a login checking slowHash, which takes
		// longer than MaxWait; a probe that waits out MaxWait behind it is
		// refused. A probe that got the slot first makes the slow login
		// wait for it (less than MaxWait), and the next probe lands.
		refused := false
		for attempt := 0; attempt < 20 && !refused; attempt++ {
			done := make(chan struct{})
			go func() {
				defer close(done)
				e.svc.Login(ctx, &chatv1.LoginRequest{Username: "slow", Password: "anything"})
			}()
			// A head start, longer each attempt, so that on a loaded
			// machine the slow login holds the slot before the probe asks.
			time.Sleep(time.Duration(attempt+1) * 10 * time.Millisecond)
			for !refused {
				select {
				case <-done:
				default:
					err := probe()
					st := status.Convert(err)
					if st.Code() == codes.Unavailable {
						if st.Message() != want || retryDelay(st) != lim.RetryAfter() {
							t.Fatalf("%s: %q retry %v, want %q retry %v", name, st.Message(), retryDelay(st), want, lim.RetryAfter())
						}
						refused = true
					}
					continue
				}
				break
			}
			<-done
		}
		if !refused {
			t.Fatalf("%s was never refused while the slot was held", name)
		}
	}
}

// TestBadInputOverTheWire runs the service behind the real interceptor
// chain on loopback: malformed requests are InvalidArgument naming the
// field, before the service (and its password hashing) runs.
func TestBadInputOverTheWire(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.addUser(t, "alice", "alice-password", store.RoleUser, true)
	lim := ratelimit.New(ratelimit.Config{Rates: map[ratelimit.Kind]ratelimit.Rate{ratelimit.KindOther: {PerSecond: -1}}})
	t.Cleanup(func() { lim.Close() })
	chain, err := interceptor.New(interceptor.Config{Verifier: e.verifier, Users: e.st, Limiter: lim, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(chain.ServerOptions()...)
	chatv1.RegisterAuthServer(gs, e.svc)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- gs.Serve(ln) }()
	t.Cleanup(func() { gs.Stop(); <-served })
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := chatv1.NewAuthClient(conn)
	ctx := context.Background()
	long := strings.Repeat("p", 129)
	for _, tt := range []struct {
		name  string
		call  func() error
		field string
	}{
		{"register short username", func() error {
			_, err := c.Register(ctx, &chatv1.RegisterRequest{Username: "x", Password: "correct horse"})
			return err
		}, "username"},
		{"register bad characters", func() error {
			_, err := c.Register(ctx, &chatv1.RegisterRequest{Username: "al ice", Password: "correct horse"})
			return err
		}, "username"},
		{"register short password", func() error {
			_, err := c.Register(ctx, &chatv1.RegisterRequest{Username: "dana", Password: "short"})
			return err
		}, "password"},
		{"register long password", func() error {
			_, err := c.Register(ctx, &chatv1.RegisterRequest{Username: "dana", Password: long})
			return err
		}, "password"},
		{"login empty password", func() error {
			_, err := c.Login(ctx, &chatv1.LoginRequest{Username: "alice"})
			return err
		}, "password"},
		{"refresh empty token", func() error { _, err := c.Refresh(ctx, &chatv1.RefreshRequest{}); return err }, "refresh_token"},
		{"logout huge token", func() error {
			_, err := c.Logout(ctx, &chatv1.LogoutRequest{RefreshToken: strings.Repeat("t", 257)})
			return err
		}, "refresh_token"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := status.Convert(tt.call())
			if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tt.field) {
				t.Fatalf("%v %q, want InvalidArgument naming %s", st.Code(), st.Message(), tt.field)
			}
		})
	}
	if _, err := e.st.GetUser(ctx, "dana"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused registration stored a user: %v", err)
	}
	// And a good request passes through the chain with the wire's codes.
	if _, err := c.Login(ctx, &chatv1.LoginRequest{Username: "alice", Password: "alice-password"}); err != nil {
		t.Fatalf("good login over the wire: %v", err)
	}
	_, err = c.Register(ctx, &chatv1.RegisterRequest{Username: "alice", Password: "correct horse"})
	wantStatus(t, "taken name over the wire", err, codes.AlreadyExists, `username "alice" is taken`)
}
