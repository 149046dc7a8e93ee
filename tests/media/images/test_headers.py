"""The bounded GIF and WebP header scans: counts stop past the limit; odd files end them."""

from __future__ import annotations

import io
import time
from pathlib import Path

from PIL import Image

from appliance.media.images.headers import (
    MAX_OTHER_WEBP_CHUNKS,
    gif_frames,
    sniff,
    webp_header,
)
from tests.media.images import corpus


def test_sniff_routes_by_magic_only() -> None:
    assert sniff(b"GIF89a\x01\x00") == "GIF"
    assert sniff(b"GIF87a") == "GIF"
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "WEBP"
    assert sniff(b"RIFF\x00\x00\x00\x00AVI ") == ""
    assert sniff(b"\x89PNG\r\n\x1a\n") == ""


def test_the_gif_count_stops_just_past_the_limit(tmp_path: Path) -> None:
    bomb = corpus.gif_frame_bomb(tmp_path / "f.gif", 10_000)
    with bomb.open("rb") as fp:
        assert gif_frames(fp, 5) == 6
        assert gif_frames(fp, 20_000) == 10_000


def test_gif_extensions_and_colour_tables_are_skipped(tmp_path: Path) -> None:
    path = corpus.animated_gif(tmp_path / "a.gif", frames=7)  # loop + delay extensions
    with path.open("rb") as fp:
        assert gif_frames(fp, 100) == 7
    with Image.open(path) as image:
        assert image.n_frames == 7  # Pillow agrees


def test_a_truncated_or_garbage_gif_ends_the_count() -> None:
    data = (b"GIF89a" + b"\x01\x00\x01\x00\x00\x00\x00"
            + (b"\x2c" + b"\x00" * 8 + b"\x00\x02\x02\x44\x01\x00") * 3)
    assert gif_frames(io.BytesIO(data[:-3]), 100) == 3  # cut inside the last data
    assert gif_frames(io.BytesIO(data + b"\x99garbage"), 100) == 3
    assert gif_frames(io.BytesIO(b"GIF89a"), 100) == 0


def test_a_long_run_of_empty_extensions_is_read_in_bounded_time() -> None:
    # 1 MB of comment extensions and no frame: each step consumes bytes, so the scan
    # ends at the file's end, whatever the limit.
    data = b"GIF89a\x01\x00\x01\x00\x00\x00\x00" + b"\x21\xfe\x00" * 350_000 + b"\x3b"
    started = time.perf_counter()
    assert gif_frames(io.BytesIO(data), 1000) == 0
    assert time.perf_counter() - started < 2.0


def test_webp_sizes_of_the_three_kinds(tmp_path: Path) -> None:
    for name, params in (("lossy", {}), ("lossless", {"lossless": True})):
        path = tmp_path / f"{name}.webp"
        Image.new("RGB", (123, 45), corpus.RED).save(path, "WEBP", **params)
        with path.open("rb") as fp:
            header = webp_header(fp, 10)
        assert header is not None
        assert (header.width, header.height, header.frames) == (123, 45, 1)
        assert header.lossless is (name == "lossless")
    animated = corpus.webp_frame_bomb(tmp_path / "anim.webp", 3, tmp_path)
    with animated.open("rb") as fp:
        header = webp_header(fp, 10)
    assert header is not None
    assert (header.width, header.height, header.frames) == (16, 16, 3)


def test_webp_frame_count_stops_past_the_limit(tmp_path: Path) -> None:
    bomb = corpus.webp_frame_bomb(tmp_path / "bomb.webp", 5000, tmp_path)
    with bomb.open("rb") as fp:
        header = webp_header(fp, 1000)
    assert header is not None
    assert header.frames == 1001


def test_a_webp_of_unknown_chunks_counts_as_a_bomb() -> None:
    vp8x = bytes([0x02, 0, 0, 0]) + (15).to_bytes(3, "little") * 2
    chunks = b"VP8X" + len(vp8x).to_bytes(4, "little") + vp8x
    chunks += b"JUNK\x00\x00\x00\x00" * (MAX_OTHER_WEBP_CHUNKS + 5)
    body = b"WEBP" + chunks
    data = b"RIFF" + len(body).to_bytes(4, "little") + body
    header = webp_header(io.BytesIO(data), 1000)
    assert header is not None
    assert header.frames > 1000


def test_not_a_webp_container_is_none() -> None:
    assert webp_header(io.BytesIO(b"RIFF\x04\x00\x00\x00WEBP"), 10) is None
    assert webp_header(io.BytesIO(b"RIFF\x10\x00\x00\x00WEBPABCD\x02\x00\x00\x00xx"), 10) is None
    assert webp_header(io.BytesIO(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30), 10) is None
