"""Everything that writes to the database, run on one writer thread: its transactions.

One implementation for every SQL backend (`dialect` holds what differs).
There is exactly one writer thread per database (on MariaDB a server holds a
lock that says so, see `appliance.storage.mariadb`); what it shares between
transactions (connection, caches, counters) is `state.WriterState`.  This
module owns the transactions: the group commit (`Writer.apply`), the sweep,
device registrations and administrative changes.  What runs inside them is
split by responsibility: accepting messages (accept.py), acknowledgements,
reads and report confirmations (receipts.py), expiry (expiry.py), devices
(devices.py).  They are module functions over the state, called directly:
the writer thread is the reliable path's bottleneck, and a function call
costs no more than the method call it replaced.

Invariants (SPEC M4):
  * a message row, its (sender, id) dedupe key and one delivery row per
    target device are written in the same transaction;
  * a delivery row is deleted only by that device's ACK or by expiry;
  * statuses only move forward: SENT -> DELIVERED -> READ, or SENT -> EXPIRED;
  * a receipt's report_seq is never shown to anyone before its COMMIT returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from appliance.errors import QuotaError, StorageError, StorageUnavailableError
from appliance.storage.models import DeviceRecord, Receipt, WriteBatch, WriteResult
from appliance.storage.sql import accept, aggregate, devices, expiry, presence, receipts
from appliance.storage.sql.dialect import Connection
from appliance.storage.sql.isolate import isolate
from appliance.storage.sql.state import WriterState

T = TypeVar("T")

#: Sweeps between two deletions of the receipts no device ever confirmed (a full scan).
_RECEIPT_SWEEP_EVERY = 720
#: Runs of a `Writer.run_meta` change that InnoDB keeps choosing as a deadlock's victim.
_META_ATTEMPTS = 3


class _DeadlockError(Exception):
    """Internal: the batch was rolled back by a deadlock and may run again."""


class Writer:
    """The writer thread: its transactions over one connection and the state they share."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._errors = conn.errors
        self.state = WriterState(conn)
        #: What waits for each user and app (the inbox quotas, SPEC M13).
        self.usage = self.state.usage
        self._sweeps = 0
        #: Given the users whose devices confirmed reports (after the commit),
        #: removes what every device of theirs has confirmed, elsewhere; None:
        #: in this transaction (see `receipts.trim_receipts`).
        self.trimmer: Callable[[set[int]], None] | None = None
        self._trim: set[int] = set()
        self._stale = True

    @property
    def file_retention_ms(self) -> int:
        """How long past its message's expiry a FILE grant lasts (``media.file_retention_s``,
        set by the server at start-up; 0: as long as the message)."""
        return self.state.file_retention_ms

    @file_retention_ms.setter
    def file_retention_ms(self, value: int) -> None:
        self.state.file_retention_ms = value

    def _begin(self, *, durable: bool = True) -> None:
        if self.conn.begin(durable=durable) or self._stale or self.state.oversized():
            self.state.clear()
            self.state.load_counters()
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
        self.state.clear()
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
            self.state.clear()

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
        out: list[Receipt] = []
        state = self.state
        try:
            self._begin()
            # Acknowledgements first: on a pipelined connection their
            # statements run while the accept loop's Python builds the
            # messages' (a message of this batch cannot be acknowledged yet).
            if batch.acks:
                receipts.ack_all(state, batch.acks, now_ms, out)
            accepted = (accept.accept_all(state, batch.messages, now_ms, batch.quota)
                        if batch.messages else [])
            for reader, app_id, peer, group_id, ids in batch.reads:
                receipts.read(state, reader, app_id, peer, group_id, ids, now_ms, out)
            state.flush_receipts()
            aggregate.flush_counts(state)
            if batch.report_acks:
                users = receipts.confirm_reports(state, batch.report_acks)
                if self.trimmer is None:
                    receipts.trim_receipts(self.conn, users)
                else:
                    self._trim.update(users)
            if batch.seen:
                self.conn.executemany("UPDATE devices SET last_seen_ms = ? WHERE id = ?",
                                      [(ms, dev) for dev, ms in batch.seen.items()])
            if batch.last_seen:
                presence.stamp_last_seen(self.conn, batch.last_seen)
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
        return WriteResult(accepted, out)

    # --- expiry -----------------------------------------------------------

    def sweep(self, now_ms: int, retention_ms: int, limit: int = expiry.SWEEP_LIMIT
              ) -> list[Receipt]:
        """Expire deliveries, drop messages and receipts past their time (`expiry.expire`)."""
        out: list[Receipt] = []
        try:
            self._begin()
            # Receipts no device ever confirmed: a full scan, so only now and then.
            full = (self._sweeps + 1) % _RECEIPT_SWEEP_EVERY == 1
            expiry.expire(self.state, now_ms, retention_ms, limit, full=full, out=out)
            self._sweeps += 1
            self.conn.commit()
        except BaseException as exc:  # noqa: BLE001 - anything rolls back, see `_fail`
            raise self._fail(exc) from None
        return out

    # --- devices ----------------------------------------------------------

    def register_devices(self, requests: list[tuple[int, bytes, int, int]]
                         ) -> list[DeviceRecord]:
        """See `DirectoryStore.register_device`; many in one transaction (`devices.register`)."""
        try:
            # No fsync of its own (a connect storm of new devices would pay one
            # per batch): a registration matters only once something is queued
            # for or acknowledged by the device, and that commit is durable
            # and persists this one with it.
            self._begin(durable=False)
            records = [devices.register(self.state, *req) for req in requests]
            self.conn.commit()
        except BaseException as exc:  # noqa: BLE001 - anything rolls back, see `_fail`
            raise self._fail(exc) from None
        return records
