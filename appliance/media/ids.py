"""File ids: 128 random bits, lowercase base32 without padding (26 characters).

Random, not sequential: an id is not a capability (access is checked on
every request), but nobody can enumerate files by counting either.  Base32
because ids travel in URLs, file names and case-insensitive places.  The
pattern is the wire protocol's (a FILE message names files by it).
"""

from __future__ import annotations

import base64
import secrets

from appliance.protocol.attachments import FILE_ID_RE, is_file_id

__all__ = ["FILE_ID_RE", "is_file_id", "new_file_id"]


def new_file_id() -> str:
    return base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()
