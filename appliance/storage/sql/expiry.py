"""Expiry: delivery rows past their time become EXPIRED reports; old records go.

Runs inside the writer's sweep transaction (`Writer.sweep`).  A 1:1
message's status moves SENT -> EXPIRED only (a delivered or read message
stays as it is); a group message gets each member's EXPIRED once.
"""

from __future__ import annotations

from appliance.protocol.wire.constants import Flag, Status
from appliance.storage.models import Receipt
from appliance.storage.sql import aggregate
from appliance.storage.sql.bulk import message_sizes
from appliance.storage.sql.state import WriterState

#: Plain ints, not the enum members: they go into rows the drivers bind.
_SENT, _EXPIRED = int(Status.SENT), int(Status.EXPIRED)
_DELIVERY_RECEIPT = Flag.DELIVERY_RECEIPT
#: Delivery rows expired, and messages past retention removed, per sweep at most: one
#: sweep's transaction stays short (PROTOCOL.md §6.1 states the bound it gives clients).
SWEEP_LIMIT = 5000


def expire(s: WriterState, now_ms: int, retention_ms: int, limit: int, *, full: bool,
           out: list[Receipt]) -> None:
    """Expire up to `limit` delivery rows and drop up to `limit` messages past retention.

    `full`: also delete the receipts no device ever confirmed, past retention
    (a full scan, so the caller asks only now and then) and count the apps'
    usage again (another process may have deleted users).
    """
    conn = s.conn
    expired = conn.execute("SELECT device_id, priority, seq FROM deliveries"
                           " WHERE expires_ms <= ? LIMIT ?", (now_ms, limit)).fetchall()
    conn.executemany("DELETE FROM deliveries WHERE device_id = ? AND priority = ?"
                     " AND seq = ?", expired)
    for device, _, seq in expired:
        _expire_one(s, device, seq, now_ms, out)
    _unqueue(s, expired)
    # The dedupe window (SPEC M4) is the retention: a resend within it
    # is answered with the stored status, even after expiry.
    oldest = conn.execute("SELECT seq, accepted_ms FROM messages ORDER BY seq LIMIT ?",
                          (limit,)).fetchall()
    old = [(seq,) for seq, accepted in oldest if accepted <= now_ms - retention_ms]
    conn.executemany("DELETE FROM messages WHERE seq = ?", old)
    aggregate.forget(s, old)
    s.flush_receipts()
    aggregate.flush_counts(s)
    if full:
        conn.execute("DELETE FROM receipts WHERE ts_ms <= ?", (now_ms - retention_ms,))
        s.usage.forget_apps()


def _unqueue(s: WriterState, rows: list[tuple[int, int, int]]) -> None:
    """Take expired delivery rows (device, priority, seq) off the queue usage.

    Sizes are read in bulk: a sweep expires up to thousands of rows, mostly
    of messages no longer in `WriterState.recent`.
    """
    sizes = message_sizes(s.conn, {seq for _, _, seq in rows})
    for device, _, seq in rows:
        found = sizes.get(seq)
        user = s.directory.owner(device)
        if found is not None and user is not None:
            s.usage.add(user, found[1], -1, -found[0])


def _expire_one(s: WriterState, device: int, seq: int, now_ms: int,
                out: list[Receipt]) -> None:
    conn = s.conn
    row = conn.execute("SELECT sender_id, msg_id, flags, status, dest_group"
                       " FROM messages WHERE seq = ?", (seq,)).fetchone()
    user = s.directory.owner(device)
    if row is None or row[0] == user:
        return
    sender, db_id, flags, status, group = row
    if group and user is not None:
        cur = conn.execute(s.sql_first_status, (seq, user, _EXPIRED, now_ms))
        changed = cur.rowcount > 0
        peer = user
    else:
        changed = status == _SENT
        peer = row[0] if user is None else user
        if changed:
            conn.execute("UPDATE messages SET status = ? WHERE seq = ?", (_EXPIRED, seq))
            s.set_cached_status(seq, _EXPIRED)
    if changed and flags & _DELIVERY_RECEIPT and db_id is not None:
        s.receipt(sender, db_id, _EXPIRED, peer, group, now_ms, out)
