"""The store: reachable, migrated to what this executable knows, and durable (SPEC M14).

Run as root on the service's SQLite file, looking leaves nothing root-owned
behind: SQLite's unix VFS gives the ``-wal`` and ``-shm`` files it creates as
root the owner of the database file (tests/doctor/test_store.py checks it).
"""

from __future__ import annotations

from typing import Final

from appliance.config.database import DatabaseLocation, resolve_database
from appliance.doctor.model import Finding, Subject, Verdict
from appliance.errors import SchemaNewerError, StorageError, StorageUnavailableError
from appliance.service.database import running
from appliance.storage import maintenance

STORE: Final = "store"
DURABILITY: Final = "durability"


def created(location: DatabaseLocation) -> bool:
    """False for an SQLite file that does not exist yet (looking must not create it)."""
    return location.kind != "sqlite" or (location.sqlite_path is not None
                                         and location.sqlite_path.exists())


def check_store(subject: Subject) -> Finding:
    """Fail when the store cannot be reached, or its schema is newer than this executable
    knows (it would refuse to start); warn when migrations are pending."""
    storage = subject.config.storage
    location = resolve_database(storage.database, subject.data_dir)
    where = location.describe()
    figures: dict[str, object] = {"backend": location.kind, "location": where}
    if not created(location):
        return Finding(STORE, Verdict.OK, f"{where}: not created yet (the server creates it"
                       " at its first start)", figures=figures)
    try:
        with running(location, subject.data_dir):
            schema = maintenance.status(location, storage.timeout_s)
    except SchemaNewerError as exc:
        figures.update(schema_version=exc.version, known_version=exc.known)
        return Finding(STORE, Verdict.FAIL, f"{where}: schema version {exc.version}, this"
                       f" executable knows up to {exc.known}: this executable is older than"
                       " the database", "run the newer tidings (the previous one is kept as"
                       " /usr/local/bin/tidings.prev after an upgrade), or `tidings upgrade`",
                       figures)
    except StorageUnavailableError as exc:
        return Finding(STORE, Verdict.FAIL, f"{where}: unreachable: {exc}",
                       "start the database server (systemctl start mariadb, or"
                       " tidings-mariadb for the private one) or correct [storage] database",
                       figures)
    except StorageError as exc:
        return Finding(STORE, Verdict.FAIL, f"{where}: {exc}",
                       "restore the database from a backup made by this version", figures)
    version = max((m.version for m in schema.applied), default=0)
    figures.update(schema_version=version, pending=[m.version for m in schema.pending])
    if schema.pending:
        return Finding(STORE, Verdict.WARN, f"{where}: schema version {version},"
                       f" {len(schema.pending)} migration(s) pending",
                       "tidings db migrate (the server also applies them when it starts)",
                       figures)
    return Finding(STORE, Verdict.OK, f"{where}: reachable, schema version {version}"
                   " (up to date)", figures=figures)


def check_durability(subject: Subject) -> Finding:
    """MariaDB only: `innodb_flush_log_at_trx_commit` must be 1, or a crash of the machine
    loses messages whose senders were told SENT (SPEC M4, M14)."""
    storage = subject.config.storage
    location = resolve_database(storage.database, subject.data_dir)
    if location.kind != "mariadb":
        return Finding(DURABILITY, Verdict.OK, "SQLite: every commit is synced"
                       " (synchronous=FULL); innodb_flush_log_at_trx_commit does not apply",
                       figures={"backend": location.kind})
    with running(location, subject.data_dir):
        value = maintenance.flush_log_at_trx_commit(location, storage.timeout_s)
    figures = {"innodb_flush_log_at_trx_commit": value}
    if value == 1:
        return Finding(DURABILITY, Verdict.OK, "innodb_flush_log_at_trx_commit = 1: every"
                       " COMMIT is on disk before a sender hears SENT", figures=figures)
    return Finding(DURABILITY, Verdict.FAIL, f"innodb_flush_log_at_trx_commit = {value}: a"
                   " crash of the machine can lose up to a second of messages whose senders"
                   " were told SENT",
                   "set innodb_flush_log_at_trx_commit = 1 under [mariadbd] in"
                   " /etc/mysql/mariadb.conf.d/50-server.cnf and restart MariaDB (at once:"
                   " SET GLOBAL innodb_flush_log_at_trx_commit = 1)", figures)
