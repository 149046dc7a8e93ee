-- 0006 (MariaDB): see 0006_credential_changes.sql.
CREATE TABLE IF NOT EXISTS credential_changes (
  version BIGINT NOT NULL PRIMARY KEY,
  app_id BIGINT NOT NULL,
  user_id BIGINT NULL
) ENGINE=InnoDB;
