"""Everything that writes to the database, run on one writer thread.

One implementation for every SQL backend (`dialect` holds what differs).
There is exactly one writer thread per database (on MariaDB a server holds a
lock that says so, see `appliance.storage.mariadb`), so the sequence counters
for messages and receipts live here in Python (no `AUTOINCREMENT` round trip)
and the directory caches need no locks.  The caches are dropped whenever
another connection (the CLI, or another process) changed the directory, which
`Connection.begin` reports, and after any failed transaction; the counters
are then read again (a lost connection may have committed after all).

Invariants (SPEC M4):
  * a message row, its (sender, id) dedupe key and one delivery row per
    target device are written in the same transaction;
  * a delivery row is deleted only by that device's ACK or by expiry;
  * statuses only move forward: SENT -> DELIVERED -> READ, or SENT -> EXPIRED;
  * a receipt's report_seq is never shown to anyone before its COMMIT returns.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TypeVar

from appliance.errors import QuotaError, StorageError, StorageUnavailableError
from appliance.protocol.attachments import FILE
from appliance.storage.models import (
    Accepted,
    DeviceRecord,
    NewMessage,
    Outcome,
    Perm,
    QueueQuota,
    Receipt,
    WriteBatch,
    WriteResult,
)
from appliance.storage.sql.bulk import delivery_rows, message_sizes, messages_by_ids
from appliance.storage.sql.dialect import Connection
from appliance.storage.sql.directory import Directory
from appliance.storage.sql.file_access import accept_shared
from appliance.storage.sql.isolate import isolate
from appliance.storage.sql.usage import QueueUsage

# Status and flag values are part of the wire protocol (PROTOCOL.md §4); the
# storage layer repeats the few it needs rather than import the codec.
T = TypeVar("T")
SENT, DELIVERED, READ = 1, 2, 3
EXPIRED, INVALID_DEST, NOT_MEMBER, INBOX_FULL = 0x83, 0x82, 0x85, 0x88
DELIVERY_RECEIPT, READ_RECEIPT = 1, 2

_RECENT_MAX = 200_000
_RECEIPT_SWEEP_EVERY = 720
#: Runs of a `Writer.run_meta` change that InnoDB keeps choosing as a deadlock's victim.
_META_ATTEMPTS = 3
_SIGN = 1 << 63
_WRAP = 1 << 64


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


def to_db_id(msg_id: int) -> int | None:
    """Store an unsigned 64-bit wire id in a signed 64-bit column; 0 -> NULL."""
    if msg_id == 0:
        return None
    return msg_id - _WRAP if msg_id >= _SIGN else msg_id


def from_db_id(value: int | None) -> int:
    """Inverse of `to_db_id`."""
    if value is None:
        return 0
    return value + _WRAP if value < 0 else value


class _DeadlockError(Exception):
    """Internal: the batch was rolled back by a deadlock and may run again."""


class Writer:
    """The writer thread's state: one connection, counters and caches."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._errors = conn.errors
        d = conn.dialect
        self._sql_deliver = f"{d.insert_ignore} INTO deliveries VALUES (?, ?, ?, ?)"
        self._sql_first_status = f"{d.insert_ignore} INTO group_status VALUES (?, ?, ?)"
        self._sql_raise_status = d.raise_group_status
        self._sql_cursor = (f"UPDATE devices SET report_cursor = {d.greatest}(report_cursor, ?)"
                            " WHERE id = ?")
        self._sql_inherit = (f"{d.insert_ignore} INTO deliveries SELECT ?, priority, seq,"
                             " expires_ms FROM deliveries WHERE device_id IN (SELECT id FROM"
                             " devices WHERE user_id = ? AND id != ?)")
        self._sql_existing: dict[int, str] = {}
        self._existing_for = d.existing
        self._sweeps = 0
        #: Given the users whose devices confirmed reports (after the commit),
        #: removes what every device of theirs has confirmed, elsewhere; None:
        #: in this transaction (see `trim_receipts`).
        self.trimmer: Callable[[set[int]], None] | None = None
        self._trim: set[int] = set()
        self._stale = True
        self._next_seq = self._receipt_seq = 0
        #: How long past its message's expiry a FILE grant lasts (``media.file_retention_s``,
        #: set by the server at start-up; 0: as long as the message).
        self.file_retention_ms = 0
        #: What waits for each user and app (the inbox quotas, SPEC M13).
        self.usage = QueueUsage(conn)
        self.directory = Directory(conn)
        self._clear_caches()

    def _load_counters(self) -> None:
        self._next_seq = 1 + (self.conn.execute("SELECT coalesce(max(seq), 0) FROM messages")
                              .fetchone()[0])
        self._receipt_seq = self.conn.execute(
            "SELECT coalesce(max(seq), 0) FROM receipts").fetchone()[0]

    def _clear_caches(self) -> None:
        self.directory.clear()
        self._recent: dict[int, list[int]] = {}
        self._highest: dict[int, int] = {}
        self._receipt_rows: list[tuple[int, ...]] = []
        self.usage.forget_users()

    def _begin(self, *, durable: bool = True) -> None:
        if self.conn.begin(durable=durable) or self._stale:
            self._clear_caches()
            self._load_counters()
            self._stale = False

    def _fail(self, exc: BaseException) -> StorageError | QuotaError:
        """Roll back after ANY exception and return the typed error for the callers.

        Not only driver errors: a value the driver cannot bind (OverflowError,
        TypeError) once left the transaction open, and every later batch of
        every app failed with "cannot start a transaction within a
        transaction" (issue 12).  Whatever went wrong, nothing of the batch
        is kept, the caches are dropped and the next batch starts clean.
        """
        self.conn.rollback()
        self._clear_caches()
        self.usage.forget_apps()  # they counted what was rolled back
        self._stale = True
        if not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt, SystemExit: rolled back, passed on
        if isinstance(exc, StorageError | QuotaError):
            return exc  # already typed (a lost connection at COMMIT, NotFound, a quota...)
        if isinstance(exc, self._errors):
            return self.conn.translate(exc)
        return StorageError(f"the store refused a value: {type(exc).__name__}: {exc}")

    def run_admin(self, fn: Callable[..., T], *args: object) -> T:
        """Run an administrative change in a transaction of its own.

        Raises:
            StorageError: whatever failed (typed as `fn` raised it, or
                translated); the transaction is rolled back.
        """
        try:
            self._begin()
            result = fn(self.conn, *args)
            # Tells every other process's writer that its caches are stale.
            self.conn.execute("UPDATE directory_version SET version = version + 1")
            self.conn.commit()
            return result
        except BaseException as exc:  # noqa: BLE001 - anything rolls back, see `_fail`
            raise self._fail(exc) from None
        finally:
            self._clear_caches()

    def run_meta(self, fn: Callable[..., T], *args: object, durable: bool = True) -> T:
        """Run a change that is no directory change in a transaction of its own.

        Certificates, renewal state, leases (issue 13): unlike `run_admin`, it
        leaves directory_version (and this writer's caches) alone, so other
        processes keep theirs.  A deadlock's victim (MariaDB, two processes
        creating the same row) runs again, up to `_META_ATTEMPTS` times.
        `durable=False`: see `Connection.begin` (progress a crash may lose).

        Raises:
            StorageError: whatever failed (typed as `fn` raised it, or
                translated); the transaction is rolled back.
        """
        attempt = 1
        while True:
            try:
                self._begin(durable=durable)
                result = fn(self.conn, *args)
                self.conn.commit()
                return result
            except BaseException as exc:  # noqa: BLE001 - anything rolls back, see `_fail`
                error = self._fail(exc)
                if attempt < _META_ATTEMPTS and self.conn.retryable(exc):
                    attempt += 1
                    continue
                raise error from None

    # --- the group-commit transaction -------------------------------------

    def apply(self, batch: WriteBatch, now_ms: int) -> WriteResult:
        """Commit one batch; see `MessageStore.write`.

        A batch that InnoDB chose as a deadlock's victim was rolled back whole:
        it runs once more (with caches and counters read afresh) before its
        senders are told FAILED.  A batch that failed for any reason other
        than an unavailable store holds something the store refuses: its good
        parts are committed without it (`isolate`), so one bad row never
        fails the other senders of the batch, nor (through the engine's retry
        of acknowledgements) every batch after it.

        Raises:
            StorageUnavailableError: the store is unavailable; nothing of the
                batch was committed.
        """
        try:
            return self._commit(batch, now_ms)
        except StorageUnavailableError:
            raise
        except StorageError:
            # Even a batch of one: raising would make the engine retry the
            # refused acknowledgement with every later batch, for ever.
            return isolate(self._commit, batch, now_ms)

    def _commit(self, batch: WriteBatch, now_ms: int) -> WriteResult:
        try:
            return self._apply(batch, now_ms, retry=True)
        except _DeadlockError:
            return self._apply(batch, now_ms, retry=False)

    def _apply(self, batch: WriteBatch, now_ms: int, *, retry: bool) -> WriteResult:
        receipts: list[Receipt] = []
        try:
            self._begin()
            # Acknowledgements first: on a pipelined connection their
            # statements run while the accept loop's Python builds the
            # messages' (a message of this batch cannot be acknowledged yet).
            if batch.acks:
                self._ack_all(batch.acks, now_ms, receipts)
            accepted = (self._accept_all(batch.messages, now_ms, batch.quota)
                        if batch.messages else [])
            for reader, app_id, peer, group_id, ids in batch.reads:
                self._read(reader, app_id, peer, group_id, ids, now_ms, receipts)
            self._flush_receipts()
            if batch.report_acks:
                self._report_acks(batch.report_acks)
            if batch.seen:
                self.conn.executemany("UPDATE devices SET last_seen_ms = ? WHERE id = ?",
                                      [(ms, dev) for dev, ms in batch.seen.items()])
            self.conn.commit()
        except BaseException as exc:  # noqa: BLE001 - anything rolls back, see `_fail`
            self._trim.clear()
            error = self._fail(exc)
            if retry and self.conn.retryable(exc):
                raise _DeadlockError from None
            raise error from None
        if self._trim and self.trimmer is not None:
            self.trimmer(self._trim)  # the cursors it compares with are committed now
            self._trim = set()
        return WriteResult(accepted, receipts)

    def _accept_all(self, messages: list[NewMessage], now_ms: int,
                    quota: QueueQuota | None = None) -> list[Accepted]:
        """Store a batch of messages with one dedupe query and two executemany calls.

        Per-row `execute` costs ~15 us of Python and SQLite call overhead; the
        batched form keeps the writer thread (the reliable path's bottleneck)
        near a few microseconds per row.
        """
        results: list[Accepted | None] = [None] * len(messages)
        plans = []
        for i, m in enumerate(messages):
            route = self._route(m)
            if isinstance(route, int):
                results[i] = Accepted(Outcome.REJECTED, route)
            else:
                plans.append((i, m, route, to_db_id(m.msg_id)))
        # Apps number their messages upwards (the SDK does), so an id above
        # the sender's highest stored one is new without an index lookup.
        high = self._highest_id
        stored = self._existing([(m.sender_id, db_id) for _, m, _, db_id in plans
                                 if db_id is not None and db_id <= high(m.sender_id)])
        highest = self._highest
        key: tuple[int, int | None]
        rows, deliveries = [], []
        recent = self._recent
        if len(recent) > _RECENT_MAX:
            recent.clear()
        for i, m, recipients, db_id in plans:
            key = (m.sender_id, db_id)
            old = stored.get(key) if db_id is not None else None
            if old is not None:
                results[i] = Accepted(Outcome.DUPLICATE, old[1], old[0], old[2])
                continue
            if m.flags & FILE:  # the one test a message without files pays
                shared = accept_shared(self.conn, m, recipients, now_ms, self.file_retention_ms,
                                       partial(self._targets, m, recipients, now_ms, quota))
                if isinstance(shared, int):
                    results[i] = Accepted(Outcome.REJECTED, shared)
                    continue
                targets = shared
            else:
                targets = self._targets(m, recipients, now_ms, quota)
            if targets is None:
                results[i] = Accepted(Outcome.REJECTED, INBOX_FULL)
                continue
            seq = self._next_seq
            self._next_seq = seq + 1
            if db_id is not None:
                stored[key] = (seq, SENT, now_ms)  # a resend later in this batch
                if db_id > highest[m.sender_id]:
                    highest[m.sender_id] = db_id
            dest_user = 0 if m.group_id else recipients[0]
            rows.append((seq, m.sender_id, db_id, dest_user, m.group_id,
                         to_db_id(m.refid) or 0, now_ms, m.expires_ms, m.type, m.flags,
                         m.priority, SENT, m.payload))
            deliveries.extend([(d, m.priority, seq, m.expires_ms) for d in targets])
            recent[seq] = [m.sender_id, db_id, m.flags, SENT, m.group_id,  # type: ignore[list-item]
                           len(m.payload), m.app_id]
            results[i] = Accepted(Outcome.STORED, SENT, seq, now_ms, tuple(targets))
        self.conn.executemany(
            "INSERT INTO messages (seq, sender_id, msg_id, dest_user, dest_group, refid,"
            " accepted_ms, expires_ms, type, flags, priority, status, payload)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        self.conn.executemany(self._sql_deliver, deliveries)
        return results  # type: ignore[return-value]  # every slot was filled above

    def _route(self, m: NewMessage) -> list[int] | int:
        """The recipient user ids of `m`, or the error status that rejects it."""
        if m.group_id:
            group = self.directory.group(m.group_id)
            if group is None or group.app_id != m.app_id:
                return INVALID_DEST
            perms = group.members.get(m.sender_id)
            if perms is None or not perms & Perm.SEND:
                return NOT_MEMBER
            return [u for u, p in group.members.items() if p & Perm.RECEIVE]
        dest = self.directory.user_id(m.app_id, m.peer)
        return INVALID_DEST if dest is None else [dest]

    def _highest_id(self, sender: int) -> int:
        """An upper bound of the sender's stored message ids; cached.

        Retiring messages only lowers the true maximum, so the cached value
        stays a valid bound until the caches are dropped.
        """
        value = self._highest.get(sender)
        if value is None:
            found = self.conn.execute("SELECT max(msg_id) FROM messages WHERE sender_id = ?",
                                      (sender,)).fetchone()[0]
            value = self._highest[sender] = -_SIGN if found is None else found
        return value

    def _existing(self, keys: list[tuple[int, int]]
                  ) -> dict[tuple[int, int | None], tuple[int, int, int]]:
        """(sender, id) -> (seq, status, accepted_ms) of those already stored."""
        found: dict[tuple[int, int | None], tuple[int, int, int]] = {}
        for start in range(0, len(keys), 512):
            chunk = keys[start:start + 512]
            # Pad to a power of two with pairs that match nothing, so that a
            # handful of statement texts serve every batch size from the
            # statement cache instead of a fresh prepare per commit.
            size = 8
            while size < len(chunk):
                size *= 2
            sql = self._sql_existing.get(size)
            if sql is None:
                sql = self._sql_existing[size] = self._existing_for(size)
            flat = [v for key in chunk for v in key] + [-1, -1] * (size - len(chunk))
            for sender, db_id, seq, status, accepted in self.conn.execute(sql, flat):
                found[(sender, db_id)] = (seq, status, accepted)
        return found

    def _targets(self, m: NewMessage, recipients: list[int], now_ms: int,
                 quota: QueueQuota | None = None) -> list[int] | None:
        """Every device that gets a delivery row: recipients' and the sender's others.

        None: the message is over a quota (INBOX_FULL): its 1:1 recipient's or
        its app's.  A group message skips the members that are full instead.
        The sender's own copies count in its usage but are never refused.
        """
        targets: list[int] = []
        usage = self.usage
        size = len(m.payload)
        if quota is not None and len(recipients) > 1:
            usage.prefetch(recipients)  # a statement per 500 members, not one each
        full = 0
        for user in recipients:
            devices = self.directory.devices_or_placeholder(user, now_ms)
            if quota is not None and user != m.sender_id \
                    and usage.inbox_full(user, len(devices), size, quota):
                if not m.group_id:
                    return None
                full += 1
                continue
            targets.extend(devices)
        if full and full == len(recipients) - (m.sender_id in recipients):
            return None  # every other member is full: the group message reaches no one
        if m.sender_id not in recipients:
            targets.extend(self.directory.user_devices(m.sender_id))
        if m.sender_device in targets:
            targets.remove(m.sender_device)
        if quota is not None and usage.app_full(m.app_id, size * len(targets), quota):
            return None
        owner = self.directory.device_user
        for device in targets:
            holder = owner.get(device) or self.directory.owner(device)
            if holder is not None:
                usage.add(holder, m.app_id, 1, size)
        return targets

    def _ack_all(self, acks: list[tuple[int, int, int]], now_ms: int,
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
        # A dict keeps the acknowledgements' order (that of the receipts) and
        # drops a row named twice.
        rows = dict.fromkeys((device, priority, seq) for device, seq, priority in acks
                             if priority >= 0)
        stale: dict[int, set[int]] = {}
        for device, seq, priority in acks:
            if priority < 0:
                stale.setdefault(device, set()).add(seq)
        for device, seqs in stale.items():
            rows.update(dict.fromkeys(delivery_rows(self.conn, device, seqs)))
        known = list(rows)
        self.conn.executemany("DELETE FROM deliveries WHERE device_id = ? AND priority = ?"
                              " AND seq = ?", known)
        updates: list[tuple[int, int]] = []
        usage = self.usage
        for device, _, seq in known:
            meta = self._delivered(device, seq, now_ms, out, updates)
            user = self.directory.owner(device)
            if meta is not None and user is not None:
                usage.add(user, meta[6], -1, -meta[5])
        self.conn.executemany("UPDATE messages SET status = ? WHERE seq = ?", updates)

    def _delivered(self, device: int, seq: int, now_ms: int, out: list[Receipt],
                   updates: list[tuple[int, int]]) -> list[int] | None:
        """The delivery row of `seq` for `device` was deleted: record the receipt.

        Returns the message's `_meta`, None if it is gone.
        """
        conn = self.conn
        row = self._meta(seq)
        user = self.directory.owner(device)
        if row is None or user is None or row[0] == user:
            return row  # swept, or our own sent copy: no receipt
        sender, db_id, flags, status, group = row[:5]
        if group:
            cur = conn.execute(self._sql_first_status, (seq, user, DELIVERED))
            changed = cur.rowcount > 0
        else:
            changed = status == SENT
            if changed:
                updates.append((DELIVERED, seq))
                row[3] = DELIVERED
        if changed and flags & DELIVERY_RECEIPT and db_id is not None:
            self._receipt(sender, db_id, DELIVERED, user, group, now_ms, out)
        return row

    def _read(self, reader: int, app_id: int, peer: bytes, group_id: int,
              ids: tuple[int, ...], now_ms: int, out: list[Receipt]) -> None:
        sender = self.directory.user_id(app_id, peer)
        if sender is None:
            return
        if group_id:
            group = self.directory.group(group_id)
            if group is None or reader not in group.members:
                return
        db_ids = [db_id for db_id in map(to_db_id, ids) if db_id is not None]
        for db_id, seq, flags, status, dest_user, dest_group in messages_by_ids(
                self.conn, sender, db_ids):
            if dest_group != group_id or (not group_id and dest_user != reader):
                continue  # only a recipient may report a message read
            if group_id:
                cur = self.conn.execute(self._sql_raise_status, (seq, reader, READ))
                changed = cur.rowcount > 0
            else:
                changed = status in (SENT, DELIVERED)
                if changed:
                    self.conn.execute("UPDATE messages SET status = ? WHERE seq = ?", (READ, seq))
                    self._set_cached_status(seq, READ)
            if changed and flags & READ_RECEIPT:
                self._receipt(sender, db_id, READ, reader, group_id, now_ms, out)

    def _report_acks(self, acks: dict[int, int]) -> None:
        conn = self.conn
        conn.executemany(self._sql_cursor, [(seq, dev) for dev, seq in acks.items()])
        users = sorted({u for u in map(self.directory.owner, acks) if u is not None})
        if self.trimmer is None:
            trim_receipts(conn, users)
        else:
            self._trim.update(users)

    def _flush_receipts(self) -> None:
        if self._receipt_rows:
            self.conn.executemany("INSERT INTO receipts VALUES (?, ?, ?, ?, ?, ?, ?)",
                                  self._receipt_rows)
            self._receipt_rows = []

    def _set_cached_status(self, seq: int, status: int) -> None:
        row = self._recent.get(seq)
        if row is not None:
            row[3] = status

    def _meta(self, seq: int) -> list[int] | None:
        """[sender, db id, flags, status, group, size, app] of a message, cached from its accept.

        The cache saves a SELECT per acknowledgement on the hot path; it is
        dropped with the other caches on rollback or a foreign commit.
        """
        row = self._recent.get(seq)
        if row is None:
            found = self.conn.execute(
                "SELECT m.sender_id, m.msg_id, m.flags, m.status, m.dest_group,"
                " length(m.payload), coalesce(u.app_id, 0) FROM messages m"
                " LEFT JOIN users u ON u.id = m.sender_id WHERE m.seq = ?", (seq,)).fetchone()
            if found is None:
                return None
            row = self._recent[seq] = list(found)
        return row

    def _receipt(self, user: int, db_id: int, status: int, peer: int, group: int, now_ms: int,
                 out: list[Receipt]) -> None:
        self._receipt_seq += 1
        rseq = self._receipt_seq
        self._receipt_rows.append((user, rseq, db_id, status, peer, group, now_ms))
        out.append(Receipt(user, rseq, from_db_id(db_id), status,
                           self.directory.address(peer), group, now_ms))

    # --- expiry -----------------------------------------------------------

    def sweep(self, now_ms: int, retention_ms: int, limit: int = 5000) -> list[Receipt]:
        """Expire deliveries, drop messages and receipts past their time."""
        out: list[Receipt] = []
        conn = self.conn
        try:
            self._begin()
            expired = conn.execute("SELECT device_id, priority, seq FROM deliveries"
                                   " WHERE expires_ms <= ? LIMIT ?", (now_ms, limit)).fetchall()
            conn.executemany("DELETE FROM deliveries WHERE device_id = ? AND priority = ?"
                             " AND seq = ?", expired)
            for device, _, seq in expired:
                self._expire(device, seq, now_ms, out)
            self._unqueue(expired)
            # The dedupe window (SPEC M4) is the retention: a resend within it
            # is answered with the stored status, even after expiry.
            oldest = conn.execute("SELECT seq, accepted_ms FROM messages ORDER BY seq LIMIT ?",
                                  (limit,)).fetchall()
            old = [(seq,) for seq, accepted in oldest if accepted <= now_ms - retention_ms]
            conn.executemany("DELETE FROM messages WHERE seq = ?", old)
            conn.executemany("DELETE FROM group_status WHERE seq = ?", old)
            self._flush_receipts()
            self._sweeps += 1
            if self._sweeps % _RECEIPT_SWEEP_EVERY == 1:
                # Reports no device ever confirmed; a full scan, so only now and then.
                conn.execute("DELETE FROM receipts WHERE ts_ms <= ?", (now_ms - retention_ms,))
                # Another process may have deleted users: count the apps again.
                self.usage.forget_apps()
            conn.commit()
        except BaseException as exc:  # noqa: BLE001 - anything rolls back, see `_fail`
            raise self._fail(exc) from None
        return out

    def _unqueue(self, rows: list[tuple[int, int, int]]) -> None:
        """Take expired delivery rows (device, priority, seq) off the queue usage.

        Sizes are read in bulk: a sweep expires up to thousands of rows, mostly
        of messages no longer in `_recent`.
        """
        sizes = message_sizes(self.conn, {seq for _, _, seq in rows})
        for device, _, seq in rows:
            found = sizes.get(seq)
            user = self.directory.owner(device)
            if found is not None and user is not None:
                self.usage.add(user, found[1], -1, -found[0])

    def _expire(self, device: int, seq: int, now_ms: int, out: list[Receipt]) -> None:
        row = self.conn.execute("SELECT sender_id, msg_id, flags, status, dest_group"
                                " FROM messages WHERE seq = ?", (seq,)).fetchone()
        user = self.directory.owner(device)
        if row is None or row[0] == user:
            return
        sender, db_id, flags, status, group = row
        if group and user is not None:
            cur = self.conn.execute(self._sql_first_status, (seq, user, EXPIRED))
            changed = cur.rowcount > 0
            peer = user
        else:
            changed = status == SENT
            peer = row[0] if user is None else user
            if changed:
                self.conn.execute("UPDATE messages SET status = ? WHERE seq = ?", (EXPIRED, seq))
                self._set_cached_status(seq, EXPIRED)
        if changed and flags & DELIVERY_RECEIPT and db_id is not None:
            self._receipt(sender, db_id, EXPIRED, peer, group, now_ms, out)

    # --- devices ----------------------------------------------------------

    def register_devices(self, requests: list[tuple[int, bytes, int, int]]
                         ) -> list[DeviceRecord]:
        """See `DirectoryStore.register_device`; many in one transaction."""
        try:
            # No fsync of its own (a connect storm of new devices would pay one
            # per batch): a registration matters only once something is queued
            # for or acknowledged by the device, and that commit is durable
            # and persists this one with it.
            self._begin(durable=False)
            records = [self._register(*req) for req in requests]
            self.conn.commit()
        except BaseException as exc:  # noqa: BLE001 - anything rolls back, see `_fail`
            raise self._fail(exc) from None
        return records

    def _register(self, user_id: int, device_id: bytes, now_ms: int,
                  stale_before_ms: int) -> DeviceRecord:
        # One read of the user's devices decides what else is needed: a first
        # device of a user with nothing queued costs one SELECT and one INSERT
        # (a connect storm of new devices is bounded by this transaction).
        conn = self.conn
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
        before = self.usage.count_user(user_id) if others or placeholders or stale else None
        cur = conn.execute("INSERT INTO devices (user_id, device, last_seen_ms, report_cursor)"
                           " VALUES (?, ?, ?, ?)", (user_id, device_id, now_ms, self._receipt_seq))
        new_id = cur.lastrowid
        assert new_id is not None
        inherited = 0
        if before is not None:
            # A new device gets everything still queued for its user (SPEC M1:
            # each device receives every message), including what waited on the
            # placeholder while the user had no device at all, and on devices
            # gone stale (config limits.device_stale_s): forgetting those loses
            # nothing.
            inherited = conn.execute(self._sql_inherit, (new_id, user_id, new_id)).rowcount
        gone = placeholders + stale
        if gone:
            conn.executemany("DELETE FROM deliveries WHERE device_id = ?", gone)
            conn.executemany("DELETE FROM devices WHERE id = ?", gone)
        if before is not None:
            self.usage.set_user(user_id, self.directory.app_of(user_id), before,
                                self.usage.count_user(user_id))
        self.directory.device_added(user_id, new_id)
        return DeviceRecord(new_id, self._receipt_seq, inherited != 0)
