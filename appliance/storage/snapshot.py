"""What a backup and a restore need of the store (``tidings backup|restore``).

SQLite is copied with its online backup API from a connection of its own:
one step (``pages=-1``) copies every page inside one read transaction, so the
copy is one committed moment while the server keeps writing (WAL: readers
never block the writer).  A stepped backup would start over each time the
server commits, which a busy server does every few milliseconds.  MariaDB is
dumped and loaded by its own programs (`appliance.backup.store`); this module
gives them the schema version, the emptiness check and the server lock.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from appliance.config.database import DatabaseLocation
from appliance.errors import StorageError, StorageUnavailableError
from appliance.storage import migrations
from appliance.storage.maintenance import connection
from appliance.storage.sql.dialect import Connection

#: How long the copy waits for a lock before giving up (the server's own bound).
_BUSY_TIMEOUT_MS = 10_000


def known_schema_version(dialect: str) -> int:
    """The newest schema version this build can migrate to."""
    return max(m.version for m in migrations.load(dialect))


def snapshot_sqlite(source: Path, target: Path) -> int:
    """Copy the SQLite database `source` into the new file `target`; its schema version.

    The copy is a single file (rollback journal, not WAL) that passed
    ``PRAGMA quick_check``.

    Raises:
        StorageUnavailableError: the source cannot be read.
        StorageError: the copy is not sound.
    """
    if not source.is_file():
        raise StorageUnavailableError(f"no SQLite database at {source}")
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StorageUnavailableError(f"cannot open {source}: {exc}") from None
    try:
        dst = sqlite3.connect(target, isolation_level=None)
        try:
            src.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            src.backup(dst)  # pages=-1: one step, one read transaction
            dst.execute("PRAGMA journal_mode = DELETE")
            if dst.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise StorageError(f"the copy of {source} fails SQLite's quick_check")
            return _version(dst)
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise StorageUnavailableError(f"SQLite backup of {source} failed: {exc}") from None
    finally:
        src.close()


def sqlite_file_version(path: Path) -> int:
    """The schema version recorded in a SQLite file (0: none), read-only.

    Raises:
        StorageError: not a SQLite database.
    """
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise StorageError(f"{path} fails SQLite's quick_check")
            return _version(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StorageError(f"{path} is not a usable SQLite database: {exc}") from None


def _version(conn: sqlite3.Connection) -> int:
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'"
                    " AND name = 'schema_migrations'").fetchone() is None:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0)


def schema_version(location: DatabaseLocation, timeout_s: float) -> int:
    """The newest migration applied to the store at `location` (0: none).

    Raises:
        StorageUnavailableError: unreachable.
    """
    with connection(location, timeout_s) as conn:
        try:
            if not _has_migrations(conn):
                return 0
            row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        except conn.errors as exc:
            raise conn.translate(exc) from None
        return int(row[0] or 0)


def holds_users(location: DatabaseLocation, timeout_s: float) -> bool:
    """Whether the store at `location` holds any user (an empty one holds only its schema).

    Raises:
        StorageUnavailableError: unreachable.
    """
    if location.kind == "sqlite" and (location.sqlite_path is None
                                      or not location.sqlite_path.exists()):
        return False
    with connection(location, timeout_s) as conn:
        try:
            if not _has_table(conn, "users"):
                return False
            return conn.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None
        except conn.errors as exc:
            raise conn.translate(exc) from None


@contextlib.contextmanager
def exclusive(location: DatabaseLocation, timeout_s: float) -> Iterator[None]:
    """Hold the lock a running server holds (none can start meanwhile), without a
    connection to a SQLite file (the caller replaces it).

    Raises:
        StorageError: a server is running on this store.
        StorageUnavailableError: MariaDB is unreachable.
    """
    if location.kind == "sqlite":
        from appliance.storage.sqlite.connection import ServerLock

        assert location.sqlite_path is not None
        location.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        lock = ServerLock(location.sqlite_path)
        lock.acquire()
        try:
            yield
        finally:
            lock.release()
        return
    with connection(location, timeout_s, server_lock=True):
        yield


def drop_all_tables(location: DatabaseLocation, timeout_s: float) -> list[str]:
    """MariaDB: drop every table of the database (before a dump is loaded into it).

    Raises:
        StorageUnavailableError: unreachable.  StorageError: refused.
    """
    if location.kind != "mariadb":
        raise StorageError("drop_all_tables is for MariaDB databases")
    with connection(location, timeout_s) as conn:
        try:
            names = [row[0] for row in conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = DATABASE()")]
            for name in names:
                # Names come from the server's own catalogue; quoted all the same.
                conn.execute("DROP TABLE IF EXISTS `{}`".format(name.replace("`", "``")))
        except conn.errors as exc:
            raise conn.translate(exc) from None
        return names


def _has_migrations(conn: Connection) -> bool:
    return _has_table(conn, "schema_migrations")


def _has_table(conn: Connection, name: str) -> bool:
    if conn.dialect.name == "sqlite":
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    else:
        sql = ("SELECT 1 FROM information_schema.tables WHERE table_schema = DATABASE()"
               " AND table_name = ?")
    return conn.execute(sql, (name,)).fetchone() is not None
