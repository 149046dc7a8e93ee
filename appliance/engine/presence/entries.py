"""Presence entries and the PRESENCE frames that carry them (PROTOCOL.md §8.2)."""

from __future__ import annotations

import struct
from collections.abc import Iterable

from appliance.engine.session import Session
from appliance.protocol.wire.constants import FrameType
from appliance.protocol.wire.presence import (
    MAX_PRESENCE_ENTRIES,
    PresenceEntry,
    PresenceState,
    pack_presence,
)

#: A PRESENCE frame's bytes besides its entries: header and count.
_FRAME_OVERHEAD = 5 + 2


def unknown(address: bytes) -> bytes:
    """The entry of an address that names nobody the viewer may see."""
    return PresenceEntry(address, PresenceState.UNKNOWN).encode()


def online(address: bytes, activity: bytes = b"") -> bytes:
    """The entry of a user with a device connected."""
    return PresenceEntry(address, PresenceState.ONLINE, activity=activity).encode()


def offline(address: bytes, last_seen_ms: int) -> bytes:
    """The entry of a user with no device connected."""
    return PresenceEntry(address, PresenceState.OFFLINE, last_seen_ms=last_seen_ms).encode()


#: A PRESENCE frame of one typing entry, up to its address: header, count, address length.
_TYPING_HEAD = struct.Struct(">IBHB")
#: ...and after the address: state, last seen (0), group, activity length (0).
_TYPING_TAIL = struct.Struct(">BQQB")
_TYPING_FIXED = 2 + 1 + _TYPING_TAIL.size
_PRESENCE = int(FrameType.PRESENCE)
_TYPING, _STOPPED = int(PresenceState.TYPING), int(PresenceState.TYPING_STOPPED)


def typing_frame(address: bytes, group_id: int, active: bool) -> bytes:
    """The whole PRESENCE frame telling that a user types (or no longer) to the reader,
    or in a group: the typing path's, two `struct.pack` calls.  `address` is a
    session's and `group_id` came through the decoder's range check."""
    return (_TYPING_HEAD.pack(_TYPING_FIXED + len(address), _PRESENCE, 1, len(address))
            + address + _TYPING_TAIL.pack(_TYPING if active else _STOPPED, 0, group_id, 0))


def frames(entries: Iterable[bytes], max_frame_bytes: int) -> list[bytes]:
    """PRESENCE frames carrying `entries` in order, each within `max_frame_bytes` (the
    largest frame the server sends) and `MAX_PRESENCE_ENTRIES`."""
    out: list[bytes] = []
    batch: list[bytes] = []
    size = _FRAME_OVERHEAD
    for entry in entries:
        if batch and (len(batch) == MAX_PRESENCE_ENTRIES
                      or size + len(entry) > max_frame_bytes):
            out.append(pack_presence(batch))
            batch, size = [], _FRAME_OVERHEAD
        batch.append(entry)
        size += len(entry)
    if batch:
        out.append(pack_presence(batch))
    return out


def send(session: Session, entries: Iterable[bytes], max_frame_bytes: int) -> int:
    """Write `entries` to `session` if it takes extension frames; how many frames."""
    if not session.extensions or session.closed:
        return 0  # a client that did not set EXTENSIONS would fail on them
    written = frames(entries, max_frame_bytes)
    for frame in written:
        session.link.write(frame)
    return len(written)
