"""Group messages: each recipient's status, and the aggregate receipts (PROTOCOL.md §8.4).

When a group message that asks for receipts is accepted, every recipient (the
members with RECEIVE then, its sender excluded, and not those whose queue was
full) gets a row in ``group_status`` with SENT, and the message a row in
``group_counts`` with their number.  A recipient's first DELIVERED (a device
acknowledged it) or READ moves its row forward and a counter in
``group_counts``; when a counter reaches the number of recipients, the sender
gets DELIVERED_ALL or READ_ALL, once.  Members who join later have no row and
count for nothing; members removed later keep theirs (what was sent before the
removal is still delivered to them).

The writer functions run inside the writer's transactions (receipts.py,
accept.py, expiry.py); the counters are cached on the writer thread
(`WriterState.counts`) and written once per transaction (`flush_counts`).
`message_receipts` runs on a reader thread.
"""

from __future__ import annotations

from appliance.protocol.wire.constants import Flag, Status
from appliance.protocol.wire.ids import to_db_id
from appliance.storage.models import MemberReceipt, MessageReceipts, Receipt
from appliance.storage.sql.dialect import Connection
from appliance.storage.sql.state import WriterState

_SENT, _DELIVERED, _READ = int(Status.SENT), int(Status.DELIVERED), int(Status.READ)
_DELIVERED_ALL, _READ_ALL = int(Status.DELIVERED_ALL), int(Status.READ_ALL)
_DELIVERY_RECEIPT, _READ_RECEIPT = Flag.DELIVERY_RECEIPT, Flag.READ_RECEIPT
#: A group message gets a ledger when it asks for either receipt.
RECEIPTS = Flag.DELIVERY_RECEIPT | Flag.READ_RECEIPT
#: Cached aggregates beyond which the cache starts afresh (they are read again).
_COUNTS_MAX = 100_000


# --- at accept time -------------------------------------------------------------------------


def recipients_reached(s: WriterState, sender: int, devices: list[int]) -> list[int]:
    """The users a group message reaches through `devices` (its delivery rows), sender aside.

    Every device in `devices` came from the directory, which knows its owner.
    """
    owner = s.directory.device_user
    return sorted({owner[d] for d in devices} - {sender})


def open_ledger(s: WriterState, seq: int, users: list[int], now_ms: int,
                ledger: list[tuple[int, int, int, int]],
                counts: list[tuple[int, int]]) -> None:
    """Rows for a group message just accepted: each recipient at SENT, and its count.

    Appended to `ledger` and `counts`, which `write_ledgers` inserts in bulk.
    """
    if not users:
        return
    ledger.extend([(seq, user, _SENT, now_ms) for user in users])
    counts.append((seq, len(users)))
    s.counts[seq] = [len(users), 0, 0]


def write_ledgers(conn: Connection, ledger: list[tuple[int, int, int, int]],
                  counts: list[tuple[int, int]]) -> None:
    """Insert what `open_ledger` gathered (two statements for a whole batch)."""
    conn.executemany("INSERT INTO group_status (seq, member_id, status, ts_ms)"
                     " VALUES (?, ?, ?, ?)", ledger)
    conn.executemany("INSERT INTO group_counts (seq, recipients) VALUES (?, ?)", counts)


# --- as reports arrive ----------------------------------------------------------------------


def _counts(s: WriterState, seq: int) -> list[int] | None:
    """[recipients, delivered, read] of a group message; None: it keeps no aggregate."""
    if seq in s.counts:
        return s.counts[seq]
    row = s.conn.execute("SELECT recipients, delivered_count, read_count FROM group_counts"
                         " WHERE seq = ?", (seq,)).fetchone()
    found = s.counts[seq] = None if row is None else list(row)
    return found


def has_ledger(s: WriterState, seq: int) -> bool:
    """Whether the message has a row per recipient (`open_ledger`)."""
    return _counts(s, seq) is not None


def count(s: WriterState, seq: int, sender: int, db_id: int | None, flags: int, group: int,
          delivered: int, read: int, now_ms: int, out: list[Receipt]) -> None:
    """A recipient of group message `seq` (`sender`'s `db_id`, in `group`) delivered and/or
    read it for the first time: count it, and report DELIVERED_ALL / READ_ALL to the sender
    when that completes it.
    """
    counts = _counts(s, seq)
    if counts is None:
        return  # no receipts asked, or accepted before the aggregate existed
    recipients, was_delivered, was_read = counts
    counts[1] = was_delivered + delivered
    counts[2] = was_read + read
    s.counts_dirty.add(seq)
    if db_id is None:
        return
    if was_delivered < recipients <= counts[1] and flags & _DELIVERY_RECEIPT:
        s.receipt(sender, db_id, _DELIVERED_ALL, 0, group, now_ms, out)
    if was_read < recipients <= counts[2] and flags & _READ_RECEIPT:
        s.receipt(sender, db_id, _READ_ALL, 0, group, now_ms, out)


def read_by(s: WriterState, seq: int, reader: int, member: bool, now_ms: int) -> int | None:
    """Move `reader`'s status of group message `seq` to READ; the status it had, or None
    when nothing changed.

    Only a recipient may: one with a row (whether or not still a member).  A
    message without a ledger takes the READ of a current `member` (0: no row before).
    """
    conn = s.conn
    row = conn.execute("SELECT status FROM group_status WHERE seq = ? AND member_id = ?",
                       (seq, reader)).fetchone()
    if row is None:
        if not member or has_ledger(s, seq):
            return None  # not a recipient (a later member, or none at all)
        conn.execute("INSERT INTO group_status (seq, member_id, status, ts_ms)"
                     " VALUES (?, ?, ?, ?)", (seq, reader, _READ, now_ms))
        return 0
    was = int(row[0])
    if was not in (_SENT, _DELIVERED):
        return None  # read already, or expired for it
    conn.execute("UPDATE group_status SET status = ?, ts_ms = ? WHERE seq = ? AND member_id = ?",
                 (_READ, now_ms, seq, reader))
    return was


def flush_counts(s: WriterState) -> None:
    """Write the counters changed in this transaction (one statement)."""
    dirty = s.counts_dirty
    if dirty:
        counts = s.counts
        s.conn.executemany("UPDATE group_counts SET delivered_count = ?, read_count = ?"
                           " WHERE seq = ?",
                           [(c[1], c[2], seq) for seq in sorted(dirty)
                            if (c := counts.get(seq)) is not None])
        dirty.clear()
    if len(s.counts) > _COUNTS_MAX:
        s.counts.clear()


def forget(s: WriterState, seqs: list[tuple[int]]) -> None:
    """Messages past retention: their ledgers and aggregates go with them."""
    s.conn.executemany("DELETE FROM group_status WHERE seq = ?", seqs)
    s.conn.executemany("DELETE FROM group_counts WHERE seq = ?", seqs)
    for (seq,) in seqs:
        s.counts.pop(seq, None)


# --- for the sender (REST) -----------------------------------------------------------------


def message_receipts(conn: Connection, app_id: int, sender_id: int, msg_id: int, after: bytes,
                     limit: int) -> MessageReceipts | None:
    """See `MessageStore.message_receipts`."""
    db_id = to_db_id(msg_id)
    row = conn.execute(
        "SELECT m.seq, m.dest_group, m.status, m.accepted_ms FROM messages m"
        " JOIN users u ON u.id = m.sender_id WHERE m.sender_id = ? AND m.msg_id = ?"
        " AND u.app_id = ?", (sender_id, db_id, app_id)).fetchone()
    if row is None:
        return None
    seq, group, status, accepted = row
    if not group:
        return MessageReceipts(msg_id, 0, status, accepted)
    totals = conn.execute("SELECT recipients, delivered_count, read_count FROM group_counts"
                          " WHERE seq = ?", (seq,)).fetchone()
    recipients, delivered, read = (0, 0, 0) if totals is None else totals
    members = conn.execute(
        "SELECT u.address, g.status, g.ts_ms FROM group_status g JOIN users u"
        " ON u.id = g.member_id WHERE g.seq = ? AND u.address > ? ORDER BY u.address LIMIT ?",
        (seq, after, limit)).fetchall()
    return MessageReceipts(
        msg_id, group, status, accepted, recipients, delivered, read,
        members=tuple(MemberReceipt(bytes(address), st, ts or accepted)
                      for address, st, ts in members))
