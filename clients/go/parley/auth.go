package parley

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// Tokens are what a login returns: a short-lived access token and the
// single-use refresh token that buys the next one. The JSON form is what
// the parley CLI stores.
type Tokens struct {
	Username         string      `json:"username"`
	Role             chatv1.Role `json:"role"`
	AccessToken      string      `json:"access_token"`
	AccessExpiresAt  time.Time   `json:"access_expires_at"`
	RefreshToken     string      `json:"refresh_token"`
	RefreshExpiresAt time.Time   `json:"refresh_expires_at"`
}

func tokensFrom(u *chatv1.User, t *chatv1.Tokens) Tokens {
	out := Tokens{Username: u.GetUsername(), Role: u.GetRole(), AccessToken: t.GetAccessToken(), RefreshToken: t.GetRefreshToken()}
	if t.GetAccessExpiresAt() != nil {
		out.AccessExpiresAt = t.GetAccessExpiresAt().AsTime()
	}
	if t.GetRefreshExpiresAt() != nil {
		out.RefreshExpiresAt = t.GetRefreshExpiresAt().AsTime()
	}
	return out
}

// Register creates an account (role user) and returns its tokens. It needs
// no credentials; the client's own are not used.
func (c *Client) Register(ctx context.Context, username, password string) (Tokens, error) {
	resp, err := c.auth.Register(ctx, &chatv1.RegisterRequest{Username: username, Password: password})
	if err != nil {
		return Tokens{}, err
	}
	return tokensFrom(resp.GetUser(), resp.GetTokens()), nil
}

// Login checks a password and returns new tokens.
func (c *Client) Login(ctx context.Context, username, password string) (Tokens, error) {
	resp, err := c.auth.Login(ctx, &chatv1.LoginRequest{Username: username, Password: password})
	if err != nil {
		return Tokens{}, err
	}
	return tokensFrom(resp.GetUser(), resp.GetTokens()), nil
}

// Refresh trades a refresh token for new tokens; the old refresh token
// stops working. Clients made with [WithAutoRefresh] do this themselves.
func (c *Client) Refresh(ctx context.Context, refreshToken string) (Tokens, error) {
	resp, err := c.auth.Refresh(ctx, &chatv1.RefreshRequest{RefreshToken: refreshToken})
	if err != nil {
		return Tokens{}, err
	}
	return tokensFrom(resp.GetUser(), resp.GetTokens()), nil
}

// Logout revokes a refresh token. Access tokens already issued stay valid
// until they expire.
func (c *Client) Logout(ctx context.Context, refreshToken string) error {
	_, err := c.auth.Logout(ctx, &chatv1.LogoutRequest{RefreshToken: refreshToken})
	return err
}

// tokenProvider gives the access token for the next call.
type tokenProvider interface {
	Token(ctx context.Context) (string, error)
}

type staticToken string

func (t staticToken) Token(context.Context) (string, error) { return string(t), nil }

type funcToken func(ctx context.Context) (string, error)

func (f funcToken) Token(ctx context.Context) (string, error) { return f(ctx) }

// refreshTimeout bounds one Auth.Refresh call. The call runs to the end
// even if the caller gives up: the refresh token is spent as soon as the
// server takes it, and its successor must not be lost.
const refreshTimeout = 30 * time.Second

// tokenManager holds a login's tokens and refreshes them before the access
// token expires. One refresh runs at a time; concurrent callers wait for
// it. Safe for concurrent use.
type tokenManager struct {
	auth      chatv1.AuthClient
	onRefresh func(Tokens)
	log       *slog.Logger
	sem       chan struct{} // held while refreshing

	mu       sync.Mutex
	t        Tokens
	obtained time.Time // when t.AccessToken was obtained
}

func newTokenManager(auth chatv1.AuthClient, t Tokens, onRefresh func(Tokens), log *slog.Logger) *tokenManager {
	return &tokenManager{auth: auth, onRefresh: onRefresh, log: log, sem: make(chan struct{}, 1), t: t, obtained: time.Now()}
}

func (m *tokenManager) current() Tokens {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.t
}

// refreshAt is when the access token should be replaced: when a third of
// its life is left, but at least a minute before it expires. The zero time
// means "now"; a token with no known expiry is never refreshed.
func (m *tokenManager) refreshAt() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.refreshAtLocked()
}

func (m *tokenManager) refreshAtLocked() time.Time {
	if m.t.AccessToken == "" {
		return time.Time{}
	}
	if m.t.AccessExpiresAt.IsZero() {
		return time.Now().Add(100 * 365 * 24 * time.Hour)
	}
	margin := max(min(m.t.AccessExpiresAt.Sub(m.obtained)/3, time.Minute), 0)
	return m.t.AccessExpiresAt.Add(-margin)
}

func (m *tokenManager) fresh() (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.t.AccessToken, m.t.AccessToken != "" && time.Now().Before(m.refreshAtLocked())
}

// Token returns the access token, refreshing it first when it is due.
func (m *tokenManager) Token(ctx context.Context) (string, error) {
	if tok, ok := m.fresh(); ok {
		return tok, nil
	}
	select {
	case m.sem <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-m.sem }()
	if tok, ok := m.fresh(); ok { // refreshed while we waited
		return tok, nil
	}
	m.mu.Lock()
	rt := m.t.RefreshToken
	m.mu.Unlock()
	if rt == "" {
		return "", errors.New("no refresh token")
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshTimeout)
	defer cancel()
	resp, err := m.auth.Refresh(rctx, &chatv1.RefreshRequest{RefreshToken: rt})
	if err != nil {
		m.log.Warn("parley: token refresh failed", "err", err)
		return "", err
	}
	t := tokensFrom(resp.GetUser(), resp.GetTokens())
	m.mu.Lock()
	m.t, m.obtained = t, time.Now()
	m.mu.Unlock()
	m.log.Debug("parley: token refreshed", "user", t.Username, "expires", t.AccessExpiresAt)
	if m.onRefresh != nil {
		m.onRefresh(t)
	}
	return t.AccessToken, nil
}
