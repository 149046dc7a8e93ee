-- 0004: a counter that every administrative change raises, so that a server
-- knows its directory caches are stale when another process (the CLI)
-- changed users, tokens or groups.  SQLite also has PRAGMA data_version;
-- MariaDB has nothing like it.
CREATE TABLE directory_version (
  id INTEGER PRIMARY KEY,
  version INTEGER NOT NULL
);
INSERT INTO directory_version VALUES (1, 0);
