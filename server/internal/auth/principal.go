package auth

import (
	"context"
	"sync/atomic"
	"time"
)

// Principal is the authenticated caller of one call or stream.
//
// Username, Role and SessionIP are set before the Principal is put in a
// context and are read-only afterwards. The expiry is atomic: an in-band
// token refresh moves it while other goroutines of the same stream read it.
// A Principal must not be copied after first use.
type Principal struct {
	Username string
	// Role is the role stored for the user when the call or stream began,
	// not the one in the token, so a demotion takes effect on the next call.
	Role Role
	// SessionIP is the client address the call came from.
	SessionIP string
	// LastSeenAt is when the user's last session closed, as stored when
	// the call began (zero if never): a new session replays the direct
	// messages since then without looking the user up again.
	LastSeenAt time.Time

	expiresAt atomic.Int64 // Unix nanoseconds; 0 means unset
}

// ExpiresAt returns when the principal's access token expires, or the zero
// time if it was never set. Safe for concurrent use.
func (p *Principal) ExpiresAt() time.Time {
	n := p.expiresAt.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// SetExpiresAt records a new token expiry; the zero time clears it. Safe for
// concurrent use.
func (p *Principal) SetExpiresAt(t time.Time) {
	if t.IsZero() {
		p.expiresAt.Store(0)
		return
	}
	p.expiresAt.Store(t.UnixNano())
}

type principalKey struct{}

// NewContext returns a copy of ctx that carries p.
func NewContext(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the Principal in ctx, if any.
func FromContext(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	return p, ok && p != nil
}
