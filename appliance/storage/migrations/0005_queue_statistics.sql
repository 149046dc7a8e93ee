-- 0005: nothing to do on SQLite (see 0005_queue_statistics.mariadb.sql); the
-- version exists on both backends so that their schema histories match.
SELECT 1;
