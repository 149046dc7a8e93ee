"""Images made from stored files (issue 15): thumbnails, picture sizes, preview images.

Each is made once by the image workers, from the file's clean copy, and kept
as a variant of the file (its own blob); concurrent requests for the same one
wait for it.  A preview's image becomes a file of the app owned by no user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from appliance.errors import ImageRefusedError, NotFoundError, UsageError
from appliance.media.blobs import BlobStore
from appliance.media.config import MediaConfig
from appliance.media.content import WallClock, is_image
from appliance.media.ids import new_file_id
from appliance.media.images.model import ImageInfo
from appliance.media.images.pool import ImagePool
from appliance.storage.interface import Storage
from appliance.storage.models import FileRecord, FileVariant

log = logging.getLogger(__name__)


class DerivedImages:
    """Thumbnails and picture sizes of image files, and link previews' images."""

    def __init__(self, store: Storage, blobs: BlobStore, images: ImagePool | None,
                 config: MediaConfig, clock: WallClock) -> None:
        self.store = store
        self.blobs = blobs
        self.images = images
        self.config = config
        self.clock = clock
        #: Variants being made: concurrent requests for one wait for it.
        self._making: dict[tuple[str, str], asyncio.Future[FileVariant]] = {}

    def making(self, file_id: str) -> bool:
        """Whether a variant of `file_id` is being made now."""
        return any(key[0] == file_id for key in self._making)


    async def _scratch(self, suffix: str) -> Path:
        """A fresh path beside the upload parts for an image worker's output."""
        path = self.blobs.part_path(new_file_id()).with_suffix(suffix)
        await asyncio.to_thread(path.parent.mkdir, mode=0o700, parents=True, exist_ok=True)
        return path

    async def store_preview_image(self, app_id: int, source: Path, size: int,
                                  lifetime_s: float) -> str | None:
        """A link preview's image as a file of the app: thumbnailed (WebP, longest side
        `size`, clean), owned by no user (owner 0: only signed links read it), removed
        after `lifetime_s` by the sweep.  None if it is not an image we take.

        Raises:
            QuotaError: the app's storage is full.
            ImageBusyError: every image worker is busy.
        """
        if self.images is None:
            return None
        out = await self._scratch(".preview.webp")
        try:
            try:
                info = await self.images.thumbnail(source, out, size=size, fmt="webp",
                                                   square=False, owner=app_id)
            except ImageRefusedError as exc:
                log.info("a preview image was refused: %s", exc)
                return None
            length = (await asyncio.to_thread(out.stat)).st_size
            now = self.clock.wall_ms()
            record = FileRecord(
                file_id=new_file_id(), app_id=app_id, owner_id=0, size=length, received=0,
                sha256=None, content_type=info.mime, name="preview.webp", width=info.width,
                height=info.height, created_ms=now, expires_ms=now + int(lifetime_s * 1000))
            await self.store.create_file(record, self.config.max_app_bytes)
            sha256, length = await self.blobs.adopt(out)
            await self.store.complete_file(record.file_id, sha256, length, info.mime,
                                           info.width, info.height)
            return record.file_id
        finally:
            with contextlib.suppress(OSError):
                out.unlink()

    async def variant(self, record: FileRecord, size: int, fmt: str, *,
                      square: bool) -> FileVariant:
        """A thumbnail (or a square picture size) of an image file, made once.

        Raises:
            UsageError: not an image, or a size/format not configured.
        """
        sizes = self.config.picture_sizes if square else self.config.thumbnail_sizes
        if size not in sizes:
            raise UsageError(f"size must be one of {', '.join(map(str, sizes))}")
        if fmt not in ("webp", "jpeg"):
            raise UsageError("format must be webp or jpeg")
        if not is_image(record) or record.sha256 is None or self.images is None:
            raise UsageError("this file is not an image")
        name = f"{'p' if square else 't'}{size}.{fmt}"
        found = await self.store.variant(record.file_id, name)
        if found is not None:
            return found
        key = (record.file_id, name)
        pending = self._making.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[FileVariant] = asyncio.get_running_loop().create_future()
        self._making[key] = future
        try:
            made = await self._make_variant(record, record.sha256, name, size, fmt, square)
            future.set_result(made)
            return made
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning if no one waits
            raise
        finally:
            del self._making[key]

    async def _make_variant(self, record: FileRecord, sha256: bytes, name: str, size: int,
                            fmt: str, square: bool) -> FileVariant:
        assert self.images is not None
        out = await self._scratch(f".{name}")
        try:
            info: ImageInfo = await self.images.thumbnail(
                self.blobs.local_path(sha256), out, size=size, fmt=fmt, square=square,
                owner=record.app_id)
            if await self.store.file(record.file_id) is None:
                # Deleted since the caller read it (or during the job): stored now, the
                # variant's blob would have no row, and the sweep never finds those.
                raise NotFoundError(f"no file {record.file_id}")
            digest, length = await self.blobs.adopt(out)
        finally:
            with contextlib.suppress(OSError):
                out.unlink()
        made = FileVariant(name, digest, length, info.mime, info.width, info.height)
        await self.store.save_variant(record.file_id, made)
        return made


