package adminsvc_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/adminsvc"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/internal/hub"
	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/store/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer collects the service's log from the hub's goroutines.
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

// users are the accounts every env starts with.
var users = map[string]string{
	"alice": store.RoleUser, "bob": store.RoleUser,
	"mod": store.RoleModerator, "mod2": store.RoleModerator,
	"root": store.RoleAdmin, "root2": store.RoleAdmin,
}

type env struct {
	svc *adminsvc.Service
	hub *hub.Hub
	st  *sqlite.Store
	log *syncBuffer
}

// newEnv opens the service on a real hub over a new SQLite store.
func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "admin.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for name, role := range users {
		// The hash is never checked here.
		if err := st.CreateUser(ctx, store.User{Username: name, PasswordHash: "x", Role: role, Active: true, CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	log := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(log, nil))
	h, err := hub.New(hub.Config{Store: st, Logger: logger, NodeID: "node-test", PresenceWindow: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Shutdown(time.Second) }) // before the store closes
	svc, err := adminsvc.New(adminsvc.Config{Hub: h, Store: st, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	return &env{svc: svc, hub: h, st: st, log: log}
}

// attach opens a session for name straight on the hub, as a transport
// would, and detaches it at the end.
func (e *env) attach(t *testing.T, name string) *hub.Session {
	t.Helper()
	role, _ := auth.ParseRole(users[name])
	s, err := e.hub.Attach(context.Background(), hub.Identity{Username: name, Role: role.Proto()}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.hub.Detach(s) })
	return s
}

// as is a call context of the named user with its stored role, as the
// auth interceptor makes it.
func as(name string) context.Context {
	role, _ := auth.ParseRole(users[name])
	return auth.NewContext(context.Background(), &auth.Principal{Username: name, Role: role})
}

// events decodes every frame queued on s.
func events(t *testing.T, s *hub.Session) []*chatv1.ServerEvent {
	t.Helper()
	var out []*chatv1.ServerEvent
	for _, f := range s.Take(nil) {
		ev := &chatv1.ServerEvent{}
		if err := proto.Unmarshal(f.Data, ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

func closed(s *hub.Session) bool {
	select {
	case <-s.Done():
		return true
	default:
		return false
	}
}

func retryDelay(err error) time.Duration {
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	return 0
}

func TestNewRequiresHubAndStore(t *testing.T) {
	t.Parallel()
	if _, err := adminsvc.New(adminsvc.Config{}); err == nil {
		t.Fatal("New without Hub and Store succeeded")
	}
}

// TestActorTargetTable runs every actor against every kind of target and
// action of the table in admin.proto, each on a fresh server: an allowed
// action takes effect; a refused one is PermissionDenied and changes
// nothing (the target stays connected, active, in its role).
func TestActorTargetTable(t *testing.T) {
	t.Parallel()
	type act struct {
		name string
		call func(s *adminsvc.Service, ctx context.Context, target string) error
		// effect reports whether the action took effect on target.
		effect func(t *testing.T, e *env, target string, sess *hub.Session) bool
	}
	storedUser := func(t *testing.T, e *env, name string) store.User {
		u, err := e.st.GetUser(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	disconnect := act{"disconnect", func(s *adminsvc.Service, ctx context.Context, target string) error {
		_, err := s.DisconnectUser(ctx, &chatv1.DisconnectUserRequest{Username: target, Reason: "test"})
		return err
	}, func(t *testing.T, e *env, target string, sess *hub.Session) bool { return closed(sess) }}
	deactivate := act{"deactivate", func(s *adminsvc.Service, ctx context.Context, target string) error {
		_, err := s.SetUserActive(ctx, &chatv1.SetUserActiveRequest{Username: target, Active: false})
		return err
	}, func(t *testing.T, e *env, target string, sess *hub.Session) bool {
		off := !storedUser(t, e, target).Active
		if off != closed(sess) {
			t.Errorf("deactivated %v but session closed %v", off, closed(sess))
		}
		return off
	}}
	// Activation is checked on a target deactivated beforehand.
	activate := act{"activate", func(s *adminsvc.Service, ctx context.Context, target string) error {
		_, err := s.SetUserActive(ctx, &chatv1.SetUserActiveRequest{Username: target, Active: true})
		return err
	}, func(t *testing.T, e *env, target string, sess *hub.Session) bool {
		return storedUser(t, e, target).Active
	}}
	setRole := func(role chatv1.Role) act {
		return act{"set role " + auth.RoleFromProto(role).String(), func(s *adminsvc.Service, ctx context.Context, target string) error {
			_, err := s.SetUserRole(ctx, &chatv1.SetUserRoleRequest{Username: target, Role: role})
			return err
		}, func(t *testing.T, e *env, target string, sess *hub.Session) bool {
			return storedUser(t, e, target).Role == auth.RoleFromProto(role).String()
		}}
	}
	promote, demote, admin := setRole(chatv1.Role_ROLE_MODERATOR), setRole(chatv1.Role_ROLE_USER), setRole(chatv1.Role_ROLE_ADMIN)

	type row struct {
		actor, target string
		act           act
		allowed       bool
	}
	rows := []row{
		// A user (the interceptors stop it first) may do nothing, even to itself.
		{"alice", "bob", disconnect, false}, {"alice", "bob", deactivate, false}, {"alice", "bob", promote, false},
		{"alice", "alice", disconnect, false}, {"alice", "alice", deactivate, false}, {"alice", "alice", admin, false},
		// moderator: users yes; moderators, admins and itself no; roles never.
		{"mod", "bob", disconnect, true}, {"mod", "bob", deactivate, true}, {"mod", "bob", activate, true},
		{"mod", "bob", promote, false},
		{"mod", "mod2", disconnect, false}, {"mod", "mod2", deactivate, false}, {"mod", "mod2", activate, false}, {"mod", "mod2", demote, false},
		{"mod", "root", disconnect, false}, {"mod", "root", deactivate, false}, {"mod", "root", demote, false},
		{"mod", "mod", disconnect, false}, {"mod", "mod", deactivate, false}, {"mod", "mod", admin, false},
		// admin: everyone, other admins included.
		{"root", "bob", disconnect, true}, {"root", "bob", deactivate, true}, {"root", "bob", activate, true}, {"root", "bob", promote, true},
		{"root", "mod", disconnect, true}, {"root", "mod", deactivate, true}, {"root", "mod", demote, true}, {"root", "mod", admin, true},
		{"root", "root2", disconnect, true}, {"root", "root2", deactivate, true}, {"root", "root2", activate, true}, {"root", "root2", demote, true},
		// admin on itself: disconnect yes, deactivate and demote no.
		{"root", "root", disconnect, true}, {"root", "root", activate, true}, {"root", "root", admin, true},
		{"root", "root", deactivate, false}, {"root", "root", demote, false}, {"root", "root", promote, false},
	}
	for _, r := range rows {
		t.Run(fmt.Sprintf("%s %s %s", r.actor, r.act.name, r.target), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			if r.act.name == "activate" {
				if err := e.st.SetUserActive(context.Background(), r.target, false); err != nil {
					t.Fatal(err)
				}
			}
			sess := e.attach(t, r.target)
			err := r.act.call(e.svc, as(r.actor), r.target)
			if r.allowed {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				// Setting the role a target already has shows no change.
				if r.act.name != "set role admin" || r.target != r.actor {
					if !r.act.effect(t, e, r.target, sess) {
						t.Fatal("allowed but without effect")
					}
				}
				return
			}
			if status.Code(err) != codes.PermissionDenied {
				t.Fatalf("got %v, want PermissionDenied", err)
			}
			if r.act.effect(t, e, r.target, sess) || closed(sess) {
				t.Fatal("refused but took effect")
			}
		})
	}
}

// TestRefusalMessages: a refusal says why.
func TestRefusalMessages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tt := range []struct {
		name string
		call func() error
		msg  string
	}{
		{"moderator on moderator", func() error {
			_, err := e.svc.DisconnectUser(as("mod"), &chatv1.DisconnectUserRequest{Username: "mod2"})
			return err
		}, "a moderator cannot disconnect mod2, who is a moderator: that needs a role above theirs"},
		{"moderator on itself", func() error {
			_, err := e.svc.SetUserActive(as("mod"), &chatv1.SetUserActiveRequest{Username: "mod"})
			return err
		}, "a moderator cannot deactivate itself"},
		{"admin deactivating itself", func() error {
			_, err := e.svc.SetUserActive(as("root"), &chatv1.SetUserActiveRequest{Username: "root"})
			return err
		}, "you cannot deactivate yourself"},
		{"admin demoting itself", func() error {
			_, err := e.svc.SetUserRole(as("root"), &chatv1.SetUserRoleRequest{Username: "root", Role: chatv1.Role_ROLE_MODERATOR})
			return err
		}, "you cannot demote yourself"},
		{"moderator changing a role", func() error {
			_, err := e.svc.SetUserRole(as("mod"), &chatv1.SetUserRoleRequest{Username: "alice", Role: chatv1.Role_ROLE_ADMIN})
			return err
		}, "a moderator cannot change roles: that needs an admin"},
	} {
		st := status.Convert(tt.call())
		if st.Code() != codes.PermissionDenied || st.Message() != tt.msg {
			t.Errorf("%s: %v %q, want PermissionDenied %q", tt.name, st.Code(), st.Message(), tt.msg)
		}
	}
	if u, _ := e.st.GetUser(context.Background(), "alice"); u.Role != store.RoleUser {
		t.Fatalf("a moderator changed alice's role to %s", u.Role)
	}
}

// TestBadRequests: an unknown user is NotFound, a call without a
// principal Unauthenticated, a role of none InvalidArgument.
func TestBadRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tt := range []struct {
		name string
		err  error
		code codes.Code
		msg  string
	}{
		{"unknown user", func() error {
			_, err := e.svc.DisconnectUser(as("root"), &chatv1.DisconnectUserRequest{Username: "nobody"})
			return err
		}(), codes.NotFound, "user not found"},
		{"unknown user, set active", func() error {
			_, err := e.svc.SetUserActive(as("root"), &chatv1.SetUserActiveRequest{Username: "nobody"})
			return err
		}(), codes.NotFound, "user not found"},
		{"no principal", func() error {
			_, err := e.svc.SetUserActive(context.Background(), &chatv1.SetUserActiveRequest{Username: "alice"})
			return err
		}(), codes.Unauthenticated, "no principal"},
		{"role unspecified", func() error {
			_, err := e.svc.SetUserRole(as("root"), &chatv1.SetUserRoleRequest{Username: "alice"})
			return err
		}(), codes.InvalidArgument, "role must be user, moderator or admin"},
	} {
		if st := status.Convert(tt.err); st.Code() != tt.code || st.Message() != tt.msg {
			t.Errorf("%s: %v %q, want %v %q", tt.name, st.Code(), st.Message(), tt.code, tt.msg)
		}
	}
	if u, _ := e.st.GetUser(context.Background(), "alice"); u.Role != store.RoleUser || !u.Active {
		t.Fatalf("a refused request changed alice: %+v", u)
	}
}

// TestStoreFailureInAccessCheck: when the store cannot be asked who the
// target is, every action is Unavailable with a retry hint — never
// PermissionDenied or NotFound — and nothing is done.
func TestStoreFailureInAccessCheck(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	bob := e.attach(t, "bob")
	if err := e.st.Close(); err != nil {
		t.Fatal(err)
	}
	for _, actor := range []string{"mod", "root"} {
		for name, call := range map[string]func() error{
			"disconnect": func() error {
				_, err := e.svc.DisconnectUser(as(actor), &chatv1.DisconnectUserRequest{Username: "bob"})
				return err
			},
			"deactivate": func() error {
				_, err := e.svc.SetUserActive(as(actor), &chatv1.SetUserActiveRequest{Username: "bob"})
				return err
			},
			"set role": func() error {
				_, err := e.svc.SetUserRole(as(actor), &chatv1.SetUserRoleRequest{Username: "bob", Role: chatv1.Role_ROLE_MODERATOR})
				return err
			},
		} {
			if name == "set role" && actor == "mod" {
				continue // refused before the store is asked: moderators never change roles
			}
			err := call()
			if status.Code(err) != codes.Unavailable || retryDelay(err) <= 0 {
				t.Errorf("%s by %s on a closed store: %v (retry %v), want Unavailable with a retry hint", name, actor, err, retryDelay(err))
			}
		}
	}
	if closed(bob) {
		t.Fatal("bob was disconnected though the access check never ran")
	}
	if log := e.log.String(); strings.Contains(log, "level=ERROR") {
		t.Errorf("store failures logged as errors per call:\n%s", log)
	}
}

// TestDisconnectUser closes every session of the user, after a notice
// with the reason, and leaves other users' sessions alone.
func TestDisconnectUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b1, b2, a := e.attach(t, "bob"), e.attach(t, "bob"), e.attach(t, "alice")
	events(t, b1)
	events(t, b2)
	r, err := e.svc.DisconnectUser(as("mod"), &chatv1.DisconnectUserRequest{Username: "bob", Reason: "spam"})
	if err != nil || r.GetSessions() != 2 {
		t.Fatalf("disconnect = %v, %v; want 2 sessions", r, err)
	}
	for _, s := range []*hub.Session{b1, b2} {
		if !closed(s) || s.Reason() != hub.ReasonDisconnectedByAdmin {
			t.Fatalf("bob's session: closed %v, reason %v", closed(s), s.Reason())
		}
		evs := events(t, s)
		if len(evs) == 0 {
			t.Fatal("no notice before the close")
		}
		n := evs[len(evs)-1].GetServerNotice()
		if n.GetKind() != chatv1.NoticeKind_NOTICE_KIND_DISCONNECTED || !strings.Contains(n.GetMessage(), "spam") {
			t.Fatalf("last event %v", evs[len(evs)-1])
		}
	}
	if closed(a) {
		t.Fatal("alice was disconnected too")
	}
	// Bob is still an active user: disconnecting is not deactivating.
	if u, _ := e.st.GetUser(context.Background(), "bob"); !u.Active {
		t.Fatal("disconnect deactivated bob")
	}
	// Once their transports have detached them, there is nothing to close.
	e.hub.Detach(b1)
	e.hub.Detach(b2)
	r, err = e.svc.DisconnectUser(as("mod"), &chatv1.DisconnectUserRequest{Username: "bob"})
	if err != nil || r.GetSessions() != 0 {
		t.Fatalf("disconnect of an offline user = %v, %v", r, err)
	}
}

// TestBroadcast queues an AdminBroadcast from the caller to everyone, or
// to one room's members, and counts the sessions.
func TestBroadcast(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.attach(t, "alice"), e.attach(t, "bob")
	if _, err := e.hub.Join(context.Background(), a, "dev"); err != nil {
		t.Fatal(err)
	}
	events(t, a)
	events(t, b)
	broadcasts := func(s *hub.Session) []*chatv1.AdminBroadcast {
		var out []*chatv1.AdminBroadcast
		for _, ev := range events(t, s) {
			if ab := ev.GetAdminBroadcast(); ab != nil {
				out = append(out, ab)
			}
		}
		return out
	}
	for _, tt := range []struct {
		name       string
		ctx        context.Context
		room, from string
		sessions   int64
		toBob      bool
	}{
		{"everyone", as("mod"), "", "mod", 2, true},
		{"one room", as("root"), "dev", "root", 1, false},
		{"no principal", context.Background(), "", "admin", 2, true},
	} {
		r, err := e.svc.Broadcast(tt.ctx, &chatv1.BroadcastRequest{Text: "maintenance at 6", Room: tt.room})
		if err != nil || r.GetSessions() != tt.sessions {
			t.Fatalf("%s: %v, %v; want %d sessions", tt.name, r, err, tt.sessions)
		}
		got := broadcasts(a)
		if len(got) != 1 || got[0].GetFrom() != tt.from || got[0].GetText() != "maintenance at 6" || got[0].GetRoom() != tt.room || got[0].GetSentAt() == nil {
			t.Fatalf("%s: alice got %v", tt.name, got)
		}
		if n := len(broadcasts(b)); (n == 1) != tt.toBob || n > 1 {
			t.Fatalf("%s: bob got %d broadcasts", tt.name, n)
		}
	}
}

// TestGetStats: the counters are the hub's, the totals add up, and the
// rates are per second of what was counted.
func TestGetStats(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	a := e.attach(t, "alice")
	e.attach(t, "alice")
	e.attach(t, "bob")
	if _, err := e.hub.Join(ctx, a, "dev"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.hub.SendRoom(ctx, a, "general", "hello", "c1"); err != nil {
		t.Fatal(err)
	}
	r, err := e.svc.GetStats(as("mod"), &chatv1.GetStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	hs := e.hub.Stats()
	if len(r.GetNodes()) != 1 {
		t.Fatalf("nodes %v", r.GetNodes())
	}
	n, total := r.GetNodes()[0], r.GetTotal()
	if n.GetNodeId() != "node-test" || total.GetNodeId() != "node-test" {
		t.Fatalf("node ids %q, total %q", n.GetNodeId(), total.GetNodeId())
	}
	if n.GetConnections() != 3 || n.GetOnlineUsers() != 2 || n.GetRooms() != 2 || n.GetMessagesInTotal() != 1 ||
		n.GetMessagesOutTotal() != hs.MessagesOut || hs.MessagesOut < 3 {
		t.Fatalf("node %v; hub %+v", n, hs)
	}
	if total.GetConnections() != 3 || total.GetOnlineUsers() != 2 || total.GetRooms() != 2 ||
		total.GetMessagesInTotal() != 1 || total.GetMessagesOutTotal() != n.GetMessagesOutTotal() {
		t.Fatalf("total %v", total)
	}
	if n.GetMessagesInPerSecond() <= 0 || n.GetMessagesOutPerSecond() < n.GetMessagesInPerSecond() ||
		total.GetMessagesInPerSecond() != n.GetMessagesInPerSecond() || n.GetUptime().AsDuration() <= 0 {
		t.Fatalf("rates: node %v, total %v", n, total)
	}
	// Nothing new since: within the sample window the rate stays a rate of
	// what was counted, never negative.
	r2, err := e.svc.GetStats(as("mod"), &chatv1.GetStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n2 := r2.GetNodes()[0]; n2.GetMessagesInPerSecond() < 0 || n2.GetMessagesInTotal() != 1 {
		t.Fatalf("second stats %v", n2)
	}
}

// promotingStore is a real store in which an admin's promotion of target
// commits right after every read of a user the service makes outside a
// write: the worst timing of a moderator racing that promotion, if the
// service judged the target by such a read.
type promotingStore struct {
	*sqlite.Store
	target string
}

func (p promotingStore) GetUser(ctx context.Context, username string) (store.User, error) {
	u, err := p.Store.GetUser(ctx, username)
	if err == nil && username == p.target {
		err = p.Store.SetUserRole(ctx, username, store.RoleAdmin)
	}
	return u, err
}

// TestModeratorRacingPromotionLoses: a moderator's (de)activation is
// judged by the target's role as the write's own transaction reads it.
// With a promotion hooked to commit right after any read the service made
// on its own, a service that judged by such a read would let a moderator
// deactivate a just-promoted admin; this one makes none, so the user is
// deactivated as the user it was when the write read it. (The store
// suite's UpdateUserRace races the two for real, in both orders, against
// both stores.)
func TestModeratorRacingPromotionLoses(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	svc, err := adminsvc.New(adminsvc.Config{Hub: e.hub, Store: promotingStore{e.st, "alice"}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.SetUserActive(as("mod"), &chatv1.SetUserActiveRequest{Username: "alice", Active: false}); err != nil {
		t.Fatalf("a moderator deactivating a user: %v", err)
	}
	if u, _ := e.st.GetUser(context.Background(), "alice"); u.Active || u.Role != store.RoleUser {
		t.Fatalf("alice: %+v, want an inactive user: a moderator deactivated an admin", u)
	}
	// And a promotion that committed first is what the write sees.
	if err := e.st.SetUserRole(context.Background(), "bob", store.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	_, err = svc.SetUserActive(as("mod"), &chatv1.SetUserActiveRequest{Username: "bob", Active: false})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "who is a admin") {
		t.Fatalf("a moderator deactivating a promoted admin: %v, want PermissionDenied naming the new role", err)
	}
	if u, _ := e.st.GetUser(context.Background(), "bob"); !u.Active || u.Role != store.RoleAdmin {
		t.Fatalf("bob: %+v, want an active admin", u)
	}
}
