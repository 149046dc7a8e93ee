-- 0010 (MariaDB): see 0010_groups.sql.  Re-runnable: every statement is.
UPDATE `groups` SET flags = flags | 1;
ALTER TABLE group_status ADD COLUMN IF NOT EXISTS ts_ms BIGINT NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS group_counts (
  seq BIGINT NOT NULL PRIMARY KEY,
  recipients INT NOT NULL,
  delivered_count INT NOT NULL DEFAULT 0,
  read_count INT NOT NULL DEFAULT 0
) ENGINE=InnoDB;
ALTER TABLE group_counts STATS_AUTO_RECALC = 0;
