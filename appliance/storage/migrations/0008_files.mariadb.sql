-- 0008 (MariaDB): see 0008_files.sql.  File ids are 26 lowercase base32
-- characters (ASCII, compared byte for byte); content types at most 127
-- characters, names at most 255 UTF-8 bytes (checked before the insert);
-- hashes 32 bytes.
CREATE TABLE IF NOT EXISTS files (
  id CHAR(26) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
  app_id BIGINT NOT NULL,
  owner_id BIGINT NOT NULL,
  size BIGINT NOT NULL,
  received BIGINT NOT NULL,
  sha256 BINARY(32) NULL,
  content_type VARCHAR(127) NOT NULL,
  name VARCHAR(255) NOT NULL,
  width INT NOT NULL,
  height INT NOT NULL,
  created_ms BIGINT NOT NULL,
  expires_ms BIGINT NULL,
  KEY files_app (app_id, size),
  KEY files_expiry (expires_ms),
  KEY files_owner (owner_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS file_grants (
  file_id CHAR(26) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  user_id BIGINT NOT NULL,
  group_id BIGINT NOT NULL,
  expires_ms BIGINT NOT NULL,
  PRIMARY KEY (file_id, user_id, group_id),
  KEY file_grants_user (user_id),
  KEY file_grants_group (group_id)
) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS file_variants (
  file_id CHAR(26) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  variant VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  sha256 BINARY(32) NOT NULL,
  size BIGINT NOT NULL,
  content_type VARCHAR(127) NOT NULL,
  width INT NOT NULL,
  height INT NOT NULL,
  PRIMARY KEY (file_id, variant)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS blobs (
  sha256 BINARY(32) NOT NULL PRIMARY KEY,
  size BIGINT NOT NULL,
  refs BIGINT NOT NULL,
  unreferenced_since_ms BIGINT NULL,
  KEY blobs_unreferenced (unreferenced_since_ms)
) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS pictures (
  app_id BIGINT NOT NULL,
  kind VARCHAR(8) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  owner_id BIGINT NOT NULL,
  file_id CHAR(26) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  PRIMARY KEY (app_id, kind, owner_id)
) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS media_keys (
  name VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
  secret VARBINARY(64) NOT NULL,
  created_ms BIGINT NOT NULL
) ENGINE=InnoDB;
