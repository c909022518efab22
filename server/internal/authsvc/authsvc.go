// Package authsvc implements chat.v1.Auth: registration, password login,
// refresh-token rotation and logout. It is the only service that runs
// without a token; its inputs are still validated and rate-limited by the
// interceptors. Safe for concurrent use.
//
// Refresh tokens are single use and come in families: a login (or a
// registration) starts one, and each Refresh replaces the token presented
// with a new one of the same family. Presenting a token that was already
// rotated is reuse, which means a copy of it leaked: the whole family is
// revoked, so both whoever replayed it and the rightful client must log in
// again. Logout ends the family of the token given, which is one device's
// login; the user's other devices stay logged in.
//
// Password hashes (Register, Login, and the dummy check for unknown
// users) run through one auth.HashLimiter, sized from the memory this
// process may use, so a login flood cannot take the server's memory or
// its cores: what does not fit is refused Unavailable with a RetryInfo.
//
// Every failure is mapped by package apierr: a store that fails (down,
// closed, out of time) is Unavailable with a retry hint, never a refused
// login or token.
package authsvc

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/apierr"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/internal/store"
)

// Store is what the service needs from storage.
type Store interface {
	CreateUser(ctx context.Context, u store.User) error
	GetUser(ctx context.Context, username string) (store.User, error)
	CreateRefreshToken(ctx context.Context, t store.RefreshToken) error
	RotateRefreshToken(ctx context.Context, oldHash string, next store.RefreshToken, now time.Time) (string, error)
	RevokeRefreshTokenFamily(ctx context.Context, hash string) error
}

// Config configures the service.
type Config struct {
	Store  Store
	Issuer *auth.Issuer
	Logger *slog.Logger
	// RefreshTTL is how long a refresh token lives; default 30 days.
	RefreshTTL time.Duration
	// DisableRegistration refuses Register (accounts then come from
	// `parleyd user add`).
	DisableRegistration bool
	// Hashes bounds the password hashes in flight. Nil means a limiter
	// whose memory budget is HashMemoryBudget().
	Hashes *auth.HashLimiter
}

// Service implements chatv1.AuthServer.
type Service struct {
	chatv1.UnimplementedAuthServer
	cfg Config
	// dummyHash is checked when a login names no user, so that the answer
	// takes as long as a wrong password and does not reveal which users exist.
	dummyHash string
}

// New returns the service.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Issuer == nil {
		return nil, errors.New("authsvc: Store and Issuer are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RefreshTTL <= 0 {
		cfg.RefreshTTL = 30 * 24 * time.Hour
	}
	if cfg.Hashes == nil {
		cfg.Hashes = auth.NewHashLimiter(auth.HashLimiterConfig{MemoryBudget: HashMemoryBudget()})
	}
	h, err := auth.HashPassword("parley-timing-equaliser")
	if err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, dummyHash: h}, nil
}

var (
	errBadLogin     = apierr.Unauthenticated("invalid username or password")
	errTokenInvalid = apierr.Unauthenticated("refresh token invalid, expired or already used")
	errDeactivated  = apierr.PermissionDenied("account deactivated")
)

// Register creates a user with role user and logs it in.
func (s *Service) Register(ctx context.Context, req *chatv1.RegisterRequest) (*chatv1.RegisterResponse, error) {
	if s.cfg.DisableRegistration {
		return nil, apierr.Status(apierr.PermissionDenied("registration is disabled on this server"))
	}
	hash, err := s.cfg.Hashes.Hash(ctx, req.GetPassword())
	if err != nil {
		return nil, s.hashErr(ctx, "hash password", err)
	}
	u := store.User{Username: req.GetUsername(), PasswordHash: hash, Role: store.RoleUser, Active: true, CreatedAt: time.Now().UTC()}
	if err := s.cfg.Store.CreateUser(ctx, u); errors.Is(err, store.ErrExists) {
		return nil, apierr.Status(apierr.AlreadyExists("username %q is taken", u.Username))
	} else if err != nil {
		return nil, s.fail(ctx, "create user", err)
	}
	user, tokens, err := s.login(ctx, u)
	if err != nil {
		return nil, err
	}
	return &chatv1.RegisterResponse{User: user, Tokens: tokens}, nil
}

// Login checks a password.
func (s *Service) Login(ctx context.Context, req *chatv1.LoginRequest) (*chatv1.LoginResponse, error) {
	u, err := s.cfg.Store.GetUser(ctx, req.GetUsername())
	if errors.Is(err, store.ErrNotFound) {
		// Through the limiter too: an unknown user must be refused (or
		// asked to retry) like a wrong password, or the answer would tell.
		if _, err := s.cfg.Hashes.Check(ctx, s.dummyHash, req.GetPassword()); err != nil {
			return nil, s.hashErr(ctx, "check password", err)
		}
		return nil, apierr.Status(errBadLogin)
	} else if err != nil {
		return nil, s.fail(ctx, "get user", err)
	}
	ok, err := s.cfg.Hashes.Check(ctx, u.PasswordHash, req.GetPassword())
	if err != nil {
		return nil, s.hashErr(ctx, "check password", err)
	}
	if !ok {
		return nil, apierr.Status(errBadLogin)
	}
	if !u.Active {
		return nil, apierr.Status(errDeactivated)
	}
	user, tokens, err := s.login(ctx, u)
	if err != nil {
		return nil, err
	}
	return &chatv1.LoginResponse{User: user, Tokens: tokens}, nil
}

// Refresh rotates a refresh token: the old one stops working.
func (s *Service) Refresh(ctx context.Context, req *chatv1.RefreshRequest) (*chatv1.RefreshResponse, error) {
	token, hash, err := auth.NewRefreshToken()
	if err != nil {
		return nil, s.fail(ctx, "new refresh token", err)
	}
	now := time.Now().UTC()
	next := store.RefreshToken{Hash: hash, ExpiresAt: now.Add(s.cfg.RefreshTTL)}
	name, err := s.cfg.Store.RotateRefreshToken(ctx, auth.HashRefreshToken(req.GetRefreshToken()), next, now)
	switch {
	case errors.Is(err, store.ErrRefreshTokenReused):
		// A Warn, not an Error: nothing is broken here, but a token leaked
		// (or a client raced itself). The error names the family by a
		// prefix of its id; no token or hash is logged.
		s.cfg.Logger.Warn("auth: refresh token reuse detected; its login is revoked", "user", name, "err", err)
		return nil, apierr.Status(err) // Unauthenticated: log in again
	case errors.Is(err, store.ErrNotFound):
		return nil, apierr.Status(errTokenInvalid)
	case err != nil:
		return nil, s.fail(ctx, "rotate refresh token", err)
	}
	u, err := s.cfg.Store.GetUser(ctx, name)
	if err != nil {
		return nil, s.fail(ctx, "get user", err)
	}
	if !u.Active {
		// The token just issued is never handed out; revoking its family
		// only tidies up, so a failure here is logged and the answer stays.
		if err := s.cfg.Store.RevokeRefreshTokenFamily(ctx, hash); err != nil && !errors.Is(err, store.ErrNotFound) {
			s.cfg.Logger.WarnContext(ctx, "auth: revoke the login of a deactivated user", "user", u.Username, "err", err)
		}
		return nil, apierr.Status(errDeactivated)
	}
	role, err := auth.ParseRole(u.Role)
	if err != nil {
		return nil, s.fail(ctx, "stored role", err)
	}
	access, exp, err := s.cfg.Issuer.Issue(u.Username, role)
	if err != nil {
		return nil, s.fail(ctx, "issue token", err)
	}
	return &chatv1.RefreshResponse{
		User: &chatv1.User{Username: u.Username, Role: role.Proto()},
		Tokens: &chatv1.Tokens{
			AccessToken: access, AccessExpiresAt: timestamppb.New(exp),
			RefreshToken: token, RefreshExpiresAt: timestamppb.New(next.ExpiresAt),
		},
	}, nil
}

// Logout ends the login the refresh token belongs to: it and every token
// of its family are revoked, whether the one given is current or an older
// one already rotated. Other logins of the same user are untouched: logging
// out one device does not log out the others. An unknown token is not an
// error.
func (s *Service) Logout(ctx context.Context, req *chatv1.LogoutRequest) (*chatv1.LogoutResponse, error) {
	if err := s.cfg.Store.RevokeRefreshTokenFamily(ctx, auth.HashRefreshToken(req.GetRefreshToken())); err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, s.fail(ctx, "revoke refresh token", err)
	}
	return &chatv1.LogoutResponse{}, nil
}

func (s *Service) login(ctx context.Context, u store.User) (*chatv1.User, *chatv1.Tokens, error) {
	role, err := auth.ParseRole(u.Role)
	if err != nil {
		return nil, nil, s.fail(ctx, "stored role", err)
	}
	access, exp, err := s.cfg.Issuer.Issue(u.Username, role)
	if err != nil {
		return nil, nil, s.fail(ctx, "issue token", err)
	}
	refresh, hash, err := auth.NewRefreshToken()
	if err != nil {
		return nil, nil, s.fail(ctx, "new refresh token", err)
	}
	rt := store.RefreshToken{Hash: hash, Username: u.Username, ExpiresAt: time.Now().UTC().Add(s.cfg.RefreshTTL)}
	if err := s.cfg.Store.CreateRefreshToken(ctx, rt); err != nil {
		return nil, nil, s.fail(ctx, "store refresh token", err)
	}
	return &chatv1.User{Username: u.Username, Role: role.Proto()}, &chatv1.Tokens{
		AccessToken: access, AccessExpiresAt: timestamppb.New(exp),
		RefreshToken: refresh, RefreshExpiresAt: timestamppb.New(rt.ExpiresAt),
	}, nil
}

// hashErr maps a password hash that did not run: the limiter was full
// (Unavailable with a RetryInfo, which the REST bridge turns into 503 and
// Retry-After) or the call ended.
func (s *Service) hashErr(ctx context.Context, what string, err error) error {
	if errors.Is(err, auth.ErrHashBusy) {
		return apierr.Status(apierr.Busy("logins", s.cfg.Hashes.RetryAfter()))
	}
	return s.fail(ctx, what, err)
}

// fail maps err through apierr and logs what the client is not told: the
// cause of an Internal error. Storage failures are logged, in aggregate,
// where the store is called.
func (s *Service) fail(ctx context.Context, what string, err error) error {
	e := apierr.From(err)
	if e.Code == chatv1.ErrorCode_ERROR_CODE_INTERNAL {
		s.cfg.Logger.ErrorContext(ctx, "auth: "+what, "err", err)
	}
	return e.GRPCStatus().Err()
}
