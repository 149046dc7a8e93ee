"""Cheap reads of GIF and WebP headers: canvas size and frame count, no pixel data decoded.

Pillow answers these too, but at a price an attacker chooses: ``GifImageFile.n_frames``
walks every frame of the file with no bound of its own, and ``WebPImageFile`` hands the
whole file to libwebp's animation decoder, which allocates the canvas (width x height x 4
bytes) before Pillow's own size check (that one refuses only past twice
``Image.MAX_IMAGE_PIXELS``).  These scanners read block and chunk headers only, stop
as soon as the count passes the limit, and advance at least one byte per step, so their
work is bounded by both the limit and the file's size.

Pure: stdlib only; runs inside the image worker processes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

#: GIF89a: a block introducer byte (https://www.w3.org/Graphics/GIF/spec-gif89a.txt §15-§27).
_GIF_EXTENSION, _GIF_IMAGE, _GIF_TRAILER = 0x21, 0x2C, 0x3B
#: WebP container (RFC 9649 §2.7): chunks besides the frames we allow before refusing.
MAX_OTHER_WEBP_CHUNKS = 64


@dataclass(frozen=True, slots=True)
class WebpHeader:
    """What the RIFF container says before any decoder sees it."""

    width: int
    height: int
    frames: int
    #: The (first) image is VP8L, lossless: a sanitized copy stays lossless.
    lossless: bool


def sniff(prefix: bytes) -> str:
    """"GIF", "WEBP" or "" from a file's first 16 bytes: which scanner to run first.

    Only a routing hint: the format is what Pillow's decoder identifies afterwards.
    """
    if prefix[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if prefix[:4] == b"RIFF" and prefix[8:12] == b"WEBP":
        return "WEBP"
    return ""


def gif_frames(fp: BinaryIO, limit: int) -> int:
    """Image descriptors in a GIF, counted up to ``limit + 1`` (then the count stops).

    A file that ends early or holds an unknown block ends the count there: the frames
    after the first are never decoded, and the first is checked by the decoder.
    """
    fp.seek(0)
    head = fp.read(13)  # signature (6) + logical screen descriptor (7), §17-§18
    if len(head) < 13:
        return 0
    flags = head[10]
    if flags & 0x80:  # global colour table, 3 * 2^(n+1) bytes
        fp.seek(3 << ((flags & 7) + 1), 1)
    frames = 0
    while frames <= limit:
        introducer = fp.read(1)
        if not introducer or introducer[0] == _GIF_TRAILER:
            break
        if introducer[0] == _GIF_EXTENSION:
            if not fp.read(1):  # the label
                break
        elif introducer[0] == _GIF_IMAGE:
            descriptor = fp.read(10)  # 9 bytes (§20) + LZW minimum code size (§22)
            if len(descriptor) < 10:
                break
            frames += 1
            if descriptor[8] & 0x80:  # local colour table before the code size byte
                fp.seek((3 << ((descriptor[8] & 7) + 1)) - 1, 1)
                if not fp.read(1):
                    break
        else:
            break
        if not _skip_sub_blocks(fp):
            break
    return frames


def _skip_sub_blocks(fp: BinaryIO) -> bool:
    """Skip data sub-blocks up to the terminator (§15); False at the end of the file."""
    while True:
        length = fp.read(1)
        if not length:
            return False
        if length[0] == 0:
            return True
        fp.seek(length[0], 1)


def webp_header(fp: BinaryIO, limit: int) -> WebpHeader | None:
    """Canvas size and frame count (ANMF chunks, up to ``limit + 1``) of a WebP file.

    None when the container is not one we can read (the decoder then refuses it).
    """
    fp.seek(0)
    riff = fp.read(12)
    if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WEBP":
        return None
    first = _chunk_header(fp)
    if first is None:
        return None
    fourcc, length = first
    payload = fp.read(min(length, 30))
    size = _webp_size(fourcc, payload)
    if size is None:
        return None
    if fourcc != b"VP8X" or not payload[0] & 0x02:  # no animation flag: one image
        return WebpHeader(size[0], size[1], 1, fourcc == b"VP8L")
    fp.seek(length + (length & 1) - len(payload), 1)
    frames, others, lossless = 0, 0, False
    while frames <= limit and others <= MAX_OTHER_WEBP_CHUNKS:
        chunk = _chunk_header(fp)
        if chunk is None:
            break
        fourcc, length = chunk
        if fourcc == b"ANMF":
            frames += 1
            if frames == 1:  # 16 bytes of frame header, then the frame's own chunks
                inner = fp.read(24)
                lossless = inner[16:20] == b"VP8L"
                fp.seek(-len(inner), 1)
        else:
            others += 1
        fp.seek(length + (length & 1), 1)
    if others > MAX_OTHER_WEBP_CHUNKS:
        frames = max(frames, limit + 1)  # a container this odd is refused like a bomb
    return WebpHeader(size[0], size[1], frames, lossless)


def _chunk_header(fp: BinaryIO) -> tuple[bytes, int] | None:
    raw = fp.read(8)
    if len(raw) < 8:
        return None
    fourcc, length = struct.unpack("<4sI", raw)
    return fourcc, length


def _webp_size(fourcc: bytes, payload: bytes) -> tuple[int, int] | None:
    """Canvas size from the first chunk (RFC 9649 §2.5, §2.6, §2.7.1)."""
    if fourcc == b"VP8X" and len(payload) >= 10:
        width = int.from_bytes(payload[4:7], "little") + 1
        height = int.from_bytes(payload[7:10], "little") + 1
        return width, height
    if fourcc == b"VP8 " and len(payload) >= 10 and payload[3:6] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", payload[6:10])
        return width & 0x3FFF, height & 0x3FFF
    if fourcc == b"VP8L" and len(payload) >= 5 and payload[0] == 0x2F:
        bits = int.from_bytes(payload[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None
