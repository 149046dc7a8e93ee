"""The `thumbnails` scenario (issue 15): what a thumbnail of a 12-megapixel photo costs.

The photo is made once per run (tests/media/images/corpus.py): 4000 x 3000, gradients,
shapes and noise, JPEG quality 90 (~6 MB, the entropy of a camera's picture).

- *per core*: `codec.thumbnail` in this process, longest side 320, WebP and JPEG, with
  and without libjpeg's reduced-scale decoding (``draft``); thumbnails per second of
  this process's CPU time, so other load on a shared machine does not skew it;
- *pool*: `ImagePool` with one worker, then two, each given a burst of jobs at once
  (WebP 320, draft on); thumbnails per second of wall-clock time, and two / one;
- worker start-up: spawn to ready, as `ImagePool.last_startup_s` measures it.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import ClassVar

from appliance.media.images.codec import ImageLimits, thumbnail
from appliance.media.images.pool import ImagePool
from tests.bench.report import Row
from tests.bench.scenarios import Settings
from tests.media.images.corpus import photo

LIMITS = ImageLimits(max_pixels=64_000_000, max_side=16384, max_frames=1000)
SIZE = 320


class Thumbnails:
    name = "thumbnails"
    rows: ClassVar[list[Row]] = [
        Row("core.webp.draft", "per core: WebP 320 with draft(), thumbnails/s", "{:.1f}"),
        Row("core.webp.full", "per core: WebP 320 full decode, thumbnails/s", "{:.1f}"),
        Row("core.jpeg.draft", "per core: JPEG 320 with draft(), thumbnails/s", "{:.1f}"),
        Row("core.jpeg.full", "per core: JPEG 320 full decode, thumbnails/s", "{:.1f}"),
        Row("pool1", "pool, 1 worker: WebP 320 (draft), thumbnails/s", "{:.1f}"),
        Row("pool2", "pool, 2 workers: WebP 320 (draft), thumbnails/s", "{:.1f}"),
        Row("scaling", "2 workers / 1 worker", "{:.2f}"),
        Row("startup_ms", "worker start-up (spawn -> ready), ms", "{:.0f}"),
    ]

    def title(self, s: Settings) -> str:
        return (f"thumbnails: a 4000 x 3000 JPEG (q90, noise + gradients) to {SIZE} px;"
                " per core = per second of CPU time in one process")

    def users_needed(self, quick: bool) -> int:
        return 0

    def run(self, s: Settings) -> dict[str, float]:
        with tempfile.TemporaryDirectory(prefix="thumbs-", dir=s.root) as tmp:
            root = Path(tmp)
            src = photo(root / "photo.jpg")
            repeats = 3 if s.quick else 10
            out: dict[str, float] = {}
            for fmt in ("webp", "jpeg"):
                for draft in (True, False):
                    key = f"core.{fmt}.{'draft' if draft else 'full'}"
                    out[key] = per_core(src, root / f"t.{fmt}", fmt, draft,
                                        repeats * (4 if draft else 1))
            jobs = 12 if s.quick else 40
            out["pool1"], _ = asyncio.run(pool_rate(src, root, 1, jobs))
            out["pool2"], startup_s = asyncio.run(pool_rate(src, root, 2, jobs))
            out["scaling"] = out["pool2"] / out["pool1"]
            out["startup_ms"] = startup_s * 1000
            return out


def per_core(src: Path, dst: Path, fmt: str, draft: bool, count: int) -> float:
    thumbnail(src, dst, size=SIZE, fmt=fmt, square=False, limits=LIMITS,
              use_draft=draft)  # warm-up: page cache, codec tables
    started = time.process_time()
    for _ in range(count):
        thumbnail(src, dst, size=SIZE, fmt=fmt, square=False, limits=LIMITS, use_draft=draft)
    return count / (time.process_time() - started)


async def pool_rate(src: Path, root: Path, workers: int, jobs: int) -> tuple[float, float]:
    pool = ImagePool(workers, jobs, 60.0, LIMITS)
    try:
        await pool.start()
        startup_s = pool.last_startup_s or 0.0
        await pool.thumbnail(src, root / "warm.webp", size=SIZE, fmt="webp", square=False)
        started = time.perf_counter()
        await asyncio.gather(*(pool.thumbnail(src, root / f"p{i}.webp", size=SIZE, fmt="webp",
                                              square=False) for i in range(jobs)))
        return jobs / (time.perf_counter() - started), startup_s
    finally:
        await pool.close()
