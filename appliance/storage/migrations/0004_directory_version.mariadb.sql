-- 0004 (MariaDB): see 0004_directory_version.sql.
CREATE TABLE IF NOT EXISTS directory_version (
  id INT NOT NULL PRIMARY KEY,
  version BIGINT NOT NULL
) ENGINE=InnoDB;
INSERT IGNORE INTO directory_version VALUES (1, 0);
