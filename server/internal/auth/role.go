package auth

import (
	"fmt"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// Role orders what a user may do; each role includes the ones below it.
// The zero Role is "none" and is granted nothing.
type Role int8

// Roles, in order. Their values match chat.v1.Role so that the two convert
// without a table, but use RoleFromProto and Proto rather than relying on it.
const (
	RoleUser      Role = 1
	RoleModerator Role = 2
	RoleAdmin     Role = 3
)

// ParseRole parses a stored role name: "user", "moderator" or "admin".
func ParseRole(s string) (Role, error) {
	switch s {
	case "user":
		return RoleUser, nil
	case "moderator":
		return RoleModerator, nil
	case "admin":
		return RoleAdmin, nil
	}
	return 0, fmt.Errorf("auth: unknown role %q", s)
}

// String returns the stored name of r ("user", "moderator", "admin"), or
// "none" for the zero Role.
func (r Role) String() string {
	switch r {
	case 0:
		return "none"
	case RoleUser:
		return "user"
	case RoleModerator:
		return "moderator"
	case RoleAdmin:
		return "admin"
	}
	return fmt.Sprintf("Role(%d)", int8(r))
}

// RoleFromProto converts a chat.v1 role; unspecified or unknown values give
// the zero Role.
func RoleFromProto(p chatv1.Role) Role {
	switch p {
	case chatv1.Role_ROLE_USER:
		return RoleUser
	case chatv1.Role_ROLE_MODERATOR:
		return RoleModerator
	case chatv1.Role_ROLE_ADMIN:
		return RoleAdmin
	}
	return 0
}

// Proto converts r to chat.v1; the zero or an unknown Role gives
// ROLE_UNSPECIFIED.
func (r Role) Proto() chatv1.Role {
	switch r {
	case RoleUser:
		return chatv1.Role_ROLE_USER
	case RoleModerator:
		return chatv1.Role_ROLE_MODERATOR
	case RoleAdmin:
		return chatv1.Role_ROLE_ADMIN
	}
	return chatv1.Role_ROLE_UNSPECIFIED
}

// AtLeast reports whether r grants min. The zero Role and values outside
// the known range grant nothing, not even AtLeast(0), so that a Principal
// built without a role fails closed.
func (r Role) AtLeast(min Role) bool {
	return r >= RoleUser && r <= RoleAdmin && r >= min
}
