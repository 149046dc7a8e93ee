-- 0003 (MariaDB): operator keys, hashed (see 0003_operator_keys.sql).
CREATE TABLE IF NOT EXISTS operator_keys (
  hash VARBINARY(64) NOT NULL PRIMARY KEY,
  created_ms BIGINT NOT NULL
) ENGINE=InnoDB;
