package hub

import (
	"sort"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	clusterv1 "github.com/parleychat/parley/proto/gen/go/cluster/v1"
)

// memberKey is one user in one room: room member changes are gathered
// (Hub.members) by it.
//
// Room member changes are gathered (Hub.members) per window, this node's
// changes by room and user, as presence is: a member joins or leaves
// a room when it comes online or goes offline too, so a connect storm
// through 1,000-member rooms would otherwise cost each member one event per
// arrival. A lone change in a room goes out as MemberJoined/MemberLeft (not
// to the user itself); several go out as one RoomMembersChanged to the
// room's members. Above Config.PresenceNamesLimit members, the room's
// changes go out as one RoomMembersChanged carrying only the count
// (names_omitted). The window is Config.PresenceWindow.
//
// Each node gathers the changes of its own users and publishes the frame
// to the room, as it does any room event; the other nodes route it to
// their members. The membership itself (the cluster's "join" and "leave"
// envelopes) still travels at once, since routing and IsMember depend on
// it.
type memberKey struct{ room, user string }

// noteMember records that name joined or left room r; h.mu is held. Within
// a window the last change of a user wins: a join and a leave do not cancel
// out, since a session that joined the room in between has listed the user
// in its RoomJoined and must hear of the departure. Applied to any member
// list taken during the window, the window's last changes give the list as
// it stood at the end of the window. The price is order: a member's first
// messages can reach the room before the event announcing its join, as a
// new user's can before its presence; routing checks membership, not the
// events, so nothing is delivered that should not be.
func (h *Hub) noteMember(r, name string, joined bool) {
	if h.cfg.PresenceWindow < 0 {
		h.emitMembersLocked(r, map[string]bool{name: joined})
		return
	}
	h.members.add(memberKey{r, name}, joined, h.cfg.PresenceWindow, h.flushMembers)
}

// flushMembers sends the window's changes, one event per room.
func (h *Hub) flushMembers() {
	pending := h.members.take()
	if len(pending) == 0 {
		return
	}
	rooms := map[string]map[string]bool{}
	for k, joined := range pending {
		if rooms[k.room] == nil {
			rooms[k.room] = map[string]bool{}
		}
		rooms[k.room][k.user] = joined
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	for r, changes := range rooms {
		h.emitMembersLocked(r, changes)
	}
}

// emitMembersLocked sends room r's changes to its members on every node;
// h.mu is held. member_count is the count now, which a batch's changes are
// all included in.
func (h *Hub) emitMembersLocked(r string, changes map[string]bool) {
	count := h.roomCountLocked(r)
	var ev *chatv1.ServerEvent
	skip := ""
	switch limit := h.cfg.PresenceNamesLimit; {
	case limit >= 0 && count > limit:
		ev = &chatv1.ServerEvent{Event: &chatv1.ServerEvent_RoomMembersChanged{RoomMembersChanged: &chatv1.RoomMembersChanged{
			Room: r, MemberCount: int32(count), NamesOmitted: true,
		}}}
	case len(changes) == 1:
		for name, joined := range changes {
			ev = memberEvent(r, name, joined, count)
			skip = name
		}
	default:
		batch := &chatv1.RoomMembersChanged{Room: r, MemberCount: int32(count)}
		for name, joined := range changes {
			if joined {
				batch.Joined = append(batch.Joined, name)
			} else {
				batch.Left = append(batch.Left, name)
			}
		}
		sort.Strings(batch.Joined)
		sort.Strings(batch.Left)
		ev = &chatv1.ServerEvent{Event: &chatv1.ServerEvent_RoomMembersChanged{RoomMembersChanged: batch}}
	}
	f := Encode(ev)
	h.toRoomLocked(r, f, skip)
	h.toRoomSubject(r, &clusterv1.Envelope{Kind: clusterv1.Kind_KIND_ROOM, Room: r, Frame: f.Data, Skip: skip})
}

func memberEvent(r, name string, joined bool, count int) *chatv1.ServerEvent {
	if joined {
		return &chatv1.ServerEvent{Event: &chatv1.ServerEvent_MemberJoined{MemberJoined: &chatv1.MemberJoined{Room: r, Username: name, MemberCount: int32(count)}}}
	}
	return &chatv1.ServerEvent{Event: &chatv1.ServerEvent_MemberLeft{MemberLeft: &chatv1.MemberLeft{Room: r, Username: name, MemberCount: int32(count)}}}
}
