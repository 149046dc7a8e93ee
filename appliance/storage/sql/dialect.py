"""What differs between the SQL backends, and the connection they share.

The writer, the reads and the admin changes (`writes`, `reads`, `admin`) are
one implementation over a DB-API connection; each backend supplies a
`Connection` (its driver wrapped so that it raises only our storage errors at
`begin`/`commit` and names its own driver exceptions in `errors`) and a
`Dialect` (the handful of statements whose SQL differs).  Everything else is
the SQL both SQLite and MariaDB accept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from appliance.errors import StorageError


class Cursor(Protocol):
    """The part of a DB-API cursor the SQL backends use."""

    @property
    def rowcount(self) -> int: ...
    @property
    def lastrowid(self) -> int | None: ...

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Any: ...


class Connection(Protocol):
    """One database connection, used by one thread at a time."""

    dialect: Dialect
    #: The driver's exception classes: callers catch these and `translate`.
    errors: tuple[type[BaseException], ...]

    # Properties, so that a backend may hand out its driver's bound methods
    # (no wrapper call on the hot path): ``execute(sql, params=())`` returns
    # a `Cursor`; ``executemany(sql, rows)``.
    @property
    def execute(self) -> Callable[..., Cursor]: ...
    @property
    def executemany(self) -> Callable[..., Any]: ...

    def begin(self, *, durable: bool = True) -> bool:
        """Open a write transaction; True when cached directory data may be stale.

        Stale means another connection committed directory changes, or the
        connection was re-established (what was cached may predate an outage).
        `durable=False` lets the COMMIT skip its fsync where the backend can:
        only for changes that nothing acknowledged depends on until a later,
        durable commit persists them too (in commit order); a crash then
        loses them whole, never in part.
        """
        ...

    def commit(self) -> None: ...
    def rollback(self) -> None:
        """Roll back the open transaction, if any; never raises."""
        ...

    def translate(self, exc: BaseException) -> StorageError:
        """The storage error for a driver exception (never leak driver types)."""
        ...

    def retryable(self, exc: BaseException) -> bool:
        """Whether the transaction that raised `exc` may simply run again (a deadlock)."""
        ...

    def close(self) -> None: ...

    def advisory_lock(self, name: str, timeout_s: float) -> None:
        """Take a lock that another process asking for `name` waits for.

        Raises:
            StorageUnavailableError: not granted within `timeout_s`.
        """
        ...

    def advisory_unlock(self, name: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """The statements whose SQL differs between backends."""

    name: str
    #: "INSERT OR IGNORE" (SQLite) / "INSERT IGNORE" (MariaDB).
    insert_ignore: str
    #: The two-argument maximum: max() in SQLite, GREATEST() in MariaDB.
    greatest: str
    #: A group recipient's first DELIVERED or EXPIRED (seq, member, status, ts): inserted,
    #: or raised from SENT (its ledger row); changes nothing otherwise (rowcount 0).
    first_group_status: str
    #: Insert a member, or change its permissions.
    upsert_member: str
    #: (sender, id) lookup of `n` pairs: builds the statement for a padded size.
    existing: Callable[[int], str]
    #: ``upsert(table, columns, replace, also)``: insert a row of `columns` (the
    #: primary key first), or, when its key exists, set the `replace` columns
    #: to the new row's values and make the assignment `also` (may be "").
    #: One statement: MariaDB takes the row's exclusive lock at once, where
    #: INSERT IGNORE then UPDATE would take a shared one first, and two
    #: processes doing so deadlock on the upgrade.
    upsert: Callable[[str, Sequence[str], Sequence[str], str], str]
    #: Whether DDL can run inside a transaction (SQLite) or commits implicitly (MariaDB).
    transactional_ddl: bool
    #: The table that records applied migrations.
    migrations_table: str
    #: Appended to a SELECT that must lock its rows until COMMIT: " FOR UPDATE"
    #: (MariaDB); "" on SQLite, where ``BEGIN IMMEDIATE`` admits one writer.
    for_update: str = ""


def _sqlite_existing(size: int) -> str:
    values = ",".join("(?,?)" for _ in range(size))
    # A join, not "(a, b) IN (VALUES ...)": SQLite scans the whole index for
    # the IN form and searches it for the join.
    return ("SELECT m.sender_id, m.msg_id, m.seq, m.status, m.accepted_ms"
            f" FROM (VALUES {values}) AS v JOIN messages AS m"
            " ON m.sender_id = v.column1 AND m.msg_id = v.column2")


def _mariadb_existing(size: int) -> str:
    # MariaDB turns a row-constructor IN list into ranges on the unique index.
    values = ",".join("(?,?)" for _ in range(size))
    return ("SELECT sender_id, msg_id, seq, status, accepted_ms FROM messages"
            f" WHERE (sender_id, msg_id) IN ({values})")


def _sqlite_upsert(table: str, columns: Sequence[str], replace: Sequence[str],
                   also: str) -> str:
    sets = ", ".join([f"{c} = excluded.{c}" for c in replace] + ([also] if also else []))
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            f" ON CONFLICT ({columns[0]}) DO UPDATE SET {sets}")


def _mariadb_upsert(table: str, columns: Sequence[str], replace: Sequence[str],
                    also: str) -> str:
    sets = ", ".join([f"{c} = VALUES({c})" for c in replace] + ([also] if also else []))
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            f" ON DUPLICATE KEY UPDATE {sets}")


SQLITE = Dialect(
    name="sqlite",
    insert_ignore="INSERT OR IGNORE",
    greatest="max",
    first_group_status="INSERT INTO group_status (seq, member_id, status, ts_ms)"
                       " VALUES (?, ?, ?, ?) ON CONFLICT (seq, member_id) DO UPDATE SET"
                       " status = excluded.status, ts_ms = excluded.ts_ms"
                       " WHERE group_status.status = 1",
    upsert_member="INSERT INTO members VALUES (?, ?, ?) ON CONFLICT (group_id, user_id)"
                  " DO UPDATE SET perms = excluded.perms",
    existing=_sqlite_existing,
    upsert=_sqlite_upsert,
    transactional_ddl=True,
    migrations_table="CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                     " name TEXT NOT NULL, checksum TEXT NOT NULL, applied_ms INTEGER NOT NULL)",
)

MARIADB = Dialect(
    name="mariadb",
    insert_ignore="INSERT IGNORE",
    greatest="GREATEST",
    # Affected rows: 1 inserted, 2 raised, 0 unchanged (as SQLite's WHERE).  The
    # assignments run in order: ts_ms first, while `status` is still the old one.
    first_group_status="INSERT INTO group_status (seq, member_id, status, ts_ms)"
                       " VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE"
                       " ts_ms = IF(status = 1, VALUES(ts_ms), ts_ms),"
                       " status = IF(status = 1, VALUES(status), status)",
    upsert_member="INSERT INTO members VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE"
                  " perms = VALUES(perms)",
    existing=_mariadb_existing,
    upsert=_mariadb_upsert,
    transactional_ddl=False,
    migrations_table="CREATE TABLE IF NOT EXISTS schema_migrations (version INT PRIMARY KEY,"
                     " name VARCHAR(200) NOT NULL, checksum CHAR(64) NOT NULL,"
                     " applied_ms BIGINT NOT NULL) ENGINE=InnoDB",
    for_update=" FOR UPDATE",
)
