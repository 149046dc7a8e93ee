"""Access tokens as the store keeps them.

One rule, used by the engine (HELLO), the REST API (user tokens) and the
admin service: SPEC M1 stores a token only as its hash.
"""

from __future__ import annotations

import hashlib


def token_hash(token: bytes) -> bytes:
    """The stored form of an access token (SPEC M1: stored only as a hash)."""
    return hashlib.sha256(token).digest()
