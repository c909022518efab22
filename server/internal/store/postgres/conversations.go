package postgres

import (
	"context"

	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/store/storeutil"
)

// Conversation list limits.
const (
	DefaultConversationsLimit = storeutil.DefaultConversationsLimit
	MaxConversationsLimit     = storeutil.MaxConversationsLimit
)

// nullMsgCols are msgCols of a message row that a LEFT JOIN may have left
// empty (NULL), as the zero values storeutil.ScanMessage expects.
const nullMsgCols = `coalesce(m.id, ''), coalesce(m.conversation, ''), coalesce(m.seq, 0), coalesce(m.sender, ''),
	coalesce(m.recipient, ''), coalesce(m.client_msg_id, ''), coalesce(m.text, ''), m.text_sealed,
	coalesce(m.file_id, ''), coalesce(m.file_name, ''), coalesce(m.file_size, 0), coalesce(m.file_type, ''),
	coalesce(m.sent_at, 0)`

// qConversations lists one page of $1's conversations: its stored rooms
// and the room $2 every user is in, and the direct conversations it is in,
// each with its counter and newest message.
//
// Every step is an index lookup per conversation of the user's, never a
// scan of messages: rooms by the memberships key (username, room); direct
// conversations where the user sorts first by a range of the
// conversations key ("d:user:..."); the newest message by the messages
// key (conversation, seq), read backwards once. Direct conversations where
// the user sorts second ("d:peer:user") have no index of their own: they
// are found in one pass over the direct keys of the conversations table,
// which holds one short row per pair of users that ever talked, not one
// per message. The keys are "C" collated, so ';' bounds a ':' prefix.
//
// $3 is false for the first page; otherwise the page starts after the
// position ($4 active nanos, $5 name, $6 key), in the order activity
// descending, name, key.
const qConversations = `
WITH rooms(key, name) AS (
	SELECT 'r:' || room, room FROM memberships WHERE username = $1
	UNION SELECT 'r:' || $2::text COLLATE "C", $2::text COLLATE "C" WHERE $2::text <> ''
),
mine(key, name, room, last_seq) AS (
	SELECT key, name, true, coalesce((SELECT last_seq FROM conversations c WHERE c.key = rooms.key), 0) FROM rooms
	UNION ALL SELECT key, substr(key, length($1) + 4), false, last_seq FROM conversations
		WHERE key > 'd:' || $1 || ':' AND key < 'd:' || $1 || ';'
	UNION ALL SELECT key, substr(key, 3, length(key) - length($1) - 3), false, last_seq FROM conversations
		WHERE key > 'd:' AND key < 'd;' AND right(key, length($1) + 1) = ':' || $1
		AND NOT (key > 'd:' || $1 || ':' AND key < 'd:' || $1 || ';')
),
listed AS (
	SELECT t.key, t.name, t.room, t.last_seq, m.id IS NOT NULL AS has,
		coalesce(m.sent_at, 0) AS active, ` + nullMsgCols + `
	FROM mine t
	LEFT JOIN LATERAL (SELECT * FROM messages WHERE conversation = t.key ORDER BY seq DESC LIMIT 1) m ON true
)
SELECT * FROM listed
WHERE NOT $3 OR active < $4 OR (active = $4 AND (name > $5 OR (name = $5 AND key > $6)))
ORDER BY active DESC, name, key
LIMIT $7`

// ListConversations returns one page of the conversations username is in:
// its stored rooms, the room everyone is in (everyone, e.g. "general";
// empty for none), and every direct conversation with a message ever
// posted, most recently active first (see store.ConversationPos), and
// whether more follow. Limit is clamped to 1..MaxConversationsLimit; 0
// means DefaultConversationsLimit.
func (s *Store) ListConversations(ctx context.Context, username, everyone string, q store.ConversationsQuery) ([]store.ConversationSummary, bool, error) {
	if err := s.check(ctx); err != nil {
		return nil, false, err
	}
	limit := storeutil.ConversationsLimit(q.Limit)
	var pos store.ConversationPos
	if q.After != nil {
		pos = *q.After
	}
	rows, err := s.db.Query(ctx, qConversations, username, everyone, q.After != nil, nanos(pos.Active), pos.Name, pos.Key, limit+1)
	if err != nil {
		return nil, false, s.mapErr(err)
	}
	defer rows.Close()
	var out []store.ConversationSummary
	for rows.Next() {
		var c store.ConversationSummary
		var has bool
		var active int64
		var m store.Message
		var sealed []byte
		var sent int64
		if err := rows.Scan(&c.Key, &c.Name, &c.Room, &c.LastSeq, &has, &active,
			&m.ID, &m.Conversation, &m.Seq, &m.Sender, &m.Recipient, &m.ClientMsgID, &m.Text, &sealed,
			&m.FileID, &m.FileName, &m.FileSize, &m.FileType, &sent); err != nil {
			return nil, false, s.mapErr(err)
		}
		if has {
			m.SentAt = fromNanos(sent)
			if m.Text, err = s.openText(m.Text, sealed); err != nil {
				return nil, false, err
			}
			c.LastMessage = &m
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, false, s.mapErr(err)
	}
	more := len(out) > limit
	if more {
		out = out[:limit]
	}
	return out, more, nil
}
