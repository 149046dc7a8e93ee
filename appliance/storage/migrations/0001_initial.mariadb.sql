-- 0001 (MariaDB): the same tables as 0001_initial.sql, in InnoDB.
-- MariaDB commits every DDL statement implicitly, so each statement is
-- re-runnable (IF NOT EXISTS, INSERT IGNORE): a migration interrupted
-- half-way is simply run again.  Addresses and device ids are at most 64
-- bytes (the engine refuses longer ones); payloads up to 16 MiB.
-- Message ids are stored as signed 64-bit integers (see 0001_initial.sql).
CREATE TABLE IF NOT EXISTS apps (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(255) NOT NULL UNIQUE,
  created_ms BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
INSERT IGNORE INTO apps (id, name, created_ms) VALUES (1, 'default', 0);
CREATE TABLE IF NOT EXISTS users (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  app_id BIGINT NOT NULL,
  address VARBINARY(64) NOT NULL,
  created_ms BIGINT NOT NULL,
  UNIQUE KEY users_address (app_id, address)
) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS tokens (
  hash VARBINARY(64) NOT NULL PRIMARY KEY,
  user_id BIGINT NOT NULL,
  expires_ms BIGINT NOT NULL,
  created_ms BIGINT NOT NULL,
  KEY tokens_user (user_id)
) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS devices (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  user_id BIGINT NOT NULL,
  device VARBINARY(64) NOT NULL,
  last_seen_ms BIGINT NOT NULL,
  report_cursor BIGINT NOT NULL DEFAULT 0,
  UNIQUE KEY devices_user (user_id, device)
) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS `groups` (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  app_id BIGINT NOT NULL,
  name VARCHAR(255) NOT NULL,
  flags INT NOT NULL DEFAULT 0,
  created_ms BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS members (
  group_id BIGINT NOT NULL,
  user_id BIGINT NOT NULL,
  perms INT NOT NULL,
  PRIMARY KEY (group_id, user_id),
  KEY members_user (user_id)
) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS messages (
  seq BIGINT NOT NULL PRIMARY KEY,
  sender_id BIGINT NOT NULL,
  msg_id BIGINT NULL,
  dest_user BIGINT NOT NULL DEFAULT 0,
  dest_group BIGINT NOT NULL DEFAULT 0,
  refid BIGINT NOT NULL,
  accepted_ms BIGINT NOT NULL,
  expires_ms BIGINT NOT NULL,
  type INT NOT NULL,
  flags INT NOT NULL,
  priority INT NOT NULL,
  status INT NOT NULL,
  payload MEDIUMBLOB NOT NULL,
  UNIQUE KEY messages_dedupe (sender_id, msg_id)
) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS deliveries (
  device_id BIGINT NOT NULL,
  priority INT NOT NULL,
  seq BIGINT NOT NULL,
  expires_ms BIGINT NOT NULL,
  PRIMARY KEY (device_id, priority, seq),
  KEY deliveries_expiry (expires_ms)
) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS group_status (
  seq BIGINT NOT NULL,
  member_id BIGINT NOT NULL,
  status INT NOT NULL,
  PRIMARY KEY (seq, member_id)
) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS receipts (
  user_id BIGINT NOT NULL,
  seq BIGINT NOT NULL,
  msg_id BIGINT NOT NULL,
  status INT NOT NULL,
  peer_id BIGINT NOT NULL,
  group_id BIGINT NOT NULL,
  ts_ms BIGINT NOT NULL,
  PRIMARY KEY (user_id, seq)
) ENGINE=InnoDB;
