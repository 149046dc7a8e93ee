-- 0006: a log of credential changes (issue 12, finding 5), so that a running
-- server learns within a second that another process (the CLI) revoked a
-- user's tokens, deleted or renamed a user, or replaced an app's secrets,
-- and closes the live sessions those credentials opened.  `version` is the
-- directory_version the change took, under that row's lock, so versions
-- follow commit order even when two processes change things at once.
-- `user_id` is NULL when the app's secrets changed.  Old rows are pruned by
-- the writer that adds new ones (appliance/storage/sql/credentials.py).
CREATE TABLE credential_changes (
  version INTEGER PRIMARY KEY,
  app_id INTEGER NOT NULL,
  user_id INTEGER
);
