-- 0001: the initial schema. Times are INTEGER Unix nanoseconds (UTC); 0
-- means "never" / the zero time. Tables are STRICT so a bad bind fails
-- instead of storing the wrong type.

CREATE TABLE users (
	username      TEXT PRIMARY KEY,
	password_hash TEXT NOT NULL,
	role          TEXT NOT NULL,
	active        INTEGER NOT NULL,
	created_at    INTEGER NOT NULL,
	last_seen_at  INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;

-- Only hashes of refresh tokens are stored. Revoked tokens stay until they
-- expire so that reuse of a rotated token can be told from garbage.
CREATE TABLE refresh_tokens (
	hash       TEXT PRIMARY KEY,
	username   TEXT NOT NULL REFERENCES users (username) ON DELETE CASCADE,
	expires_at INTEGER NOT NULL,
	revoked_at INTEGER NOT NULL DEFAULT 0,
	created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX refresh_tokens_username ON refresh_tokens (username);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);

-- The per-conversation sequence counter. It is bumped in the same
-- transaction as the message insert and never decreases, not even when
-- retention deletes messages, so a seq is never reused.
CREATE TABLE conversations (
	key      TEXT PRIMARY KEY,
	last_seq INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE messages (
	id            TEXT NOT NULL UNIQUE,
	conversation  TEXT NOT NULL,
	seq           INTEGER NOT NULL,
	sender        TEXT NOT NULL,
	recipient     TEXT NOT NULL DEFAULT '',    -- '' for room messages
	client_msg_id TEXT,                        -- NULL when the client sent none
	text          TEXT NOT NULL DEFAULT '',    -- '' when text_sealed is set
	text_sealed   BLOB,                        -- sealer.Seal(text) when a key is configured
	file_id       TEXT,                        -- NULL unless a file message
	file_name     TEXT NOT NULL DEFAULT '',
	file_size     INTEGER NOT NULL DEFAULT 0,
	file_type     TEXT NOT NULL DEFAULT '',
	sent_at       INTEGER NOT NULL,
	UNIQUE (conversation, seq)                 -- History, LastSeq paths
) STRICT;
CREATE UNIQUE INDEX messages_dedup ON messages (sender, client_msg_id) WHERE client_msg_id IS NOT NULL;
CREATE INDEX messages_direct ON messages (recipient, sent_at) WHERE recipient <> '';
CREATE INDEX messages_sent_at ON messages (sent_at);
CREATE INDEX messages_file ON messages (file_id, conversation) WHERE file_id IS NOT NULL;

CREATE TABLE memberships (
	username   TEXT NOT NULL REFERENCES users (username) ON DELETE CASCADE,
	room       TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	PRIMARY KEY (username, room)
) STRICT, WITHOUT ROWID;

CREATE TABLE files (
	id           TEXT PRIMARY KEY,
	name         TEXT NOT NULL,
	size         INTEGER NOT NULL,
	content_type TEXT NOT NULL,
	uploader     TEXT NOT NULL,             -- the first uploader
	created_at   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Everyone who uploaded the same content: each may share it.
CREATE TABLE file_uploaders (
	file_id    TEXT NOT NULL REFERENCES files (id) ON DELETE CASCADE,
	username   TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	PRIMARY KEY (file_id, username)
) STRICT, WITHOUT ROWID;
