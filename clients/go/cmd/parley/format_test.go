package main

import (
	"strings"
	"testing"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// TestFormatRoomMembersChanged: a batch names who joined and left with the
// room once; names_omitted shows only the count.
func TestFormatRoomMembersChanged(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		ev   *chatv1.RoomMembersChanged
		want string
	}{
		{&chatv1.RoomMembersChanged{Room: "lobby", Joined: []string{"alice", "bob"}, Left: []string{"carol"}, MemberCount: 12}, "* alice, bob joined #lobby; carol left (12 members)"},
		{&chatv1.RoomMembersChanged{Room: "lobby", Left: []string{"carol", "dave"}, MemberCount: 3}, "* carol, dave left #lobby (3 members)"},
		{&chatv1.RoomMembersChanged{Room: "lobby", MemberCount: 1234, NamesOmitted: true}, "* #lobby: 1234 members"},
	} {
		lines := formatEvent("me", &chatv1.ServerEvent{Event: &chatv1.ServerEvent_RoomMembersChanged{RoomMembersChanged: tt.ev}})
		if len(lines) != 1 || !strings.HasSuffix(lines[0], tt.want) {
			t.Errorf("formatEvent(%v) = %q, want a line ending %q", tt.ev, lines, tt.want)
		}
	}
}
