"""Large incompressible files for upload tests and benchmarks, written in seconds.

One random MiB is written again and again, each copy with its index in its
first 8 bytes: no two MiB are alike (nothing dedups or compresses across
blocks), the file is dense (not sparse), and it costs the page cache's speed,
not the random generator's.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

BLOCK_BYTES = 1 << 20


def write_blocks(path: Path, blocks: int) -> str:
    """Write `blocks` MiB to `path`; returns their SHA-256 (hex)."""
    base = bytearray(os.urandom(BLOCK_BYTES))
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for index in range(blocks):
            base[:8] = index.to_bytes(8, "big")
            out.write(base)
            digest.update(base)
    return digest.hexdigest()
