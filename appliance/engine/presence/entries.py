"""Presence entries and the PRESENCE frames that carry them (PROTOCOL.md §8.2)."""

from __future__ import annotations

from collections.abc import Iterable

from appliance.engine.session import Session
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


def typing(address: bytes, group_id: int, active: bool) -> bytes:
    """The entry of a user typing (or no longer) to the reader, or in a group."""
    state = PresenceState.TYPING if active else PresenceState.TYPING_STOPPED
    return PresenceEntry(address, state, group_id=group_id).encode()


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
