"""Apply and report the numbered migrations (`appliance.storage.migrations`).

SQLite runs every pending migration in one transaction, so a failure leaves
the schema as it was.  MariaDB commits each DDL statement implicitly, so
there the migrations take an advisory lock (``GET_LOCK``: two processes never
migrate at once), each migration is written to be re-runnable (``IF NOT
EXISTS``) and is recorded as soon as its statements ran: an interrupted run
resumes where it stopped.
"""

from __future__ import annotations

from appliance.errors import SchemaNewerError, StorageError
from appliance.storage import migrations
from appliance.storage.models import AppliedMigration, SchemaStatus
from appliance.storage.sql.dialect import Connection

_LOCK = "tidings.migrate"
_LOCK_TIMEOUT_S = 60.0


def status(conn: Connection) -> SchemaStatus:
    """The applied and pending migrations; changes nothing.

    Raises:
        StorageError: an applied migration differs from this binary's, or the
            database is newer than this binary.
    """
    known = migrations.load(conn.dialect.name)
    try:
        if not _has_table(conn):
            return SchemaStatus((), tuple(known))
        applied = tuple(AppliedMigration(*row) for row in conn.execute(
            "SELECT version, name, checksum, applied_ms FROM schema_migrations ORDER BY version"))
    except conn.errors as exc:
        raise conn.translate(exc) from None
    _check_applied({a.version: a.checksum for a in applied}, known)
    done = {a.version for a in applied}
    return SchemaStatus(applied, tuple(m for m in known if m.version not in done))


def migrate(conn: Connection, now_ms: int) -> list[int]:
    """Apply every migration this binary knows that the database lacks.

    Returns the versions applied.

    Raises:
        StorageError: an applied migration changed, or the database is newer
            than this binary.
        StorageUnavailableError: the database is unreachable, or another
            process held the migration lock for too long.
    """
    known = migrations.load(conn.dialect.name)
    if conn.dialect.transactional_ddl:
        try:
            conn.begin()
            done = _apply(conn, known, now_ms)
            conn.commit()
            return done
        except conn.errors as exc:
            conn.rollback()
            raise conn.translate(exc) from None
        except StorageError:
            conn.rollback()
            raise
    conn.advisory_lock(_LOCK, _LOCK_TIMEOUT_S)
    try:
        return _apply(conn, known, now_ms)
    except conn.errors as exc:
        raise conn.translate(exc) from None
    finally:
        conn.advisory_unlock(_LOCK)


def _apply(conn: Connection, known: list[migrations.Migration], now_ms: int) -> list[int]:
    conn.execute(conn.dialect.migrations_table)
    applied = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
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
    return done


def _has_table(conn: Connection) -> bool:
    if conn.dialect.name == "sqlite":
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    else:
        sql = ("SELECT 1 FROM information_schema.tables WHERE table_schema = DATABASE()"
               " AND table_name = 'schema_migrations'")
    return conn.execute(sql).fetchone() is not None


def _check_applied(applied: dict[int, str], known: list[migrations.Migration]) -> None:
    by_version = {m.version: m for m in known}
    for version, checksum in applied.items():
        mig = by_version.get(version)
        if mig is None:
            raise SchemaNewerError(f"database schema version {version} is newer than this"
                                   " binary; upgrade tidings", version=max(applied),
                                   known=max(by_version, default=0))
        if mig.checksum != checksum:
            raise StorageError(f"migration {version} ({mig.name}) differs from the one applied")
