"""Registering a device that connected: a new one inherits what waits for its user.

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
    others = 0
    for row_id, device, cursor, seen in rows:
        device = bytes(device)
        if device == device_id:
            conn.execute("UPDATE devices SET last_seen_ms = ? WHERE id = ?", (now_ms, row_id))
            return DeviceRecord(row_id, cursor)
        if not device:
            placeholders.append((row_id,))
        elif seen < stale_before_ms:
            stale.append((row_id,))
        else:
            others += 1
    usage = s.usage
    before = usage.count_user(user_id) if others or placeholders or stale else None
    cur = conn.execute("INSERT INTO devices (user_id, device, last_seen_ms, report_cursor)"
                       " VALUES (?, ?, ?, ?)", (user_id, device_id, now_ms, s.receipt_seq))
    new_id = cur.lastrowid
    assert new_id is not None
    inherited = 0
    if before is not None:
        # A new device gets everything still queued for its user (SPEC M1:
        # each device receives every message), including what waited on the
        # placeholder while the user had no device at all, and on devices
        # gone stale (config limits.device_stale_s): forgetting those loses
        # nothing.
        inherited = conn.execute(s.sql_inherit, (new_id, user_id, new_id)).rowcount
    gone = placeholders + stale
    if gone:
        conn.executemany("DELETE FROM deliveries WHERE device_id = ?", gone)
        conn.executemany("DELETE FROM devices WHERE id = ?", gone)
    if before is not None:
        usage.set_user(user_id, s.directory.app_of(user_id), before, usage.count_user(user_id))
    s.directory.device_added(user_id, new_id)
    return DeviceRecord(new_id, s.receipt_seq, inherited != 0)
