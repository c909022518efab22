package storeutil

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/parleychat/parley/server/internal/sealer"
	"github.com/parleychat/parley/server/internal/store"
)

// ValidRole reports whether role is one of the store.Role constants.
func ValidRole(role string) bool {
	switch role {
	case store.RoleUser, store.RoleModerator, store.RoleAdmin:
		return true
	}
	return false
}

// PrepareAppend checks and normalises a message given to AppendMessage
// (the store assigns Seq; SentAt is kept in UTC) and, when k is enabled,
// seals its text. Stores call it on the caller's goroutine, so the cost of
// sealing spreads over callers instead of lengthening the writer's batch.
func PrepareAppend(m store.Message, k *sealer.Keyring) (store.Message, []byte, error) {
	if m.Conversation == "" || m.Sender == "" {
		return store.Message{}, nil, errors.New("message needs Conversation and Sender")
	}
	m.Seq = 0
	if !m.SentAt.IsZero() {
		m.SentAt = m.SentAt.UTC()
	}
	if !k.Enabled() {
		return m, nil, nil
	}
	sealed, err := k.Seal([]byte(m.Text))
	if err != nil {
		return store.Message{}, nil, err
	}
	return m, sealed, nil
}

// OpenText returns a message's text from its two columns: the plaintext
// one, and the sealed one (nil when the row was stored without a key).
func OpenText(k *sealer.Keyring, text string, sealed []byte) (string, error) {
	if sealed == nil {
		return text, nil // stored before a key was configured, or never sealed
	}
	if !k.Enabled() {
		return "", errors.New("message text is sealed and no key is configured")
	}
	plain, err := k.Open(sealed)
	if err != nil {
		return "", fmt.Errorf("open message text: %w", err)
	}
	return string(plain), nil
}

// Scanner is a row: database/sql's and pgx's both.
type Scanner interface{ Scan(dest ...any) error }

// ScanMessage reads a row of the stores' message columns, in this order:
// id, conversation, seq, sender, recipient, client_msg_id, text,
// text_sealed, file_id, file_name, file_size, file_type, sent_at. Text
// holds the plaintext column; sealed is the sealed text, if any, for
// OpenText.
func ScanMessage(row Scanner) (m store.Message, sealed []byte, err error) {
	var sent int64
	err = row.Scan(&m.ID, &m.Conversation, &m.Seq, &m.Sender, &m.Recipient, &m.ClientMsgID, &m.Text, &sealed,
		&m.FileID, &m.FileName, &m.FileSize, &m.FileType, &sent)
	m.SentAt = FromNanos(sent)
	return m, sealed, err
}

// History is the stores' History over their query: fetch returns at most
// n messages of the conversation with after < seq < before, oldest first
// when forward, newest first otherwise. History clamps the limit, asks for
// one row more to learn whether there is more, and returns the page
// oldest first (see the stores' History for what hasMore means).
func History(q store.HistoryQuery, fetch func(forward bool, after, before int64, n int) ([]store.Message, error)) ([]store.Message, bool, error) {
	limit := HistoryLimit(q.Limit)
	before := int64(math.MaxInt64)
	if q.BeforeSeq > 0 {
		before = q.BeforeSeq
	}
	forward := q.AfterSeq != nil
	var after int64
	if forward {
		after = max(*q.AfterSeq, 0)
	}
	msgs, err := fetch(forward, after, before, limit+1)
	if err != nil {
		return nil, false, err
	}
	msgs, more := Trim(msgs, limit)
	if !forward {
		slices.Reverse(msgs)
	}
	return msgs, more, nil
}

// Trim cuts a page fetched with one row more than limit down to limit,
// reporting whether there was more.
func Trim(msgs []store.Message, limit int) ([]store.Message, bool) {
	if len(msgs) > limit {
		return msgs[:limit], true
	}
	return msgs, false
}

// ScanUser reads a row of username, password_hash, role, active,
// created_at, last_seen_at.
func ScanUser(row Scanner) (store.User, error) {
	var u store.User
	var created, seen int64
	if err := row.Scan(&u.Username, &u.PasswordHash, &u.Role, &u.Active, &created, &seen); err != nil {
		return store.User{}, err
	}
	u.CreatedAt, u.LastSeenAt = FromNanos(created), FromNanos(seen)
	return u, nil
}
