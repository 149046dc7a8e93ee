"""Offline operations on a database: schema status, migrate, copy (``tidings db``).

Plain blocking calls for the CLI; a running server is never needed (and for a
copy, must not be running: the copy takes the source's server lock).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from appliance.config.database import DatabaseLocation
from appliance.errors import StorageError
from appliance.storage.models import BootstrapReport, SchemaStatus
from appliance.storage.sql import copy as sql_copy, migrate as sql_migrate
from appliance.storage.sql.dialect import Connection


@contextlib.contextmanager
def connection(location: DatabaseLocation, timeout_s: float, *, autocommit: bool = True,
               server_lock: bool = False) -> Iterator[Connection]:
    """A connection to `location`, closed afterwards.

    `server_lock`: also hold the lock a running server holds, so that this
    fails while one runs (and none starts meanwhile).

    Raises:
        StorageUnavailableError: the database cannot be opened or reached.
        StorageError: `server_lock` and a server is running.
    """
    if location.kind == "sqlite":
        from appliance.storage.sqlite.connection import ServerLock, connect

        assert location.sqlite_path is not None
        location.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        lock = ServerLock(location.sqlite_path) if server_lock else None
        if lock is not None:
            lock.acquire()
        try:
            conn: Connection = connect(location.sqlite_path)
            try:
                yield conn
            finally:
                conn.close()
        finally:
            if lock is not None:
                lock.release()
        return
    from appliance.storage.mariadb.connection import MariaConnection

    maria = MariaConnection(location, timeout_s, autocommit=autocommit, server_lock=server_lock)
    try:
        try:
            maria.execute("SELECT 1").fetchall()  # connect (and lock) now
        except maria.errors as exc:
            raise maria.translate(exc) from None
        yield maria
    finally:
        maria.close()


def status(location: DatabaseLocation, timeout_s: float) -> SchemaStatus:
    """Applied and pending migrations.

    Raises:
        StorageUnavailableError: unreachable.  StorageError: a schema mismatch.
    """
    with connection(location, timeout_s) as conn:
        return sql_migrate.status(conn)


def flush_log_at_trx_commit(location: DatabaseLocation, timeout_s: float) -> int:
    """MariaDB's ``innodb_flush_log_at_trx_commit`` (1: every COMMIT is on disk, SPEC M14).

    Raises:
        StorageUnavailableError: unreachable.  StorageError: not a MariaDB location.
    """
    if location.kind != "mariadb":
        raise StorageError(f"{location.describe()} is not MariaDB")
    with connection(location, timeout_s) as conn:
        try:
            row = conn.execute("SELECT @@innodb_flush_log_at_trx_commit").fetchone()
        except conn.errors as exc:
            raise conn.translate(exc) from None
    return int(row[0])


def bootstrap(admin: DatabaseLocation, database: str, service_user: str,
              timeout_s: float) -> BootstrapReport:
    """Create `database` on a MariaDB server and the service's account, reached by
    unix_socket (no password anywhere); idempotent.  See `storage.mariadb.bootstrap`.

    Raises:
        UsageError: the database or user name is not acceptable.
        StorageUnavailableError: the server cannot be reached as `admin`.
        StorageError: the server refused a statement.
    """
    from appliance.storage.mariadb.bootstrap import bootstrap as bootstrap_mariadb

    return bootstrap_mariadb(admin, database, service_user, timeout_s)


def durability_warnings(location: DatabaseLocation, timeout_s: float) -> tuple[str, ...]:
    """MariaDB settings that weaken durability (SPEC M14), with their values; empty: fine.

    Raises:
        StorageUnavailableError: unreachable.
    """
    from appliance.storage.mariadb.bootstrap import durability_warnings as warnings_of

    return warnings_of(location, timeout_s)


def migrate(location: DatabaseLocation, timeout_s: float, now_ms: int) -> list[int]:
    """Apply pending migrations; returns their versions.

    Raises:
        StorageUnavailableError: unreachable or locked.  StorageError: a schema mismatch.
    """
    with connection(location, timeout_s) as conn:
        return sql_migrate.migrate(conn, now_ms)


def copy(source: DatabaseLocation, target: DatabaseLocation, timeout_s: float, now_ms: int,
         progress: Callable[[str, int], None] = lambda table, rows: None) -> dict[str, int]:
    """Migrate both, then copy every record from `source` into the empty `target`.

    Raises:
        ConflictError: the target holds users already.
        StorageError: a server runs on either side, the same database was
            named twice, or the copy failed (the target is left unchanged).
    """
    if source == target:
        raise StorageError("source and target are the same database")
    migrate(source, timeout_s, now_ms)
    migrate(target, timeout_s, now_ms)
    with connection(source, timeout_s, autocommit=False, server_lock=True) as src, \
            connection(target, timeout_s, autocommit=False, server_lock=True) as dst:
        return sql_copy.copy_all(src, dst, progress)
