-- 0010: groups completed (issue 16).
-- `groups.flags` takes the group-level flags (protocol/wire/groups.py GroupFlag):
-- SEND_BY_SELECTED (1) is what every group did before, so existing groups get it.
-- `group_status` becomes each recipient's ledger of a group message: a row per
-- recipient (the members with RECEIVE when it was accepted, its sender
-- excluded) written at accept time with SENT (1) when the message asks for
-- receipts, raised to DELIVERED, READ or EXPIRED; `ts_ms` is when.  Rows of
-- earlier messages have ts_ms 0.
-- `group_counts` holds that message's aggregate: how many recipients, how many
-- of them delivered (or read) it and read it, so that DELIVERED_ALL and READ_ALL
-- are one comparison per report, never a count over the ledger.  One row per
-- group message with receipts; none for one-to-one messages.  Both go with
-- their message at retention (storage/sql/expiry.py).
UPDATE groups SET flags = flags | 1;
ALTER TABLE group_status ADD COLUMN ts_ms INTEGER NOT NULL DEFAULT 0;
CREATE TABLE group_counts (
  seq INTEGER PRIMARY KEY,
  recipients INTEGER NOT NULL,
  delivered_count INTEGER NOT NULL DEFAULT 0,
  read_count INTEGER NOT NULL DEFAULT 0
);
