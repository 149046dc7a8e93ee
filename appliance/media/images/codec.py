"""Pillow operations on untrusted images: probe, sanitize, thumbnail.  Paths in, paths out.

Pure (PIL, the stdlib and `appliance.errors` only): it runs inside the image worker
processes (`worker`), where a crash or a kill costs one job, never the server.

What an attacker can send and what refuses it:

* a format we do not want to parse (TIFF, PSD, EPS...): only JPEG, PNG, WebP and GIF, as
  *Pillow's decoder identifies them from the bytes* (``Image.open(..., formats=...)``),
  never from a file name or a declared type;
* a decompression bomb: width x height, each side and the frame count are checked from
  the header before a pixel is decoded (`headers` for GIF and WebP frames, whose
  Pillow counts are unbounded or allocate); ``Image.MAX_IMAGE_PIXELS`` is set to the
  same bound and its ``DecompressionBombWarning`` made an error, so Pillow agrees;
* a truncated or damaged file: refused (``ImageFile.LOAD_TRUNCATED_IMAGES`` stays off);
* metadata it did not mean to publish (GPS in EXIF, XMP, comments, PNG text): every
  output is written from pixels only.  An embedded ICC profile is applied (converted
  to sRGB, which the web assumes) and then dropped; a profile littlecms cannot use is
  dropped unapplied (colours may shift slightly; publishing it is not an option).

Outputs are 8-bit: 16-bit grey is scaled (not clipped) to 8 bits, CMYK becomes RGB,
palette images RGB or RGBA.  Alpha is kept in PNG and WebP and flattened onto white in
JPEG.  The EXIF orientation is applied (`ImageOps.exif_transpose`), so outputs need none.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import BinaryIO, Literal

from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from appliance.errors import ImageRefusedError, MediaError
from appliance.media.images.headers import gif_frames, sniff, webp_header
from appliance.media.images.model import (
    MAX_THUMBNAIL_SIZE,
    MIME,
    THUMBNAIL_FORMATS,
    ImageInfo,
    ImageLimits,
)

__all__ = ["ImageInfo", "ImageLimits", "probe", "sanitize", "thumbnail"]

#: What Pillow may identify; JPEG's factory may answer MPO (a JPEG with more images after).
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
#: Encoder settings: the design's q90 for sanitized JPEGs; thumbnails are small and viewed small.
SANITIZED_JPEG_QUALITY, SANITIZED_WEBP_QUALITY = 90, 90
THUMBNAIL_JPEG_QUALITY, THUMBNAIL_WEBP_QUALITY = 85, 80
#: Where transparency is flattened for JPEG.
FLATTEN_ONTO = (255, 255, 255)
#: EXIF Orientation (tag 0x0112, EXIF 2.32 §4.6.4): values that swap width and height.
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_ORIENTATION_TAG = 0x0112
#: What Pillow raises on hostile or damaged input; translated here, never passed on.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError,
                  ZeroDivisionError, OverflowError, ImageCms.PyCMSError)

ImageFormat = Literal["JPEG", "PNG", "WEBP", "GIF"]


def probe(path: Path | str, limits: ImageLimits) -> ImageInfo:
    """Identify an image from its header; nothing is decoded.

    Raises:
        ImageRefusedError: not an allowed format, damaged, or past `limits`.
        MediaError: `path` cannot be read (a server fault, not the image's).
    """
    with _opened(path, limits) as (image, info), _refusing():
        orientation = _header_orientation(image)
    if orientation in _SWAPPING_ORIENTATIONS:
        return ImageInfo(info.format, info.mime, info.height, info.width, info.frames)
    return info


def sanitize(src: Path | str, dst: Path | str, limits: ImageLimits) -> ImageInfo:
    """Write `src` again at full size without any metadata, upright, 8-bit, in sRGB.

    JPEG stays JPEG (quality 90), PNG stays PNG, WebP stays WebP (lossless if it was),
    GIF becomes PNG (its first frame).  Returns what was written to `dst`.

    Raises:
        ImageRefusedError: as `probe`, or the pixel data is damaged or truncated.
        MediaError: `src` cannot be read or `dst` cannot be written.
    """
    with _opened(src, limits) as (image, info):
        lossless = info.format == "WEBP" and _webp_lossless(image)
        with _refusing():
            image.load()
            pixels = _normalized(_upright(image))
            pixels = _to_srgb(pixels, image.info.get("icc_profile"))
    if info.format == "JPEG":
        return _write(_for_jpeg(pixels), dst, "JPEG", quality=SANITIZED_JPEG_QUALITY)
    if info.format == "WEBP":
        return _write(_for_webp(pixels), dst, "WEBP", quality=SANITIZED_WEBP_QUALITY,
                      lossless=lossless)
    return _write(pixels, dst, "PNG")


def thumbnail(src: Path | str, dst: Path | str, *, size: int, fmt: str, square: bool,
              limits: ImageLimits, use_draft: bool = True) -> ImageInfo:
    """A small copy: longest side `size` px (never upscaled), or centre-cropped to
    `size` x `size` when `square` (profile and group pictures), upright, no metadata.

    `fmt` is "webp" or "jpeg".  With `use_draft` a JPEG is decoded at the smallest of
    1/1, 1/2, 1/4, 1/8 scale that still covers the target (libjpeg's DCT scaling), which
    is most of a thumbnail's cost saved.

    Raises:
        ImageRefusedError: as `sanitize`.
        MediaError: as `sanitize`; ValueError for a size or format outside the codec's range.
    """
    if not 1 <= size <= MAX_THUMBNAIL_SIZE:
        raise ValueError(f"thumbnail size must be 1 to {MAX_THUMBNAIL_SIZE} px")
    if fmt not in THUMBNAIL_FORMATS:
        raise ValueError(f"thumbnail format must be one of {THUMBNAIL_FORMATS}")
    with _opened(src, limits) as (image, info), _refusing():
        if use_draft and info.format == "JPEG":
            _draft(image, size, square)
        image.load()
        small = _resized(_normalized(image), size, square)
        # The orientation is applied after the resize: same result, a fraction of the
        # work; `info` (EXIF, XMP) travels with the resized copy for exif_transpose.
        small = _to_srgb(_upright(small), image.info.get("icc_profile"))
    if fmt == "jpeg":
        return _write(_for_jpeg(small), dst, "JPEG", quality=THUMBNAIL_JPEG_QUALITY)
    return _write(_for_webp(small), dst, "WEBP", quality=THUMBNAIL_WEBP_QUALITY)


# --- opening ------------------------------------------------------------------------


@contextmanager
def _opened(path: Path | str, limits: ImageLimits) -> Iterator[tuple[ImageFile.ImageFile,
                                                                     ImageInfo]]:
    """The image opened and checked against `limits` from its header; closed after."""
    # One bound for Pillow and us: past it Pillow warns (an error here), past twice it raises.
    Image.MAX_IMAGE_PIXELS = limits.max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # whatever else in the process may have set
    try:
        fp = open(path, "rb")  # noqa: SIM115 - closed below, also when the open fails
    except OSError as exc:
        raise MediaError(f"cannot read the image: {exc.strerror or type(exc).__name__}"
                         ) from None
    try:
        kind = sniff(fp.read(16))
        if kind == "WEBP":  # before Pillow: its decoder allocates the canvas at open
            header = webp_header(fp, limits.max_frames)
            if header is not None:
                _check(header.width, header.height, header.frames, limits)
        fp.seek(0)
        image = _identify(fp)
        try:
            frames = _frames(image, fp, kind, limits)
            _check(image.width, image.height, frames, limits)
            yield image, ImageInfo(_format(image), MIME[_format(image)], image.width,
                                   image.height, frames)
        finally:
            image.close()
    finally:
        fp.close()


def _identify(fp: BinaryIO) -> ImageFile.ImageFile:
    with _refusing():
        image = Image.open(fp, formats=ALLOWED_FORMATS)
    if _format(image) not in MIME:
        image.close()
        raise ImageRefusedError("not a JPEG, PNG, WebP or GIF image")
    return image


def _format(image: Image.Image) -> ImageFormat:
    name = "JPEG" if image.format == "MPO" else image.format
    return name  # type: ignore[return-value]


def _frames(image: ImageFile.ImageFile, fp: BinaryIO, kind: str, limits: ImageLimits) -> int:
    """Frames from the header: our bounded scan for GIF, Pillow's header field otherwise
    (PNG's acTL, MPO's index, WebP's demuxer, all read at open without decoding)."""
    if kind == "GIF":
        return max(1, gif_frames(fp, limits.max_frames))
    return max(1, int(getattr(image, "n_frames", 1)))


def _check(width: int, height: int, frames: int, limits: ImageLimits) -> None:
    if width < 1 or height < 1:
        raise ImageRefusedError("the image has no pixels")
    if max(width, height) > limits.max_side:
        raise ImageRefusedError(f"the image is {width} x {height} px; a side may be at most"
                                f" {limits.max_side} px")
    if width * height > limits.max_pixels:
        raise ImageRefusedError(f"the image is {width} x {height} px; at most"
                                f" {limits.max_pixels:,} pixels are processed")
    if frames > limits.max_frames:
        raise ImageRefusedError(f"the image has more than {limits.max_frames} frames")


@contextmanager
def _refusing() -> Iterator[None]:
    """Pillow's exceptions on bad input -> ImageRefusedError (with a reason, never a path)."""
    with warnings.catch_warnings():
        # Pillow's other warnings (corrupt EXIF...) say nothing the caller can act on.
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise ImageRefusedError(f"the image has more than {Image.MAX_IMAGE_PIXELS:,}"
                                    " pixels") from None
        except UnidentifiedImageError:
            raise ImageRefusedError("not a JPEG, PNG, WebP or GIF image") from None
        except MemoryError:
            raise ImageRefusedError("the image needs too much memory") from None
        except _DECODE_ERRORS as exc:
            raise ImageRefusedError(f"damaged or truncated image ({type(exc).__name__})"
                                    ) from None


def _header_orientation(image: Image.Image) -> int:
    """EXIF (or XMP) orientation 1-8 from what the header holds (1 if none or unreadable).

    `Image.Image.getexif` reads ``info`` only; PNG's override would decode the image to
    find an eXIf chunk after the pixel data (such a PNG's probe says "as stored")."""
    try:
        value = Image.Image.getexif(image).get(_ORIENTATION_TAG, 1)
    except _DECODE_ERRORS:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _upright(image: Image.Image) -> Image.Image:
    """`ImageOps.exif_transpose`: always a new image; EXIF it cannot read or rewrite
    leaves the pixels as stored, as image viewers do."""
    try:
        return ImageOps.exif_transpose(image)
    except _DECODE_ERRORS:
        return image.copy()


def _webp_lossless(image: ImageFile.ImageFile) -> bool:
    fp = image.fp
    if fp is None:
        return False
    header = webp_header(fp, 1)  # type: ignore[arg-type]
    return bool(header and header.lossless)


# --- pixels ---------------------------------------------------------------------------


def _draft(image: ImageFile.ImageFile, size: int, square: bool) -> None:
    """Ask libjpeg for a reduced-scale decode that still covers the target."""
    width, height = image.size
    scale = size / (min(width, height) if square else max(width, height))
    if scale < 1:
        mode = image.mode if image.mode in ("L", "CMYK") else "RGB"
        image.draft(mode, (math.ceil(width * scale), math.ceil(height * scale)))


def _normalized(image: Image.Image) -> Image.Image:
    """8-bit L, LA, RGB, RGBA or CMYK (kept for its ICC profile; made RGB in `_to_srgb`)."""
    mode = image.mode
    if mode in ("L", "LA", "RGB", "RGBA", "CMYK"):
        return image
    if mode.startswith("I") or mode == "F":
        # 16-bit grey: scale 0..65535 to 0..255; Pillow's own conversion would clip.
        return image.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        return image.convert("RGBA" if has_alpha else "RGB")
    if mode in ("La", "RGBa"):
        return image.convert(mode.upper())
    if mode == "1":
        return image.convert("L")
    if mode in ("RGBX", "YCbCr", "LAB", "HSV"):
        return image.convert("RGB")
    raise ImageRefusedError(f"unsupported pixel format {mode}")


def _resized(image: Image.Image, size: int, square: bool) -> Image.Image:
    """Longest side `size` (never larger than the image), or its centre square."""
    width, height = image.size
    if square:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        target = min(size, side)
        return image.resize((target, target), Image.Resampling.LANCZOS,
                            box=(left, top, left + side, top + side), reducing_gap=2.0)
    longest = max(width, height)
    if longest <= size:
        return image
    scale = size / longest
    target_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(target_size, Image.Resampling.LANCZOS, reducing_gap=2.0)


def _to_srgb(image: Image.Image, icc: object) -> Image.Image:
    """Pixels in sRGB: the embedded profile applied (then dropped with the rest of `info`)."""
    if image.mode in ("RGB", "RGBA", "CMYK") and isinstance(icc, bytes) and icc:
        out_mode = "RGBA" if image.mode == "RGBA" else "RGB"
        try:
            source = ImageCms.ImageCmsProfile(BytesIO(icc))
            converted = ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"),
                                                  outputMode=out_mode)
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            converted = None  # a profile littlecms refuses: dropped, pixels kept as they are
        if converted is not None:
            image = converted
    if image.mode == "CMYK":
        image = image.convert("RGB")
    return image


def _for_jpeg(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGB", image.size, FLATTEN_ONTO)
        background.paste(image.convert("RGBA"), mask=image.getchannel("A"))
        return background
    return image if image.mode in ("L", "RGB") else image.convert("RGB")


def _for_webp(image: Image.Image) -> Image.Image:
    if image.mode in ("RGB", "RGBA"):
        return image
    return image.convert("RGBA" if "A" in image.mode else "RGB")


def _write(image: Image.Image, dst: Path | str, fmt: ImageFormat, **params: object) -> ImageInfo:
    """Encode `image` with none of its `info` into `dst`, atomically (tmp + rename).

    `image` is always one this module derived (a transposed, resized or converted copy),
    never the opened file, so emptying its `info` touches nothing else.  Pillow's encoders
    fall back on `info` for a JPEG comment and an ICC profile: emptied, nothing is carried
    over, and EXIF and XMP are written only when passed, which they never are.
    """
    clean = image
    clean.info = {}
    target = Path(dst)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as out:
            clean.save(out, format=fmt, **params)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise MediaError(f"cannot write the image: {exc.strerror or type(exc).__name__}"
                         ) from None
    return ImageInfo(fmt, MIME[fmt], clean.width, clean.height, 1)
