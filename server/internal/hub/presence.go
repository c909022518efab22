package hub

import (
	"sort"
	"time"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// defaultPresenceWindow is how long presence changes are gathered before
// they go out. Announcing every arrival to every session costs O(N²)
// events while N users connect; gathered, it costs one event per session
// per window.
const defaultPresenceWindow = 100 * time.Millisecond

// presenceChange is a user's last online or offline change in a window.
//
// Presence is gathered (Hub.presence) per window, cluster-wide online and
// offline changes by username. A lone change goes out as
// UserOnline/UserOffline (not to the user itself); several go out as one
// PresenceChanged to everyone. Above Config.PresenceNamesLimit users
// online, the window's changes go out as one PresenceChanged carrying only
// the count (names_omitted).
type presenceChange struct {
	online bool
	role   chatv1.Role
}

// notePresence records that name came online or went offline; h.mu is
// held. Within a window the last change wins: an arrival and a departure
// do not cancel out, since a session that attached in between has seen the
// arrival in its OnlineUsers snapshot and must hear of the departure.
func (h *Hub) notePresence(name string, role chatv1.Role, online bool) {
	if h.cfg.PresenceWindow < 0 {
		h.emitPresenceLocked(map[string]presenceChange{name: {online: online, role: role}})
		return
	}
	window := h.cfg.PresenceWindow
	if h.namesOmittedLocked() {
		window = max(window, countOnlyWindow)
	}
	h.presence.add(name, presenceChange{online: online, role: role}, window, h.flushPresence)
}

// countOnlyWindow is the least window once presence goes out as a count
// only: with thousands online the count is all a client shows, and each
// window costs one frame per session (10,000 writes).
const countOnlyWindow = time.Second

// flushPresence sends the window's changes.
func (h *Hub) flushPresence() {
	changes := h.presence.take()
	if len(changes) == 0 {
		return
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	h.emitPresenceLocked(changes)
}

// emitPresenceLocked sends changes to this node's sessions; h.mu is held.
// Above Config.PresenceNamesLimit users online it sends only the count,
// whatever the number of changes.
func (h *Hub) emitPresenceLocked(changes map[string]presenceChange) {
	count := int32(h.onlineCountLocked())
	if h.namesOmittedLocked() {
		h.toAllLocked(Encode(&chatv1.ServerEvent{Event: &chatv1.ServerEvent_PresenceChanged{PresenceChanged: &chatv1.PresenceChanged{
			OnlineCount: count, NamesOmitted: true,
		}}}), "")
		return
	}
	if len(changes) == 1 {
		for name, c := range changes {
			u := &chatv1.User{Username: name, Role: c.role}
			ev := &chatv1.ServerEvent{Event: &chatv1.ServerEvent_UserOnline{UserOnline: &chatv1.UserOnline{User: u, OnlineCount: count}}}
			if !c.online {
				ev = &chatv1.ServerEvent{Event: &chatv1.ServerEvent_UserOffline{UserOffline: &chatv1.UserOffline{User: u, OnlineCount: count}}}
			}
			h.toAllLocked(Encode(ev), name)
		}
		return
	}
	batch := &chatv1.PresenceChanged{OnlineCount: count}
	for name, c := range changes {
		u := &chatv1.User{Username: name, Role: c.role}
		if c.online {
			batch.Online = append(batch.Online, u)
		} else {
			batch.Offline = append(batch.Offline, u)
		}
	}
	sort.Slice(batch.Online, func(i, j int) bool { return batch.Online[i].Username < batch.Online[j].Username })
	sort.Slice(batch.Offline, func(i, j int) bool { return batch.Offline[i].Username < batch.Offline[j].Username })
	h.toAllLocked(Encode(&chatv1.ServerEvent{Event: &chatv1.ServerEvent_PresenceChanged{PresenceChanged: batch}}), "")
}

// namesOmittedLocked reports whether so many users are online that presence
// goes out as a count only (Config.PresenceNamesLimit); h.mu is held.
func (h *Hub) namesOmittedLocked() bool {
	limit := h.cfg.PresenceNamesLimit
	return limit >= 0 && h.onlineCountLocked() > limit
}
