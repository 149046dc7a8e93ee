"""Who may read a file (issue 15): grants, the FILE flag's check, and what a deleted
user or group leaves.

Nothing crosses apps: a file names its app; a grant is given only to a user
or a group of that app, and `may_read` checks the reader's app again (user
and group ids are global, apps are not visible in them).  Group grants are
read through the membership at the time of the read: removing a member
revokes its access, adding one gives it.  Only members with the RECEIVE
permission read (they are the ones a group message reaches, SPEC M5).

The FILE flag's check and grant (`accept_shared`) run inside the writer's
group-commit transaction of the message that carries them (PROTOCOL.md
§3.3.1).
"""

from __future__ import annotations

from collections.abc import Callable

from appliance.errors import AttachmentError, NotFoundError, StorageError
from appliance.protocol import attachments
from appliance.protocol.wire.constants import Status
from appliance.storage.models import NewMessage, Perm
from appliance.storage.sql.dialect import Connection
from appliance.storage.sql.files import BIGINT_MAX, check_range, drop_picture, group_app, user_app

#: Whether `user` may read the file through a live grant (to the user, or to a
#: group of the file's app the user receives in).  Parameters: file id, user,
#: now, file id, app, user, now.
_GRANTED = ("SELECT 1 FROM file_grants WHERE file_id = ? AND user_id = ? AND group_id = 0"
            " AND expires_ms > ?"
            " UNION ALL SELECT 1 FROM file_grants g JOIN groups gr ON gr.id = g.group_id"
            " JOIN members m ON m.group_id = g.group_id"
            " WHERE g.file_id = ? AND g.user_id = 0 AND gr.app_id = ? AND m.user_id = ?"
            f" AND (m.perms & {Perm.RECEIVE}) != 0 AND g.expires_ms > ? LIMIT 1")


def grant_file(conn: Connection, file_id: str, user: int | None, group: int | None,
               expires_ms: int) -> None:
    """See `FileStore.grant_file`; in the caller's transaction.

    Raises:
        StorageError: neither or both of `user` and `group`, or a bad time.
        NotFoundError: no such file, or the user or group is not of its app.
    """
    if (user is None) == (group is None):
        raise StorageError("a grant names a user or a group, exactly one")
    check_range(expires_ms, "an expiry time")
    row = conn.execute("SELECT app_id FROM files WHERE id = ?", (file_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no file {file_id}")
    app = int(row[0])
    if user is not None and (user <= 0 or user_app(conn, user) != app):
        raise NotFoundError(f"no user {user} in the file's app")
    if group is not None and (group <= 0 or group_app(conn, group) != app):
        raise NotFoundError(f"no group {group} in the file's app")
    _grant(conn, file_id, user or 0, group or 0, expires_ms)


def _grant(conn: Connection, file_id: str, user: int, group: int, expires_ms: int) -> None:
    greatest = conn.dialect.greatest
    if conn.dialect.name == "sqlite":
        upsert = ("INSERT INTO file_grants VALUES (?, ?, ?, ?) ON CONFLICT (file_id, user_id,"
                  f" group_id) DO UPDATE SET expires_ms = {greatest}(expires_ms,"
                  " excluded.expires_ms)")
    else:
        upsert = ("INSERT INTO file_grants VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE"
                  f" expires_ms = {greatest}(expires_ms, VALUES(expires_ms))")
    conn.execute(upsert, (file_id, user, group, expires_ms))
    # A file lives at least as long as its grants; a kept one (NULL) stays kept.
    conn.execute(f"UPDATE files SET expires_ms = {greatest}(expires_ms, ?) WHERE id = ?"
                 " AND expires_ms IS NOT NULL", (expires_ms, file_id))


def may_read(conn: Connection, file_id: str, user: int, now_ms: int) -> bool:
    """See `FileStore.may_read`."""
    row = conn.execute("SELECT app_id, owner_id, expires_ms FROM files WHERE id = ?",
                       (file_id,)).fetchone()
    if row is None or user <= 0:
        return False
    app, owner, expires = int(row[0]), int(row[1]), row[2]
    if expires is not None and expires <= now_ms:
        return False  # the sweep has yet to remove it
    if user_app(conn, user) != app:
        return False
    if owner == user:
        return True
    return conn.execute(_GRANTED, (file_id, user, now_ms, file_id, app, user,
                                   now_ms)).fetchone() is not None


def forget_user(conn: Connection, app: int, user: int, now_ms: int) -> None:
    """A user is being deleted: its grants and picture go, its files lose their owner.

    Its unfinished uploads expire now; what it shared stays for its recipients
    until the grants run out.  The owner becomes 0 (nobody), so a user that
    gets the id later (SQLite may reuse it) owns none of it.
    """
    conn.execute("DELETE FROM file_grants WHERE user_id = ? AND group_id = 0", (user,))
    drop_picture(conn, app, "user", user, now_ms)
    conn.execute("UPDATE files SET expires_ms = ? WHERE owner_id = ? AND sha256 IS NULL",
                 (now_ms, user))
    conn.execute("UPDATE files SET owner_id = 0 WHERE owner_id = ?", (user,))


def forget_group(conn: Connection, app: int, group: int, now_ms: int) -> None:
    """A group is being deleted: the grants to it and its picture go."""
    conn.execute("DELETE FROM file_grants WHERE group_id = ? AND user_id = 0", (group,))
    drop_picture(conn, app, "group", group, now_ms)


def check_shared(conn: Connection, app: int, sender: int, file_ids: tuple[str, ...],
                 now_ms: int) -> bool:
    """Whether `sender` may share every file of a FILE message (PROTOCOL.md §3.3.1).

    Each must exist in the sender's app, be complete, not have expired, and be
    the sender's own or readable through a live grant.  In the writer's
    transaction: at most `attachments.MAX_FILES_PER_MESSAGE` files, a few
    indexed reads each.
    """
    # Locked (MariaDB) until the grant commits, so that a sweep elsewhere cannot
    # delete a file between the check and the grant; in id order, so that two
    # messages naming the same files never wait for each other in a cycle.
    for file_id in sorted(file_ids):
        row = conn.execute("SELECT app_id, owner_id, sha256, expires_ms FROM files"
                           f" WHERE id = ?{conn.dialect.for_update}", (file_id,)).fetchone()
        if row is None or int(row[0]) != app or row[2] is None \
                or (row[3] is not None and row[3] <= now_ms):
            return False
        if int(row[1]) != sender and conn.execute(
                _GRANTED, (file_id, sender, now_ms, file_id, app, sender,
                           now_ms)).fetchone() is None:
            return False
    return True


def grant_shared(conn: Connection, file_ids: tuple[str, ...], user: int, group: int,
                 expires_ms: int) -> None:
    """Grant the files of a stored FILE message to its destination (a user, or a group
    when `group` is not 0) until `expires_ms` (clamped to what the column holds)."""
    expires_ms = min(expires_ms, BIGINT_MAX)
    for file_id in file_ids:
        _grant(conn, file_id, 0 if group else user, group, expires_ms)


def accept_shared(conn: Connection, m: NewMessage, recipients: list[int], now_ms: int,
                  retention_ms: int, targets: Callable[[], list[int] | None]
                  ) -> list[int] | int | None:
    """The writer's path for a new message with flag FILE, in its transaction.

    Returns Status.INVALID_FILE when the payload is not the convention or the sender
    may not share a file (nothing is counted or written); else `targets()`
    (the delivery targets, None when a quota refuses the message), and when
    there are targets every file is granted to the destination until the
    message expires plus `retention_ms`.
    """
    try:
        ids = attachments.file_ids(m.payload)
    except AttachmentError:
        return Status.INVALID_FILE
    if not check_shared(conn, m.app_id, m.sender_id, ids, now_ms):
        return Status.INVALID_FILE
    found = targets()
    if found is not None:
        grant_shared(conn, ids, recipients[0], m.group_id, m.expires_ms + retention_ms)
    return found
