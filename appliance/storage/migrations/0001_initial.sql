-- 0001: apps, users, tokens, devices, groups, messages, deliveries, receipts.
-- Deliberately few secondary indexes: every index is one more B-tree write per
-- message on the hot path.  Message rows are retired oldest-seq first (seq and
-- accepted_ms grow together); receipts are deleted once every device of their
-- user confirmed them.
-- Message ids are stored as signed 64-bit integers (the unsigned wire value
-- minus 2**64 when >= 2**63); id 0 ("no status wanted") is stored as NULL so
-- that the (sender_id, msg_id) dedupe key (SPEC M4) never collides on it.
CREATE TABLE apps (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  created_ms INTEGER NOT NULL
);
INSERT INTO apps (id, name, created_ms) VALUES (1, 'default', 0);
CREATE TABLE users (
  id INTEGER PRIMARY KEY,
  app_id INTEGER NOT NULL REFERENCES apps(id),
  address BLOB NOT NULL,
  created_ms INTEGER NOT NULL,
  UNIQUE (app_id, address)
);
CREATE TABLE tokens (
  hash BLOB PRIMARY KEY,
  user_id INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL,
  created_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX tokens_user ON tokens (user_id);
CREATE TABLE devices (
  id INTEGER PRIMARY KEY,
  user_id INTEGER NOT NULL,
  device BLOB NOT NULL,
  last_seen_ms INTEGER NOT NULL,
  report_cursor INTEGER NOT NULL DEFAULT 0,
  UNIQUE (user_id, device)
);
CREATE TABLE groups (
  id INTEGER PRIMARY KEY,
  app_id INTEGER NOT NULL REFERENCES apps(id),
  name TEXT NOT NULL,
  flags INTEGER NOT NULL DEFAULT 0,
  created_ms INTEGER NOT NULL
);
CREATE TABLE members (
  group_id INTEGER NOT NULL,
  user_id INTEGER NOT NULL,
  perms INTEGER NOT NULL,
  PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;
CREATE INDEX members_user ON members (user_id);
CREATE TABLE messages (
  seq INTEGER PRIMARY KEY,
  sender_id INTEGER NOT NULL,
  msg_id INTEGER,
  dest_user INTEGER NOT NULL DEFAULT 0,
  dest_group INTEGER NOT NULL DEFAULT 0,
  refid INTEGER NOT NULL,
  accepted_ms INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL,
  type INTEGER NOT NULL,
  flags INTEGER NOT NULL,
  priority INTEGER NOT NULL,
  status INTEGER NOT NULL,
  payload BLOB NOT NULL,
  UNIQUE (sender_id, msg_id)
);
CREATE TABLE deliveries (
  device_id INTEGER NOT NULL,
  priority INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL,
  PRIMARY KEY (device_id, priority, seq)
) WITHOUT ROWID;
CREATE TABLE group_status (
  seq INTEGER NOT NULL,
  member_id INTEGER NOT NULL,
  status INTEGER NOT NULL,
  PRIMARY KEY (seq, member_id)
) WITHOUT ROWID;
CREATE TABLE receipts (
  user_id INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  msg_id INTEGER NOT NULL,
  status INTEGER NOT NULL,
  peer_id INTEGER NOT NULL,
  group_id INTEGER NOT NULL,
  ts_ms INTEGER NOT NULL,
  PRIMARY KEY (user_id, seq)
) WITHOUT ROWID;
