"""Files, variants, blobs and pictures (issue 15): the SQL of `FileStore`.

Who may read a file (grants, FILE messages) is `file_access`.  Writes run in
transactions of their own on the writer thread (`Writer.run_meta`: no
directory change); reads on reader threads.  Nothing crosses apps: a file
names its app, and so does every user, group and file it is linked to.

The app quota sums `files.size` over the index ``files_app (app_id, size)``
(exact, no counter to drift).  Two creates must not both pass the check:
SQLite admits one writer at a time (``BEGIN IMMEDIATE``); on MariaDB the
app's row is locked first (``SELECT ... FOR UPDATE``), so a second process's
create waits for the first one's COMMIT and then sees its row in the sum.
"""

from __future__ import annotations

import os
from typing import Any

from appliance.errors import ConflictError, NotFoundError, QuotaError, StorageError
from appliance.protocol.attachments import is_file_id
from appliance.protocol.wire.constants import STORED_U64_MAX
from appliance.storage.models import FileRecord, FileVariant
from appliance.storage.sql.dialect import Connection

#: Column bounds (the MariaDB schema's sizes, checked on both backends).
CONTENT_TYPE_CHARS = 127
NAME_BYTES = 255
VARIANT_CHARS = 32
SHA256_BYTES = 32
#: Sizes, dimensions and times: what a signed 64-bit / 32-bit column holds (the
#: first is the protocol's bound of every stored value).
BIGINT_MAX = STORED_U64_MAX
INT_MAX = 2**31 - 1
PICTURE_KINDS = ("user", "group")
#: The name of the key that signs download links in media_keys.
SIGNING_KEY = "links"
SIGNING_KEY_BYTES = 32
#: The quota's config key, named by `QuotaError.limit`.
APP_LIMIT = "media.max_app_bytes"

_COLUMNS = ("id, app_id, owner_id, size, received, sha256, content_type, name, width, height,"
            " created_ms, expires_ms")
_VARIANT_COLUMNS = "variant, sha256, size, content_type, width, height"


def check_range(value: int, what: str, high: int = BIGINT_MAX) -> None:
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
    check_range(record.size, "a file size")
    check_range(record.received, "a received count", record.size)
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
    check_range(record.width, "a width", INT_MAX)
    check_range(record.height, "a height", INT_MAX)
    check_range(record.created_ms, "a creation time")
    if record.expires_ms is not None:
        check_range(record.expires_ms, "an expiry time")


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


def user_app(conn: Connection, user: int) -> int | None:
    row = conn.execute("SELECT app_id FROM users WHERE id = ?", (user,)).fetchone()
    return None if row is None else int(row[0])


def group_app(conn: Connection, group: int) -> int | None:
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
    if record.owner_id and user_app(conn, record.owner_id) != record.app_id:
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
    check_range(received, "a received count", size)
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
    check_range(size, "a file size")
    _check_content_type(content_type)
    check_range(width, "a width", INT_MAX)
    check_range(height, "a height", INT_MAX)
    # `received` keeps the declared length (what the client sent: tus reports it as the
    # finished offset) while `size` becomes what is stored.  It is assigned first: MariaDB
    # evaluates SET left to right with the new values, SQLite with the old ones.
    conn.execute("UPDATE files SET received = size, sha256 = ?, size = ?, content_type = ?,"
                 " width = ?, height = ? WHERE id = ?",
                 (sha256, size, content_type, width, height, file_id))
    _ref_blob(conn, sha256, size)
    done = file(conn, file_id)
    assert done is not None
    return done


def _check_variant(variant: FileVariant) -> None:
    name = variant.variant
    if not 0 < len(name) <= VARIANT_CHARS or not name.isascii() or not name.isprintable():
        raise StorageError(f"the store refused a variant name {name!r:.80}")
    _check_hash(variant.sha256)
    check_range(variant.size, "a variant size")
    _check_content_type(variant.content_type)
    check_range(variant.width, "a width", INT_MAX)
    check_range(variant.height, "a height", INT_MAX)


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
    owner_app = user_app(conn, owner) if kind == "user" else group_app(conn, owner)
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


def drop_picture(conn: Connection, app: int, kind: str, owner: int, now_ms: int) -> None:
    previous = picture(conn, app, kind, owner)
    if previous is not None:
        conn.execute("UPDATE files SET expires_ms = ? WHERE id = ?", (now_ms, previous))
        conn.execute("DELETE FROM pictures WHERE app_id = ? AND kind = ? AND owner_id = ?",
                     (app, kind, owner))
