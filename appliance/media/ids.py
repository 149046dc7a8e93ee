"""File ids: 128 random bits, lowercase base32 without padding (26 characters).

Random, not sequential: an id is not a capability (access is checked on
every request), but nobody can enumerate files by counting either.  Base32
because ids travel in URLs, file names and case-insensitive places.
"""

from __future__ import annotations

import base64
import re
import secrets

FILE_ID_CHARS = 26
FILE_ID_RE = re.compile(r"[a-z2-7]{26}")


def new_file_id() -> str:
    return base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()


def is_file_id(text: str) -> bool:
    return len(text) == FILE_ID_CHARS and FILE_ID_RE.fullmatch(text) is not None
