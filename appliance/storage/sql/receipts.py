"""Acknowledgements, reads and report confirmations: what moves a status forward.

Runs inside the writer's group-commit transaction.  Statuses only move
forward (SENT -> DELIVERED -> READ); a delivery row is deleted only by its
device's ACK (here) or by expiry (expiry.py); a receipt's report_seq is shown
to nobody before its COMMIT returns (SPEC M4).  `ack_all` is on the hot
path: its per-row work calls `delivered` directly, a module function.
"""

from __future__ import annotations

from appliance.protocol.wire.constants import Flag, Status
from appliance.protocol.wire.ids import to_db_id
from appliance.storage.models import Receipt
from appliance.storage.sql import aggregate
from appliance.storage.sql.bulk import delivery_rows, messages_by_ids
from appliance.storage.sql.dialect import Connection
from appliance.storage.sql.state import WriterState

#: Plain ints, not the enum members: they go into rows the drivers bind.
_SENT, _DELIVERED, _READ = int(Status.SENT), int(Status.DELIVERED), int(Status.READ)
_DELIVERY_RECEIPT, _READ_RECEIPT = Flag.DELIVERY_RECEIPT, Flag.READ_RECEIPT


def ack_all(s: WriterState, acks: list[tuple[int, int, int]], now_ms: int,
            out: list[Receipt]) -> None:
    """Apply acknowledgements.

    Those with a known priority were sent to that device on its current
    connection, so its delivery row exists (or was expired, which the
    status check below catches).  Stale ones (priority -1: sent on an
    earlier connection, or never sent at all) are looked up per device
    in statements of 500 seqs: a frame naming thousands of unknown
    seqs costs a few statements, not one per seq (issue 12,
    `delivery_rows`).  Every row found is then deleted with one executemany.
    """
    conn = s.conn
    # A dict keeps the acknowledgements' order (that of the receipts) and
    # drops a row named twice.
    rows = dict.fromkeys((device, priority, seq) for device, seq, priority in acks
                         if priority >= 0)
    stale: dict[int, set[int]] = {}
    for device, seq, priority in acks:
        if priority < 0:
            stale.setdefault(device, set()).add(seq)
    for device, seqs in stale.items():
        rows.update(dict.fromkeys(delivery_rows(conn, device, seqs)))
    known = list(rows)
    conn.executemany("DELETE FROM deliveries WHERE device_id = ? AND priority = ?"
                     " AND seq = ?", known)
    updates: list[tuple[int, int]] = []
    usage = s.usage
    owner = s.directory.owner
    for device, _, seq in known:
        meta = delivered(s, device, seq, now_ms, out, updates)
        user = owner(device)
        if meta is not None and user is not None:
            usage.add(user, meta[6], -1, -meta[5])
    conn.executemany("UPDATE messages SET status = ? WHERE seq = ?", updates)


def delivered(s: WriterState, device: int, seq: int, now_ms: int, out: list[Receipt],
              updates: list[tuple[int, int]]) -> list[int] | None:
    """The delivery row of `seq` for `device` was deleted: record the receipt.

    A 1:1 message's status change is appended to `updates` (the caller writes
    them in one executemany).  Returns the message's `WriterState.meta`, None
    if it is gone.
    """
    row = s.meta(seq)
    user = s.directory.owner(device)
    if row is None or user is None or row[0] == user:
        return row  # swept, or our own sent copy: no receipt
    sender, db_id, flags, status, group = row[:5]
    if group:
        cur = s.conn.execute(s.sql_first_status, (seq, user, _DELIVERED, now_ms))
        changed = cur.rowcount > 0
    else:
        changed = status == _SENT
        if changed:
            updates.append((_DELIVERED, seq))
            row[3] = _DELIVERED
    if changed and flags & _DELIVERY_RECEIPT and db_id is not None:
        s.receipt(sender, db_id, _DELIVERED, user, group, now_ms, out)
    if changed and group:
        aggregate.count(s, seq, sender, db_id, flags, group, 1, 0, now_ms, out)
    return row


def read(s: WriterState, reader: int, app_id: int, peer: bytes, group_id: int,
         ids: tuple[int, ...], now_ms: int, out: list[Receipt]) -> None:
    """`reader` read messages `ids` of `peer` (in `group_id`, or 1:1 when 0): move them to READ.

    Only a recipient may report a message read: one the group message was
    sent to (`aggregate.read_by`: a member then, whether or not one now), or
    the 1:1 message's destination; anything else is ignored.
    """
    conn = s.conn
    sender = s.directory.user_id(app_id, peer)
    if sender is None:
        return
    member = False
    was: int | None = None
    if group_id:
        group = s.directory.group(group_id)
        member = group is not None and group.app_id == app_id and reader in group.members
    db_ids = [db_id for db_id in map(to_db_id, ids) if db_id is not None]
    for db_id, seq, flags, status, dest_user, dest_group in messages_by_ids(
            conn, sender, db_ids):
        if dest_group != group_id or (not group_id and dest_user != reader):
            continue  # only a recipient may report a message read
        if group_id:
            was = aggregate.read_by(s, seq, reader, member, now_ms)
            changed = was is not None
        else:
            changed = status in (_SENT, _DELIVERED)
            if changed:
                conn.execute("UPDATE messages SET status = ? WHERE seq = ?", (_READ, seq))
                s.set_cached_status(seq, _READ)
        if changed and flags & _READ_RECEIPT:
            s.receipt(sender, db_id, _READ, reader, group_id, now_ms, out)
        if changed and group_id:
            aggregate.count(s, seq, sender, db_id, flags, group_id, int(was == _SENT), 1,
                            now_ms, out)


def confirm_reports(s: WriterState, acks: dict[int, int]) -> list[int]:
    """Devices confirmed reports up to a report_seq (REPORT_ACK): raise their cursors.

    Returns the users of those devices, sorted: their confirmed receipts may
    go now (`trim_receipts`).
    """
    s.conn.executemany(s.sql_cursor, [(seq, dev) for dev, seq in acks.items()])
    return sorted({u for u in map(s.directory.owner, acks) if u is not None})


def trim_receipts(conn: Connection, users: list[int]) -> None:
    """Delete the receipts that every device of `users` has confirmed.

    Once every device of a user has a report, nobody needs it again.  The
    cursors are read first, by a plain (non-locking) read, then one DELETE
    locks receipt rows only: on MariaDB a DELETE with a subquery on devices
    also locks those rows, which the writer updates, and deadlocked with it
    (seen).  One statement for many users: per-user statements cost MariaDB
    a round trip each (~1 ms per batch of 50 users, measured).
    """
    for start in range(0, len(users), 500):
        chunk = users[start:start + 500]
        marks = ",".join("?" * len(chunk))
        bounds = conn.execute(
            f"SELECT user_id, min(report_cursor) FROM devices WHERE user_id IN ({marks})"
            " AND device != x'' GROUP BY user_id", chunk).fetchall()
        if bounds:
            ranges = " OR ".join("(user_id = ? AND seq <= ?)" for _ in bounds)
            conn.execute(f"DELETE FROM receipts WHERE {ranges}",
                         [v for row in bounds for v in row])
