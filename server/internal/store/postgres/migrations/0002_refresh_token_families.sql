-- 0002: refresh token families, for reuse detection; the twin of the
-- sqlite store's 0002.
--
-- family: the login a token descends from (see store.RefreshToken.Family).
-- Tokens issued before this migration each become a family of their own,
-- with a random id: which token was rotated into which was not recorded.
--
-- revoke_reason: why revoked_at was set. Only 'rotated' means the token was
-- spent by a rotation, so presenting it again is reuse; tokens revoked
-- before this migration keep '' (unknown) and are simply refused.
ALTER TABLE refresh_tokens ADD COLUMN family text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE refresh_tokens ADD COLUMN revoke_reason text NOT NULL DEFAULT ''
	CHECK (revoke_reason IN ('', 'rotated', 'logout', 'reuse'));
UPDATE refresh_tokens SET family = md5(hash || random()::text || clock_timestamp()::text);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family); -- RevokeRefreshTokenFamily, reuse
