// Package adminsvc implements chat.v1.Admin for moderators and admins. The
// role checks are the interceptors'; this package only acts. Safe for
// concurrent use.
package adminsvc

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/apierr"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/internal/hub"
	"github.com/parleychat/parley/server/internal/store"
)

// Store is what the service needs from storage.
type Store interface {
	SetUserActive(ctx context.Context, username string, active bool) error
	SetUserRole(ctx context.Context, username, role string) error
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

// DisconnectUser closes a user's sessions.
func (s *Service) DisconnectUser(ctx context.Context, req *chatv1.DisconnectUserRequest) (*chatv1.DisconnectUserResponse, error) {
	n := s.cfg.Hub.DisconnectUser(req.GetUsername(), req.GetReason())
	s.logAction(ctx, "disconnect user", req.GetUsername())
	return &chatv1.DisconnectUserResponse{Sessions: int32(n)}, nil
}

// SetUserActive (de)activates a user; deactivation also ends its sessions,
// and the auth interceptor refuses its tokens from then on.
func (s *Service) SetUserActive(ctx context.Context, req *chatv1.SetUserActiveRequest) (*chatv1.SetUserActiveResponse, error) {
	if p, ok := auth.FromContext(ctx); ok && p.Username == req.GetUsername() && !req.GetActive() {
		return nil, status.Error(codes.FailedPrecondition, "you cannot deactivate yourself")
	}
	if err := s.cfg.Store.SetUserActive(ctx, req.GetUsername(), req.GetActive()); err != nil {
		return nil, s.storeErr(err)
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
	if err := s.cfg.Store.SetUserRole(ctx, req.GetUsername(), role.String()); err != nil {
		return nil, s.storeErr(err)
	}
	s.logAction(ctx, "set user role", req.GetUsername(), "role", role.String())
	return &chatv1.SetUserRoleResponse{}, nil
}

func (s *Service) storeErr(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return status.Error(codes.NotFound, "user not found")
	}
	if e, ok := apierr.AsUnavailable(err); ok { // logged, in aggregate, where the store is called
		return e.GRPCStatus().Err()
	}
	s.cfg.Logger.Error("admin store call", "err", err)
	return status.Error(codes.Internal, "internal error")
}

func (s *Service) logAction(ctx context.Context, what, target string, kv ...any) {
	by := ""
	if p, ok := auth.FromContext(ctx); ok {
		by = p.Username
	}
	s.cfg.Logger.Info("admin: "+what, append([]any{"by", by, "user", target}, kv...)...)
}
