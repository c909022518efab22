// Package adminsvc implements chat.v1.Admin for moderators and admins. The
// interceptors check that the caller's role reaches the method; this
// package checks who may act on whom (the actor/target table in
// proto/chat/v1/admin.proto, see mayAct) and then acts. A change to a
// user is checked against the target's role as the write's own store
// transaction reads it (Store.UpdateUser), so a moderator racing an
// admin's promotion of its target cannot win. Safe for concurrent use.
//
// Every failure is mapped by package apierr. A store that fails while a
// target is looked up for the access check is Unavailable (or Internal),
// never PermissionDenied or NotFound: a refusal is an answer, and a store
// that could not be asked has not given one.
package adminsvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/apierr"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/internal/hub"
	"github.com/parleychat/parley/server/internal/store"
)

// Store is what the service needs from storage.
type Store interface {
	GetUser(ctx context.Context, username string) (store.User, error)
	// UpdateUser writes change if check approves the target's row as the
	// write's own transaction reads it (see the stores' UpdateUser).
	UpdateUser(ctx context.Context, username string, check store.UserCheck, change store.UserChange) error
}

// Config configures the service.
type Config struct {
	Hub    *hub.Hub
	Store  Store
	Logger *slog.Logger
}

// Service implements chatv1.AdminServer.
type Service struct {
	chatv1.UnimplementedAdminServer
	cfg Config

	mu      sync.Mutex
	samples []sample // a few seconds of counters, for the per-second rates
}

type sample struct {
	at      time.Time
	in, out int64
}

// New returns the service.
func New(cfg Config) (*Service, error) {
	if cfg.Hub == nil || cfg.Store == nil {
		return nil, errors.New("adminsvc: Hub and Store are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Service{cfg: cfg}, nil
}

// rateWindow is how far back the per-second rates look.
const rateWindow = 10 * time.Second

// GetStats reports every node's counters and their totals. Other nodes'
// figures are the ones they last announced, a couple of seconds old.
func (s *Service) GetStats(ctx context.Context, _ *chatv1.GetStatsRequest) (*chatv1.GetStatsResponse, error) {
	nodes := s.cfg.Hub.Nodes()
	now := time.Now()
	total := &chatv1.NodeStats{NodeId: "total"}
	out := &chatv1.GetStatsResponse{Total: total}
	for i, n := range nodes {
		ns := &chatv1.NodeStats{
			NodeId: n.NodeID, Connections: int64(n.Connections), OnlineUsers: int64(n.OnlineUsers), Rooms: int64(n.Rooms),
			Uptime: durationpb.New(n.Uptime), MessagesInTotal: n.MessagesIn, MessagesOutTotal: n.MessagesOut,
		}
		if i == 0 { // this node: rates from its own samples
			ns.MessagesInPerSecond, ns.MessagesOutPerSecond = s.rates(now, n.MessagesIn, n.MessagesOut, n.Uptime)
		} else if secs := n.Uptime.Seconds(); secs > 0 {
			ns.MessagesInPerSecond, ns.MessagesOutPerSecond = float64(n.MessagesIn)/secs, float64(n.MessagesOut)/secs
		}
		out.Nodes = append(out.Nodes, ns)
		total.Connections += ns.Connections
		total.MessagesInTotal += ns.MessagesInTotal
		total.MessagesOutTotal += ns.MessagesOutTotal
		total.MessagesInPerSecond += ns.MessagesInPerSecond
		total.MessagesOutPerSecond += ns.MessagesOutPerSecond
		if n.Uptime > total.GetUptime().AsDuration() {
			total.Uptime = ns.Uptime
		}
	}
	if len(nodes) == 1 {
		total.NodeId = nodes[0].NodeID
	}
	total.OnlineUsers = int64(s.cfg.Hub.OnlineCount())
	total.Rooms = int64(len(s.cfg.Hub.Rooms("")))
	return out, nil
}

// rates compares the counters with the oldest sample in the window; with
// none yet it averages over the uptime.
func (s *Service) rates(now time.Time, in, out int64, uptime time.Duration) (float64, float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.samples) > 0 && now.Sub(s.samples[0].at) > rateWindow {
		s.samples = s.samples[1:]
	}
	base := sample{at: now.Add(-uptime)}
	if len(s.samples) > 0 {
		base = s.samples[0]
	}
	if n := len(s.samples); n == 0 || now.Sub(s.samples[n-1].at) >= time.Second {
		s.samples = append(s.samples, sample{at: now, in: in, out: out})
	}
	secs := now.Sub(base.at).Seconds()
	if secs <= 0 {
		return 0, 0
	}
	return float64(in-base.in) / secs, float64(out-base.out) / secs
}

// Broadcast queues an AdminBroadcast.
func (s *Service) Broadcast(ctx context.Context, req *chatv1.BroadcastRequest) (*chatv1.BroadcastResponse, error) {
	p, _ := auth.FromContext(ctx)
	from := "admin"
	if p != nil {
		from = p.Username
	}
	n := s.cfg.Hub.Broadcast(from, req.GetText(), req.GetRoom())
	s.cfg.Logger.Info("admin broadcast", "by", from, "room", req.GetRoom(), "sessions", n)
	return &chatv1.BroadcastResponse{Sessions: int64(n)}, nil
}

// action is what an actor does to a target user, for mayAct.
type action int

const (
	actDisconnect action = iota
	actDeactivate
	actActivate
	actSetRole
)

func (a action) String() string {
	switch a {
	case actDisconnect:
		return "disconnect"
	case actDeactivate:
		return "deactivate"
	case actActivate:
		return "activate"
	}
	return "change the role of"
}

// mayAct applies the actor/target table of admin.proto: an action on a
// user needs a role above that user's, except that admins act on other
// admins (there is no role above admin, and any admin must be able to
// recover a server) and that nobody deactivates or demotes itself (so a
// server is not left without an admin by accident). newRole is the role
// SetUserRole would give. Changing roles is for admins only; the role
// table of the interceptors says so too, and this check keeps it so for a
// caller that reaches the service another way. It returns nil or a
// PermissionDenied *apierr.Error.
func mayAct(actor *auth.Principal, target store.User, targetRole auth.Role, act action, newRole auth.Role) error {
	if act == actSetRole && !actor.Role.AtLeast(auth.RoleAdmin) {
		return apierr.PermissionDenied("a %s cannot change roles: that needs an admin", actor.Role)
	}
	if actor.Username == target.Username {
		switch {
		case !actor.Role.AtLeast(auth.RoleAdmin):
			return apierr.PermissionDenied("a %s cannot %s itself", actor.Role, act)
		case act == actDeactivate:
			return apierr.PermissionDenied("you cannot deactivate yourself")
		case act == actSetRole && newRole < actor.Role:
			return apierr.PermissionDenied("you cannot demote yourself")
		}
		return nil
	}
	if actor.Role.AtLeast(auth.RoleAdmin) || (actor.Role > targetRole && actor.Role.AtLeast(auth.RoleModerator)) {
		return nil
	}
	return apierr.PermissionDenied("a %s cannot %s %s, who is a %s: that needs a role above theirs",
		actor.Role, act, target.Username, targetRole)
}

// actor is the caller, or Unauthenticated.
func actor(ctx context.Context) (*auth.Principal, error) {
	p, ok := auth.FromContext(ctx)
	if !ok {
		return nil, apierr.Unauthenticated("no principal")
	}
	return p, nil
}

// allows is mayAct as the store's UserCheck for act by p: it judges the
// target's row as the write's own transaction reads it, so a role change
// that commits meanwhile (an admin promoting the target of a moderator)
// is either seen or ordered after the write. A stored role that does not
// parse is the store's fault, not a refusal (Internal, logged).
func allows(p *auth.Principal, act action, newRole auth.Role) store.UserCheck {
	return func(target store.User) error {
		role, err := auth.ParseRole(target.Role)
		if err != nil {
			return fmt.Errorf("stored role of %s: %w", target.Username, err)
		}
		return mayAct(p, target, role, act, newRole)
	}
}

// update applies change to username when act by the caller is allowed
// on it, in one store transaction. Its errors are *apierr.Error.
func (s *Service) update(ctx context.Context, what, username string, act action, newRole auth.Role, change store.UserChange) error {
	p, err := actor(ctx)
	if err != nil {
		return err
	}
	if act == actSetRole && !p.Role.AtLeast(auth.RoleAdmin) {
		return mayAct(p, store.User{}, 0, act, newRole) // refused on the actor's role alone: the store need not be asked
	}
	if err := s.cfg.Store.UpdateUser(ctx, username, allows(p, act, newRole), change); err != nil {
		return s.storeErr(ctx, what, err)
	}
	return nil
}

// DisconnectUser closes a user's sessions. Nothing is written, so the
// target is read on its own: a promotion that commits meanwhile may not
// be seen, a window of one round trip for a disconnect the user recovers
// from by reconnecting.
func (s *Service) DisconnectUser(ctx context.Context, req *chatv1.DisconnectUserRequest) (*chatv1.DisconnectUserResponse, error) {
	p, err := actor(ctx)
	if err != nil {
		return nil, apierr.Status(err)
	}
	target, err := s.cfg.Store.GetUser(ctx, req.GetUsername())
	if err == nil {
		err = allows(p, actDisconnect, 0)(target)
	}
	if err != nil {
		return nil, apierr.Status(s.storeErr(ctx, "disconnect user", err))
	}
	n := s.cfg.Hub.DisconnectUser(req.GetUsername(), req.GetReason())
	s.logAction(ctx, "disconnect user", req.GetUsername())
	return &chatv1.DisconnectUserResponse{Sessions: int32(n)}, nil
}

// SetUserActive (de)activates a user; deactivation also ends its sessions,
// and the auth interceptor refuses its tokens from then on.
func (s *Service) SetUserActive(ctx context.Context, req *chatv1.SetUserActiveRequest) (*chatv1.SetUserActiveResponse, error) {
	act := actActivate
	if !req.GetActive() {
		act = actDeactivate
	}
	active := req.GetActive()
	if err := s.update(ctx, "set user active", req.GetUsername(), act, 0, store.UserChange{Active: &active}); err != nil {
		return nil, apierr.Status(err)
	}
	if !req.GetActive() {
		s.cfg.Hub.DisconnectUser(req.GetUsername(), "account deactivated")
	}
	s.logAction(ctx, "set user active", req.GetUsername(), "active", req.GetActive())
	return &chatv1.SetUserActiveResponse{}, nil
}

// SetUserRole changes a role; it applies to the user's next call.
func (s *Service) SetUserRole(ctx context.Context, req *chatv1.SetUserRoleRequest) (*chatv1.SetUserRoleResponse, error) {
	role := auth.RoleFromProto(req.GetRole())
	if role == 0 {
		// The validation interceptor refuses it first; a role of none would
		// otherwise reach the store.
		return nil, apierr.Status(apierr.InvalidArgument("role must be user, moderator or admin"))
	}
	if err := s.update(ctx, "set user role", req.GetUsername(), actSetRole, role, store.UserChange{Role: role.String()}); err != nil {
		return nil, apierr.Status(err)
	}
	s.logAction(ctx, "set user role", req.GetUsername(), "role", role.String())
	return &chatv1.SetUserRoleResponse{}, nil
}

// storeErr maps a store call's error through apierr, with a message
// naming the record for a user that does not exist, and logs what the
// client is not told: the cause of an Internal error (storage failures
// are logged, in aggregate, where the store is called).
func (s *Service) storeErr(ctx context.Context, what string, err error) *apierr.Error {
	e := apierr.From(err)
	switch e.Code {
	case chatv1.ErrorCode_ERROR_CODE_NOT_FOUND:
		return apierr.NotFound("user not found")
	case chatv1.ErrorCode_ERROR_CODE_INTERNAL:
		s.cfg.Logger.ErrorContext(ctx, "admin: "+what, "err", err)
	}
	return e
}

func (s *Service) logAction(ctx context.Context, what, target string, kv ...any) {
	by := ""
	if p, ok := auth.FromContext(ctx); ok {
		by = p.Username
	}
	s.cfg.Logger.Info("admin: "+what, append([]any{"by", by, "user", target}, kv...)...)
}
