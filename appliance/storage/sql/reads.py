"""Read-only queries, run on reader threads' own connections.

Each reader sees the last committed state while the writer thread commits
the next batch (SQLite: WAL mode; MariaDB: autocommit reads under InnoDB's
multiversioning).
"""

from __future__ import annotations

from appliance.protocol.wire.ids import from_db_id
from appliance.storage.models import (
    DeviceRecord,
    GroupMember,
    GroupRoster,
    Login,
    Pending,
    Principal,
    Receipt,
)
from appliance.storage.sql.dialect import Connection

_PENDING = (
    "SELECT d.seq, m.msg_id, m.sender_id, su.address, du.address, m.dest_group, m.refid,"
    " m.accepted_ms, m.expires_ms, m.type, m.flags, m.priority, m.payload"
    " FROM deliveries d JOIN messages m ON m.seq = d.seq"
    " JOIN users su ON su.id = m.sender_id LEFT JOIN users du ON du.id = m.dest_user"
    " WHERE d.device_id = ? AND d.expires_ms > ? ORDER BY d.priority, d.seq LIMIT ?"
)


def pending(conn: Connection, device_rowid: int, user_id: int, now_ms: int, limit: int,
            exclude: frozenset[int]) -> list[Pending]:
    """See `MessageStore.pending`."""
    out = []
    for (seq, db_id, sender, s_addr, d_addr, group, refid, accepted, expires, mtype, flags,
         prio, payload) in conn.execute(_PENDING, (device_rowid, now_ms, limit + len(exclude))):
        if seq in exclude:
            continue
        outgoing = sender == user_id
        peer = (d_addr or b"") if outgoing else s_addr
        out.append(Pending(seq, from_db_id(db_id), bytes(peer), group, from_db_id(refid),
                           accepted, expires, mtype, flags, prio, payload, outgoing))
        if len(out) == limit:
            break
    return out


def pending_receipts(conn: Connection, user_id: int, after_seq: int, limit: int,
                     device_rowid: int = 0) -> list[Receipt]:
    """See `MessageStore.pending_receipts`."""
    # The device's stored cursor is read by the same statement: the caller's
    # `after_seq` may come from an older read (a HELLO's, taken before the
    # commit of the device's last REPORT_ACK landed; issue 16).
    rows = conn.execute(
        "SELECT r.seq, r.msg_id, r.status, u.address, r.group_id, r.ts_ms FROM receipts r"
        " LEFT JOIN users u ON u.id = r.peer_id WHERE r.user_id = ?"
        f" AND r.seq > {conn.dialect.greatest}(?, coalesce((SELECT report_cursor FROM devices"
        " WHERE id = ?), 0)) ORDER BY r.seq LIMIT ?", (user_id, after_seq, device_rowid, limit))
    return [Receipt(user_id, seq, from_db_id(db_id), status, bytes(addr or b""), group, ts)
            for seq, db_id, status, addr, group, ts in rows]


_LOGIN = (
    "SELECT u.app_id, u.id, u.address, t.expires_ms, d.id, d.report_cursor,"
    " EXISTS (SELECT 1 FROM deliveries WHERE device_id = d.id),"
    " EXISTS (SELECT 1 FROM receipts WHERE user_id = u.id AND seq > d.report_cursor)"
    " FROM tokens t JOIN users u ON u.id = t.user_id"
    " LEFT JOIN devices d ON d.user_id = u.id AND d.device = ?"
    " WHERE t.hash = ?"
)


def authenticate(conn: Connection, token_hash: bytes, device_id: bytes) -> Login | None:
    """See `DirectoryStore.authenticate`: one statement per HELLO."""
    row = conn.execute(_LOGIN, (device_id, token_hash)).fetchone()
    if row is None:
        return None
    app_id, user_id, address, expires, dev_id, cursor, pending, receipts = row
    principal = Principal(app_id, user_id, bytes(address), expires)
    if dev_id is None:
        return Login(principal, None, True, True)
    return Login(principal, DeviceRecord(dev_id, cursor), bool(pending), bool(receipts))


def find_user(conn: Connection, app_id: int, address: bytes) -> int | None:
    """See `DirectoryStore.find_user`."""
    row = conn.execute("SELECT id FROM users WHERE app_id = ? AND address = ?",
                       (app_id, address)).fetchone()
    return None if row is None else int(row[0])


def user_address(conn: Connection, user_id: int) -> bytes | None:
    """See `DirectoryStore.user_address`."""
    row = conn.execute("SELECT address FROM users WHERE id = ?", (user_id,)).fetchone()
    return None if row is None else bytes(row[0])


def group_members(conn: Connection, app_id: int, group_id: int) -> list[GroupMember] | None:
    """See `DirectoryStore.group_members`."""
    row = conn.execute("SELECT 1 FROM groups WHERE id = ? AND app_id = ?",
                       (group_id, app_id)).fetchone()
    if row is None:
        return None
    rows = conn.execute("SELECT m.user_id, u.address, m.perms FROM members m JOIN users u"
                        " ON u.id = m.user_id WHERE m.group_id = ? ORDER BY u.address",
                        (group_id,))
    return [GroupMember(uid, bytes(addr), perms) for uid, addr, perms in rows]


def group_roster(conn: Connection, app_id: int, group_id: int) -> GroupRoster | None:
    """See `DirectoryStore.group_roster`."""
    row = conn.execute("SELECT flags FROM groups WHERE id = ? AND app_id = ?",
                       (group_id, app_id)).fetchone()
    if row is None:
        return None
    members = conn.execute("SELECT user_id, perms FROM members WHERE group_id = ?",
                           (group_id,)).fetchall()
    return GroupRoster(app_id, dict(members), row[0])


def count_deliveries(conn: Connection, limit: int) -> int:
    """See `MessageStore.count_deliveries`: stops after `limit` rows (its time bound)."""
    row = conn.execute("SELECT count(*) FROM (SELECT 1 FROM deliveries LIMIT ?) AS d",
                       (limit,)).fetchone()
    return int(row[0])
