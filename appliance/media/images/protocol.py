"""What the pool and a worker say to each other: one JSON object per message, after its
length as 4 bytes big-endian, on the worker's stdin (jobs) and stdout (answers).

Jobs carry paths, never image bytes: the worker reads the blob and writes its output
itself, so a message stays a few hundred bytes and both sides bound it.  The worker
checks every field it is sent; the pool checks every answer (a worker that a hostile
image took over could say anything).

Stdlib only: the server imports this, and must not load Pillow.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Final

from appliance.media.images.model import (
    MAX_THUMBNAIL_SIZE,
    MIME,
    THUMBNAIL_FORMATS,
    ImageInfo,
    ImageLimits,
)

#: argv[1] of the frozen executable that makes it an image worker (packaging/entry.py).
WORKER_ARG: Final = "__tidings-image-worker__"
#: The pid the worker must have as its parent, else it exits at once (see worker.py).
PARENT_PID_ENV: Final = "TIDINGS_IMAGE_WORKER_PARENT"
#: The worker's address-space limit (RLIMIT_AS), bytes.
MEMORY_ENV: Final = "TIDINGS_IMAGE_WORKER_MEMORY"
#: Set to "1" in a worker's environment to let it run `TEST_OPS` (tests only).
TEST_HOOKS_ENV: Final = "TIDINGS_IMAGE_TEST_HOOKS"
LENGTH: Final = struct.Struct(">I")
#: A message is a few hundred bytes; this bounds what either side reads.
MAX_MESSAGE_BYTES: Final = 64 * 1024
OPS: Final = ("probe", "sanitize", "thumbnail")
#: "sleep" (seconds) and "allocate" (bytes): stand-ins for a slow and a huge image.
TEST_OPS: Final = ("sleep", "allocate")
#: A worker's address space: at least 1 GiB, more when `ImageLimits.max_pixels` needs it
#: (a decoded image at 4 bytes a pixel, and up to two working copies: transposed, converted).
MIN_WORKER_MEMORY_BYTES: Final = 1 << 30
_INTERPRETER_BYTES: Final = 512 << 20
#: Largest width or height an answer may claim (the WebP/JPEG format limits are lower).
_MAX_SIDE: Final = 1 << 24


class WorkerMessageError(ValueError):
    """A message is malformed (too long, not JSON, a field missing or out of range)."""


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_MESSAGE_BYTES:
        raise WorkerMessageError(f"message of {len(body)} bytes")
    return LENGTH.pack(len(body)) + body


def body_length(prefix: bytes) -> int:
    """The length a 4-byte prefix announces, refused past `MAX_MESSAGE_BYTES`."""
    length: int = LENGTH.unpack(prefix)[0]
    if length > MAX_MESSAGE_BYTES:
        raise WorkerMessageError(f"message of {length} bytes announced")
    return length


def decode(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise WorkerMessageError("not JSON") from None
    if not isinstance(message, dict):
        raise WorkerMessageError("not a JSON object")
    return message


def worker_memory_bytes(limits: ImageLimits) -> int:
    """RLIMIT_AS for a worker under `limits` (`MEMORY_ENV`)."""
    return max(MIN_WORKER_MEMORY_BYTES, _INTERPRETER_BYTES + 3 * 4 * limits.max_pixels)


def limits_to_wire(limits: ImageLimits) -> list[int]:
    return [limits.max_pixels, limits.max_side, limits.max_frames]


def limits_from_wire(value: object) -> ImageLimits:
    if not (isinstance(value, list) and len(value) == 3
            and all(type(v) is int and 1 <= v <= 1 << 40 for v in value)):
        raise WorkerMessageError("limits")
    return ImageLimits(*value)


def info_to_wire(info: ImageInfo) -> dict[str, Any]:
    return {"format": info.format, "mime": info.mime, "width": info.width,
            "height": info.height, "frames": info.frames}


def info_from_wire(value: object) -> ImageInfo:
    """An answer's image description, every field checked."""
    if not isinstance(value, dict):
        raise WorkerMessageError("info")
    fmt, mime = value.get("format"), value.get("mime")
    if not isinstance(fmt, str) or MIME.get(fmt) != mime:
        raise WorkerMessageError("info.format")
    sizes = [value.get(key) for key in ("width", "height", "frames")]
    if not all(type(v) is int and 1 <= v <= _MAX_SIDE for v in sizes):
        raise WorkerMessageError("info sizes")
    return ImageInfo(fmt, mime, *sizes)  # type: ignore[arg-type]


def thumbnail_args(value: dict[str, Any]) -> tuple[int, str, bool, bool]:
    """(size, fmt, square, draft) of a thumbnail job, checked."""
    size, fmt = value.get("size"), value.get("fmt")
    square, draft = value.get("square"), value.get("draft", True)
    if type(size) is not int or not 1 <= size <= MAX_THUMBNAIL_SIZE:
        raise WorkerMessageError("size")
    if fmt not in THUMBNAIL_FORMATS or type(square) is not bool or type(draft) is not bool:
        raise WorkerMessageError("fmt, square or draft")
    return size, fmt, square, draft
