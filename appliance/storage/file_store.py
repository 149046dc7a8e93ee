"""Files, grants, variants and quotas in the store (issue 15): part of `interface.Storage`."""

from __future__ import annotations

from typing import Protocol

from appliance.storage.models import (
    FileRecord,
    FileVariant,
)


class FileStore(Protocol):
    """Files, their grants, variants and blobs, and pictures (issue 15).

    Nothing crosses apps: a file belongs to one app, is granted only to users
    and groups of that app, and is read only by them.  Group grants reach the
    group's members with the RECEIVE permission at the time of the read.

    A stored MESSAGE with flag FILE (PROTOCOL.md §3.3.1) is checked and its
    files granted in `MessageStore.write`'s own transaction: the sender must
    be able to read every file (else the message is REJECTED with
    INVALID_FILE, 0x89), and the destination user or group gets a grant until
    the message's expiry plus `file_retention_ms`.
    """

    #: How long a FILE message's grant outlives the message (config
    #: ``media.file_retention_s`` * 1000), set by the server at start-up; 0 until then.
    file_retention_ms: int

    async def create_file(self, record: FileRecord, max_app_bytes: int) -> None:
        """Insert a new file (an upload starting, or complete with its blob).

        Atomic: concurrent creates, from any process or node, never let the
        app's files (sum of `size`, complete or not) pass `max_app_bytes`.

        Raises:
            QuotaError: ``limit="media.max_app_bytes"``, nothing inserted.
            ConflictError: the file id exists.
            NotFoundError: no such app, or the owner (when not 0) is not a user of it.
            StorageError: a field out of bounds (id not 26 base32 characters,
                content type over 127 characters, name over 255 UTF-8 bytes...).
        """
        ...

    async def file(self, file_id: str) -> FileRecord | None:
        """The file, or None."""
        ...

    async def set_received(self, file_id: str, received: int) -> None:
        """Record an unfinished upload's progress (tus ``Upload-Offset``).

        Not fsynced on its own (SQLite): a crash may lose it; the part file's
        size is the truth a resumed upload is checked against.

        Raises:
            NotFoundError: no such file.
            ConflictError: it is complete.
            StorageError: `received` is not 0 .. its size.
        """
        ...

    async def complete_file(self, file_id: str, sha256: bytes, size: int, content_type: str,
                            width: int, height: int) -> FileRecord:
        """Mark an upload complete and take a reference on its blob `sha256`.

        Raises:
            NotFoundError: no such file.
            ConflictError: it is complete already.
        """
        ...

    async def grant_file(self, file_id: str, *, user_id: int | None = None,
                         group_id: int | None = None, expires_ms: int) -> None:
        """Let a user, or a group's members, read the file until `expires_ms`.

        An existing grant is only ever extended.  The file's own `expires_ms`
        becomes at least `expires_ms` (unless it is kept: None).

        Raises:
            NotFoundError: no such file, or the user or group is not of its app.
            StorageError: neither or both of `user_id` and `group_id`.
        """
        ...

    async def may_read(self, file_id: str, user_id: int, now_ms: int) -> bool:
        """Whether `user_id` may read the file now: it exists, has not expired, and
        the user is of its app and its owner, or holds a live grant, or receives in
        a group (of the app) holding one."""
        ...

    async def save_variant(self, file_id: str, variant: FileVariant) -> None:
        """Keep a derived image of a complete file (replacing one of the same name);
        takes a reference on its blob.

        Raises:
            NotFoundError: no such file.
            ConflictError: the file is not complete.
        """
        ...

    async def variant(self, file_id: str, name: str) -> FileVariant | None:
        """A variant of the file by name, or None."""
        ...

    async def set_picture(self, app_id: int, kind: str, owner_id: int,
                          file_id: str | None) -> str | None:
        """Set (or with None, remove) the picture of a user or group (`kind` "user" or
        "group"); returns the previous picture's file id.

        The new file is kept (expires_ms None); the previous one expires now
        and the sweep removes it.

        Raises:
            NotFoundError: no such user or group in the app, or no such file in it.
            ConflictError: the file is not complete.
            StorageError: an unknown kind.
        """
        ...

    async def picture(self, app_id: int, kind: str, owner_id: int) -> str | None:
        """The file id of a user's or group's picture, or None."""
        ...

    async def delete_file(self, file_id: str) -> None:
        """Delete a file with its grants and variants; its blobs lose a reference.
        Nothing happens if it is gone already."""
        ...

    async def app_stored_bytes(self, app_id: int) -> int:
        """What the app's files count against ``media.max_app_bytes``."""
        ...

    async def expired_files(self, now_ms: int, limit: int) -> list[str]:
        """Up to `limit` files whose `expires_ms` has passed, the oldest first."""
        ...

    async def unreferenced_blobs(self, older_than_ms: int, limit: int) -> list[bytes]:
        """Up to `limit` blobs without a reference since before `older_than_ms`
        (a grace against an upload that deduplicates onto one right now)."""
        ...

    async def forget_blob(self, sha256: bytes) -> bool:
        """Delete a blob's row if it still has no reference; whether it did."""
        ...

    async def media_signing_key(self) -> bytes:
        """The 32-byte key that signs download links: created once, shared by every
        process and node on the store."""
        ...
