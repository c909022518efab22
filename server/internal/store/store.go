// Package store defines the records Parley keeps and the errors its storage
// back ends return. The back ends live in sub-packages (sqlite is the
// default); the packages that use storage declare the small interfaces they
// need over these types.
package store

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"time"
)

var (
	// ErrNotFound is returned when a record does not exist (or, for refresh
	// tokens, is revoked or expired).
	ErrNotFound = errors.New("store: not found")
	// ErrExists is returned when creating a record whose key is taken.
	ErrExists = errors.New("store: already exists")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("store: closed")
	// ErrRefreshTokenReused is returned by RotateRefreshToken when the
	// token presented was already rotated (and has not expired): someone
	// replayed it, so the store has revoked every token of its family.
	// Refresh tokens are bearer secrets that a thief and the victim then
	// both hold; the store cannot tell which of them is replaying, so both
	// must log in again (OAuth 2.0 Security BCP, refresh token rotation).
	ErrRefreshTokenReused = errors.New("store: refresh token reused")
	// ErrUnavailable marks a failure of the storage itself rather than of
	// the request: the database is unreachable, shutting down, out of
	// disk, failing I/O, or did not answer within the call's deadline. The
	// same request may succeed later, so callers answer it as Unavailable
	// with a retry hint, never as a refusal. storefault.Classify wraps the
	// back ends' errors with it.
	ErrUnavailable = errors.New("store: unavailable")
)

// Roles as stored. They match the names of chat.v1.Role without the prefix,
// lower-cased.
const (
	RoleUser      = "user"
	RoleModerator = "moderator"
	RoleAdmin     = "admin"
)

// User is an account.
type User struct {
	Username     string
	PasswordHash string // argon2id or bcrypt, in its standard encoded form
	Role         string // RoleUser, RoleModerator or RoleAdmin
	Active       bool
	CreatedAt    time.Time
	// LastSeenAt is when the user's last session closed; zero if never.
	LastSeenAt time.Time
}

// UserChange is an admin's change to one user (a store's UpdateUser): the
// fields set are written, the others left as they are.
type UserChange struct {
	Active *bool  // nil leaves it
	Role   string // one of the Role constants; empty leaves it
}

// UserCheck approves a UserChange from the target's row as the change's
// own transaction read it. A non-nil error refuses the change, which
// UpdateUser then returns as it is. It runs inside the transaction: it
// must be quick and must not call the store.
type UserCheck func(target User) error

// RefreshToken is a stored refresh token. Only a hash of the token is kept.
type RefreshToken struct {
	Hash      string // hex SHA-256 of the opaque token
	Username  string
	ExpiresAt time.Time
	// Family identifies the login the token descends from: one login (or
	// registration) starts a family and every rotation passes it on, so a
	// family is one device's chain of tokens. CreateRefreshToken assigns a
	// new random family when it is empty; RotateRefreshToken ignores it on
	// the new token and uses the old token's.
	Family string
}

// NewRefreshFamily returns a new random refresh token family id (32 hex
// digits). Family ids are not secrets: they name a chain of tokens in
// logs and queries but authenticate nothing.
func NewRefreshFamily() string {
	b := make([]byte, 16)
	rand.Read(b) // never fails (see crypto/rand.Read)
	return hex.EncodeToString(b)
}

// Message is a stored chat message.
type Message struct {
	ID           string // assigned by the store when empty
	Conversation string // a RoomKey or DirectKey
	Seq          int64  // assigned by the store, per conversation, from 1
	Sender       string
	Recipient    string // for direct messages; empty for rooms
	ClientMsgID  string // sender-chosen dedup key; may be empty
	Text         string
	FileID       string // set for file messages
	FileName     string
	FileSize     int64
	FileType     string
	SentAt       time.Time // assigned by the store when zero
}

// HistoryQuery selects a page of a conversation. With neither BeforeSeq
// nor AfterSeq set it selects the latest Limit messages.
type HistoryQuery struct {
	BeforeSeq int64 // seq < BeforeSeq when > 0
	// AfterSeq, when not nil, reads forwards: seq > *AfterSeq, oldest
	// first. Presence is what matters: After(0) reads from the start of
	// the conversation, nil reads the latest page.
	AfterSeq *int64
	Limit    int
}

// After returns an AfterSeq that reads forwards from just after seq (from
// the start for 0).
func After(seq int64) *int64 { return &seq }

// RoomSummary is one room as ListRooms shows it.
type RoomSummary struct {
	Name string
	// Members counts the room's stored members (for the room every user is
	// in, every user), online or not.
	Members int
	// Joined is true when the asking user is a stored member.
	Joined bool
}

// ConversationSummary is one conversation a user is in, as
// ListConversations shows it.
type ConversationSummary struct {
	Key string // a RoomKey or DirectKey
	// Name is the room's name, or for a direct conversation the peer's
	// username (the user who is not the one asking).
	Name string
	Room bool
	// LastSeq is the conversation's newest sequence, 0 when nothing was
	// ever posted; retention does not lower it.
	LastSeq int64
	// LastMessage is the newest stored message; nil when there is none.
	LastMessage *Message
}

// ConversationPos is a place in a user's list of conversations, which is
// sorted by last activity (the newest message's SentAt) newest first,
// conversations without a message last, then by Name, then by Key. A page
// starts just after it.
type ConversationPos struct {
	Active time.Time // SentAt of the newest message; zero when there is none
	Name   string
	Key    string
}

// Pos is where s stands in the list (the After of the page that follows
// it).
func (s ConversationSummary) Pos() ConversationPos {
	p := ConversationPos{Name: s.Name, Key: s.Key}
	if s.LastMessage != nil {
		p.Active = s.LastMessage.SentAt
	}
	return p
}

// ConversationsQuery selects a page of a user's conversations.
type ConversationsQuery struct {
	// After, when set, starts the page just after that place; nil starts
	// at the most recently active conversation.
	After *ConversationPos
	// Limit is the page size; 0 means 50, at most 200 (the stores clamp it).
	Limit int
}

// File is one upload: its own metadata over shared content. Uploads of the
// same content are separate Files (each with its name, type and uploader)
// with the same BlobID, so one uploader's metadata never shows through
// another's upload; only the blob underneath is shared.
type File struct {
	// ID names the upload: 64 random lowercase hex digits (NewFileID), the
	// same form as a content hash, so it fits the contract's file_id
	// pattern. Files stored before uploads had their own ids have their
	// content hash as ID.
	ID string
	// BlobID is the hex SHA-256 of the plaintext content: the blob's id in
	// the blob store.
	BlobID      string
	Name        string
	Size        int64
	ContentType string
	Uploader    string
	CreatedAt   time.Time
}

// NewFileID returns a new random upload id (64 lowercase hex digits).
func NewFileID() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (see crypto/rand.Read)
	return hex.EncodeToString(b)
}

// RoomKey is the conversation key of a room.
func RoomKey(room string) string { return "r:" + room }

// DirectKey is the conversation key of the direct conversation between two
// users; it is the same whichever order they are given in.
func DirectKey(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return "d:" + a + ":" + b
}

// ParseKey splits a conversation key. For a room it returns the room name;
// for a direct conversation the two usernames in order.
func ParseKey(key string) (room string, a, b string, ok bool) {
	switch {
	case strings.HasPrefix(key, "r:"):
		return key[2:], "", "", len(key) > 2
	case strings.HasPrefix(key, "d:"):
		a, b, ok = strings.Cut(key[2:], ":")
		return "", a, b, ok && a != "" && b != ""
	}
	return "", "", "", false
}
