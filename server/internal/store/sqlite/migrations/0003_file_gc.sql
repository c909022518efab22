-- 0003: file garbage collection.
--
-- touched_at: the last time the file was uploaded (by anyone: the same
-- content is one row) or posted in a message. A file that no message
-- references is deleted once touched_at is older than the grace period
-- (see DeleteUnusedFiles), so an upload survives until it is posted, and a
-- post in progress keeps the file it names. Existing rows take their last
-- upload.
ALTER TABLE files ADD COLUMN touched_at INTEGER NOT NULL DEFAULT 0;
UPDATE files SET touched_at = max(created_at,
	coalesce((SELECT max(created_at) FROM file_uploaders WHERE file_id = files.id), 0));
CREATE INDEX files_touched_at ON files (touched_at);
