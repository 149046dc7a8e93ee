"""What every part of the writer shares on its one thread: connection, caches, counters.

`Writer` (writes.py) owns the transactions; accepting messages (accept.py),
acknowledgements, reads and reports (receipts.py), expiry (expiry.py) and
device registration (devices.py) are functions over this state, called inside
them.  Plain attributes on a slotted object: the per-row loops read them
directly, as the methods of one class did, at no extra cost.

The caches are dropped (`clear`) whenever another connection changed the
directory, which `Connection.begin` reports, and after any failed
transaction; the counters are then read again (a lost connection may have
committed after all).  One writer thread per database (on MariaDB a server
lock says so) is what lets the sequence counters live here in Python, with
no `AUTOINCREMENT` round trip, and the caches go without locks.
"""

from __future__ import annotations

from appliance.protocol.wire.ids import from_db_id
from appliance.storage.models import Receipt
from appliance.storage.sql.dialect import Connection
from appliance.storage.sql.directory import Directory
from appliance.storage.sql.usage import QueueUsage

#: Entries the writer's caches of users, devices, groups and per-user counters may
#: hold before they start again (`WriterState.oversized`).  They grew with every
#: user ever messaged (~0.7 KB each): an app backend messaging millions of users
#: grew the server by gigabytes.  ~100,000 users' worth; a busy server re-reads
#: the ones it needs, a batch at a time (`Directory.prefetch`).
MAX_CACHED_ENTRIES = 500_000


class WriterState:
    """The writer thread's connection, statements, caches and counters."""

    __slots__ = ("conn", "counts", "counts_dirty", "directory", "existing_for",
                 "file_retention_ms", "highest", "next_seq", "receipt_rows", "receipt_seq",
                 "recent", "sql_cursor", "sql_deliver", "sql_existing", "sql_first_status",
                 "sql_inherit", "usage")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        d = conn.dialect
        self.sql_deliver = f"{d.insert_ignore} INTO deliveries VALUES (?, ?, ?, ?)"
        #: A recipient's first DELIVERED or EXPIRED of a group message (`aggregate`).
        self.sql_first_status = d.first_group_status
        self.sql_cursor = (f"UPDATE devices SET report_cursor = {d.greatest}(report_cursor, ?)"
                           " WHERE id = ?")
        #: Completed with the "(?, ...)" list of the replaced devices (`devices.register`).
        self.sql_inherit = (f"{d.insert_ignore} INTO deliveries SELECT ?, priority, seq,"
                            " expires_ms FROM deliveries WHERE device_id IN")
        #: The dedupe lookup's text by padded batch size (see `accept.existing`).
        self.sql_existing: dict[int, str] = {}
        self.existing_for = d.existing
        self.next_seq = self.receipt_seq = 0
        #: How long past its message's expiry a FILE grant lasts (``media.file_retention_s``,
        #: set by the server at start-up; 0: as long as the message).
        self.file_retention_ms = 0
        #: What waits for each user and app (the inbox quotas, SPEC M13).
        self.usage = QueueUsage(conn)
        self.directory = Directory(conn)
        self.recent: dict[int, list[int]] = {}
        self.highest: dict[int, int] = {}
        self.receipt_rows: list[tuple[int, ...]] = []
        #: seq -> [recipients, delivered, read] of group messages (None: no aggregate),
        #: and the seqs whose counters this transaction changed (`aggregate`).
        self.counts: dict[int, list[int] | None] = {}
        self.counts_dirty: set[int] = set()

    def oversized(self) -> bool:
        """Whether the caches hold more than `MAX_CACHED_ENTRIES` (then `clear` them)."""
        return (len(self.directory) + len(self.highest) + len(self.usage)
                > MAX_CACHED_ENTRIES)

    def clear(self) -> None:
        """Drop every cache (the directory may have changed, or a transaction failed)."""
        self.directory.clear()
        #: seq -> `meta` of messages accepted or looked up since the last clear.
        self.recent = {}
        #: sender -> an upper bound of its stored message ids (`accept.highest_id`).
        self.highest = {}
        self.receipt_rows = []
        self.counts = {}
        self.counts_dirty = set()
        self.usage.forget_users()

    def load_counters(self) -> None:
        """Read the message and receipt sequence counters from the tables."""
        self.next_seq = 1 + (self.conn.execute("SELECT coalesce(max(seq), 0) FROM messages")
                             .fetchone()[0])
        self.receipt_seq = self.conn.execute(
            "SELECT coalesce(max(seq), 0) FROM receipts").fetchone()[0]

    def meta(self, seq: int) -> list[int] | None:
        """[sender, db id, flags, status, group, size, app] of a message, cached from its accept.

        The cache saves a SELECT per acknowledgement on the hot path; it is
        dropped with the other caches on rollback or a foreign commit.
        """
        row = self.recent.get(seq)
        if row is None:
            found = self.conn.execute(
                "SELECT m.sender_id, m.msg_id, m.flags, m.status, m.dest_group,"
                " length(m.payload), coalesce(u.app_id, 0) FROM messages m"
                " LEFT JOIN users u ON u.id = m.sender_id WHERE m.seq = ?", (seq,)).fetchone()
            if found is None:
                return None
            row = self.recent[seq] = list(found)
        return row

    def set_cached_status(self, seq: int, status: int) -> None:
        """Keep the cached `meta` of `seq` in step with a status just written."""
        row = self.recent.get(seq)
        if row is not None:
            row[3] = status

    def receipt(self, user: int, db_id: int, status: int, peer: int, group: int, now_ms: int,
                out: list[Receipt]) -> None:
        """Report `status` of `user`'s message `db_id`: a row for `flush_receipts`, and `out`.

        Its report_seq is shown to nobody before the COMMIT returns (SPEC M4).
        """
        self.receipt_seq += 1
        rseq = self.receipt_seq
        self.receipt_rows.append((user, rseq, db_id, status, peer, group, now_ms))
        out.append(Receipt(user, rseq, from_db_id(db_id), status,
                           self.directory.address(peer), group, now_ms))

    def flush_receipts(self) -> None:
        """Insert the receipt rows gathered so far, in one executemany."""
        if self.receipt_rows:
            self.conn.executemany("INSERT INTO receipts VALUES (?, ?, ?, ?, ?, ?, ?)",
                                  self.receipt_rows)
            self.receipt_rows = []
