-- 0009 (MariaDB): see 0009_presence.sql.  Each statement is re-runnable.
ALTER TABLE users ADD COLUMN IF NOT EXISTS last_seen_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN IF NOT EXISTS presence_privacy INT NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS contacts (
  user_id BIGINT NOT NULL,
  contact_id BIGINT NOT NULL,
  PRIMARY KEY (user_id, contact_id),
  KEY contacts_contact (contact_id)
) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS blocks (
  user_id BIGINT NOT NULL,
  blocked_id BIGINT NOT NULL,
  created_ms BIGINT NOT NULL,
  PRIMARY KEY (user_id, blocked_id),
  KEY blocks_blocked (blocked_id)
) ENGINE=InnoDB;
