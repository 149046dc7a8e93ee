"""The FILE flag's payload convention (PROTOCOL.md §3.3.1, issue 15): pure, no I/O.

A message with flag FILE (0x40) carries UTF-8 JSON naming the files it shares.
"""

from __future__ import annotations

import re

#: A file id: 16 random bytes in lowercase RFC 4648 base32 without padding.
FILE_ID_RE = re.compile(r"[a-z2-7]{26}")


def is_file_id(value: object) -> bool:
    """Whether `value` is a well-formed file id (a str of 26 base32 characters)."""
    return isinstance(value, str) and FILE_ID_RE.fullmatch(value) is not None
