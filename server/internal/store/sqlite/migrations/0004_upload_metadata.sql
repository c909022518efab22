-- 0004: each upload owns its metadata.
--
-- Until now a file's id was the SHA-256 of its content and uploads of the
-- same content shared one row, so a second uploader got back the first
-- one's name and content type. From now on every upload is a row of its
-- own with a random id; blob_id names the content in the blob store, which
-- uploads of the same content still share. A blob is in use while any row
-- names it (ExistingFiles). Existing rows keep their id, which is their
-- content hash, and file_uploaders keeps everyone who shared them.
ALTER TABLE files ADD COLUMN blob_id TEXT NOT NULL DEFAULT '';
UPDATE files SET blob_id = id;
CREATE INDEX files_blob ON files (blob_id);
