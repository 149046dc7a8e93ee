"""The media half of a running server: blob store, image workers, files, previews, sweep.

`app.py` builds one `Media` at start-up and closes it at shutdown; the REST
API reaches `files` and `previews`.  The image workers start with the first
image job, not with the server, so a restart (an upgrade) is not slowed by
them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from appliance.media.blobs import DiskBlobStore
from appliance.media.config import MEDIA_DIR, MediaConfig
from appliance.media.content import WallClock
from appliance.media.files import FileService
from appliance.media.images.model import ImageLimits
from appliance.media.images.pool import ImagePool
from appliance.media.previews import PreviewService
from appliance.media.sweep import MediaSweeper
from appliance.storage.interface import Storage

log = logging.getLogger(__name__)

#: How often unreferenced files and blobs are looked for.
SWEEP_INTERVAL_S = 300.0
#: A preview's image: longest side (px), WebP.
PREVIEW_IMAGE_PX = 640


def image_pool(config: MediaConfig) -> ImagePool:
    return ImagePool(config.image_workers, config.image_queue, config.image_timeout_s,
                     ImageLimits(config.max_image_pixels, config.max_image_side,
                                 config.max_image_frames))


@dataclass(slots=True)
class Media:
    files: FileService
    images: ImagePool
    sweeper: MediaSweeper
    previews: PreviewService | None
    _sweeping: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sweeping = asyncio.get_running_loop().create_task(
            self.sweeper.run(SWEEP_INTERVAL_S), name="media-sweep")

    async def close(self) -> None:
        if self._sweeping is not None:
            self._sweeping.cancel()
        if self.previews is not None:
            await self.previews.close()
        await self.images.close()


def media_for(config: MediaConfig, store: Storage, data_dir: Path, clock: WallClock) -> Media:
    """Everything media needs, over ``<data_dir>/media``."""
    blobs = DiskBlobStore(data_dir / MEDIA_DIR)
    # A FILE message's grant outlives the message by this (PROTOCOL.md §3.3.1).
    store.file_retention_ms = config.file_retention_s * 1000
    images = image_pool(config)
    files = FileService(store, blobs, images, config, clock)
    previews = None
    if config.previews.enabled:
        # Built now, so that a bad `allow` entry stops start-up naming the key.
        lifetime_s = 2 * config.previews.cache_ttl_s  # outlives every cached preview naming it
        previews = PreviewService(
            config.previews, tmp_dir=blobs.tmp_dir,
            store_image=lambda app_id, path, _type: files.store_preview_image(
                app_id, path, PREVIEW_IMAGE_PX, lifetime_s))
    return Media(files, images, MediaSweeper(store, blobs, clock), previews)
