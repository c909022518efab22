package hub

import (
	"slices"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// Defaults of Config.OnlineSnapshotLimit and Config.PresenceNamesLimit.
const (
	defaultOnlineSnapshotLimit = 100
	defaultPresenceNamesLimit  = 1000
)

// onlineIndex is the sorted set of users online anywhere in the cluster (on
// this node or another). It makes a page of online users cost O(log N +
// page) instead of collecting and sorting everyone, which every connect did
// for its snapshot. An insert or delete moves at most N string headers,
// cheap at 10^4–10^5 users. Hub.mu guards it: written under the write lock
// only.
type onlineIndex struct {
	names []string
}

// add inserts name; it reports whether name was new.
func (x *onlineIndex) add(name string) bool {
	i, found := slices.BinarySearch(x.names, name)
	if found {
		return false
	}
	x.names = slices.Insert(x.names, i, name)
	return true
}

// remove deletes name; it reports whether name was there.
func (x *onlineIndex) remove(name string) bool {
	i, found := slices.BinarySearch(x.names, name)
	if !found {
		return false
	}
	x.names = slices.Delete(x.names, i, i+1)
	return true
}

func (x *onlineIndex) len() int { return len(x.names) }

// page returns up to limit names after after (all when after is empty),
// and whether more follow.
func (x *onlineIndex) page(after string, limit int) ([]string, bool) {
	i := 0
	if after != "" {
		var found bool
		if i, found = slices.BinarySearch(x.names, after); found {
			i++
		}
	}
	end := min(i+limit, len(x.names))
	return x.names[i:end], end < len(x.names)
}

// onlinePageLocked returns up to limit online users sorted by username,
// starting after the username after; next is the token for the next page
// (empty on the last), count the number of users online anywhere. h.mu is
// held.
func (h *Hub) onlinePageLocked(after string, limit int) (users []*chatv1.User, next string, count int) {
	names, more := h.online.page(after, limit)
	users = make([]*chatv1.User, len(names))
	var remoteRole func(string) chatv1.Role
	if h.cluster != nil {
		h.cluster.mu.Lock()
		defer h.cluster.mu.Unlock()
		remoteRole = h.cluster.roleLocked
	}
	for i, name := range names {
		u := &chatv1.User{Username: name}
		if us := h.users[name]; us != nil {
			u.Role = us.role
		} else if remoteRole != nil {
			u.Role = remoteRole(name)
		}
		users[i] = u
	}
	if more && len(names) > 0 {
		next = names[len(names)-1]
	}
	return users, next, h.online.len()
}

// OnlinePage lists up to limit online users (on any node) sorted by
// username, starting after the username after (from the start when empty).
// next, when not empty, is the after of the next page; count is the number
// of users online. A limit below 1 means Config.OnlineSnapshotLimit. It
// costs O(log N + limit) whatever the number N of users online.
func (h *Hub) OnlinePage(after string, limit int) (users []*chatv1.User, next string, count int) {
	if limit < 1 {
		limit = h.cfg.OnlineSnapshotLimit
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.onlinePageLocked(after, limit)
}
