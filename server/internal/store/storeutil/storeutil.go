// Package storeutil holds the logic the sqlite and postgres stores share,
// written once so the two cannot drift: message id generation, loading the
// embedded versioned migrations, the decisions of refresh-token rotation
// and reuse detection, preparing and sealing an appended message, opening
// sealed text, scanning message and user rows, history paging, the
// page-size limits and the time encoding. The SQL stays in each store;
// only what is not SQL lives here.
//
// Concurrency: the functions are safe for concurrent use. An IDGen is not
// (each store's single writer goroutine owns its one); Rotate runs on the
// transaction it is given, so it is as safe as that transaction.
package storeutil

import "time"

// Nanos encodes t as the stores keep times: Unix nanoseconds, with the zero
// time as 0 (time.Time{}.UnixNano() is not defined).
func Nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// FromNanos decodes Nanos, in UTC.
func FromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// Page-size limits both stores apply.
const (
	DefaultHistoryLimit       = 50
	MaxHistoryLimit           = 100
	MaxDirectLimit            = 1000
	DefaultConversationsLimit = 50
	MaxConversationsLimit     = 200
)

// HistoryLimit clamps a HistoryQuery.Limit to 1..MaxHistoryLimit; 0 means
// DefaultHistoryLimit.
func HistoryLimit(limit int) int {
	return clamp(limit, DefaultHistoryLimit, MaxHistoryLimit)
}

// ConversationsLimit clamps a ConversationsQuery.Limit to
// 1..MaxConversationsLimit; 0 means DefaultConversationsLimit.
func ConversationsLimit(limit int) int {
	return clamp(limit, DefaultConversationsLimit, MaxConversationsLimit)
}

// DirectLimit clamps a DirectMessagesSince limit: at most MaxDirectLimit,
// and 0 or less means MaxDirectLimit.
func DirectLimit(limit int) int {
	if limit <= 0 || limit > MaxDirectLimit {
		return MaxDirectLimit
	}
	return limit
}

func clamp(limit, def, most int) int {
	switch {
	case limit == 0:
		return def
	case limit < 1:
		return 1
	case limit > most:
		return most
	}
	return limit
}
