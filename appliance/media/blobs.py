"""Content-addressed blobs on disk: `BlobStore`, `BlobWriter` and `DiskBlobStore`.

A blob is named by the SHA-256 of its bytes: ``<root>/blobs/ab/cd/<hex>``
(two levels of 256 directories keep each one small).  Bytes being uploaded
go to ``<root>/tmp/<upload_id>.part``, hashed as they arrive; `commit`
fsyncs the part, renames it onto its content address (atomic: a reader sees
the whole blob or none) and fsyncs the directory, so a blob a caller was told
about survives a power cut.  Identical content is stored once: when the
address exists already the part is dropped and the blob's mtime refreshed,
which tells a concurrent sweep that it was just wanted (`delete` with
`older_than_ms` spares it).  Blobs are never changed, only added and
deleted; the store's `blobs` table counts who refers to them.

Every disk operation runs in a thread (`asyncio.to_thread`): a large upload
meets the kernel's dirty-page throttling, which would stall the event loop.
Small chunks are gathered in memory to `FLUSH_BYTES` before a thread hop.

tus (resumable uploads): `pause` keeps the part file and, in this store, the
hash state; `resume` reopens the part at its end.  A store that does not hold
the state (another process, a restart) hashes the part's bytes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from appliance.errors import ConflictError, NotFoundError, UsageError
from appliance.media.blob_writer import (
    FLUSH_BYTES,
    MAX_CHUNK,
    DiskBlobWriter,
    disk_error,
    rehash,
)

#: Upload ids: what is safe as a file name everywhere (no dot, no slash).
UPLOAD_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: Paused uploads whose hash state this store keeps (beyond: hashed again on resume).
HELD_STATES = 4096
PART_SUFFIX = ".part"
_FILE_MODE, _DIR_MODE = 0o600, 0o700


def check_upload_id(upload_id: object) -> None:
    """Refuse an upload id that is not a plain file name (``../x``, ``a/b``, ``.``).

    Raises:
        UsageError: not 1 to 64 of ``A-Z a-z 0-9 _ -``.
    """
    if not isinstance(upload_id, str) or UPLOAD_ID_RE.fullmatch(upload_id) is None:
        raise UsageError(f"not an upload id: {upload_id!r:.80}")


class BlobWriter(Protocol):
    """One blob being written: bytes in, then `commit`, `pause` (tus) or `abort`."""

    @property
    def upload_id(self) -> str:
        """The name of its part file (`BlobStore.resume` takes it)."""
        ...

    @property
    def received(self) -> int:
        """Bytes accepted so far (the part's size once flushed)."""
        ...

    async def write(self, chunk: bytes) -> None:
        """Append `chunk` (at most `MAX_CHUNK` bytes), hashing it.

        Raises:
            UsageError: a chunk too large, or the writer is finished.
            BlobError: the disk failed (the part is kept; `abort` removes it).
        """
        ...

    async def commit(self) -> tuple[bytes, int]:
        """Make the bytes a durable blob; returns its (SHA-256, size).

        Raises:
            BlobError: the disk failed; the part is removed.
        """
        ...

    async def pause(self) -> None:
        """Stop writing for now (a tus PATCH ended): the part is flushed and fsynced and
        stays for `BlobStore.resume`.

        Raises:
            BlobError: the disk failed.
        """
        ...

    async def abort(self) -> None:
        """Drop everything written; the part file goes.  Never raises."""
        ...


class BlobStore(Protocol):
    """Where blobs live (`DiskBlobStore`)."""

    async def writer(self, upload_id: str | None = None) -> BlobWriter:
        """A writer into a new part file named `upload_id` (random when None).

        Raises:
            UsageError: a bad upload id.
            ConflictError: a part of that name exists.
            BlobError: the disk failed.
        """
        ...

    async def resume(self, upload_id: str, offset: int) -> BlobWriter:
        """Reopen the part `upload_id` to append at `offset` (tus ``Upload-Offset``).

        Offset 0 on a missing part starts it.

        Raises:
            UsageError: a bad upload id.
            ConflictError: `offset` is not the part's size, or it is being written.
            NotFoundError: no such part (and `offset` is not 0).
            BlobError: the disk failed.
        """
        ...

    async def upload_offset(self, upload_id: str) -> int | None:
        """The part's size (what a tus HEAD reports), or None when there is none."""
        ...

    async def discard(self, upload_id: str) -> None:
        """Remove a part (a tus DELETE, an expired upload); nothing if there is none."""
        ...

    async def parts(self, limit: int) -> list[tuple[str, int]]:
        """Up to `limit` part files as (upload id, last written, ms): what the sweep checks."""
        ...

    async def drop_scratch(self, older_than_ms: int, limit: int) -> int:
        """Delete up to `limit` scratch files beside the parts (an image worker's output,
        a preview's download) last written before `older_than_ms`: what a crash left.
        Returns how many went."""
        ...

    def local_path(self, sha256: bytes) -> Path:
        """Where the blob's bytes are (for readers and image workers)."""
        ...

    def part_path(self, upload_id: str) -> Path:
        """Where an upload's part file is (image workers read it before it is a blob)."""
        ...

    async def adopt(self, path: Path) -> tuple[bytes, int]:
        """Make a finished file beside the parts (an image worker's output) a blob;
        returns its (SHA-256, size).  The file is moved, not copied.

        Raises:
            BlobError: the disk failed.
        """
        ...

    async def open(self, sha256: bytes) -> BinaryIO:
        """The blob, open for reading (read it in a thread; close it).

        Raises:
            NotFoundError: no such blob.
        """
        ...

    async def delete(self, sha256: bytes, *, older_than_ms: int | None = None) -> bool:
        """Delete a blob; with `older_than_ms`, only if not written (or deduplicated onto)
        since.  Whether it is gone."""
        ...


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DiskBlobStore:
    """`BlobStore` in a directory: ``blobs/`` and ``tmp/`` under `root` (0700, files 0600)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blob_dir = root / "blobs"
        self.tmp_dir = root / "tmp"
        #: Serialises "exists? touch : rename" in commit against "old? unlink" in delete.
        self._lock = threading.Lock()
        self._held: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._busy: set[str] = set()
        self._ready = False

    def _prepare(self) -> None:
        if self._ready:
            return
        for path in (self.root, self.blob_dir, self.tmp_dir):
            path.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        self._ready = True

    def part_path(self, upload_id: str) -> Path:
        """The part file of an upload (the id checked)."""
        check_upload_id(upload_id)
        return self.tmp_dir / f"{upload_id}{PART_SUFFIX}"

    def local_path(self, sha256: bytes) -> Path:
        """See `BlobStore.local_path`."""
        if len(sha256) != 32:
            raise UsageError(f"not a SHA-256: {len(sha256)} bytes")
        name = sha256.hex()
        return self.blob_dir / name[:2] / name[2:4] / name

    # --- writing ------------------------------------------------------------

    async def writer(self, upload_id: str | None = None) -> DiskBlobWriter:
        """See `BlobStore.writer`."""
        upload_id = secrets.token_hex(16) if upload_id is None else upload_id
        path = self.part_path(upload_id)
        self._claim(upload_id)

        def create() -> int:
            self._prepare()
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                           | os.O_NOFOLLOW, _FILE_MODE)

        try:
            fd = await asyncio.to_thread(create)
        except FileExistsError:
            self._busy.discard(upload_id)
            raise ConflictError(f"upload {upload_id} exists") from None
        except OSError as exc:
            self._busy.discard(upload_id)
            raise disk_error(exc, "cannot create an upload") from None
        return DiskBlobWriter(self, upload_id, fd, hashlib.sha256(), 0)

    async def resume(self, upload_id: str, offset: int) -> DiskBlobWriter:
        """See `BlobStore.resume`."""
        path = self.part_path(upload_id)
        if offset < 0:
            raise UsageError(f"negative offset {offset}")
        self._claim(upload_id)
        held = self._held.pop(upload_id, None)

        def reopen() -> tuple[int, Any]:
            self._prepare()
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW)
            except FileNotFoundError:
                if offset:
                    raise
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                             | os.O_NOFOLLOW, _FILE_MODE)
            try:
                size = os.fstat(fd).st_size
                if size != offset:
                    raise ConflictError(f"upload {upload_id} has {size} bytes, not {offset}")
                if held is not None and held[1] == size:
                    return fd, held[0]
                return fd, rehash(path, size)
            except BaseException:
                os.close(fd)
                raise

        try:
            fd, hasher = await asyncio.to_thread(reopen)
        except BaseException as exc:
            self._busy.discard(upload_id)
            if isinstance(exc, FileNotFoundError):
                raise NotFoundError(f"no upload {upload_id}") from None
            if isinstance(exc, OSError):
                raise disk_error(exc, f"cannot reopen upload {upload_id}") from None
            raise
        return DiskBlobWriter(self, upload_id, fd, hasher, offset)

    def _claim(self, upload_id: str) -> None:
        if upload_id in self._busy:
            raise ConflictError(f"upload {upload_id} is being written")
        self._busy.add(upload_id)

    def release(self, upload_id: str, state: tuple[Any, int] | None) -> None:
        """A writer let the upload go: paused with its hash `state`, or finished (None)."""
        self._busy.discard(upload_id)
        if state is None:
            self._held.pop(upload_id, None)
        else:
            self._held[upload_id] = state
            while len(self._held) > HELD_STATES:
                self._held.popitem(last=False)

    def settle(self, tmp: Path, sha256: bytes) -> None:
        """Put a fsynced part onto its content address (in a thread)."""
        final = self.local_path(sha256)
        with self._lock:
            if final.exists():
                os.utime(final)  # wanted again: a sweep running now spares it
                tmp.unlink()
                return
            created = []
            for parent in (final.parent.parent, final.parent):
                if not parent.exists():
                    parent.mkdir(mode=_DIR_MODE, exist_ok=True)
                    created.append(parent)
            os.replace(tmp, final)
        _fsync_dir(final.parent)
        for parent in created:  # the new directories' own entries
            _fsync_dir(parent.parent)

    async def adopt(self, path: Path) -> tuple[bytes, int]:
        """See `BlobStore.adopt`."""

        def digest() -> tuple[bytes, int]:
            self._prepare()
            hasher = hashlib.sha256()
            with open(path, "rb") as file:
                while block := file.read(1024 * 1024):
                    hasher.update(block)
                os.fsync(file.fileno())
                size = file.tell()
            os.chmod(path, _FILE_MODE)
            self.settle(path, hasher.digest())
            return hasher.digest(), size

        try:
            return await asyncio.to_thread(digest)
        except OSError as exc:
            raise disk_error(exc, "cannot store a processed image") from None

    # --- reading and deleting ---------------------------------------------

    async def upload_offset(self, upload_id: str) -> int | None:
        """See `BlobStore.upload_offset`."""
        path = self.part_path(upload_id)
        try:
            return (await asyncio.to_thread(os.stat, path)).st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise disk_error(exc, f"cannot read upload {upload_id}") from None

    async def discard(self, upload_id: str) -> None:
        """See `BlobStore.discard`."""
        path = self.part_path(upload_id)
        self._held.pop(upload_id, None)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as exc:
            raise disk_error(exc, f"cannot remove upload {upload_id}") from None

    async def parts(self, limit: int) -> list[tuple[str, int]]:
        """See `BlobStore.parts`."""

        def scan() -> list[tuple[str, int]]:
            found: list[tuple[str, int]] = []
            try:
                entries = os.scandir(self.tmp_dir)
            except FileNotFoundError:
                return found
            with entries:
                for entry in entries:
                    name = entry.name
                    if len(found) >= limit:
                        break
                    if not name.endswith(PART_SUFFIX):
                        continue
                    upload_id = name[:-len(PART_SUFFIX)]
                    if UPLOAD_ID_RE.fullmatch(upload_id) is None:
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        found.append((upload_id,
                                      entry.stat(follow_symlinks=False).st_mtime_ns // 10**6))
            return found

        try:
            return await asyncio.to_thread(scan)
        except OSError as exc:
            raise disk_error(exc, "cannot list uploads") from None

    async def drop_scratch(self, older_than_ms: int, limit: int) -> int:
        """See `BlobStore.drop_scratch`: regular files only, never a part or a link."""

        def drop() -> int:
            dropped = 0
            try:
                entries = os.scandir(self.tmp_dir)
            except FileNotFoundError:
                return 0
            with entries:
                for entry in entries:
                    if dropped >= limit:
                        break
                    if entry.name.endswith(PART_SUFFIX) \
                            or not entry.is_file(follow_symlinks=False):
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        if entry.stat(follow_symlinks=False).st_mtime_ns // 10**6 \
                                < older_than_ms:
                            os.unlink(entry.path)
                            dropped += 1
            return dropped

        try:
            return await asyncio.to_thread(drop)
        except OSError as exc:
            raise disk_error(exc, "cannot clean the uploads directory") from None

    async def open(self, sha256: bytes) -> BinaryIO:
        """See `BlobStore.open`."""
        path = self.local_path(sha256)
        try:
            return await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise NotFoundError(f"no blob {sha256.hex()}") from None
        except OSError as exc:
            raise disk_error(exc, f"cannot open blob {sha256.hex()}") from None

    async def delete(self, sha256: bytes, *, older_than_ms: int | None = None) -> bool:
        """See `BlobStore.delete`."""
        path = self.local_path(sha256)

        def remove() -> bool:
            with self._lock:
                try:
                    if older_than_ms is not None and \
                            path.stat().st_mtime_ns // 10**6 >= older_than_ms:
                        return False
                    path.unlink()
                except FileNotFoundError:
                    pass
            return True

        try:
            return await asyncio.to_thread(remove)
        except OSError as exc:
            raise disk_error(exc, f"cannot delete blob {sha256.hex()}") from None


__all__ = ["FLUSH_BYTES", "HELD_STATES", "MAX_CHUNK", "UPLOAD_ID_RE", "BlobStore", "BlobWriter",
           "DiskBlobStore", "DiskBlobWriter", "check_upload_id"]
