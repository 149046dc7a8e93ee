-- 0008: files, images and pictures (issue 15).
-- `files`: one row per file of an app, from the first byte of its upload;
-- `sha256` is set when the upload completes and names its blob.  `size` is
-- the declared length (final once complete): the app's quota sums it
-- (index files_app covers the sum).  `expires_ms` NULL: kept (a picture);
-- files_expiry finds what the sweep removes.
-- `file_grants`: who else may read a file until when: a user (group_id 0) or
-- the receiving members of a group (user_id 0), granted by a FILE message.
-- `file_variants`: thumbnails and picture sizes, each in a blob of its own.
-- `blobs`: content-addressed bytes on disk (media/blobs/ab/cd/<hex>), counted:
-- a file and each variant hold one reference; a blob with none since
-- `unreferenced_since_ms` is deleted by the sweep after a grace period.
-- `pictures`: the profile picture of a user, the picture of a group.
-- `media_keys`: the key that signs download links, shared by every node.
-- Ids of users and groups are not foreign keys (the schema has none): deleting
-- a user or a group deletes its grants and pictures explicitly.
CREATE TABLE files (
  id TEXT NOT NULL PRIMARY KEY,
  app_id INTEGER NOT NULL,
  owner_id INTEGER NOT NULL,
  size INTEGER NOT NULL,
  received INTEGER NOT NULL,
  sha256 BLOB,
  content_type TEXT NOT NULL,
  name TEXT NOT NULL,
  width INTEGER NOT NULL,
  height INTEGER NOT NULL,
  created_ms INTEGER NOT NULL,
  expires_ms INTEGER
) WITHOUT ROWID;
CREATE INDEX files_app ON files (app_id, size);
CREATE INDEX files_expiry ON files (expires_ms);
CREATE INDEX files_owner ON files (owner_id);
CREATE TABLE file_grants (
  file_id TEXT NOT NULL,
  user_id INTEGER NOT NULL,
  group_id INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL,
  PRIMARY KEY (file_id, user_id, group_id)
) WITHOUT ROWID;
CREATE INDEX file_grants_user ON file_grants (user_id);
CREATE INDEX file_grants_group ON file_grants (group_id);
CREATE TABLE file_variants (
  file_id TEXT NOT NULL,
  variant TEXT NOT NULL,
  sha256 BLOB NOT NULL,
  size INTEGER NOT NULL,
  content_type TEXT NOT NULL,
  width INTEGER NOT NULL,
  height INTEGER NOT NULL,
  PRIMARY KEY (file_id, variant)
) WITHOUT ROWID;
CREATE TABLE blobs (
  sha256 BLOB NOT NULL PRIMARY KEY,
  size INTEGER NOT NULL,
  refs INTEGER NOT NULL,
  unreferenced_since_ms INTEGER
) WITHOUT ROWID;
CREATE INDEX blobs_unreferenced ON blobs (unreferenced_since_ms);
CREATE TABLE pictures (
  app_id INTEGER NOT NULL,
  kind TEXT NOT NULL,
  owner_id INTEGER NOT NULL,
  file_id TEXT NOT NULL,
  PRIMARY KEY (app_id, kind, owner_id)
) WITHOUT ROWID;
CREATE TABLE media_keys (
  name TEXT NOT NULL PRIMARY KEY,
  secret BLOB NOT NULL,
  created_ms INTEGER NOT NULL
) WITHOUT ROWID;
