"""Opening SQLite connections and translating their errors.

Durability settings (SPEC M14): WAL journal with ``synchronous=FULL``, so a
COMMIT returns only after the WAL is fsynced; the engine tells a sender SENT
only after that.  `busy_timeout` lets the CLI and a running server share the
file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from pathlib import Path

from appliance.errors import ConflictError, StorageError, StorageUnavailableError
from appliance.storage.sql.dialect import SQLITE, Dialect

_BUSY_TIMEOUT_MS = 10_000


def _make_private(path: Path) -> None:
    """Make the database and its WAL files 0600 (a file made under a lax umask, or before).

    The CLI sets a private umask for everything it creates; this covers a
    database that an earlier version created world-readable (issue 12).
    """
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(OSError):  # not there (yet), or not ours: SQLite says so
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)


def open_connection(path: Path) -> sqlite3.Connection:
    """Open `path` with the appliance's pragmas, in explicit-transaction mode.

    Raises:
        StorageUnavailableError: the file cannot be opened or configured.
    """
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                               cached_statements=256)
        _make_private(path)
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute("PRAGMA cache_size = -65536")  # 64 MiB of pages per connection
        conn.execute("PRAGMA temp_store = MEMORY")
        return conn
    except sqlite3.Error as exc:
        raise StorageUnavailableError(f"cannot open SQLite database {path}: {exc}") from None


def translate(exc: sqlite3.Error) -> StorageError:
    """Turn a driver exception into our storage error (never leak sqlite3 types)."""
    if isinstance(exc, sqlite3.IntegrityError):
        return ConflictError(str(exc))
    if isinstance(exc, sqlite3.OperationalError):
        # "database or disk is full", "database is locked", I/O errors: the
        # store cannot take the write now, and nothing of it was committed.
        return StorageUnavailableError(f"SQLite: {exc}")
    return StorageError(f"SQLite: {exc}")


class SqliteConnection:
    """A sqlite3 connection as the shared SQL code's `Connection`.

    `execute` and `executemany` are the driver's own bound methods, not
    wrappers: the writer calls them per batch on the reliable message path.
    """

    dialect: Dialect = SQLITE
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)

    def __init__(self, raw: sqlite3.Connection) -> None:
        self.raw = raw
        self.execute = raw.execute
        self.executemany = raw.executemany
        self._version = -1
        self._relaxed = False

    def begin(self, *, durable: bool = True) -> bool:
        """BEGIN IMMEDIATE; stale when another connection committed since the last one.

        ``PRAGMA data_version`` changes whenever another connection (the CLI,
        another process) commits.
        """
        version: int = self.raw.execute("PRAGMA data_version").fetchone()[0]
        stale = version != self._version
        self._version = version
        if not durable:
            # WAL with synchronous=NORMAL: the commit is atomic and survives a
            # process crash; the next FULL commit's fsync covers it too.  It can
            # only be changed outside a transaction.
            self.raw.execute("PRAGMA synchronous = NORMAL")
            self._relaxed = True
        self.raw.execute("BEGIN IMMEDIATE")
        return stale

    def commit(self) -> None:
        try:
            self.raw.execute("COMMIT")
        finally:
            self._restore()

    def rollback(self) -> None:
        try:
            if self.raw.in_transaction:
                self.raw.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the transaction is gone either way
        with contextlib.suppress(sqlite3.Error):  # broken: it is not used again
            self._restore()

    def _restore(self) -> None:
        if self._relaxed and not self.raw.in_transaction:
            self.raw.execute("PRAGMA synchronous = FULL")
            self._relaxed = False

    def translate(self, exc: BaseException) -> StorageError:
        return translate(exc) if isinstance(exc, sqlite3.Error) else StorageError(str(exc))

    def retryable(self, exc: BaseException) -> bool:
        """SQLite has one writer at a time: no deadlocks (busy_timeout waits)."""
        return False

    def close(self) -> None:
        self.raw.close()

    def advisory_lock(self, name: str, timeout_s: float) -> None:
        """Nothing to take: BEGIN IMMEDIATE already admits one writer at a time."""

    def advisory_unlock(self, name: str) -> None:
        """See `advisory_lock`."""


def connect(path: Path) -> SqliteConnection:
    """`open_connection` wrapped for the shared SQL code."""
    return SqliteConnection(open_connection(path))


class ServerLock:
    """An exclusive lock on ``<database>.lock``: one server per SQLite file.

    The message and receipt counters live in the server's memory (see
    storage.sql.state), so a second server on the same file would reuse
    them; `flock` is released by the kernel when the process dies, even by
    SIGKILL.
    """

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + ".lock")
        self._fd = -1

    def acquire(self) -> None:
        """Raises `StorageError` if another process holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StorageError(f"another tidings server is using {self.path.with_suffix('')}"
                               ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
