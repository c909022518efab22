package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/servertest"
)

// TestAdminActorTargetTable checks every cell of the actor/target table in
// proto/chat/v1/admin.proto over real gRPC: for each actor role, target
// role (or the actor itself) and action, the call is allowed and takes
// effect, or is PermissionDenied and changes nothing (the target's
// sessions, active flag and role are observed from outside, as a client
// would).
func TestAdminActorTargetTable(t *testing.T) {
	t.Parallel()
	// Every cell connects from 127.0.0.1, so lift the per-IP connect limit.
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) { c.RateLimits = "connect=unlimited" }})
	conn := srv.Dial(t)
	admin := chatv1.NewAdminClient(conn)
	rootCtx := servertest.WithToken(context.Background(), srv.Token(t, "root", auth.RoleAdmin))

	const self = auth.Role(0) // target: the actor itself
	type act string
	const (
		disconnect act = "disconnect"
		deactivate act = "deactivate"
		activate   act = "activate"
		setRole    act = "setrole"
	)
	type cell struct {
		actor, target auth.Role
		act           act
		newRole       auth.Role // for setRole
		allowed       bool
	}
	var cells []cell
	for _, a := range []act{disconnect, deactivate, activate} {
		cells = append(cells,
			cell{auth.RoleModerator, auth.RoleUser, a, 0, true},
			cell{auth.RoleModerator, auth.RoleModerator, a, 0, false},
			cell{auth.RoleModerator, auth.RoleAdmin, a, 0, false},
			cell{auth.RoleModerator, self, a, 0, false},
			cell{auth.RoleAdmin, auth.RoleUser, a, 0, true},
			cell{auth.RoleAdmin, auth.RoleModerator, a, 0, true},
			cell{auth.RoleAdmin, auth.RoleAdmin, a, 0, true},
		)
	}
	cells = append(cells,
		cell{auth.RoleAdmin, self, disconnect, 0, true},
		cell{auth.RoleAdmin, self, deactivate, 0, false},
		cell{auth.RoleAdmin, self, activate, 0, true}, // already active: allowed, a no-op
		// SetUserRole is admin-only (the interceptor refuses moderators).
		cell{auth.RoleModerator, auth.RoleUser, setRole, auth.RoleModerator, false},
		cell{auth.RoleModerator, auth.RoleModerator, setRole, auth.RoleUser, false},
		cell{auth.RoleModerator, auth.RoleAdmin, setRole, auth.RoleUser, false},
		cell{auth.RoleModerator, self, setRole, auth.RoleAdmin, false},
		cell{auth.RoleAdmin, auth.RoleUser, setRole, auth.RoleModerator, true},
		cell{auth.RoleAdmin, auth.RoleModerator, setRole, auth.RoleUser, true},
		cell{auth.RoleAdmin, auth.RoleAdmin, setRole, auth.RoleModerator, true},
		cell{auth.RoleAdmin, self, setRole, auth.RoleModerator, false}, // demoting itself
		cell{auth.RoleAdmin, self, setRole, auth.RoleAdmin, true},      // not a demotion
	)

	for i, c := range cells {
		targetName := c.target.String()
		if c.target == self {
			targetName = "self"
		}
		name := fmt.Sprintf("%s/%s/%s", c.actor, c.act, targetName)
		if c.act == setRole {
			name += "→" + c.newRole.String()
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			actorName := fmt.Sprintf("actor%d", i)
			actorTok := srv.Token(t, actorName, c.actor)
			actorCtx := servertest.WithToken(context.Background(), actorTok)
			targetName, targetTok, targetRole := fmt.Sprintf("target%d", i), "", c.target
			if c.target == self {
				targetName, targetTok, targetRole = actorName, actorTok, c.actor
			} else {
				targetTok = srv.Token(t, targetName, c.target)
			}
			if c.act == activate && c.target != self {
				if _, err := admin.SetUserActive(rootCtx, &chatv1.SetUserActiveRequest{Username: targetName, Active: false}); err != nil {
					t.Fatal(err)
				}
			}
			var stream *client // a live session of the target, for disconnect and deactivate
			if c.act == disconnect || c.act == deactivate {
				stream = connect(t, conn, targetName, targetTok)
			}

			var err error
			switch c.act {
			case disconnect:
				_, err = admin.DisconnectUser(actorCtx, &chatv1.DisconnectUserRequest{Username: targetName, Reason: "table"})
			case deactivate, activate:
				_, err = admin.SetUserActive(actorCtx, &chatv1.SetUserActiveRequest{Username: targetName, Active: c.act == activate})
			case setRole:
				_, err = admin.SetUserRole(actorCtx, &chatv1.SetUserRoleRequest{Username: targetName, Role: c.newRole.Proto()})
			}
			if c.allowed {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
			} else {
				st := status.Convert(err)
				if st.Code() != codes.PermissionDenied || st.Message() == "" {
					t.Fatalf("err = %v, want PermissionDenied with a message", err)
				}
				if c.act != setRole || c.actor == auth.RoleAdmin { // the table's own refusals name what was refused
					if !strings.Contains(st.Message(), "yourself") && !strings.Contains(st.Message(), "cannot") {
						t.Fatalf("unclear refusal %q", st.Message())
					}
				}
			}

			// What the target looks like now.
			wantActive := c.act != activate || c.allowed || c.target == self
			if c.act == deactivate && c.allowed {
				wantActive = false
			}
			wantLive := !(c.allowed && (c.act == disconnect || c.act == deactivate))
			wantRole := targetRole
			if c.act == setRole && c.allowed {
				wantRole = c.newRole
			}

			if stream != nil {
				if wantLive {
					stream.sync() // still served
				} else if err := stream.ended(); err == nil {
					t.Fatal("target's stream ended cleanly, want a server-side close")
				}
			}
			cerr := connectErr(chatv1.NewChatClient(conn), targetTok)
			if gotActive := cerr == nil; gotActive != wantActive {
				t.Fatalf("target active = %v (connect: %v), want %v", gotActive, cerr, wantActive)
			}
			if wantActive {
				if got := observedRole(admin, targetTok); got != wantRole {
					t.Fatalf("target role = %s, want %s", got, wantRole)
				}
			}
		})
	}
}

// observedRole tells a user's stored role from what the server lets its
// token do: moderators read stats, and only admins get past the role
// check of SetUserRole (to NotFound for a user that does not exist).
func observedRole(admin chatv1.AdminClient, token string) auth.Role {
	ctx := servertest.WithToken(context.Background(), token)
	if _, err := admin.SetUserRole(ctx, &chatv1.SetUserRoleRequest{Username: "no-such-user", Role: chatv1.Role_ROLE_USER}); status.Code(err) == codes.NotFound {
		return auth.RoleAdmin
	}
	if _, err := admin.GetStats(ctx, &chatv1.GetStatsRequest{}); err == nil {
		return auth.RoleModerator
	}
	return auth.RoleUser
}

// connectErr opens a stream, reads its first event and closes it: nil if
// the server welcomed the token, else the status it was refused with.
func connectErr(chat chatv1.ChatClient, token string) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := chat.Connect(servertest.WithToken(ctx, token))
	if err != nil {
		return err
	}
	_, err = stream.Recv()
	return err
}
