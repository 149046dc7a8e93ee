"""Registering a device that connected: a new one takes over the queues of those it replaces.

Runs inside the writer's registration transaction (`Writer.register_devices`).
"""

from __future__ import annotations

from appliance.storage.models import DeviceRecord
from appliance.storage.sql.state import WriterState


def register(s: WriterState, user_id: int, device_id: bytes, now_ms: int,
             stale_before_ms: int) -> DeviceRecord:
    """See `DirectoryStore.register_device`, for one device."""
    # One read of the user's devices decides what else is needed: a first
    # device of a user with nothing queued costs one SELECT and one INSERT
    # (a connect storm of new devices is bounded by this transaction).
    conn = s.conn
    rows = conn.execute("SELECT id, device, report_cursor, last_seen_ms FROM devices"
                        " WHERE user_id = ?", (user_id,)).fetchall()
    stale: list[tuple[int]] = []
    placeholders: list[tuple[int]] = []
    for row_id, device, cursor, seen in rows:
        device = bytes(device)
        if device == device_id:
            conn.execute("UPDATE devices SET last_seen_ms = ? WHERE id = ?", (now_ms, row_id))
            return DeviceRecord(row_id, cursor)
        if not device:
            placeholders.append((row_id,))
        elif seen < stale_before_ms:
            stale.append((row_id,))
    cur = conn.execute("INSERT INTO devices (user_id, device, last_seen_ms, report_cursor)"
                       " VALUES (?, ?, ?, ?)", (user_id, device_id, now_ms, s.receipt_seq))
    new_id = cur.lastrowid
    assert new_id is not None
    inherited = 0
    gone = placeholders + stale
    if gone:
        # What waited for the devices this one replaces passes to it: the
        # placeholder of a user who had no device, and devices gone stale
        # (config limits.device_stale_s), forgotten now.  Nothing is copied
        # from the user's live devices (PROTOCOL.md §3.1: a new device gets
        # what is accepted after it registered), so what it gets never
        # depends on when they acknowledge.  A replaced device's queue is
        # frozen (no device reads it), so this is deterministic too.
        usage = s.usage
        before = usage.count_user(user_id)
        marks = ",".join("?" * len(gone))
        inherited = conn.execute(s.sql_inherit + f" ({marks})",
                                 [new_id, *(g for (g,) in gone)]).rowcount
        conn.executemany("DELETE FROM deliveries WHERE device_id = ?", gone)
        conn.executemany("DELETE FROM devices WHERE id = ?", gone)
        usage.set_user(user_id, s.directory.app_of(user_id), before, usage.count_user(user_id))
    s.directory.device_added(user_id, new_id)
    return DeviceRecord(new_id, s.receipt_seq, inherited != 0)
