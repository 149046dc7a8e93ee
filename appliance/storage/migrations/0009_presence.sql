-- 0009: presence and blocking (issue 16, SPEC M6).  A user's last-seen time,
-- to the minute (written when its last device leaves, once a minute at most,
-- never per message or connect), and who may see its presence: 0 everyone,
-- 1 its contacts, 2 nobody.  Contacts are declared by the app's backend
-- (user_id lists contact_id); blocks by the user or the app (user_id blocks
-- blocked_id: no 1:1 message, no group message, no presence from it).  Both
-- link users of one app only.  Nothing else about presence is stored.
ALTER TABLE users ADD COLUMN last_seen_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN presence_privacy INTEGER NOT NULL DEFAULT 0;
CREATE TABLE contacts (
  user_id INTEGER NOT NULL,
  contact_id INTEGER NOT NULL,
  PRIMARY KEY (user_id, contact_id)
) WITHOUT ROWID;
CREATE INDEX contacts_contact ON contacts (contact_id);
CREATE TABLE blocks (
  user_id INTEGER NOT NULL,
  blocked_id INTEGER NOT NULL,
  created_ms INTEGER NOT NULL,
  PRIMARY KEY (user_id, blocked_id)
) WITHOUT ROWID;
CREATE INDEX blocks_blocked ON blocks (blocked_id);
