"""What the image codec and the pool exchange: `ImageInfo`, `ImageLimits`, the formats.

Stdlib only, so the server process (`pool`) never loads Pillow: only workers do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: Pillow's format name -> the MIME type we store and serve.
MIME: Final = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp",
               "GIF": "image/gif"}
#: Thumbnail output formats (the ``format=`` of the thumbnail route).
THUMBNAIL_FORMATS: Final = ("webp", "jpeg")
#: Largest thumbnail side the codec makes (media.config allows sizes up to this).
MAX_THUMBNAIL_SIZE: Final = 4096


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """An image as the server describes it: width and height after the EXIF orientation."""

    format: str  # "JPEG" | "PNG" | "WEBP" | "GIF"
    mime: str
    width: int
    height: int
    frames: int


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """Decompression-bomb bounds (``media.max_image_pixels``, ``_side``, ``_frames``)."""

    max_pixels: int
    max_side: int
    max_frames: int

    def __post_init__(self) -> None:
        if min(self.max_pixels, self.max_side, self.max_frames) < 1:
            raise ValueError("image limits must be positive")
