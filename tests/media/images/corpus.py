"""The image corpus of the tests and the benchmark, made with Pillow (or by hand) at run
time: no binary fixtures in git.  Each function writes one file and returns its path."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from PIL import Image, ImageCms, ImageDraw, ImageOps

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
#: EXIF tags (EXIF 2.32): Orientation, Make, the GPS IFD pointer.
ORIENTATION, MAKE, GPS_IFD = 0x0112, 0x010F, 0x8825
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
       b'02/22-rdf-syntax-ns#"><rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
       b' xmp:CreatorTool="SecretXmpTool"/></rdf:RDF></x:xmpmeta>')
SECRET = b"SecretComment"


def rotated_photo(path: Path) -> Path:
    """A 600 x 400 landscape JPEG whose EXIF says orientation 6 (display rotated 90 deg
    clockwise: a 400 x 600 portrait), with GPS tags, XMP and a comment.

    The stored image's left strip is red: upright, it is the top band.
    """
    image = Image.new("RGB", (600, 400), GREEN)
    ImageDraw.Draw(image).rectangle((0, 0, 59, 399), fill=RED)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    exif[MAKE] = "SecretCamera"
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (52.0, 22.0, 7.0), 3: "E", 4: (4.0, 53.0, 1.0)})
    image.save(path, "JPEG", quality=95, exif=exif, xmp=XMP, comment=SECRET)
    return path


def cmyk_jpeg(path: Path) -> Path:
    """A CMYK JPEG, red (C=0 M=255 Y=255 K=0), as print workflows produce."""
    Image.new("CMYK", (300, 200), (0, 255, 255, 0)).save(path, "JPEG", quality=95)
    return path


def grey16_png(path: Path) -> Path:
    """A 16-bit greyscale PNG (mode I;16): left half 40000, right half 65535."""
    image = Image.new("I;16", (200, 100), 40000)
    image.paste(65535, (100, 0, 200, 100))
    image.save(path, "PNG")
    return path


def animated_gif(path: Path, frames: int = 3) -> Path:
    """An animated GIF whose first frame is red, the others green and blue."""
    colours = [RED, GREEN, BLUE]
    images = [Image.new("RGB", (120, 80), colours[i % 3]) for i in range(frames)]
    images[0].save(path, "GIF", save_all=True, append_images=images[1:], duration=100,
                   loop=0)
    return path


def gif_frame_bomb(path: Path, frames: int) -> Path:
    """A 1 x 1 GIF with `frames` image descriptors, written by hand (~16 bytes a frame)."""
    head = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    path.write_bytes(head + frame * frames + b"\x3b")
    return path


def png_bomb(path: Path, width: int = 50_000, height: int = 50_000) -> Path:
    """A valid PNG header claiming `width` x `height` grey pixels, with a tiny IDAT."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
                     + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b""))
    return path


def webp_canvas_bomb(path: Path, side: int = 16384) -> Path:
    """A WebP container whose VP8X chunk claims a `side` x `side` canvas (RFC 9649 §2.7)."""
    vp8x = bytes([0x02, 0, 0, 0]) + (side - 1).to_bytes(3, "little") * 2
    body = b"WEBP" + _riff_chunk(b"VP8X", vp8x) + _riff_chunk(b"ANIM", b"\0" * 6)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def webp_frame_bomb(path: Path, frames: int, scratch: Path) -> Path:
    """An animated WebP with `frames` frames: Pillow's two-frame file, one ANMF repeated."""
    two = scratch / "two-frames.webp"
    Image.new("RGB", (16, 16), RED).save(two, "WEBP", save_all=True, duration=50,
                                         append_images=[Image.new("RGB", (16, 16), BLUE)])
    data = two.read_bytes()
    chunks, offset = [], 12
    while offset + 8 <= len(data):
        fourcc = data[offset:offset + 4]
        (length,) = struct.unpack("<I", data[offset + 4:offset + 8])
        end = offset + 8 + length + (length & 1)
        chunks.append((fourcc, data[offset:end]))
        offset = end
    frame = next(raw for fourcc, raw in chunks if fourcc == b"ANMF")
    body = b"WEBP" + b"".join(raw for fourcc, raw in chunks if fourcc != b"ANMF") + frame * frames
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def png_with_metadata(path: Path) -> Path:
    """An RGBA PNG with text chunks, XMP, EXIF (with GPS) and an sRGB ICC profile; its
    left half is transparent."""
    from PIL.PngImagePlugin import PngInfo

    image = Image.new("RGBA", (200, 100), (*BLUE, 255))
    image.paste((0, 0, 0, 0), (0, 0, 100, 100))
    info = PngInfo()
    info.add_text("Comment", SECRET.decode())
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    info.add_text("Author", "SecretAuthor", zip=True)
    exif = Image.Exif()
    exif[MAKE] = "SecretCamera"
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (52.0, 22.0, 7.0)})
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image.save(path, "PNG", pnginfo=info, exif=exif, icc_profile=icc)
    return path


def jpeg_with_profile(path: Path, kind: str) -> Path:
    """A red RGB JPEG carrying an ICC profile: "sRGB" (applied) or "LAB" (unusable for
    RGB data: littlecms refuses it, the codec drops it)."""
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile(kind)).tobytes()  # type: ignore[arg-type]
    Image.new("RGB", (120, 80), RED).save(path, "JPEG", quality=95, icc_profile=icc)
    return path


def palette_gif_with_transparency(path: Path) -> Path:
    """A P-mode GIF whose left half is the transparent index."""
    image = Image.new("P", (100, 50), 1)
    image.putpalette([*WHITE, *RED] + [0] * 762)
    image.paste(0, (0, 0, 50, 50))
    image.save(path, "GIF", transparency=0)
    return path


def photo(path: Path, width: int = 4000, height: int = 3000, quality: int = 90,
          fmt: str = "JPEG") -> Path:
    """A realistic photo stand-in: gradients, shapes and noise (entropy like a camera's)."""
    noise = Image.effect_noise((width, height), 48)
    across = ImageOps.invert(Image.linear_gradient("L").rotate(90)).resize((width, height))
    down = Image.linear_gradient("L").resize((width, height))
    image = Image.merge("RGB", (across, down, noise))
    draw = ImageDraw.Draw(image)
    for i in range(12):
        x, y = (i * 7919) % width, (i * 104729) % height
        draw.ellipse((x, y, x + width // 6, y + height // 6), fill=((i * 40) % 256, 90, 200))
    image = Image.blend(image, Image.merge("RGB", (noise, noise, noise)), 0.25)
    image.save(path, fmt, quality=quality)
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _riff_chunk(fourcc: bytes, data: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(data)) + data + (b"\0" if len(data) & 1 else b"")
