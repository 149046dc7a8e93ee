"""What a stored file is, as the REST routes and the browser see it (issue 15).

Pure rules shared by uploads, downloads and derived images: cleaning a
declared type and name, recognising an image by its bytes, how a browser is
told to treat a file, and reading a blob in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from appliance.storage.models import FileRecord

log = logging.getLogger(__name__)

#: Bytes read from disk per chunk of a download (one thread hop each).  Also
#: what a client that stops reading holds in the server beside the transport's
#: high-water mark: 256 KiB keeps that near 1 MiB a connection (1 MiB chunks:
#: 3.2 MiB), and one core still sends GB/s (tests/bench files).
READ_CHUNK_BYTES = 256 * 1024
#: What a name and a declared type may be (longer ones are cut / refused).
MAX_NAME_BYTES = 255
MAX_TYPE_CHARS = 127
_TYPE_RE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}")
#: Leading bytes of the formats the image pipeline takes (JPEG, PNG, GIF, WebP).
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")
#: Served inline: clean images (ours), audio and video; anything else a browser
#: could run or render (HTML, SVG, XML, PDF, scripts) goes as an attachment.
_INLINE_PREFIXES = ("audio/", "video/")
OCTET_STREAM = "application/octet-stream"


class ChunkSource(Protocol):
    """A request body read as it arrives (`appliance.api.http.BodyStream`)."""

    length: int | None

    async def read(self) -> bytes: ...


class WallClock(Protocol):
    def wall_ms(self) -> int: ...


def clean_type(declared: str) -> str:
    """A declared media type reduced to ``type/subtype`` (parameters dropped), or
    application/octet-stream if it is not one."""
    kind = declared.partition(";")[0].strip().lower()
    return kind if len(kind) <= MAX_TYPE_CHARS and _TYPE_RE.fullmatch(kind) else OCTET_STREAM


def clean_name(name: str) -> str:
    """A file name as a hint for the recipient: no directories, no control
    characters, at most 255 UTF-8 bytes."""
    name = name.replace("\\", "/").rpartition("/")[2]
    name = "".join(ch for ch in name if ch.isprintable()).strip() or "file"
    encoded = name.encode("utf-8")[:MAX_NAME_BYTES]
    return encoded.decode("utf-8", "ignore")


def looks_like_image(head: bytes) -> bool:
    return head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def is_image(record: FileRecord) -> bool:
    """A file whose stored bytes are a clean image made by our pipeline."""
    return record.width > 0


def disposition(record: FileRecord) -> str:
    """``inline`` only for what a browser displays without running it."""
    if is_image(record) or record.content_type.startswith(_INLINE_PREFIXES):
        return "inline"
    return "attachment"


def head_of(path: Path) -> bytes:
    with open(path, "rb") as file:
        return file.read(16)


async def read_range(path: Path, start: int, length: int) -> AsyncIterator[bytes]:
    """Read in a thread: a cold disk must not stall the event loop."""
    try:
        file = await asyncio.to_thread(open, path, "rb")
    except OSError as exc:
        log.error("blob %s cannot be read: %s", path.name, exc.strerror)
        return
    try:
        left = length
        while left > 0:
            chunk = await asyncio.to_thread(os.pread, file.fileno(),
                                            min(left, READ_CHUNK_BYTES), start + length - left)
            if not chunk:
                return  # shorter than recorded: the transport cuts the response
            left -= len(chunk)
            yield chunk
    finally:
        file.close()

