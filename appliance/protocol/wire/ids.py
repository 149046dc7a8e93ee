"""Wire ids (unsigned 64-bit) in signed 64-bit SQL columns: the server's store and the SDK's.

Message ids and refids are full u64 on the wire (PROTOCOL.md §3.3); SQLite
INTEGER and MariaDB BIGINT are signed, so an id of 2**63 or more is stored
as its two's-complement value.  0 (no id) is stored as NULL, so it never
collides in a (sender, id) key.  Here once for both stores (the SDK ships
with this package, not with the server's).
"""

from __future__ import annotations

from typing import Final

from appliance.protocol.wire.constants import STORED_U64_MAX, U64_MAX

#: The first id stored negative, and what wraps it back.
_SIGN: Final = STORED_U64_MAX + 1
_WRAP: Final = U64_MAX + 1
#: Below every stored id (the signed column's minimum).
LOWEST_DB_ID: Final = -_SIGN


def to_db_id(msg_id: int) -> int | None:
    """Store an unsigned 64-bit wire id in a signed 64-bit column; 0 -> NULL."""
    if msg_id == 0:
        return None
    return msg_id - _WRAP if msg_id >= _SIGN else msg_id


def from_db_id(value: int | None) -> int:
    """Inverse of `to_db_id`."""
    if value is None:
        return 0
    return value + _WRAP if value < 0 else value
