-- 0003: operator keys for managing apps over the REST API (SPEC M8: "apps
-- (with an operator key)").  Hashed like every other credential.
CREATE TABLE operator_keys (
  hash BLOB PRIMARY KEY,
  created_ms INTEGER NOT NULL
) WITHOUT ROWID;
