"""Copy every record from one SQL backend to another (``tidings db copy``).

Both databases are at the same schema version (the caller migrates them).
The target must hold no users yet.  The source is read inside one
transaction, so what is copied is one consistent moment; the caller makes
sure no server writes to it meanwhile (the server lock).  Tables are read in
primary-key order, a page at a time, so memory stays bounded whatever the
size; each page goes into the target in one executemany, and everything is
committed at the end, then counted on both sides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from appliance.errors import ConflictError, StorageError
from appliance.storage.sql.dialect import Connection

_PAGE = 2000


@dataclass(frozen=True, slots=True)
class Table:
    """A table to copy: its columns (the order both sides use) and its key."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]


#: Not copied: credential_changes (a log only a server running on this very
#: database reads; a server on the copy starts from its newest entry) and
#: leases and challenge_answers (held by processes on this very database,
#: for minutes; a server on the copy takes its own).  Certificates and
#: renewal state are: a moved appliance keeps serving its certificate, and
#: its backoff, without asking the CA.
TABLES = (
    Table("apps", ("id", "name", "created_ms"), ("id",)),
    Table("users", ("id", "app_id", "address", "created_ms"), ("id",)),
    Table("tokens", ("hash", "user_id", "expires_ms", "created_ms"), ("hash",)),
    Table("devices", ("id", "user_id", "device", "last_seen_ms", "report_cursor"), ("id",)),
    Table("groups", ("id", "app_id", "name", "flags", "created_ms"), ("id",)),
    Table("members", ("group_id", "user_id", "perms"), ("group_id", "user_id")),
    Table("messages", ("seq", "sender_id", "msg_id", "dest_user", "dest_group", "refid",
                       "accepted_ms", "expires_ms", "type", "flags", "priority", "status",
                       "payload"), ("seq",)),
    Table("deliveries", ("device_id", "priority", "seq", "expires_ms"),
          ("device_id", "priority", "seq")),
    Table("group_status", ("seq", "member_id", "status", "ts_ms"), ("seq", "member_id")),
    Table("group_counts", ("seq", "recipients", "delivered_count", "read_count"), ("seq",)),
    Table("receipts", ("user_id", "seq", "msg_id", "status", "peer_id", "group_id", "ts_ms"),
          ("user_id", "seq")),
    Table("app_secrets", ("hash", "app_id", "created_ms"), ("hash",)),
    Table("operator_keys", ("hash", "created_ms"), ("hash",)),
    Table("certificates", ("name", "fullchain_pem", "key_pem", "issuer", "not_before_ms",
                           "not_after_ms", "version"), ("name",)),
    Table("renewal_state", ("name", "attempts", "next_attempt_ms", "last_attempt_ms",
                            "last_error", "request", "requested_ms"), ("name",)),
    # Media (issue 15): the records; the blobs themselves are files under the data
    # directory (media/blobs), which move with it.
    Table("files", ("id", "app_id", "owner_id", "size", "received", "sha256", "content_type",
                    "name", "width", "height", "created_ms", "expires_ms"), ("id",)),
    Table("file_grants", ("file_id", "user_id", "group_id", "expires_ms"),
          ("file_id", "user_id", "group_id")),
    Table("file_variants", ("file_id", "variant", "sha256", "size", "content_type", "width",
                            "height"), ("file_id", "variant")),
    Table("blobs", ("sha256", "size", "refs", "unreferenced_since_ms"), ("sha256",)),
    Table("pictures", ("app_id", "kind", "owner_id", "file_id"), ("app_id", "kind", "owner_id")),
    Table("media_keys", ("name", "secret", "created_ms"), ("name",)),
)


def copy_all(source: Connection, target: Connection,
             progress: Callable[[str, int], None] = lambda table, rows: None) -> dict[str, int]:
    """Copy every table; returns rows per table (equal on both sides).

    Raises:
        ConflictError: the target already holds users.
        StorageError: a read or write failed (the target is rolled back), or
            the counts differ afterwards.
    """
    counts: dict[str, int] = {}
    try:
        source.begin()  # one snapshot of the source for the whole copy
        target.begin()
        if target.execute("SELECT COUNT(*) FROM users").fetchone()[0]:
            raise ConflictError("the target database already holds users; copy only into a"
                                " new, empty database")
        # The migrations created the default app and the version row.
        target.execute("DELETE FROM apps")
        for table in TABLES:
            counts[table.name] = _copy_table(source, target, table)
            progress(table.name, counts[table.name])
        target.execute("UPDATE directory_version SET version = version + 1")
        target.commit()
        source.rollback()
    except (*source.errors, *target.errors) as exc:
        target.rollback()
        source.rollback()
        conn = source if isinstance(exc, source.errors) else target
        raise conn.translate(exc) from None
    except StorageError:
        target.rollback()
        source.rollback()
        raise
    _verify(target, counts)
    return counts


def _copy_table(source: Connection, target: Connection, table: Table) -> int:
    cols = ", ".join(table.columns)
    key = ", ".join(table.key)
    positions = [table.columns.index(k) for k in table.key]
    marks = ", ".join("?" for _ in table.columns)
    insert = f"INSERT INTO {table.name} ({cols}) VALUES ({marks})"
    first = f"SELECT {cols} FROM {table.name} ORDER BY {key} LIMIT {_PAGE}"
    bound = ", ".join("?" for _ in positions)
    after = (f"SELECT {cols} FROM {table.name} WHERE ({key}) > ({bound})"
             f" ORDER BY {key} LIMIT {_PAGE}")
    total = 0
    rows = source.execute(first).fetchall()
    while rows:
        target.executemany(insert, [tuple(r) for r in rows])
        total += len(rows)
        if len(rows) < _PAGE:
            break
        last = rows[-1]
        rows = source.execute(after, [last[i] for i in positions]).fetchall()
    return total


def _verify(target: Connection, counts: dict[str, int]) -> None:
    try:
        for name, expected in counts.items():
            found = target.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0]
            if found != expected:
                raise StorageError(f"copy check failed: {name} has {found} rows in the target,"
                                   f" {expected} were copied")
    except target.errors as exc:
        raise target.translate(exc) from None
