-- 0001: the initial schema, the PostgreSQL twin of the sqlite store's.
--
-- Times are bigint Unix nanoseconds (UTC), 0 meaning "never" / the zero
-- time, as in the sqlite store: timestamptz keeps only microseconds, and
-- the store must hand back exactly the time it was given.
--
-- Key-like text columns use the "C" collation so that they compare and
-- sort byte by byte whatever the database's default collation is (the
-- sqlite store's BINARY order), and so that their btree comparisons are
-- cheap.

CREATE TABLE users (
	username      text COLLATE "C" PRIMARY KEY,
	password_hash text NOT NULL,
	role          text NOT NULL CHECK (role IN ('user', 'moderator', 'admin')),
	active        boolean NOT NULL,
	created_at    bigint NOT NULL,
	last_seen_at  bigint NOT NULL DEFAULT 0
);

-- Only hashes of refresh tokens are stored. Revoked tokens stay until they
-- expire so that reuse of a rotated token can be told from garbage.
CREATE TABLE refresh_tokens (
	hash       text COLLATE "C" PRIMARY KEY,
	username   text COLLATE "C" NOT NULL REFERENCES users (username) ON DELETE CASCADE,
	expires_at bigint NOT NULL,
	revoked_at bigint NOT NULL DEFAULT 0,
	created_at bigint NOT NULL
);
CREATE INDEX refresh_tokens_username ON refresh_tokens (username);    -- the foreign key's cascade
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at); -- DeleteExpiredRefreshTokens

-- The per-conversation sequence counter. It is bumped in the same
-- transaction as the message insert, under the row's lock (which
-- serialises writers in every process sharing the database), and never
-- decreases, not even when retention deletes messages, so a seq is never
-- reused.
CREATE TABLE conversations (
	key      text COLLATE "C" PRIMARY KEY,
	last_seq bigint NOT NULL
);

CREATE TABLE messages (
	conversation  text COLLATE "C" NOT NULL,
	seq           bigint NOT NULL,
	id            text COLLATE "C" NOT NULL UNIQUE,
	sender        text COLLATE "C" NOT NULL,
	recipient     text COLLATE "C" NOT NULL DEFAULT '',  -- '' for room messages
	client_msg_id text COLLATE "C",                      -- NULL when the client sent none
	text          text NOT NULL DEFAULT '',              -- '' when text_sealed is set
	text_sealed   bytea,                                 -- sealer.Seal(text) when a key is configured
	file_id       text COLLATE "C",                      -- NULL unless a file message
	file_name     text NOT NULL DEFAULT '',
	file_size     bigint NOT NULL DEFAULT 0,
	file_type     text NOT NULL DEFAULT '',
	sent_at       bigint NOT NULL,
	PRIMARY KEY (conversation, seq)                      -- History, and the append's uniqueness backstop
);
CREATE UNIQUE INDEX messages_dedup ON messages (sender, client_msg_id) WHERE client_msg_id IS NOT NULL;
CREATE INDEX messages_direct ON messages (recipient, sent_at, id) WHERE recipient <> '';
CREATE INDEX messages_sent_at ON messages (sent_at);
CREATE INDEX messages_file ON messages (file_id, conversation) WHERE file_id IS NOT NULL;

CREATE TABLE memberships (
	username   text COLLATE "C" NOT NULL REFERENCES users (username) ON DELETE CASCADE,
	room       text COLLATE "C" NOT NULL,
	created_at bigint NOT NULL,
	PRIMARY KEY (username, room)
);

CREATE TABLE files (
	id           text COLLATE "C" PRIMARY KEY,
	name         text NOT NULL,
	size         bigint NOT NULL,
	content_type text NOT NULL,
	uploader     text COLLATE "C" NOT NULL,   -- the first uploader
	created_at   bigint NOT NULL
);

-- Everyone who uploaded the same content: each may share it.
CREATE TABLE file_uploaders (
	file_id    text COLLATE "C" NOT NULL REFERENCES files (id) ON DELETE CASCADE,
	username   text COLLATE "C" NOT NULL,
	created_at bigint NOT NULL,
	PRIMARY KEY (file_id, username)
);
