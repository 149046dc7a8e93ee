-- 0005 (MariaDB): no automatic statistics on the queue tables.  Their rows
-- come and go at the message rate (a delivery row per device, a receipt per
-- report), so InnoDB's "recalculate after 10% of rows changed" fires over
-- and over and re-samples the indexes in the background: ~15% of mariadbd's
-- CPU under reliable load (measured).  Their indexes are used by exact key
-- lookups and ranges only, where the plan does not depend on the statistics.
ALTER TABLE deliveries STATS_AUTO_RECALC = 0;
ALTER TABLE receipts STATS_AUTO_RECALC = 0;
ALTER TABLE group_status STATS_AUTO_RECALC = 0;
