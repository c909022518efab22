package main

import (
	"fmt"
	"strings"
	"time"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// Lines start with the local time; "*" marks presence and room events, "!"
// server and admin notices.

func stamp(t time.Time) string { return t.Local().Format("15:04:05") }

func convName(c *chatv1.Conversation) string {
	if r := c.GetRoom(); r != "" {
		return "#" + r
	}
	return "@" + c.GetUser()
}

// peerName names m's conversation from me's side: "#room", or "@peer" for
// a direct message. A message's direct conversation names its recipient, so
// the peer is the sender unless me sent it. me == "" shows the recipient.
func peerName(me string, m *chatv1.Message) string {
	c := m.GetConversation()
	if c.GetRoom() == "" && c.GetUser() == me && me != "" {
		return "@" + m.GetSender()
	}
	return convName(c)
}

// formatMessage is one message line, its conversation named from me's side.
func formatMessage(me string, m *chatv1.Message) string {
	return formatMessageIn(peerName(me, m), m)
}

// formatMessageIn is one message line in the conversation called label.
func formatMessageIn(label string, m *chatv1.Message) string {
	return fmt.Sprintf("%s %s <%s> %s", stamp(m.GetSentAt().AsTime()), label, m.GetSender(), messageBody(m))
}

func messageBody(m *chatv1.Message) string {
	if f := m.GetFile(); f != nil {
		return fmt.Sprintf("[file %s, %s, id %s]", f.GetName(), humanSize(f.GetSize()), f.GetId())
	}
	return m.GetText()
}

// formatConversations lists conversations as ListConversations orders them
// (most recent first), each with its last message.
func formatConversations(convs []*chatv1.ConversationSummary) []string {
	if len(convs) == 0 {
		return []string{"no conversations"}
	}
	lines := []string{"conversations:"}
	for _, s := range convs {
		name := convName(s.GetConversation())
		last := "(no messages)"
		if m := s.GetLastMessage(); m != nil {
			last = fmt.Sprintf("%s <%s> %s", stamp(m.GetSentAt().AsTime()), m.GetSender(), messageBody(m))
		}
		lines = append(lines, fmt.Sprintf("  %-24s %s", name, last))
	}
	return lines
}

// formatRooms lists rooms with their member and online counts; "*" marks
// the caller's.
func formatRooms(rooms []*chatv1.RoomInfo) []string {
	lines := []string{"rooms:"}
	for _, room := range rooms {
		mark := " "
		if room.GetJoined() {
			mark = "*"
		}
		lines = append(lines, fmt.Sprintf("  %s #%s (%s)", mark, room.GetName(), roomCounts(room)))
	}
	return lines
}

// roomCounts is "3 members · 1 online".
func roomCounts(r *chatv1.RoomInfo) string {
	noun := "members"
	if r.GetMemberCount() == 1 {
		noun = "member"
	}
	return fmt.Sprintf("%d %s · %d online", r.GetMemberCount(), noun, r.GetOnlineCount())
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func roleName(r chatv1.Role) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "ROLE_"))
}

func usernames(us []*chatv1.User) string {
	names := make([]string, len(us))
	for i, u := range us {
		names[i] = u.GetUsername()
	}
	return strings.Join(names, ", ")
}

// formatEvent renders one server event as lines for the terminal; nil for
// events not worth showing.
func formatEvent(me string, ev *chatv1.ServerEvent) []string {
	now := stamp(time.Now())
	switch e := ev.GetEvent().(type) {
	case *chatv1.ServerEvent_Welcome:
		return []string{fmt.Sprintf("%s * connected as %s (%s)", now, e.Welcome.GetUser().GetUsername(), roleName(e.Welcome.GetUser().GetRole()))}
	case *chatv1.ServerEvent_OnlineUsers:
		line := fmt.Sprintf("%s * online: %s", now, usernames(e.OnlineUsers.GetUsers()))
		if more := int(e.OnlineUsers.GetOnlineCount()) - len(e.OnlineUsers.GetUsers()); e.OnlineUsers.GetNextPageToken() != "" && more > 0 {
			line += fmt.Sprintf(" and %d more (/who lists everyone)", more)
		}
		return []string{line}
	case *chatv1.ServerEvent_UserOnline:
		return []string{fmt.Sprintf("%s * %s is online (%d online)", now, e.UserOnline.GetUser().GetUsername(), e.UserOnline.GetOnlineCount())}
	case *chatv1.ServerEvent_UserOffline:
		return []string{fmt.Sprintf("%s * %s went offline (%d online)", now, e.UserOffline.GetUser().GetUsername(), e.UserOffline.GetOnlineCount())}
	case *chatv1.ServerEvent_PresenceChanged:
		if e.PresenceChanged.GetNamesOmitted() {
			return []string{fmt.Sprintf("%s * %d online", now, e.PresenceChanged.GetOnlineCount())}
		}
		var lines []string
		if on := e.PresenceChanged.GetOnline(); len(on) > 0 {
			lines = append(lines, fmt.Sprintf("%s * online now: %s (%d online)", now, usernames(on), e.PresenceChanged.GetOnlineCount()))
		}
		if off := e.PresenceChanged.GetOffline(); len(off) > 0 {
			lines = append(lines, fmt.Sprintf("%s * went offline: %s (%d online)", now, usernames(off), e.PresenceChanged.GetOnlineCount()))
		}
		return lines
	case *chatv1.ServerEvent_RecentMessages:
		var lines []string
		for _, m := range e.RecentMessages.GetMessages() {
			lines = append(lines, formatMessage(me, m))
		}
		return lines
	case *chatv1.ServerEvent_Message:
		return []string{formatMessage(me, e.Message)}
	case *chatv1.ServerEvent_MemberJoined:
		return []string{fmt.Sprintf("%s * %s joined #%s (%d members)", now, e.MemberJoined.GetUsername(), e.MemberJoined.GetRoom(), e.MemberJoined.GetMemberCount())}
	case *chatv1.ServerEvent_MemberLeft:
		return []string{fmt.Sprintf("%s * %s left #%s (%d members)", now, e.MemberLeft.GetUsername(), e.MemberLeft.GetRoom(), e.MemberLeft.GetMemberCount())}
	case *chatv1.ServerEvent_RoomMembersChanged:
		c := e.RoomMembersChanged
		if c.GetNamesOmitted() {
			return []string{fmt.Sprintf("%s * #%s: %d members", now, c.GetRoom(), c.GetMemberCount())}
		}
		var parts []string // the room is named once, in the first part
		if j := c.GetJoined(); len(j) > 0 {
			parts = append(parts, fmt.Sprintf("%s joined #%s", strings.Join(j, ", "), c.GetRoom()))
		}
		if l := c.GetLeft(); len(l) > 0 && len(parts) > 0 {
			parts = append(parts, strings.Join(l, ", ")+" left")
		} else if len(l) > 0 {
			parts = append(parts, fmt.Sprintf("%s left #%s", strings.Join(l, ", "), c.GetRoom()))
		}
		return []string{fmt.Sprintf("%s * %s (%d members)", now, strings.Join(parts, "; "), c.GetMemberCount())}
	case *chatv1.ServerEvent_Typing:
		if !e.Typing.GetTyping() {
			return nil
		}
		where := convName(e.Typing.GetConversation())
		if e.Typing.GetConversation().GetRoom() == "" {
			where = "a direct message"
		}
		return []string{fmt.Sprintf("%s * %s is typing in %s…", now, e.Typing.GetUsername(), where)}
	case *chatv1.ServerEvent_AdminBroadcast:
		to := "everyone"
		if r := e.AdminBroadcast.GetRoom(); r != "" {
			to = "#" + r
		}
		return []string{fmt.Sprintf("%s ! broadcast from %s to %s: %s", now, e.AdminBroadcast.GetFrom(), to, e.AdminBroadcast.GetText())}
	case *chatv1.ServerEvent_StateRestored:
		st := e.StateRestored
		var lines []string
		if len(st.GetRooms()) > 0 {
			lines = append(lines, fmt.Sprintf("%s * your rooms: #%s", now, strings.Join(st.GetRooms(), ", #")))
		}
		if st.GetMessagesReplayed() > 0 {
			lines = append(lines, fmt.Sprintf("%s * caught up on %d message(s)", now, st.GetMessagesReplayed()))
		}
		if !st.GetComplete() {
			lines = append(lines, fmt.Sprintf("%s * more was missed than replayed; see `parley history`", now))
		}
		return lines
	case *chatv1.ServerEvent_ServerNotice:
		return []string{fmt.Sprintf("%s ! server: %s", now, e.ServerNotice.GetMessage())}
	case *chatv1.ServerEvent_Error:
		return []string{fmt.Sprintf("%s ! error: %s", now, e.Error.GetMessage())}
	}
	return nil
}
