"""Files, grants, variants, blobs and pictures (issue 15): the SQL of `FileStore`.

Writes run in transactions of their own on the writer thread
(`Writer.run_meta`: no directory change); reads on reader threads.  The FILE
flag's check and grant (`check_shared`, `grant_shared`) run inside the
writer's group-commit transaction of the message that carries them.

Nothing crosses apps: a file names its app; a grant is given only to a user
or a group of that app, and `may_read` checks the reader's app again (user
and group ids are global, apps are not visible in them).  Group grants are
read through the membership at the time of the read: removing a member
revokes its access, adding one gives it.  Only members with the RECEIVE
permission read (they are the ones a group message reaches, SPEC M5).

The app quota sums `files.size` over the index ``files_app (app_id, size)``
(exact, no counter to drift).  Two creates must not both pass the check:
SQLite admits one writer at a time (``BEGIN IMMEDIATE``); on MariaDB the
app's row is locked first (``SELECT ... FOR UPDATE``), so a second process's
create waits for the first one's COMMIT and then sees its row in the sum.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from appliance.errors import (
    AttachmentError,
    ConflictError,
    NotFoundError,
    QuotaError,
    StorageError,
)
from appliance.protocol import attachments
from appliance.protocol.attachments import is_file_id
from appliance.storage.models import FileRecord, FileVariant, NewMessage, Perm
from appliance.storage.sql.dialect import Connection

#: Column bounds (the MariaDB schema's sizes, checked on both backends).
CONTENT_TYPE_CHARS = 127
NAME_BYTES = 255
VARIANT_CHARS = 32
SHA256_BYTES = 32
#: Sizes, dimensions and times: what a signed 64-bit / 32-bit column holds.
_BIGINT_MAX = 2**63 - 1
_INT_MAX = 2**31 - 1
PICTURE_KINDS = ("user", "group")
#: The name of the key that signs download links in media_keys.
SIGNING_KEY = "links"
SIGNING_KEY_BYTES = 32
#: The quota's config key, named by `QuotaError.limit`.
APP_LIMIT = "media.max_app_bytes"
#: Status.INVALID_FILE (PROTOCOL.md §4), repeated as storage.sql.writes does its statuses.
INVALID_FILE = 0x89

_COLUMNS = ("id, app_id, owner_id, size, received, sha256, content_type, name, width, height,"
            " created_ms, expires_ms")
_VARIANT_COLUMNS = "variant, sha256, size, content_type, width, height"
#: Whether `user` may read the file through a live grant (to the user, or to a
#: group of the file's app the user receives in).  Parameters: file id, user,
#: now, file id, app, user, now.
_GRANTED = ("SELECT 1 FROM file_grants WHERE file_id = ? AND user_id = ? AND group_id = 0"
            " AND expires_ms > ?"
            " UNION ALL SELECT 1 FROM file_grants g JOIN groups gr ON gr.id = g.group_id"
            " JOIN members m ON m.group_id = g.group_id"
            " WHERE g.file_id = ? AND g.user_id = 0 AND gr.app_id = ? AND m.user_id = ?"
            f" AND (m.perms & {Perm.RECEIVE}) != 0 AND g.expires_ms > ? LIMIT 1")


def _check_range(value: int, what: str, high: int = _BIGINT_MAX) -> None:
    if not 0 <= value <= high:
        raise StorageError(f"the store refused {what} {value}: it must be 0 to {high}")


def _check_hash(sha256: bytes) -> None:
    if len(sha256) != SHA256_BYTES:
        raise StorageError(f"the store refused a SHA-256 of {len(sha256)} bytes")


def _check_content_type(content_type: str) -> None:
    if not 0 < len(content_type) <= CONTENT_TYPE_CHARS or not content_type.isascii():
        raise StorageError(f"the store refused a content type: it must be 1 to"
                           f" {CONTENT_TYPE_CHARS} ASCII characters, not {content_type!r:.80}")


def check_record(record: FileRecord) -> None:
    """Refuse a record the store cannot hold as given.

    Raises:
        StorageError: naming the field.
    """
    if not is_file_id(record.file_id):
        raise StorageError(f"the store refused a file id {record.file_id!r:.80}")
    _check_range(record.size, "a file size")
    _check_range(record.received, "a received count", record.size)
    if record.sha256 is not None:
        _check_hash(record.sha256)
    _check_content_type(record.content_type)
    try:
        name_bytes = len(record.name.encode())
    except UnicodeEncodeError:
        raise StorageError("the store refused a file name that is not UTF-8") from None
    if name_bytes > NAME_BYTES:
        raise StorageError(f"the store refused a file name of {name_bytes} bytes"
                           f" (at most {NAME_BYTES})")
    _check_range(record.width, "a width", _INT_MAX)
    _check_range(record.height, "a height", _INT_MAX)
    _check_range(record.created_ms, "a creation time")
    if record.expires_ms is not None:
        _check_range(record.expires_ms, "an expiry time")


def _row_to_record(row: Any) -> FileRecord:
    (file_id, app, owner, size, received, sha, ctype, name, width, height, created,
     expires) = row
    return FileRecord(str(file_id), int(app), int(owner), int(size), int(received),
                      None if sha is None else bytes(sha), str(ctype), str(name), int(width),
                      int(height), int(created), None if expires is None else int(expires))


def file(conn: Connection, file_id: str) -> FileRecord | None:
    """See `FileStore.file`."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM files WHERE id = ?", (file_id,)).fetchone()
    return None if row is None else _row_to_record(row)


def _user_app(conn: Connection, user: int) -> int | None:
    row = conn.execute("SELECT app_id FROM users WHERE id = ?", (user,)).fetchone()
    return None if row is None else int(row[0])


def _group_app(conn: Connection, group: int) -> int | None:
    row = conn.execute("SELECT app_id FROM groups WHERE id = ?", (group,)).fetchone()
    return None if row is None else int(row[0])


def app_stored_bytes(conn: Connection, app: int) -> int:
    """See `FileStore.app_stored_bytes`."""
    row = conn.execute("SELECT coalesce(sum(size), 0) FROM files WHERE app_id = ?",
                       (app,)).fetchone()
    return int(row[0])


def create_file(conn: Connection, record: FileRecord, max_app_bytes: int, now_ms: int) -> None:
    """See `FileStore.create_file`; in the caller's transaction.

    Raises:
        StorageError: a field out of bounds.
        NotFoundError: no such app, or the owner is not a user of it.
        ConflictError: the file id exists.
        QuotaError: the app would store more than `max_app_bytes`.
    """
    check_record(record)
    if conn.execute(f"SELECT id FROM apps WHERE id = ?{conn.dialect.for_update}",
                    (record.app_id,)).fetchone() is None:
        raise NotFoundError(f"no app {record.app_id}")
    if record.owner_id and _user_app(conn, record.owner_id) != record.app_id:
        raise NotFoundError(f"no user {record.owner_id} in app {record.app_id}")
    if conn.execute("SELECT 1 FROM files WHERE id = ?", (record.file_id,)).fetchone():
        raise ConflictError(f"file {record.file_id} exists")
    used = app_stored_bytes(conn, record.app_id)
    if used + record.size > max_app_bytes:
        raise QuotaError(f"the app stores {used} bytes; {record.size} more would pass"
                         f" {APP_LIMIT} = {max_app_bytes}", limit=APP_LIMIT,
                         allowed=max_app_bytes)
    conn.execute(f"INSERT INTO files ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                 (record.file_id, record.app_id, record.owner_id, record.size, record.received,
                  record.sha256, record.content_type, record.name, record.width, record.height,
                  record.created_ms, record.expires_ms))
    if record.sha256 is not None:
        _ref_blob(conn, record.sha256, record.size)


def _open_upload(conn: Connection, file_id: str) -> int:
    """The declared size of an unfinished upload.

    Raises:
        NotFoundError: no such file.
        ConflictError: it is complete.
    """
    row = conn.execute("SELECT size, sha256 FROM files WHERE id = ?", (file_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no file {file_id}")
    if row[1] is not None:
        raise ConflictError(f"file {file_id} is complete")
    return int(row[0])


def set_received(conn: Connection, file_id: str, received: int) -> None:
    """See `FileStore.set_received`; in the caller's transaction.

    Raises:
        NotFoundError: no such file.
        ConflictError: it is complete.
        StorageError: `received` is not 0 .. its size.
    """
    size = _open_upload(conn, file_id)
    _check_range(received, "a received count", size)
    conn.execute("UPDATE files SET received = ? WHERE id = ?", (received, file_id))


def _ref_blob(conn: Connection, sha256: bytes, size: int) -> None:
    conn.execute(conn.dialect.upsert("blobs", ("sha256", "size", "refs", "unreferenced_since_ms"),
                                     (), "refs = refs + 1, unreferenced_since_ms = NULL"),
                 (sha256, size, 1, None))


def _unref_blob(conn: Connection, sha256: bytes, now_ms: int) -> None:
    conn.execute("UPDATE blobs SET refs = refs - 1 WHERE sha256 = ? AND refs > 0", (sha256,))
    conn.execute("UPDATE blobs SET unreferenced_since_ms = ? WHERE sha256 = ? AND refs = 0"
                 " AND unreferenced_since_ms IS NULL", (now_ms, sha256))


def complete_file(conn: Connection, file_id: str, sha256: bytes, size: int, content_type: str,
                  width: int, height: int) -> FileRecord:
    """See `FileStore.complete_file`; in the caller's transaction.

    `size` may differ from the declared one (a sanitized image is re-encoded);
    the quota was checked against the declared size at creation.

    Raises:
        NotFoundError: no such file.
        ConflictError: it is complete already.
        StorageError: a value out of bounds.
    """
    _open_upload(conn, file_id)
    _check_hash(sha256)
    _check_range(size, "a file size")
    _check_content_type(content_type)
    _check_range(width, "a width", _INT_MAX)
    _check_range(height, "a height", _INT_MAX)
    conn.execute("UPDATE files SET sha256 = ?, size = ?, received = ?, content_type = ?,"
                 " width = ?, height = ? WHERE id = ?",
                 (sha256, size, size, content_type, width, height, file_id))
    _ref_blob(conn, sha256, size)
    done = file(conn, file_id)
    assert done is not None
    return done


def grant_file(conn: Connection, file_id: str, user: int | None, group: int | None,
               expires_ms: int) -> None:
    """See `FileStore.grant_file`; in the caller's transaction.

    Raises:
        StorageError: neither or both of `user` and `group`, or a bad time.
        NotFoundError: no such file, or the user or group is not of its app.
    """
    if (user is None) == (group is None):
        raise StorageError("a grant names a user or a group, exactly one")
    _check_range(expires_ms, "an expiry time")
    row = conn.execute("SELECT app_id FROM files WHERE id = ?", (file_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no file {file_id}")
    app = int(row[0])
    if user is not None and (user <= 0 or _user_app(conn, user) != app):
        raise NotFoundError(f"no user {user} in the file's app")
    if group is not None and (group <= 0 or _group_app(conn, group) != app):
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
    if _user_app(conn, user) != app:
        return False
    if owner == user:
        return True
    return conn.execute(_GRANTED, (file_id, user, now_ms, file_id, app, user,
                                   now_ms)).fetchone() is not None


def _check_variant(variant: FileVariant) -> None:
    name = variant.variant
    if not 0 < len(name) <= VARIANT_CHARS or not name.isascii() or not name.isprintable():
        raise StorageError(f"the store refused a variant name {name!r:.80}")
    _check_hash(variant.sha256)
    _check_range(variant.size, "a variant size")
    _check_content_type(variant.content_type)
    _check_range(variant.width, "a width", _INT_MAX)
    _check_range(variant.height, "a height", _INT_MAX)


def save_variant(conn: Connection, file_id: str, variant: FileVariant, now_ms: int) -> None:
    """See `FileStore.save_variant`; in the caller's transaction.  A variant of the
    same name is replaced (its blob loses the reference).

    Raises:
        NotFoundError: no such file.
        ConflictError: the file is not complete.
        StorageError: a value out of bounds.
    """
    _check_variant(variant)
    row = conn.execute("SELECT sha256 FROM files WHERE id = ?", (file_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no file {file_id}")
    if row[0] is None:
        raise ConflictError(f"file {file_id} is not complete")
    old = conn.execute("SELECT sha256 FROM file_variants WHERE file_id = ? AND variant = ?",
                       (file_id, variant.variant)).fetchone()
    if old is not None:
        conn.execute("DELETE FROM file_variants WHERE file_id = ? AND variant = ?",
                     (file_id, variant.variant))
        _unref_blob(conn, bytes(old[0]), now_ms)
    conn.execute(f"INSERT INTO file_variants (file_id, {_VARIANT_COLUMNS})"
                 " VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (file_id, variant.variant, variant.sha256, variant.size, variant.content_type,
                  variant.width, variant.height))
    _ref_blob(conn, variant.sha256, variant.size)


def variant(conn: Connection, file_id: str, name: str) -> FileVariant | None:
    """See `FileStore.variant`."""
    row = conn.execute(f"SELECT {_VARIANT_COLUMNS} FROM file_variants WHERE file_id = ?"
                       " AND variant = ?", (file_id, name)).fetchone()
    if row is None:
        return None
    name, sha, size, ctype, width, height = row
    return FileVariant(str(name), bytes(sha), int(size), str(ctype), int(width), int(height))


def _check_kind(kind: str) -> None:
    if kind not in PICTURE_KINDS:
        raise StorageError(f"the store refused a picture kind {kind!r:.20}")


def set_picture(conn: Connection, app: int, kind: str, owner: int, file_id: str | None,
                now_ms: int) -> str | None:
    """See `FileStore.set_picture`; in the caller's transaction.

    Raises:
        NotFoundError: no such user or group in the app, or no such file in it.
        ConflictError: the file is not complete.
    """
    _check_kind(kind)
    owner_app = _user_app(conn, owner) if kind == "user" else _group_app(conn, owner)
    if owner <= 0 or owner_app != app:
        raise NotFoundError(f"no {kind} {owner} in app {app}")
    if file_id is not None:
        row = conn.execute("SELECT app_id, sha256 FROM files WHERE id = ?",
                           (file_id,)).fetchone()
        if row is None or int(row[0]) != app:
            raise NotFoundError(f"no file {file_id} in app {app}")
        if row[1] is None:
            raise ConflictError(f"file {file_id} is not complete")
    previous = picture(conn, app, kind, owner)
    if previous == file_id:
        return previous
    if previous is not None:
        # The sweep removes it (and its blob once nothing else refers to it).
        conn.execute("UPDATE files SET expires_ms = ? WHERE id = ?", (now_ms, previous))
    conn.execute("DELETE FROM pictures WHERE app_id = ? AND kind = ? AND owner_id = ?",
                 (app, kind, owner))
    if file_id is not None:
        conn.execute("UPDATE files SET expires_ms = NULL WHERE id = ?", (file_id,))
        conn.execute("INSERT INTO pictures VALUES (?, ?, ?, ?)", (app, kind, owner, file_id))
    return previous


def picture(conn: Connection, app: int, kind: str, owner: int) -> str | None:
    """See `FileStore.picture`."""
    _check_kind(kind)
    row = conn.execute("SELECT file_id FROM pictures WHERE app_id = ? AND kind = ?"
                       " AND owner_id = ?", (app, kind, owner)).fetchone()
    return None if row is None else str(row[0])


def delete_file(conn: Connection, file_id: str, now_ms: int) -> None:
    """See `FileStore.delete_file`; in the caller's transaction.  Nothing if it is gone."""
    row = conn.execute("SELECT sha256, expires_ms FROM files WHERE id = ?",
                       (file_id,)).fetchone()
    if row is None:
        return
    for (sha,) in conn.execute("SELECT sha256 FROM file_variants WHERE file_id = ?",
                               (file_id,)).fetchall():
        _unref_blob(conn, bytes(sha), now_ms)
    if row[0] is not None:
        _unref_blob(conn, bytes(row[0]), now_ms)
    for table, column in (("file_variants", "file_id"), ("file_grants", "file_id"),
                          ("files", "id")):
        conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (file_id,))
    if row[1] is None:
        # Only a kept file can be a picture (`set_picture`): the sweep's deletions of
        # expired files never scan the pictures, which have no index on file_id.
        conn.execute("DELETE FROM pictures WHERE file_id = ?", (file_id,))


def expired_files(conn: Connection, now_ms: int, limit: int) -> list[str]:
    """See `FileStore.expired_files`."""
    return [str(r[0]) for r in conn.execute(
        "SELECT id FROM files WHERE expires_ms <= ? ORDER BY expires_ms LIMIT ?",
        (now_ms, limit)).fetchall()]


def unreferenced_blobs(conn: Connection, older_than_ms: int, limit: int) -> list[bytes]:
    """See `FileStore.unreferenced_blobs`."""
    return [bytes(r[0]) for r in conn.execute(
        "SELECT sha256 FROM blobs WHERE unreferenced_since_ms < ? AND refs = 0"
        " ORDER BY unreferenced_since_ms LIMIT ?", (older_than_ms, limit)).fetchall()]


def forget_blob(conn: Connection, sha256: bytes) -> bool:
    """See `FileStore.forget_blob`; in the caller's transaction."""
    return conn.execute("DELETE FROM blobs WHERE sha256 = ? AND refs = 0",
                        (sha256,)).rowcount > 0


def signing_key(conn: Connection) -> bytes | None:
    """The link-signing key, or None before `create_signing_key`."""
    row = conn.execute("SELECT secret FROM media_keys WHERE name = ?",
                       (SIGNING_KEY,)).fetchone()
    return None if row is None else bytes(row[0])


def create_signing_key(conn: Connection, now_ms: int) -> bytes:
    """The link-signing key, created now unless a process created it first."""
    conn.execute(f"{conn.dialect.insert_ignore} INTO media_keys VALUES (?, ?, ?)",
                 (SIGNING_KEY, os.urandom(SIGNING_KEY_BYTES), now_ms))
    key = signing_key(conn)
    assert key is not None
    return key


def forget_user(conn: Connection, app: int, user: int, now_ms: int) -> None:
    """A user is being deleted: its grants and picture go, its files lose their owner.

    Its unfinished uploads expire now; what it shared stays for its recipients
    until the grants run out.  The owner becomes 0 (nobody), so a user that
    gets the id later (SQLite may reuse it) owns none of it.
    """
    conn.execute("DELETE FROM file_grants WHERE user_id = ? AND group_id = 0", (user,))
    _drop_picture(conn, app, "user", user, now_ms)
    conn.execute("UPDATE files SET expires_ms = ? WHERE owner_id = ? AND sha256 IS NULL",
                 (now_ms, user))
    conn.execute("UPDATE files SET owner_id = 0 WHERE owner_id = ?", (user,))


def forget_group(conn: Connection, app: int, group: int, now_ms: int) -> None:
    """A group is being deleted: the grants to it and its picture go."""
    conn.execute("DELETE FROM file_grants WHERE group_id = ? AND user_id = 0", (group,))
    _drop_picture(conn, app, "group", group, now_ms)


def _drop_picture(conn: Connection, app: int, kind: str, owner: int, now_ms: int) -> None:
    previous = picture(conn, app, kind, owner)
    if previous is not None:
        conn.execute("UPDATE files SET expires_ms = ? WHERE id = ?", (now_ms, previous))
        conn.execute("DELETE FROM pictures WHERE app_id = ? AND kind = ? AND owner_id = ?",
                     (app, kind, owner))


def check_shared(conn: Connection, app: int, sender: int, file_ids: tuple[str, ...],
                 now_ms: int) -> bool:
    """Whether `sender` may share every file of a FILE message (PROTOCOL.md §3.3.1).

    Each must exist in the sender's app, be complete, not have expired, and be
    the sender's own or readable through a live grant.  In the writer's
    transaction: at most `attachments.MAX_FILES_PER_MESSAGE` files, a few
    indexed reads each.
    """
    for file_id in file_ids:
        row = conn.execute("SELECT app_id, owner_id, sha256, expires_ms FROM files"
                           " WHERE id = ?", (file_id,)).fetchone()
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
    expires_ms = min(expires_ms, _BIGINT_MAX)
    for file_id in file_ids:
        _grant(conn, file_id, 0 if group else user, group, expires_ms)


def accept_shared(conn: Connection, m: NewMessage, recipients: list[int], now_ms: int,
                  retention_ms: int, targets: Callable[[], list[int] | None]
                  ) -> list[int] | int | None:
    """The writer's path for a new message with flag FILE, in its transaction.

    Returns INVALID_FILE when the payload is not the convention or the sender
    may not share a file (nothing is counted or written); else `targets()`
    (the delivery targets, None when a quota refuses the message), and when
    there are targets every file is granted to the destination until the
    message expires plus `retention_ms`.
    """
    try:
        ids = attachments.file_ids(m.payload)
    except AttachmentError:
        return INVALID_FILE
    if not check_shared(conn, m.app_id, m.sender_id, ids, now_ms):
        return INVALID_FILE
    found = targets()
    if found is not None:
        grant_shared(conn, ids, recipients[0], m.group_id, m.expires_ms + retention_ms)
    return found
