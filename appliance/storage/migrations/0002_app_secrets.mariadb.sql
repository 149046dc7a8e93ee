-- 0002 (MariaDB): app secrets, hashed (see 0002_app_secrets.sql).
CREATE TABLE IF NOT EXISTS app_secrets (
  hash VARBINARY(64) NOT NULL PRIMARY KEY,
  app_id BIGINT NOT NULL,
  created_ms BIGINT NOT NULL,
  KEY app_secrets_app (app_id)
) ENGINE=InnoDB;
