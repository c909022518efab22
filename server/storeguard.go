package server

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/server/internal/apierr"
	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/store/storefault"
)

// guardedStore puts a deadline on every store call and turns storage
// failures into apierr Unavailable (with a retry hint), logged in
// aggregate: a store that is down fails every command, and one log line
// per command would bury everything else (and fill the disk that may be
// the fault). Wrapping here, once, covers every service without each call
// site knowing.
//
// A method not overridden below passes through (the embedded Store)
// without a deadline; give any new store method its own wrapper here.
// Safe for concurrent use.
type guardedStore struct {
	Store
	timeout time.Duration
	log     *faultLog
}

func guardStore(st Store, timeout time.Duration, log *slog.Logger) *guardedStore {
	return &guardedStore{Store: st, timeout: timeout, log: newFaultLog(log, faultLogEvery)}
}

// faultLogEvery is how often the fault log repeats itself per kind.
const faultLogEvery = 10 * time.Second

// call runs f with the store deadline and classifies its error.
func call[T any](g *guardedStore, ctx context.Context, op string, f func(context.Context) (T, error)) (T, error) {
	cctx, cancel := context.WithTimeout(ctx, g.timeout)
	v, err := f(cctx)
	cancel()
	return v, g.check(ctx, op, err)
}

// check maps err: the caller's own cancellation stays as it is (the
// caller went away; nothing is wrong with the store); a storage failure,
// including this call's deadline, becomes Unavailable and is counted in
// the fault log; anything else passes unchanged. A success after failures
// closes the outage in the log.
func (g *guardedStore) check(ctx context.Context, op string, err error) error {
	if err == nil {
		g.log.ok()
		return nil
	}
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return err
	}
	k := storefault.KindOf(err)
	if k == storefault.KindNone {
		return err
	}
	g.log.fault(k, op, err)
	return apierr.Unavailable(storefault.Classify(err), apierr.StoreRetryAfter)
}

func call0(g *guardedStore, ctx context.Context, op string, f func(context.Context) error) error {
	_, err := call(g, ctx, op, func(ctx context.Context) (struct{}, error) { return struct{}{}, f(ctx) })
	return err
}

func (g *guardedStore) GetUser(ctx context.Context, username string) (store.User, error) {
	return call(g, ctx, "GetUser", func(ctx context.Context) (store.User, error) { return g.Store.GetUser(ctx, username) })
}

func (g *guardedStore) CreateUser(ctx context.Context, u store.User) error {
	return call0(g, ctx, "CreateUser", func(ctx context.Context) error { return g.Store.CreateUser(ctx, u) })
}

func (g *guardedStore) UpdateUser(ctx context.Context, username string, check store.UserCheck, change store.UserChange) error {
	return call0(g, ctx, "UpdateUser", func(ctx context.Context) error { return g.Store.UpdateUser(ctx, username, check, change) })
}

func (g *guardedStore) SetUserRole(ctx context.Context, username, role string) error {
	return call0(g, ctx, "SetUserRole", func(ctx context.Context) error { return g.Store.SetUserRole(ctx, username, role) })
}

func (g *guardedStore) TouchLastSeen(ctx context.Context, username string, t time.Time) error {
	return call0(g, ctx, "TouchLastSeen", func(ctx context.Context) error { return g.Store.TouchLastSeen(ctx, username, t) })
}

// AppendMessage's deadline bounds its wait in the group-commit queue: past
// it the message is abandoned unwritten. Once the writer has taken it the
// store answers with the real outcome, within its own write deadline
// (WriteTimeout of the back end, set to the same value), so the hub knows
// whether to deliver it.
func (g *guardedStore) AppendMessage(ctx context.Context, m store.Message) (store.Message, bool, error) {
	type res struct {
		m   store.Message
		dup bool
	}
	r, err := call(g, ctx, "AppendMessage", func(ctx context.Context) (res, error) {
		m, dup, err := g.Store.AppendMessage(ctx, m)
		return res{m, dup}, err
	})
	return r.m, r.dup, err
}

func (g *guardedStore) LastSeq(ctx context.Context, conversation string) (int64, error) {
	return call(g, ctx, "LastSeq", func(ctx context.Context) (int64, error) { return g.Store.LastSeq(ctx, conversation) })
}

func (g *guardedStore) History(ctx context.Context, conversation string, q store.HistoryQuery) ([]store.Message, bool, error) {
	type res struct {
		msgs []store.Message
		more bool
	}
	r, err := call(g, ctx, "History", func(ctx context.Context) (res, error) {
		msgs, more, err := g.Store.History(ctx, conversation, q)
		return res{msgs, more}, err
	})
	return r.msgs, r.more, err
}

func (g *guardedStore) Memberships(ctx context.Context, username string) ([]string, error) {
	return call(g, ctx, "Memberships", func(ctx context.Context) ([]string, error) { return g.Store.Memberships(ctx, username) })
}

func (g *guardedStore) AddMembership(ctx context.Context, username, room string) error {
	return call0(g, ctx, "AddMembership", func(ctx context.Context) error { return g.Store.AddMembership(ctx, username, room) })
}

func (g *guardedStore) RemoveMembership(ctx context.Context, username, room string) error {
	return call0(g, ctx, "RemoveMembership", func(ctx context.Context) error { return g.Store.RemoveMembership(ctx, username, room) })
}

func (g *guardedStore) DirectMessagesSince(ctx context.Context, username string, since time.Time, limit int) ([]store.Message, bool, error) {
	type page struct {
		msgs []store.Message
		more bool
	}
	p, err := call(g, ctx, "DirectMessagesSince", func(ctx context.Context) (page, error) {
		msgs, more, err := g.Store.DirectMessagesSince(ctx, username, since, limit)
		return page{msgs, more}, err
	})
	return p.msgs, p.more, err
}

func (g *guardedStore) RoomSummaries(ctx context.Context, username, everyone string) ([]store.RoomSummary, error) {
	return call(g, ctx, "RoomSummaries", func(ctx context.Context) ([]store.RoomSummary, error) {
		return g.Store.RoomSummaries(ctx, username, everyone)
	})
}

func (g *guardedStore) ListConversations(ctx context.Context, username, everyone string, q store.ConversationsQuery) ([]store.ConversationSummary, bool, error) {
	type page struct {
		convs []store.ConversationSummary
		more  bool
	}
	p, err := call(g, ctx, "ListConversations", func(ctx context.Context) (page, error) {
		convs, more, err := g.Store.ListConversations(ctx, username, everyone, q)
		return page{convs, more}, err
	})
	return p.convs, p.more, err
}

func (g *guardedStore) PutFile(ctx context.Context, f store.File) (store.File, error) {
	return call(g, ctx, "PutFile", func(ctx context.Context) (store.File, error) { return g.Store.PutFile(ctx, f) })
}

func (g *guardedStore) GetFile(ctx context.Context, id string) (store.File, error) {
	return call(g, ctx, "GetFile", func(ctx context.Context) (store.File, error) { return g.Store.GetFile(ctx, id) })
}

func (g *guardedStore) TouchFile(ctx context.Context, id string, t time.Time) (store.File, error) {
	return call(g, ctx, "TouchFile", func(ctx context.Context) (store.File, error) { return g.Store.TouchFile(ctx, id, t) })
}

func (g *guardedStore) IsFileUploader(ctx context.Context, id, username string) (bool, error) {
	return call(g, ctx, "IsFileUploader", func(ctx context.Context) (bool, error) { return g.Store.IsFileUploader(ctx, id, username) })
}

func (g *guardedStore) FileConversations(ctx context.Context, fileID string) ([]string, error) {
	return call(g, ctx, "FileConversations", func(ctx context.Context) ([]string, error) { return g.Store.FileConversations(ctx, fileID) })
}

func (g *guardedStore) CreateRefreshToken(ctx context.Context, t store.RefreshToken) error {
	return call0(g, ctx, "CreateRefreshToken", func(ctx context.Context) error { return g.Store.CreateRefreshToken(ctx, t) })
}

func (g *guardedStore) RotateRefreshToken(ctx context.Context, oldHash string, next store.RefreshToken, now time.Time) (string, error) {
	return call(g, ctx, "RotateRefreshToken", func(ctx context.Context) (string, error) {
		return g.Store.RotateRefreshToken(ctx, oldHash, next, now)
	})
}

func (g *guardedStore) RevokeRefreshTokenFamily(ctx context.Context, hash string) error {
	return call0(g, ctx, "RevokeRefreshTokenFamily", func(ctx context.Context) error { return g.Store.RevokeRefreshTokenFamily(ctx, hash) })
}

func (g *guardedStore) DeleteUnusedFiles(ctx context.Context, before time.Time, limit int) ([]string, error) {
	return call(g, ctx, "DeleteUnusedFiles", func(ctx context.Context) ([]string, error) { return g.Store.DeleteUnusedFiles(ctx, before, limit) })
}

func (g *guardedStore) ExistingFiles(ctx context.Context, ids []string) ([]string, error) {
	return call(g, ctx, "ExistingFiles", func(ctx context.Context) ([]string, error) { return g.Store.ExistingFiles(ctx, ids) })
}

// The janitor's sweeps may take longer than one request's deadline on a
// large table; they get ten of them.
func (g *guardedStore) DeleteMessagesBefore(ctx context.Context, t time.Time) (int64, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*g.timeout)
	defer cancel()
	n, err := g.Store.DeleteMessagesBefore(cctx, t)
	return n, g.check(ctx, "DeleteMessagesBefore", err)
}

func (g *guardedStore) DeleteExpiredRefreshTokens(ctx context.Context, now time.Time) (int64, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*g.timeout)
	defer cancel()
	n, err := g.Store.DeleteExpiredRefreshTokens(cctx, now)
	return n, g.check(ctx, "DeleteExpiredRefreshTokens", err)
}

// faultLog writes at most one line per kind of storage failure per
// period, with how many were not written since, and at most one line per
// period when the store answers again (a full disk still serves reads, so
// successes and failures interleave). Safe for concurrent use; it writes
// outside its lock.
type faultLog struct {
	log   *slog.Logger
	every time.Duration
	now   func() time.Time

	down atomic.Bool // a failure was seen since "available again": ok's fast path

	mu    sync.Mutex
	kinds map[storefault.Kind]*faultCount
	okAt  time.Time // when "available again" was last written
}

type faultCount struct {
	last       time.Time // when a line was last written
	suppressed int       // failures since then, not written
	total      int       // failures since "available again"
}

func newFaultLog(log *slog.Logger, every time.Duration) *faultLog {
	return &faultLog{log: log, every: every, now: time.Now, kinds: map[storefault.Kind]*faultCount{}}
}

func (l *faultLog) fault(k storefault.Kind, op string, err error) {
	now := l.now()
	l.mu.Lock()
	l.down.Store(true)
	c := l.kinds[k]
	if c == nil {
		c = &faultCount{}
		l.kinds[k] = c
	}
	c.total++
	if !c.last.IsZero() && now.Sub(c.last) < l.every {
		c.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := c.suppressed
	c.last, c.suppressed = now, 0
	l.mu.Unlock()
	l.log.Error("store unavailable", "kind", string(k), "op", op, "err", err,
		"suppressed", suppressed, "every", l.every)
}

func (l *faultLog) ok() {
	if !l.down.Load() {
		return
	}
	now := l.now()
	l.mu.Lock()
	if !l.okAt.IsZero() && now.Sub(l.okAt) < l.every {
		l.mu.Unlock() // still down as far as the log knows: a later success says it
		return
	}
	if !l.down.Swap(false) {
		l.mu.Unlock()
		return
	}
	l.okAt = now
	args := make([]any, 0, len(l.kinds))
	for k, c := range l.kinds {
		if c.total > 0 {
			args = append(args, slog.Int(string(k), c.total))
			c.total = 0
		}
	}
	l.mu.Unlock()
	l.log.Warn("store available again", slog.Group("failed", args...))
}
