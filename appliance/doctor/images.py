"""Image workers: this executable can start them and they thumbnail an image (issue 15).

What can break them on a host while the rest works: a one-file executable unpacked
where it may not run itself again (a ``noexec`` ``TMPDIR``), a build without Pillow's
extensions, an address-space limit below what a worker maps.  The check starts a pool
as the server would (``[media]`` settings), thumbnails a small PNG made here, and
reports the start-up time.  It writes only in a temporary directory it removes.
"""

from __future__ import annotations

import asyncio
import struct
import tempfile
import time
import zlib
from pathlib import Path
from typing import Final

from appliance.doctor.model import Finding, Subject, Verdict
from appliance.errors import ApplianceError
from appliance.media.images.pool import ImagePool

NAME: Final = "images"
#: The test image: small, but large enough to be thumbnailed (longest side > size).
SAMPLE_PX, THUMB_PX = 64, 16


def check_images(subject: Subject) -> Finding:
    pool = ImagePool.from_config(subject.config.media)
    with tempfile.TemporaryDirectory(prefix="tidings-doctor-") as tmp:
        src = Path(tmp) / "sample.png"
        src.write_bytes(sample_png(SAMPLE_PX, SAMPLE_PX))
        try:
            startup_s, job_s = asyncio.run(_exercise(pool, src, Path(tmp) / "thumb.webp"))
        except ApplianceError as exc:
            return Finding(NAME, Verdict.FAIL, f"the image workers do not work: {exc}",
                           "run the executable from a file system that allows execution"
                           " (TMPDIR must not be noexec for the one-file build) and check"
                           " that the build includes Pillow (packaging/tidings.spec)")
    return Finding(NAME, Verdict.OK,
                   f"{pool.size} image workers started in {startup_s:.2f} s; a thumbnail"
                   f" took {job_s * 1000:.0f} ms",
                   figures={"workers": pool.size, "startup_s": round(startup_s, 3),
                            "thumbnail_s": round(job_s, 3)})


async def _exercise(pool: ImagePool, src: Path, dst: Path) -> tuple[float, float]:
    try:
        started = time.perf_counter()
        await pool.start()
        startup_s = time.perf_counter() - started
        started = time.perf_counter()
        info = await pool.thumbnail(src, dst, size=THUMB_PX, fmt="webp", square=False)
        job_s = time.perf_counter() - started
    finally:
        await pool.close()
    if (info.width, info.height) != (THUMB_PX, THUMB_PX):
        raise ApplianceError(f"the thumbnail is {info.width} x {info.height} px,"
                             f" not {THUMB_PX} x {THUMB_PX}")
    return startup_s, job_s


def sample_png(width: int, height: int) -> bytes:
    """An RGB gradient as a PNG (RFC 2083), made without Pillow (the CLI never loads it)."""
    rows = b"".join(b"\x00" + bytes(v for x in range(width)
                                    for v in (x * 255 // width, y * 255 // height, 128))
                    for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))
