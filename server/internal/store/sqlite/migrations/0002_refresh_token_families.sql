-- 0002: refresh token families, for reuse detection.
--
-- family: the login a token descends from (see store.RefreshToken.Family).
-- Tokens issued before this migration each become a family of their own,
-- with a random id: which token was rotated into which was not recorded.
--
-- revoke_reason: why revoked_at was set. Only 'rotated' means the token was
-- spent by a rotation, so presenting it again is reuse; tokens revoked
-- before this migration keep '' (unknown) and are simply refused.
ALTER TABLE refresh_tokens ADD COLUMN family TEXT NOT NULL DEFAULT '';
ALTER TABLE refresh_tokens ADD COLUMN revoke_reason TEXT NOT NULL DEFAULT ''
	CHECK (revoke_reason IN ('', 'rotated', 'logout', 'reuse'));
UPDATE refresh_tokens SET family = lower(hex(randomblob(16)));
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
