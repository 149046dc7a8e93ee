"""`MediaSweeper`: removes expired files, then the blobs nothing refers to, then stale parts.

Order matters: deleting a file takes its references off its blobs (in the
store); a blob is deleted only once it has had none for `GRACE_MS`, from the
disk first and then its row (`FileStore.forget_blob`, which keeps the row if
a reference came back meanwhile).  The grace and the blob's mtime (which a
deduplicating upload refreshes, `DiskBlobStore.settle`) keep the sweep from
deleting bytes that an upload is about to refer to.  Part files of uploads
whose file row is gone (a crash, an expired or deleted upload) go after the
same grace: a part's upload id must be its file's id (an expired file's part
goes with it; a part whose id names no unfinished file is stale).  So do the
scratch files beside the parts that a crash left (image outputs, preview
downloads), counted with them.

Every pass is bounded: `BATCH` rows per query and `MAX_BATCHES` queries per
kind, so one sweep never holds the store's writer for long; what is left
waits for the next pass.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Protocol

from appliance.errors import ApplianceError, BlobError
from appliance.media.blobs import BlobStore
from appliance.storage.interface import FileStore

log = logging.getLogger(__name__)

#: How long a blob stays after its last reference went (or an upload deduplicated onto
#: it), and a part file after it was last written without a file row.
GRACE_MS = 3_600_000
#: Rows per query; queries per kind per pass.
BATCH = 200
MAX_BATCHES = 10
#: Part files looked at per pass.
MAX_PARTS = 10_000


class WallClock(Protocol):
    """Wall time (`appliance.engine.clock.Clock` provides it)."""

    def wall_ms(self) -> int:
        """Milliseconds since the Unix epoch."""
        ...


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one pass removed."""

    files_removed: int = 0
    blobs_removed: int = 0
    bytes_freed: int = 0
    #: Stale part files of uploads and scratch files.
    parts_removed: int = 0


class MediaSweeper:
    """Removes what has expired from the store and the disk, pass by pass."""

    def __init__(self, store: FileStore, blobs: BlobStore, clock: WallClock) -> None:
        self._store = store
        self._blobs = blobs
        self._clock = clock

    async def sweep_once(self, now_ms: int) -> SweepReport:
        """One bounded pass at `now_ms`.

        Raises:
            StorageError, BlobError: the store or the disk failed; what was
                removed before stays removed.
        """
        files = await self._expired_files(now_ms)
        blobs, freed = await self._unreferenced_blobs(now_ms - GRACE_MS)
        parts = await self._stale_parts(now_ms - GRACE_MS)
        return SweepReport(files, blobs, freed, parts)

    async def _expired_files(self, now_ms: int) -> int:
        removed = 0
        for _ in range(MAX_BATCHES):
            ids = await self._store.expired_files(now_ms, BATCH)
            for file_id in ids:
                await self._store.delete_file(file_id)
                # An upload that expired unfinished: its part goes with it.
                await self._blobs.discard(file_id)
            removed += len(ids)
            if len(ids) < BATCH:
                break
        return removed

    async def _unreferenced_blobs(self, older_than_ms: int) -> tuple[int, int]:
        removed = freed = 0
        for _ in range(MAX_BATCHES):
            shas = await self._store.unreferenced_blobs(older_than_ms, BATCH)
            progress = 0
            for sha256 in shas:
                size = await asyncio.to_thread(_size, self._blobs.local_path(sha256))
                # Disk first: a row without bytes would be served as a missing blob.
                if not await self._blobs.delete(sha256, older_than_ms=older_than_ms):
                    continue  # an upload deduplicated onto it just now
                if await self._store.forget_blob(sha256):
                    removed += 1
                    freed += size
                    progress += 1
            if len(shas) < BATCH or not progress:
                break
        return removed, freed

    async def _stale_parts(self, older_than_ms: int) -> int:
        removed = await self._blobs.drop_scratch(older_than_ms, MAX_PARTS)
        for upload_id, written_ms in await self._blobs.parts(MAX_PARTS):
            if written_ms >= older_than_ms:
                continue  # being written, or just paused
            found = await self._store.file(upload_id)
            if found is None or found.complete:
                await self._blobs.discard(upload_id)
                removed += 1
        return removed

    async def run(self, interval_s: float, *, rounds: int | None = None) -> None:
        """Sweep every `interval_s` seconds until cancelled (or `rounds` passes).

        A pass that fails (the store unreachable, a disk error) is logged and
        the next one runs as planned.
        """
        done = 0
        while rounds is None or done < rounds:
            if done:
                await asyncio.sleep(interval_s)
            done += 1
            try:
                report = await self.sweep_once(self._clock.wall_ms())
            except ApplianceError as exc:
                log.warning("media sweep failed, retried in %.0f s: %s", interval_s, exc)
                continue
            except Exception:  # a bug must not stop the sweeping
                log.exception("media sweep failed unexpectedly, retried in %.0f s", interval_s)
                continue
            if report != SweepReport():
                log.info("media sweep: removed %d files, %d blobs (%d bytes), %d stale uploads",
                         report.files_removed, report.blobs_removed, report.bytes_freed,
                         report.parts_removed)


def _size(path: os.PathLike[str]) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise BlobError(f"cannot read blob {os.fspath(path)}: {exc.strerror}") from None
