"""Create the appliance's database and account on a MariaDB server (SPEC M14).

Run as an administrator who reaches the server over its socket with
unix_socket authentication (root on a Debian server since 10.4; the OS user
that initialised a private server).  The service account is identified via
unix_socket too: the server checks the connecting process's uid
(``SO_PEERCRED``), so no password exists anywhere.  Every statement is
idempotent: running the bootstrap twice changes nothing.
"""

from __future__ import annotations

import re

import mariadb

from appliance.config.database import DatabaseLocation
from appliance.errors import UsageError
from appliance.storage.mariadb.connection import open_raw, translate
from appliance.storage.models import BootstrapReport

_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,79}$")
_DATABASE = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_GRANTS = "SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX, DROP, REFERENCES, LOCK TABLES"


def bootstrap(admin: DatabaseLocation, database: str, service_user: str,
              timeout_s: float) -> BootstrapReport:
    """Create `database` and ``'service_user'@'localhost' IDENTIFIED VIA unix_socket``.

    Raises:
        UsageError: the database or user name is not acceptable.
        StorageUnavailableError: the server cannot be reached as `admin`.
        StorageError: the server refused a statement.
    """
    if not _DATABASE.match(database):
        raise UsageError(f"database name must be 1-64 letters, digits or '_': {database!r}")
    if not _USER.match(service_user):
        raise UsageError(f"not an OS user name: {service_user!r}")
    conn = open_raw(admin, timeout_s, database=False)
    try:
        cur = conn.cursor()
        cur.execute("SELECT VERSION()")
        version = str(cur.fetchone()[0])
        cur.execute("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = ?",
                    (database,))
        new_db = cur.fetchone()[0] == 0
        cur.execute("SELECT COUNT(*) FROM mysql.user WHERE user = ? AND host = 'localhost'",
                    (service_user,))
        new_user = cur.fetchone()[0] == 0
        # Names were checked against the patterns above: quoting is safe.
        cur.execute(f"CREATE DATABASE IF NOT EXISTS `{database}`"
                    " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        cur.execute(f"CREATE USER IF NOT EXISTS '{service_user}'@'localhost'"
                    " IDENTIFIED VIA unix_socket")
        cur.execute(f"GRANT {_GRANTS} ON `{database}`.* TO '{service_user}'@'localhost'")
        warnings = _durability_warnings(cur)
    except mariadb.Error as exc:
        raise translate(exc, f"bootstrap on {admin.describe()}") from None
    finally:
        conn.close()
    return BootstrapReport(version, new_db, new_user, warnings)


def durability_warnings(location: DatabaseLocation, timeout_s: float) -> tuple[str, ...]:
    """Server settings that would make a COMMIT less than durable.

    Raises:
        StorageUnavailableError: the server cannot be reached.
    """
    conn = open_raw(location, timeout_s)
    try:
        return _durability_warnings(conn.cursor())
    except mariadb.Error as exc:
        raise translate(exc) from None
    finally:
        conn.close()


def _durability_warnings(cur: mariadb.Cursor) -> tuple[str, ...]:
    cur.execute("SELECT @@innodb_flush_log_at_trx_commit, @@default_storage_engine")
    flush, engine = cur.fetchone()
    out = []
    if int(flush) != 1:
        out.append(f"innodb_flush_log_at_trx_commit = {flush}: a crash can lose messages the"
                   " sender was told were SENT; set it to 1")
    if str(engine).lower() != "innodb":
        out.append(f"default_storage_engine = {engine}: tables are created as InnoDB anyway")
    return tuple(out)
