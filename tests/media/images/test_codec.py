"""The codec on hostile and awkward images, in this process (the pool runs it in workers).

Attacks first: bombs (pixels, sides, frames), formats we do not parse, lying names,
damaged files, metadata an uploader did not mean to publish.  Then the conversions.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from appliance.errors import ImageRefusedError, MediaError
from appliance.media.images.codec import ImageLimits, probe, sanitize, thumbnail
from tests.media.images import corpus

LIMITS = ImageLimits(max_pixels=64_000_000, max_side=16384, max_frames=1000)
#: Bytes no output may contain: EXIF, GPS, XMP, our comment and camera, PNG text chunks.
LEAKS = (b"Exif", b"GPS", b"SecretCamera", b"SecretComment", b"SecretXmpTool",
         b"SecretAuthor", b"xmpmeta", b"tEXt", b"iTXt", b"zTXt", b"eXIf", b"iCCP", b"ICC_PROFILE")


def assert_clean(path: Path) -> None:
    data = path.read_bytes()
    assert not [leak for leak in LEAKS if leak in data]
    with Image.open(path) as out:
        assert not out.getexif()
        assert not set(out.info) & {"exif", "xmp", "XML:com.adobe.xmp", "comment",
                                    "icc_profile", "Comment", "Author"}


def max_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# --- attacks --------------------------------------------------------------------------


OPERATIONS: dict[str, Callable[[Path, Path], object]] = {
    "probe": lambda src, _dst: probe(src, LIMITS),
    "sanitize": lambda src, dst: sanitize(src, dst / "out.png", LIMITS),
    "thumbnail": lambda src, dst: thumbnail(src, dst / "out.webp", size=320, fmt="webp",
                                            square=False, limits=LIMITS),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_a_50000_px_square_png_is_refused_from_its_header(tmp_path: Path, operation: str
                                                          ) -> None:
    bomb = corpus.png_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 200  # 2.5 gigapixels claimed by 69 bytes
    rss_before, started = max_rss_kib(), time.perf_counter()
    with pytest.raises(ImageRefusedError, match="more than 64,000,000 pixels"):
        OPERATIONS[operation](bomb, tmp_path)
    assert time.perf_counter() - started < 1.0
    assert max_rss_kib() - rss_before < 20 * 1024  # decoding it would take 2.5 GB
    assert not (tmp_path / "out.png").exists()
    assert not (tmp_path / "out.webp").exists()


def test_pixels_and_sides_are_bounded_separately(tmp_path: Path) -> None:
    long_strip = corpus.png_bomb(tmp_path / "strip.png", width=20_000, height=2)
    with pytest.raises(ImageRefusedError, match="a side may be at most 16384 px"):
        probe(long_strip, LIMITS)
    # Past the bound but below twice it, Pillow only warns: an error here all the same.
    wide = corpus.png_bomb(tmp_path / "wide.png", width=9000, height=9000)
    with pytest.raises(ImageRefusedError, match="more than 64,000,000 pixels"):
        probe(wide, LIMITS)
    # Pillow's own bound is ours: its DecompressionBombWarning is an error too.
    with pytest.raises(ImageRefusedError, match="more than 5,000 pixels"):
        probe(corpus.png_bomb(tmp_path / "small.png", width=100, height=100),
              ImageLimits(max_pixels=5000, max_side=16384, max_frames=1))


def test_a_gif_with_10000_frames_is_refused_from_its_headers(tmp_path: Path) -> None:
    bomb = corpus.gif_frame_bomb(tmp_path / "frames.gif", 10_000)
    started = time.perf_counter()
    with pytest.raises(ImageRefusedError, match="more than 1000 frames"):
        probe(bomb, LIMITS)
    with pytest.raises(ImageRefusedError, match="more than 1000 frames"):
        thumbnail(bomb, tmp_path / "t.webp", size=96, fmt="webp", square=True, limits=LIMITS)
    assert time.perf_counter() - started < 1.0
    assert probe(bomb, ImageLimits(64_000_000, 16384, 10_000)).frames == 10_000


def test_webp_bombs_are_refused_before_libwebp_allocates(tmp_path: Path) -> None:
    # 16384 x 16384 is within the side bound but 268 M pixels: refused before the
    # animation decoder would allocate a 1 GiB canvas.
    canvas = corpus.webp_canvas_bomb(tmp_path / "canvas.webp")
    rss_before = max_rss_kib()
    with pytest.raises(ImageRefusedError, match="16384 x 16384 px"):
        probe(canvas, LIMITS)
    assert max_rss_kib() - rss_before < 20 * 1024
    frames = corpus.webp_frame_bomb(tmp_path / "frames.webp", 1100, tmp_path)
    with pytest.raises(ImageRefusedError, match="more than 1000 frames"):
        probe(frames, LIMITS)


def test_a_text_file_named_png_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "photo.png"
    text.write_text("<svg onload=alert(1)> not an image\n" * 10)
    with pytest.raises(ImageRefusedError, match="not a JPEG, PNG, WebP or GIF"):
        probe(text, LIMITS)
    with pytest.raises(ImageRefusedError):
        sanitize(text, tmp_path / "out.png", LIMITS)


@pytest.mark.parametrize("fmt", ["TIFF", "BMP", "PPM"])
def test_formats_outside_the_allowlist_are_refused(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "image.jpg"  # the name lies too
    Image.new("RGB", (10, 10), corpus.RED).save(path, fmt)
    with pytest.raises(ImageRefusedError, match="not a JPEG, PNG, WebP or GIF"):
        probe(path, LIMITS)


def test_a_png_named_jpg_is_identified_by_its_bytes(tmp_path: Path) -> None:
    liar = tmp_path / "holiday.jpg"
    Image.new("RGB", (30, 20), corpus.RED).save(liar, "PNG")
    assert probe(liar, LIMITS).format == "PNG"
    info = sanitize(liar, tmp_path / "out", LIMITS)
    assert (info.format, info.mime) == ("PNG", "image/png")
    with Image.open(tmp_path / "out") as out:
        assert out.format == "PNG"


def test_a_truncated_jpeg_is_refused(tmp_path: Path) -> None:
    whole = corpus.photo(tmp_path / "whole.jpg", 800, 600)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert probe(cut, LIMITS).width == 800  # the header is intact ...
    with pytest.raises(ImageRefusedError, match="damaged or truncated"):
        sanitize(cut, tmp_path / "out.jpg", LIMITS)  # ... the pixels are not
    with pytest.raises(ImageRefusedError, match="damaged or truncated"):
        thumbnail(cut, tmp_path / "t.jpg", size=96, fmt="jpeg", square=False, limits=LIMITS)
    assert sorted(tmp_path.iterdir()) == sorted([whole, cut])  # nothing written


def test_a_missing_source_or_unwritable_destination_is_our_fault_not_the_image(
        tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="cannot read"):
        probe(tmp_path / "gone.png", LIMITS)
    src = corpus.animated_gif(tmp_path / "a.gif")
    with pytest.raises(MediaError, match="cannot write"):
        sanitize(src, tmp_path / "no-such-dir" / "out.png", LIMITS)


# --- metadata and orientation ------------------------------------------------------------


def test_the_rotated_photo_is_upright_and_its_gps_gone(tmp_path: Path) -> None:
    src = corpus.rotated_photo(tmp_path / "photo.jpg")
    assert b"GPS" in src.read_bytes() or b"SecretCamera" in src.read_bytes()
    info = probe(src, LIMITS)
    assert (info.width, info.height) == (400, 600)  # as displayed

    full = sanitize(src, tmp_path / "clean.jpg", LIMITS)
    assert (full.format, full.width, full.height) == ("JPEG", 400, 600)
    thumb = thumbnail(src, tmp_path / "thumb.webp", size=96, fmt="webp", square=False,
                      limits=LIMITS)
    assert (thumb.width, thumb.height) == (64, 96)  # portrait
    for out in (tmp_path / "clean.jpg", tmp_path / "thumb.webp"):
        assert_clean(out)
        with Image.open(out) as image:
            rgb = image.convert("RGB")
            top, bottom = rgb.getpixel((rgb.width // 2, 2)), rgb.getpixel(
                (rgb.width // 2, rgb.height - 3))
            assert _near(top, corpus.RED), f"{out.name}: the red band is not on top: {top}"
            assert _near(bottom, corpus.GREEN), bottom


def test_corrupt_exif_leaves_the_pixels_as_stored(tmp_path: Path) -> None:
    src = tmp_path / "corrupt-exif.jpg"
    Image.new("RGB", (40, 20), corpus.RED).save(
        src, "JPEG", exif=b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\xff\xff" + b"\x01" * 50)
    assert probe(src, LIMITS).width == 40
    info = sanitize(src, tmp_path / "out.jpg", LIMITS)
    assert (info.width, info.height) == (40, 20)
    assert_clean(tmp_path / "out.jpg")


def test_png_text_xmp_exif_and_icc_are_gone_and_alpha_kept(tmp_path: Path) -> None:
    src = corpus.png_with_metadata(tmp_path / "meta.png")
    info = sanitize(src, tmp_path / "clean.png", LIMITS)
    assert info.format == "PNG"
    assert_clean(tmp_path / "clean.png")
    with Image.open(tmp_path / "clean.png") as out:
        assert out.mode == "RGBA"
        assert out.getpixel((10, 10))[3] == 0
        assert out.getpixel((150, 10)) == (*corpus.BLUE, 255)
    thumbnail(src, tmp_path / "t.webp", size=100, fmt="webp", square=False, limits=LIMITS)
    assert_clean(tmp_path / "t.webp")
    with Image.open(tmp_path / "t.webp") as out:
        assert out.mode == "RGBA"
        assert out.getpixel((10, 10))[3] == 0
    # JPEG has no alpha: transparent pixels become white, not black.
    thumbnail(src, tmp_path / "t.jpg", size=100, fmt="jpeg", square=False, limits=LIMITS)
    assert_clean(tmp_path / "t.jpg")
    with Image.open(tmp_path / "t.jpg") as out:
        assert out.mode == "RGB"
        assert _near(out.getpixel((10, 10)), corpus.WHITE)
        assert _near(out.getpixel((80, 10)), corpus.BLUE)


@pytest.mark.parametrize("profile", ["sRGB", "LAB"])
def test_an_icc_profile_is_applied_or_dropped_never_published(tmp_path: Path, profile: str
                                                              ) -> None:
    src = corpus.jpeg_with_profile(tmp_path / "icc.jpg", profile)
    sanitize(src, tmp_path / "out.jpg", LIMITS)
    assert_clean(tmp_path / "out.jpg")
    with Image.open(tmp_path / "out.jpg") as out:
        assert _near(out.getpixel((60, 40)), corpus.RED)


# --- modes and formats ------------------------------------------------------------------


def test_a_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    src = corpus.cmyk_jpeg(tmp_path / "cmyk.jpg")
    assert sanitize(src, tmp_path / "out.jpg", LIMITS).format == "JPEG"
    thumbnail(src, tmp_path / "t.webp", size=96, fmt="webp", square=False, limits=LIMITS)
    for name in ("out.jpg", "t.webp"):
        with Image.open(tmp_path / name) as out:
            assert out.mode == "RGB"
            assert _near(out.getpixel((10, 10)), corpus.RED), out.getpixel((10, 10))


def test_a_16_bit_png_is_scaled_to_8_bits_not_clipped(tmp_path: Path) -> None:
    src = corpus.grey16_png(tmp_path / "g16.png")
    sanitize(src, tmp_path / "out.png", LIMITS)
    with Image.open(tmp_path / "out.png") as out:
        assert out.mode == "L"
        assert abs(out.getpixel((10, 10)) - 40000 // 256) <= 1  # clipping would give 255
        assert out.getpixel((150, 10)) == 255


def test_an_animated_gif_gives_its_first_frame_as_png(tmp_path: Path) -> None:
    src = corpus.animated_gif(tmp_path / "anim.gif")
    assert probe(src, LIMITS).frames == 3
    info = sanitize(src, tmp_path / "out", LIMITS)
    assert (info.format, info.mime, info.frames) == ("PNG", "image/png", 1)
    with Image.open(tmp_path / "out") as out:
        assert out.format == "PNG"
        assert not getattr(out, "is_animated", False)
        assert _near(out.convert("RGB").getpixel((5, 5)), corpus.RED)


def test_gif_transparency_is_kept_as_alpha(tmp_path: Path) -> None:
    src = corpus.palette_gif_with_transparency(tmp_path / "pal.gif")
    sanitize(src, tmp_path / "out.png", LIMITS)
    with Image.open(tmp_path / "out.png") as out:
        assert out.mode == "RGBA"
        assert out.getpixel((10, 10))[3] == 0
        assert out.getpixel((80, 10)) == (*corpus.RED, 255)


def test_a_lossless_webp_stays_lossless(tmp_path: Path) -> None:
    src = tmp_path / "lossless.webp"
    Image.new("RGB", (64, 64), corpus.BLUE).save(src, "WEBP", lossless=True)
    assert sanitize(src, tmp_path / "out.webp", LIMITS).format == "WEBP"
    assert b"VP8L" in (tmp_path / "out.webp").read_bytes()[:64]


# --- thumbnails ---------------------------------------------------------------------------


@pytest.mark.parametrize("use_draft", [True, False])
def test_a_12_megapixel_photo_thumbnails_to_the_longest_side(tmp_path: Path, use_draft: bool
                                                            ) -> None:
    src = corpus.photo(tmp_path / "photo.jpg")
    info = thumbnail(src, tmp_path / "t.jpg", size=320, fmt="jpeg", square=False,
                     limits=LIMITS, use_draft=use_draft)
    assert (info.format, info.width, info.height) == ("JPEG", 320, 240)
    with Image.open(tmp_path / "t.jpg") as out:
        assert out.size == (320, 240)


def test_square_pictures_are_centre_crops(tmp_path: Path) -> None:
    src = tmp_path / "wide.png"
    image = Image.new("RGB", (600, 400), corpus.GREEN)
    image.paste(corpus.BLUE, (0, 0, 100, 400))
    image.paste(corpus.BLUE, (500, 0, 600, 400))
    image.save(src)
    info = thumbnail(src, tmp_path / "p.jpg", size=96, fmt="jpeg", square=True, limits=LIMITS)
    assert (info.width, info.height) == (96, 96)
    with Image.open(tmp_path / "p.jpg") as out:
        assert all(_near(out.getpixel((x, 48)), corpus.GREEN) for x in (1, 48, 94))


def test_thumbnails_are_never_upscaled(tmp_path: Path) -> None:
    src = tmp_path / "small.png"
    Image.new("RGB", (100, 50), corpus.RED).save(src)
    info = thumbnail(src, tmp_path / "t.webp", size=320, fmt="webp", square=False,
                     limits=LIMITS)
    assert (info.width, info.height) == (100, 50)
    info = thumbnail(src, tmp_path / "p.webp", size=320, fmt="webp", square=True,
                     limits=LIMITS)
    assert (info.width, info.height) == (50, 50)


def test_outputs_replace_the_destination_atomically(tmp_path: Path) -> None:
    src = corpus.animated_gif(tmp_path / "a.gif")
    dst = tmp_path / "out" / "t.webp"
    dst.parent.mkdir()
    dst.write_bytes(b"old")
    thumbnail(src, dst, size=32, fmt="webp", square=False, limits=LIMITS)
    assert [p.name for p in dst.parent.iterdir()] == ["t.webp"]  # no temporary left
    with Image.open(dst) as out:
        assert out.format == "WEBP"


def test_bad_arguments_are_the_callers_error(tmp_path: Path) -> None:
    src = corpus.animated_gif(tmp_path / "a.gif")
    with pytest.raises(ValueError, match="size"):
        thumbnail(src, tmp_path / "t", size=0, fmt="webp", square=False, limits=LIMITS)
    with pytest.raises(ValueError, match="format"):
        thumbnail(src, tmp_path / "t", size=96, fmt="tiff", square=False, limits=LIMITS)
    with pytest.raises(ValueError, match="positive"):
        ImageLimits(0, 1, 1)


def _near(pixel: object, colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))
