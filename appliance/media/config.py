"""``[media]`` and ``[media.previews]``: what files, images and previews may cost (issue 15).

Every limit is per app unless its name says otherwise; the defaults suit a
chat app on a small server.  `check` validates a loaded config and names the
key it refuses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from appliance.errors import ConfigError

#: The media root inside the data directory: blobs and upload parts (`blobs.DiskBlobStore`).
MEDIA_DIR = "media"
#: A signed link lives at most this long, whatever is asked (mesibo's secure
#: download links are short-lived too).
MAX_LINK_TTL_S = 7 * 86400
#: Thumbnail and picture sizes (longest side, px) a configuration may name.
MIN_IMAGE_SIZE_PX, MAX_IMAGE_SIZE_PX = 16, 4096
#: Entries of the size lists, of `previews.ports` and of `previews.allow`.
MAX_SIZES, MAX_PORTS, MAX_ALLOW = 8, 16, 1024


@dataclass(frozen=True, slots=True)
class PreviewConfig:
    """``[media.previews]``: link previews fetched by the server."""

    enabled: bool = True
    #: The whole fetch of one resource, connection to last byte.
    timeout_s: float = 5.0
    #: HTML read at most (after decompression); the head is what matters.
    max_html_bytes: int = 1024 * 1024
    max_image_bytes: int = 5 * 1024 * 1024
    max_redirects: int = 5
    #: Ports allowed besides 80 (http) and 443 (https).
    ports: tuple[int, ...] = ()
    #: Host names or CIDRs fetched even though private (internal wikis...).
    allow: tuple[str, ...] = ()
    cache_ttl_s: float = 86400.0
    failure_ttl_s: float = 600.0
    per_user_per_minute: int = 30
    user_agent: str = "TidingsBot/1 (+link previews)"


@dataclass(frozen=True, slots=True)
class MediaConfig:
    """``[media]``: files and images."""

    #: One file, however uploaded.
    max_file_bytes: int = 100 * 1024 * 1024
    #: Everything one app stores (unfinished uploads count with their declared size).
    max_app_bytes: int = 10 * 1024 * 1024 * 1024
    #: An upload not finished, or finished and never shared, is removed after this.
    upload_expiry_s: int = 86400
    #: A file shared in a message stays this long after the message expires.
    file_retention_s: int = 30 * 86400
    #: Uploads (one-shot, tus, pictures) one user may start per minute (burst: as many):
    #: each costs a row and, for an image, a worker's time, even at length 0.
    uploads_per_minute: int = 60
    #: Default lifetime of a signed link (at most `MAX_LINK_TTL_S`).
    link_ttl_s: int = 86400
    thumbnail_sizes: tuple[int, ...] = (96, 320, 800)
    picture_sizes: tuple[int, ...] = (96, 256, 640)
    #: Image worker processes (0 = min(2, CPUs)); jobs waiting past busy workers.
    image_workers: int = 0
    image_queue: int = 64
    #: Per image; the worker is killed past it.
    image_timeout_s: float = 10.0
    #: Decompression-bomb bounds, read from the header before decoding.
    max_image_pixels: int = 64_000_000
    max_image_side: int = 16384
    max_image_frames: int = 1000
    previews: PreviewConfig = field(default_factory=PreviewConfig)


def check(config: MediaConfig) -> None:
    """Validate what a type check cannot.

    Raises:
        ConfigError: naming the key (``media.thumbnail_sizes[2]``).
    """
    if config.link_ttl_s > MAX_LINK_TTL_S:
        raise ConfigError(f"must be <= {MAX_LINK_TTL_S}", key_path="media.link_ttl_s")
    if config.max_file_bytes > config.max_app_bytes:
        raise ConfigError("must be <= media.max_app_bytes", key_path="media.max_file_bytes")
    for key in ("thumbnail_sizes", "picture_sizes"):
        sizes = getattr(config, key)
        if not sizes or len(sizes) > MAX_SIZES:
            raise ConfigError(f"1 to {MAX_SIZES} sizes", key_path=f"media.{key}")
        for index, size in enumerate(sizes):
            if not MIN_IMAGE_SIZE_PX <= size <= MAX_IMAGE_SIZE_PX:
                raise ConfigError(f"must be {MIN_IMAGE_SIZE_PX} to {MAX_IMAGE_SIZE_PX} px",
                                  key_path=f"media.{key}[{index}]")
    previews = config.previews
    if len(previews.ports) > MAX_PORTS:
        raise ConfigError(f"at most {MAX_PORTS} ports", key_path="media.previews.ports")
    for index, port in enumerate(previews.ports):
        if not 1 <= port <= 65535:
            raise ConfigError("must be 1 to 65535", key_path=f"media.previews.ports[{index}]")
    if len(previews.allow) > MAX_ALLOW:
        raise ConfigError(f"at most {MAX_ALLOW} entries", key_path="media.previews.allow")
    if not 0 <= previews.max_redirects <= 10:
        raise ConfigError("must be 0 to 10", key_path="media.previews.max_redirects")
