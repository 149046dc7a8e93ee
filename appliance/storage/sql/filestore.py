"""`FileStore` on the SQL backends: the async methods over `appliance.storage.sql.files`.

A mixin of `SqlStorage`, which supplies the thread hand-offs (`_read` on a
reader thread, `_meta` in a transaction of its own on the writer thread).
Methods whose interface takes no time (`delete_file`, `save_variant`,
`set_picture`, and user and group deletion) stamp their changes with
`SqlFileStore.clock_ms`: the wall clock, or the server's injected clock
(``store.clock_ms = clock.wall_ms`` at start-up; tests move it by hand).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from appliance.storage.models import FileRecord, FileVariant
from appliance.storage.sql import file_access, files

T = TypeVar("T")


def wall_ms() -> int:
    """Now, in milliseconds since the epoch (the default `SqlFileStore.clock_ms`)."""
    return time.time_ns() // 1_000_000


class SqlFileStore:
    """The `FileStore` methods of `SqlStorage`."""

    _signing_key: bytes | None = None
    #: Now, in ms since the epoch, for the changes whose interface takes no time.
    clock_ms: Callable[[], int] = staticmethod(wall_ms)

    async def _read(self, fn: Callable[..., T], *args: object) -> T:
        raise NotImplementedError  # SqlStorage's

    async def _meta(self, fn: Callable[..., T], *args: object, durable: bool = True) -> T:
        raise NotImplementedError  # SqlStorage's

    async def create_file(self, record: FileRecord, max_app_bytes: int) -> None:
        """See `FileStore.create_file`."""
        await self._meta(files.create_file, record, max_app_bytes, self.clock_ms())

    async def file(self, file_id: str) -> FileRecord | None:
        """See `FileStore.file`."""
        return await self._read(files.file, file_id)

    async def set_received(self, file_id: str, received: int) -> None:
        """See `FileStore.set_received`."""
        await self._meta(files.set_received, file_id, received, durable=False)

    async def complete_file(self, file_id: str, sha256: bytes, size: int, content_type: str,
                            width: int, height: int) -> FileRecord:
        """See `FileStore.complete_file`."""
        return await self._meta(files.complete_file, file_id, sha256, size, content_type,
                                width, height)

    async def grant_file(self, file_id: str, *, user_id: int | None = None,
                         group_id: int | None = None, expires_ms: int) -> None:
        """See `FileStore.grant_file`."""
        await self._meta(file_access.grant_file, file_id, user_id, group_id, expires_ms)

    async def may_read(self, file_id: str, user_id: int, now_ms: int) -> bool:
        """See `FileStore.may_read`."""
        return await self._read(file_access.may_read, file_id, user_id, now_ms)

    async def save_variant(self, file_id: str, variant: FileVariant) -> None:
        """See `FileStore.save_variant`."""
        await self._meta(files.save_variant, file_id, variant, self.clock_ms())

    async def variant(self, file_id: str, name: str) -> FileVariant | None:
        """See `FileStore.variant`."""
        return await self._read(files.variant, file_id, name)

    async def set_picture(self, app_id: int, kind: str, owner_id: int,
                          file_id: str | None) -> str | None:
        """See `FileStore.set_picture`."""
        return await self._meta(files.set_picture, app_id, kind, owner_id, file_id,
                                self.clock_ms())

    async def picture(self, app_id: int, kind: str, owner_id: int) -> str | None:
        """See `FileStore.picture`."""
        return await self._read(files.picture, app_id, kind, owner_id)

    async def delete_file(self, file_id: str) -> None:
        """See `FileStore.delete_file`."""
        await self._meta(files.delete_file, file_id, self.clock_ms())

    async def app_stored_bytes(self, app_id: int) -> int:
        """See `FileStore.app_stored_bytes`."""
        return await self._read(files.app_stored_bytes, app_id)

    async def expired_files(self, now_ms: int, limit: int) -> list[str]:
        """See `FileStore.expired_files`."""
        return await self._read(files.expired_files, now_ms, limit)

    async def unreferenced_blobs(self, older_than_ms: int, limit: int) -> list[bytes]:
        """See `FileStore.unreferenced_blobs`."""
        return await self._read(files.unreferenced_blobs, older_than_ms, limit)

    async def forget_blob(self, sha256: bytes) -> bool:
        """See `FileStore.forget_blob`."""
        return await self._meta(files.forget_blob, sha256)

    async def media_signing_key(self) -> bytes:
        """See `FileStore.media_signing_key`; read once, then kept."""
        key = self._signing_key
        if key is None:
            key = await self._read(files.signing_key)
            if key is None:
                key = await self._meta(files.create_signing_key, self.clock_ms())
            self._signing_key = key
        return key
