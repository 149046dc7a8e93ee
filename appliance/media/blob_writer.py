"""`DiskBlobWriter`: one upload's bytes into a part file of a `DiskBlobStore`.

Chunks are gathered to `FLUSH_BYTES`, then written and hashed in a thread
(hashlib releases the GIL on large blocks).  A writer finishes by `commit`
(fsync, then the store puts the part onto its content address), `pause`
(fsync, the part and the hash state stay for a resume) or `abort`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import weakref
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from appliance.errors import BlobError, ConflictError, UsageError

#: The most one `write` call takes (a body chunk; larger is a caller's bug).
MAX_CHUNK = 1 << 20
#: Bytes gathered in memory before a thread writes them.
FLUSH_BYTES = 256 << 10
#: Read size when hashing a part file again.
_REHASH_CHUNK = 1 << 20


class PartOwner(Protocol):
    """What a writer needs of its store (`DiskBlobStore`)."""

    def part_path(self, upload_id: str) -> Path: ...
    def release(self, upload_id: str, state: tuple[Any, int] | None) -> None: ...
    def settle(self, tmp: Path, sha256: bytes) -> None: ...


def disk_error(exc: OSError, what: str) -> BlobError:
    """The typed error for a failed disk operation (the OS's reason, no traceback)."""
    return BlobError(f"{what}: {exc.strerror or exc}")


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def rehash(path: Path, size: int) -> Any:
    """The SHA-256 state after the first `size` bytes of `path` (in a thread)."""
    hasher = hashlib.sha256()
    left = size
    with path.open("rb") as part:
        while left:
            block = part.read(min(_REHASH_CHUNK, left))
            if not block:
                raise ConflictError(f"{path.name} shrank while it was read")
            hasher.update(block)
            left -= len(block)
    return hasher


def _orphaned(store: PartOwner, upload_id: str, fd: list[int]) -> None:
    """A writer dropped without `commit`, `pause` or `abort` (a handler that crashed):
    its descriptor is closed and its upload released; the part stays for the sweep."""
    if fd[0] >= 0:
        with contextlib.suppress(OSError):
            os.close(fd[0])
        fd[0] = -1
        store.release(upload_id, None)


class DiskBlobWriter:
    """`BlobWriter` into one part file of a `DiskBlobStore`."""

    def __init__(self, store: PartOwner, upload_id: str, fd: int, hasher: Any,
                 size: int) -> None:
        self._store = store
        self._upload_id = upload_id
        #: The open descriptor, -1 once closed (shared with the finalizer).
        self._fd = [fd]
        self._hasher = hasher
        self._flushed = size
        self._buffer = bytearray()
        self._task: asyncio.Future[None] | None = None
        self._done = False
        self._broken = False
        weakref.finalize(self, _orphaned, store, upload_id, self._fd)

    @property
    def upload_id(self) -> str:
        """See `BlobWriter.upload_id`."""
        return self._upload_id

    @property
    def received(self) -> int:
        """See `BlobWriter.received`."""
        return self._flushed + len(self._buffer)

    def _check_open(self) -> None:
        if self._done:
            raise UsageError(f"upload {self._upload_id} is finished")
        if self._broken:
            raise UsageError(f"upload {self._upload_id} failed: abort it")
        if self._task is not None and not self._task.done():
            raise UsageError(f"upload {self._upload_id} is busy")

    async def write(self, chunk: bytes) -> None:
        """See `BlobWriter.write`."""
        self._check_open()
        if len(chunk) > MAX_CHUNK:
            raise UsageError(f"a chunk of {len(chunk)} bytes: at most {MAX_CHUNK}")
        self._buffer += chunk
        if len(self._buffer) >= FLUSH_BYTES:
            await self._flush(sync=False)

    def _write_block(self, block: bytearray, sync: bool) -> None:
        if block:
            _write_all(self._fd[0], block)
            self._hasher.update(block)
        if sync:
            os.fsync(self._fd[0])

    async def _flush(self, *, sync: bool) -> None:
        block, self._buffer = self._buffer, bytearray()
        self._task = asyncio.get_running_loop().run_in_executor(
            None, partial(self._write_block, block, sync))
        try:
            await asyncio.shield(self._task)
        except asyncio.CancelledError:
            self._broken = True  # the thread goes on; `abort` waits for it
            raise
        except OSError as exc:
            self._broken = True
            raise disk_error(exc, f"cannot write upload {self._upload_id}") from None
        self._flushed += len(block)

    def _close(self) -> None:
        fd, self._fd[0] = self._fd[0], -1
        if fd >= 0:
            os.close(fd)

    async def pause(self) -> None:
        """See `BlobWriter.pause`."""
        self._check_open()
        await self._flush(sync=True)
        self._done = True
        try:
            await asyncio.to_thread(self._close)
        finally:
            self._store.release(self._upload_id, (self._hasher.copy(), self._flushed))

    async def commit(self) -> tuple[bytes, int]:
        """See `BlobWriter.commit`."""
        self._check_open()
        try:
            await self._flush(sync=True)
        except BlobError:
            await self.abort()
            raise
        self._done = True
        sha256, size = self._hasher.digest(), self._flushed
        tmp = self._store.part_path(self._upload_id)

        def settle() -> None:
            self._close()
            self._store.settle(tmp, sha256)

        try:
            await asyncio.to_thread(settle)
        except OSError as exc:
            await asyncio.to_thread(tmp.unlink, missing_ok=True)
            raise disk_error(exc, f"cannot store upload {self._upload_id}") from None
        finally:
            self._store.release(self._upload_id, None)
        return sha256, size

    async def abort(self) -> None:
        """See `BlobWriter.abort`: after `commit` or `pause`, nothing."""
        if self._done:
            return
        self._done = True
        if self._task is not None:
            with contextlib.suppress(BaseException):
                await self._task  # a thread still writing: let it finish first
        tmp = self._store.part_path(self._upload_id)

        def drop() -> None:
            with contextlib.suppress(OSError):
                self._close()
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

        await asyncio.to_thread(drop)
        self._store.release(self._upload_id, None)
