"""Signed download links (mesibo's "secure download"): a URL that works without a
token until it expires, so a message or a web page can carry a file.

The signature is HMAC-SHA256 over the file id and the expiry, keyed by the
store's media key (`FileStore.media_signing_key`, shared by every node of a
cluster).  It names the file, not the user: whoever holds the link may read
the file (and its thumbnails) until ``exp``.  The key never leaves the server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from appliance.errors import ForbiddenError

#: Versioned, so the format can change without old links verifying wrongly.
_CONTEXT = b"tidings-file-link-v1"
_SIG_CHARS = 43  # 32 bytes, base64url without padding


def _mac(key: bytes, file_id: str, expires_s: int) -> str:
    message = b"\n".join((_CONTEXT, file_id.encode("ascii"), str(expires_s).encode()))
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def sign(key: bytes, file_id: str, expires_s: int) -> str:
    """The ``sig`` of a link to `file_id` valid until `expires_s` (Unix seconds)."""
    return _mac(key, file_id, expires_s)


def link_query(key: bytes, file_id: str, expires_s: int) -> str:
    return f"exp={expires_s}&sig={sign(key, file_id, expires_s)}"


def verify(key: bytes, file_id: str, expires: str, signature: str, now_s: int) -> None:
    """Check a link's ``exp`` and ``sig``.

    Raises:
        ForbiddenError: malformed, forged, or expired (the message says which).
    """
    if not (expires.isascii() and expires.isdigit() and len(expires) <= 12):
        raise ForbiddenError("the link's exp is not a time")
    if len(signature) != _SIG_CHARS or not signature.isascii():
        raise ForbiddenError("the link's sig is malformed")
    if not hmac.compare_digest(_mac(key, file_id, int(expires)), signature):
        raise ForbiddenError("the link's signature does not match")
    if int(expires) <= now_s:
        raise ForbiddenError("the link has expired")
