"""The tus 1.0 resumable-upload protocol (core + creation + termination), as pure
functions over header values (https://tus.io/protocols/resumable-upload).

What mobile SDKs (TUSKit, tus-android-client, tus-js-client) send: a POST
with ``Upload-Length`` and ``Upload-Metadata`` creates the upload; PATCHes
with ``Upload-Offset`` append; HEAD says how much arrived.  Every value is
bounded here before it is used.
"""

from __future__ import annotations

import base64
import binascii

from appliance.errors import UsageError

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,termination"
#: PATCH bodies must say this (tus §PATCH); HTTP 415 otherwise.
OFFSET_CONTENT_TYPE = b"application/offset+octet-stream"
#: Upload-Metadata: pairs, key length, value length (decoded).
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 1024
_MAX_DIGITS = 19


class TusError(UsageError):
    """A tus request is malformed; `status` is the HTTP answer (400, 409, 412, 415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def header_int(value: bytes | None, name: str) -> int:
    """A non-negative integer header (Upload-Length, Upload-Offset)."""
    if value is None:
        raise TusError(f"{name} is required")
    text = value.decode("latin-1").strip()
    if not text or len(text) > _MAX_DIGITS or not text.isascii() or not text.isdigit():
        raise TusError(f"{name} must be a non-negative integer")
    return int(text)


def check_version(value: bytes | None) -> None:
    """Every request but OPTIONS says ``Tus-Resumable: 1.0.0`` (412 otherwise)."""
    if value is None or value.decode("latin-1").strip() != TUS_VERSION:
        raise TusError(f"Tus-Resumable must be {TUS_VERSION}", status=412)


def parse_metadata(value: bytes | None) -> dict[str, str]:
    """``Upload-Metadata``: ``key base64value`` pairs separated by commas.

    Values that are not UTF-8 are dropped (they are hints: name and type).
    """
    if value is None or not value.strip():
        return {}
    pairs = value.decode("latin-1").split(",")
    if len(pairs) > MAX_METADATA_PAIRS:
        raise TusError(f"Upload-Metadata: at most {MAX_METADATA_PAIRS} pairs")
    result: dict[str, str] = {}
    for pair in pairs:
        key, _, encoded = pair.strip().partition(" ")
        if not key or len(key) > MAX_METADATA_KEY or not key.isascii() or key in result:
            raise TusError("Upload-Metadata: keys are unique ASCII, at most"
                           f" {MAX_METADATA_KEY} characters")
        encoded = encoded.strip()
        if len(encoded) > MAX_METADATA_VALUE * 4 // 3 + 4:
            raise TusError(f"Upload-Metadata: values are at most {MAX_METADATA_VALUE} bytes")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise TusError(f"Upload-Metadata: the value of {key!r} is not base64") from None
        try:
            result[key] = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return result


def options_headers(max_size: int) -> list[tuple[bytes, bytes]]:
    return [(b"tus-resumable", TUS_VERSION.encode()), (b"tus-version", TUS_VERSION.encode()),
            (b"tus-extension", TUS_EXTENSIONS.encode()),
            (b"tus-max-size", str(max_size).encode())]
