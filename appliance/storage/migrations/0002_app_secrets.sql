-- 0002: app secrets for the backend REST API (SPEC M8, M13).  Stored only as
-- SHA-256 hashes, like access tokens; an app may hold several (rotation).
CREATE TABLE app_secrets (
  hash BLOB PRIMARY KEY,
  app_id INTEGER NOT NULL,
  created_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX app_secrets_app ON app_secrets (app_id);
