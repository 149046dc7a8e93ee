"""Opening SQLite connections, running migrations, translating errors.

Durability settings (SPEC M14): WAL journal with ``synchronous=FULL``, so a
COMMIT returns only after the WAL is fsynced; the engine tells a sender SENT
only after that.  `busy_timeout` lets the CLI and a running server share the
file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from appliance.errors import ConflictError, StorageError, StorageUnavailableError
from appliance.storage import migrations

_BUSY_TIMEOUT_MS = 10_000


def open_connection(path: Path) -> sqlite3.Connection:
    """Open `path` with the appliance's pragmas, in explicit-transaction mode.

    Raises:
        StorageUnavailableError: the file cannot be opened or configured.
    """
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                               cached_statements=256)
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


def migrate(conn: sqlite3.Connection, now_ms: int) -> list[int]:
    """Apply every migration this binary knows that the database lacks.

    Returns the versions applied.

    Raises:
        StorageError: an applied migration changed, or the database is newer
            than this binary.
    """
    known = migrations.load("sqlite")
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                     " name TEXT NOT NULL, checksum TEXT NOT NULL, applied_ms INTEGER NOT NULL)")
        applied = dict(conn.execute("SELECT version, checksum FROM schema_migrations"))
        _check_applied(applied, known)
        done = []
        for mig in known:
            if mig.version in applied:
                continue
            for statement in mig.statements():
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?, ?)",
                         (mig.version, mig.name, mig.checksum, now_ms))
            done.append(mig.version)
        conn.execute("COMMIT")
        return done
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise translate(exc) from None
    except StorageError:
        conn.execute("ROLLBACK")
        raise


def _check_applied(applied: dict[int, str], known: list[migrations.Migration]) -> None:
    by_version = {m.version: m for m in known}
    for version, checksum in applied.items():
        mig = by_version.get(version)
        if mig is None:
            raise StorageError(f"database schema version {version} is newer than this binary;"
                               " upgrade tidings")
        if mig.checksum != checksum:
            raise StorageError(f"migration {version} ({mig.name}) differs from the one applied")


def schema_status(conn: sqlite3.Connection) -> list[tuple[int, str, str]]:
    """(version, name, checksum) of every applied migration."""
    try:
        return list(conn.execute("SELECT version, name, checksum FROM schema_migrations"
                                 " ORDER BY version"))
    except sqlite3.Error as exc:
        raise translate(exc) from None
