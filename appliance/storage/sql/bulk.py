"""Lookups of many rows at once, for frames that name thousands of seqs or ids.

An ACK or READ frame may name up to 1000 seqs or ids that the engine knows
nothing about (issue 12: 8,000 unknown seqs once cost a DELETE each).  These
look them up `CHUNK` at a time: a frame costs a few statements, whatever it
names, and only what exists is then changed.
"""

from __future__ import annotations

from collections.abc import Iterable

from appliance.storage.sql.dialect import Connection

#: Keys per statement (bounded statement text and parameter count).
CHUNK = 500


def marks(count: int) -> str:
    """The "?,?,..." of an IN list of `count` values."""
    return ",".join("?" * count)


def delivery_rows(conn: Connection, device: int,
                  seqs: Iterable[int]) -> list[tuple[int, int, int]]:
    """(device, priority, seq) of the delivery rows of `device` among `seqs`."""
    ordered = sorted(set(seqs))
    found: list[tuple[int, int, int]] = []
    for start in range(0, len(ordered), CHUNK):
        chunk = ordered[start:start + CHUNK]
        # No "priority IN (0..15)": 16 index probes per seq cost more than a
        # walk over the device's queue, which the inbox quota bounds.
        found.extend((device, priority, seq) for priority, seq in conn.execute(
            f"SELECT priority, seq FROM deliveries WHERE device_id = ?"
            f" AND seq IN ({marks(len(chunk))})", [device, *chunk]).fetchall())
    return found


def messages_by_ids(conn: Connection, sender: int,
                    db_ids: list[int]) -> list[tuple[int, ...]]:
    """(db id, seq, flags, status, dest user, dest group) of `sender`'s messages among `db_ids`.

    In the order of `db_ids` (the order of the READ, and of its receipts).
    """
    order = {db_id: n for n, db_id in enumerate(db_ids)}
    wanted = list(order)
    found: list[tuple[int, ...]] = []
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start:start + CHUNK]
        found.extend(conn.execute(
            "SELECT msg_id, seq, flags, status, dest_user, dest_group FROM messages"
            f" WHERE sender_id = ? AND msg_id IN ({marks(len(chunk))})",
            [sender, *chunk]).fetchall())
    found.sort(key=lambda row: order[row[0]])
    return found


def message_sizes(conn: Connection, seqs: Iterable[int]) -> dict[int, tuple[int, int]]:
    """seq -> (payload bytes, app id of its sender) of the messages among `seqs`."""
    ordered = sorted(set(seqs))
    sizes: dict[int, tuple[int, int]] = {}
    for start in range(0, len(ordered), CHUNK):
        chunk = ordered[start:start + CHUNK]
        for seq, size, app in conn.execute(
                "SELECT m.seq, length(m.payload), coalesce(u.app_id, 0) FROM messages m"
                f" LEFT JOIN users u ON u.id = m.sender_id WHERE m.seq IN ({marks(len(chunk))})",
                chunk).fetchall():
            sizes[int(seq)] = (int(size), int(app))
    return sizes
