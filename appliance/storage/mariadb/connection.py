"""MariaDB connections for the shared SQL code, through the `mariadb` connector.

Every call is bounded (``connect_timeout``, ``read_timeout``,
``write_timeout``): a database that hangs fails the call instead of a thread.
A connection that failed is closed and opened again by the next call, so the
service recovers by itself when the database returns.  Durability (SPEC M14):
the server runs with ``innodb_flush_log_at_trx_commit=1`` (its default, and
``db status`` warns otherwise), so COMMIT returns after the redo log is
fsynced; the engine says SENT only after that.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import mariadb

from appliance.config.database import DatabaseLocation
from appliance.errors import (
    ConflictError,
    StorageError,
    StorageUnavailableError,
)
from appliance.storage.mariadb.batch import rewrite
from appliance.storage.sql.dialect import MARIADB, Cursor, Dialect

log = logging.getLogger(__name__)

# Server error numbers (include/mysqld_error.h) that mean "not now" rather
# than "never": lock waits, deadlocks, a full disk or table, read-only.
_DEADLOCK = 1213
_TRANSIENT_ERRNOS = {1205, 1213, 1114, 1021, 3, 28, 1290, 1836, 2006, 2013, 1927, 1053}
# ...and those that mean "never this value" (strict mode refuses it), which
# Connector/Python also raises as OperationalError: out of range, wrong type,
# too long, truncated, NULL.  Not an outage: the batch holding the value is
# refused, the store stays up (issue 12).
_BAD_VALUE_ERRNOS = {1048, 1264, 1265, 1292, 1366, 1406, 1690}


def translate(exc: BaseException, what: str = "MariaDB") -> StorageError:
    """Turn a driver exception into our storage error (never leak mariadb types)."""
    if isinstance(exc, mariadb.IntegrityError):
        return ConflictError(f"{what}: {exc}")
    errno = getattr(exc, "errno", None)
    if errno in _BAD_VALUE_ERRNOS or isinstance(exc, mariadb.DataError):
        return StorageError(f"{what}: {exc}")
    if isinstance(exc, mariadb.OperationalError | mariadb.InterfaceError) \
            or errno in _TRANSIENT_ERRNOS:
        return StorageUnavailableError(f"{what}: {exc}")
    return StorageError(f"{what}: {exc}")


def open_raw(location: DatabaseLocation, timeout_s: float, *, database: bool = True,
             autocommit: bool = True) -> mariadb.Connection:
    """A driver connection to `location`.

    Raises:
        StorageUnavailableError: the server cannot be reached or refused us.
    """
    timeout = max(1, round(timeout_s))
    args: dict[str, Any] = {
        "user": location.user, "connect_timeout": timeout, "read_timeout": timeout,
        "write_timeout": timeout, "autocommit": autocommit,
        # READ COMMITTED: each statement sees the latest commits and InnoDB
        # takes no gap locks, so the CLI's changes never deadlock the writer.
        "init_command": "SET SESSION tx_isolation = 'READ-COMMITTED',"
                        " SESSION sql_mode = 'STRICT_TRANS_TABLES,NO_ZERO_DATE,"
                        "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'",
    }
    if database:
        args["database"] = location.database
    if location.socket:
        args["unix_socket"] = location.socket
    else:
        args["host"] = location.host
        args["port"] = location.port
    if location.password:
        args["password"] = location.password
    try:
        return mariadb.connect(**args)
    except mariadb.Error as exc:
        raise translate(exc, f"cannot connect to {location.describe()}") from None


class MariaConnection:
    """One MariaDB connection as the shared SQL code's `Connection`.

    The writer's connection runs with autocommit off, so the first statement
    after a COMMIT opens the next transaction; readers and migrations run
    with autocommit on.

    `pipelined` (the writer's): the group commit's multi-row statements run
    on a helper thread, in order, while the writer builds the next ones.  A
    batch is ~70 us per message of which the writer thread's Python (routing,
    literals) is a quarter, spent while MariaDB sat idle; this overlaps them.
    Nothing on that path reads a statement's result, and every call that does
    (execute, COMMIT, ROLLBACK) first waits for the queued statements and
    raises the first one's failure: the transaction fails as a whole, as if
    the statement had run inline.
    """

    dialect: Dialect = MARIADB
    errors: tuple[type[BaseException], ...] = (mariadb.Error,)

    def __init__(self, location: DatabaseLocation, timeout_s: float, *,
                 autocommit: bool = True, server_lock: bool = False,
                 pipelined: bool = False) -> None:
        self.location = location
        self.timeout_s = timeout_s
        self.autocommit = autocommit
        self.server_lock = server_lock
        self._raw: mariadb.Connection | None = None
        self._version = -1
        self._fresh = False
        self._pipelined = pipelined
        self._pipe: ThreadPoolExecutor | None = None
        self._queued: list[Future[None]] = []
        #: A queued statement failed: the rest of the queue is skipped.
        self._broken = False

    def _connection(self) -> mariadb.Connection:
        raw = self._raw
        if raw is None:
            raw = open_raw(self.location, self.timeout_s, autocommit=self.autocommit)
            if self.server_lock:
                self._take_server_lock(raw)
            self._raw = raw
            self._fresh = True
        return raw

    def _take_server_lock(self, raw: mariadb.Connection) -> None:
        # One writer per database: the message and receipt counters live in
        # the server's memory (see storage.sql.state).  The lock belongs to
        # this connection and goes with it, also when the server is killed.
        cur = raw.cursor()
        cur.execute("SELECT GET_LOCK(CONCAT('tidings.server.', DATABASE()), 0)")
        if cur.fetchone()[0] != 1:
            raw.close()
            raise StorageError(f"another tidings server is using {self.location.describe()}")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        self._sync()
        cur = self._connection().cursor()
        cur.execute(sql, tuple(params))
        return cur  # type: ignore[no-any-return]

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = rows if isinstance(rows, list) else list(rows)
        if not batch:
            return  # the connector refuses an empty batch; SQLite does nothing
        statements = rewrite(sql, batch) if len(batch) > 1 else None
        if statements is None:
            self._sync()
            self._connection().cursor().executemany(sql, batch)
        elif self._pipelined:
            self._queue(self._connection().cursor(), statements)
        else:  # the group commit's hot path: see storage.mariadb.batch
            cur = self._connection().cursor()
            for statement in statements:
                cur.execute(statement)

    def _queue(self, cur: Any, statements: list[str]) -> None:
        if self._pipe is None:
            self._pipe = ThreadPoolExecutor(1, thread_name_prefix="mariadb-statements")

        def run() -> None:
            if self._broken:
                return  # an earlier statement failed: the transaction is lost
            try:
                for statement in statements:
                    cur.execute(statement)
            except BaseException:
                self._broken = True
                raise

        self._queued.append(self._pipe.submit(run))

    def _sync(self) -> None:
        """Wait for the queued statements; raise the first failure."""
        if not self._queued:
            return
        queued, self._queued = self._queued, []
        failure = None
        for future in queued:
            exc = future.exception()
            if exc is not None and failure is None:
                failure = exc
        self._broken = False
        if failure is not None:
            raise failure

    def _settle(self) -> None:
        """Wait for the queued statements, whatever their outcome."""
        with contextlib.suppress(BaseException):
            self._sync()

    def begin(self, *, durable: bool = True) -> bool:
        """Open the transaction with a read of the directory version.

        Every COMMIT is durable here (`durable` is ignored):
        innodb_flush_log_at_trx_commit is a server-wide setting.

        Stale when the version changed (an admin change from another process)
        or the connection is new (what was cached may predate an outage).
        """
        cur = self.execute("SELECT version FROM directory_version")
        row = cur.fetchone()
        version = -1 if row is None else int(row[0])
        stale = self._fresh or version != self._version
        self._version = version
        self._fresh = False
        return stale

    def commit(self) -> None:
        self._sync()
        if self._raw is None:
            raise StorageUnavailableError("MariaDB: the connection was lost before COMMIT")
        self._raw.commit()

    def rollback(self) -> None:
        self._settle()
        raw = self._raw
        if raw is None:
            return
        try:
            raw.rollback()
        except mariadb.Error:
            # The connection is gone (or broken): drop it; the next call
            # connects again.
            self.close()

    def translate(self, exc: BaseException) -> StorageError:
        error = translate(exc)
        if isinstance(error, StorageUnavailableError):
            self.close()
        return error

    def retryable(self, exc: BaseException) -> bool:
        """ER_LOCK_DEADLOCK: InnoDB rolled the transaction back; run it again."""
        return getattr(exc, "errno", None) == _DEADLOCK

    def close(self) -> None:
        self._settle()
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            pipe.shutdown()
        raw, self._raw = self._raw, None
        if raw is not None:
            with contextlib.suppress(mariadb.Error):  # already gone
                raw.close()

    def advisory_lock(self, name: str, timeout_s: float) -> None:
        cur = self.execute("SELECT GET_LOCK(?, ?)", (name, timeout_s))
        if cur.fetchone()[0] != 1:
            raise StorageUnavailableError(f"MariaDB: lock {name!r} is held by another process")

    def advisory_unlock(self, name: str) -> None:
        try:
            self.execute("SELECT RELEASE_LOCK(?)", (name,)).fetchall()
        except mariadb.Error as exc:
            log.warning("cannot release lock %r: %s", name, exc)
