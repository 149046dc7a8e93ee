"""Presence frames (PROTOCOL.md §8.2): PRESENCE_SET, PRESENCE_SUBSCRIBE, PRESENCE.

A client says what its user is doing (PRESENCE_SET: typing to a peer or in a
group, typing stopped, an activity text) and which users it watches
(PRESENCE_SUBSCRIBE); the server answers with PRESENCE frames, each carrying
up to `MAX_PRESENCE_ENTRIES` entries (a user's state, last-seen time,
activity, typing target).  Bodies are exact (no trailing bytes), every count
and length is bounded here, and a decoder raises ValueError or struct.error
on anything else (the codec closes with PROTOCOL_ERROR, naming the frame).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import Any, Final

from appliance.protocol.wire.constants import MAX_ADDRESS_BYTES, STORED_U64_MAX, FrameType
from appliance.protocol.wire.errors import LocalWireError

#: An activity text: UTF-8, at most this many bytes (an empty one clears it).
MAX_ACTIVITY_BYTES: Final = 64
#: Addresses in one PRESENCE_SUBSCRIBE (more go in several frames).
MAX_SUBSCRIBE_ADDRESSES: Final = 1000
#: Entries in one PRESENCE frame: a subscriber of 500 users gets their states in two.
MAX_PRESENCE_ENTRIES: Final = 256
#: The largest entry: address, state, last seen, group, activity (see `PresenceEntry`).
MAX_ENTRY_BYTES: Final = 1 + MAX_ADDRESS_BYTES + 1 + 8 + 8 + 1 + MAX_ACTIVITY_BYTES


class PresenceKind(IntEnum):
    """What a PRESENCE_SET says."""

    #: The user is typing to `peer`, or in group `group_id`; lasts TYPING_TIMEOUT_S.
    TYPING = 1
    #: The user stopped typing there (sent a message, cleared the field).
    TYPING_STOPPED = 2
    #: The user's activity text (`activity`, empty: none), shown while it is online.
    ACTIVITY = 3


class PresenceState(IntEnum):
    """A user's state in a PRESENCE entry."""

    #: No such user, or its privacy hides it from you: the two look alike.
    UNKNOWN = 0
    #: No device connected; `last_seen_ms` says since when (to the minute; 0: never).
    OFFLINE = 1
    #: At least one device connected; `activity` is its activity text.
    ONLINE = 2
    #: Typing to you (`group_id` 0) or in group `group_id`.
    TYPING = 3
    #: Stopped typing there (or its typing expired); still online.
    TYPING_STOPPED = 4


class SubscribeOp(IntEnum):
    """What a PRESENCE_SUBSCRIBE does with its addresses."""

    ADD = 1
    REMOVE = 2


_KINDS: Final = frozenset(PresenceKind)
_STATES: Final = frozenset(PresenceState)
_OPS: Final = frozenset(SubscribeOp)
_SET = struct.Struct(">BQB")  # kind group_id peer_len ; then peer, u8 + activity
_SUBSCRIBE = struct.Struct(">BH")  # op count ; then count x (u8 + address)
_ENTRY = struct.Struct(">BQQB")  # state last_seen_ms group_id activity_len
_U16 = struct.Struct(">H")


class PresenceSet:
    """PRESENCE_SET (client -> server): typing, typing stopped, or an activity text."""

    FRAME_TYPE: Final = FrameType.PRESENCE_SET
    __slots__ = ("activity", "group_id", "kind", "peer")

    def __init__(self, kind: int, *, peer: bytes = b"", group_id: int = 0,
                 activity: bytes = b"") -> None:
        self.kind = kind
        self.peer = peer
        self.group_id = group_id
        self.activity = activity

    def encode_body(self) -> bytes:
        """See `ExtensionEvent.encode_body`."""
        try:
            _check_set(self.kind, self.peer, self.group_id, self.activity)
        except ValueError as exc:
            raise LocalWireError(str(exc)) from None
        return (_SET.pack(self.kind, self.group_id, len(self.peer)) + self.peer
                + bytes((len(self.activity),)) + self.activity)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PresenceSet) and (
            (self.kind, self.peer, self.group_id, self.activity)
            == (other.kind, other.peer, other.group_id, other.activity))

    __hash__ = None  # type: ignore[assignment]  # mutable value object

    def __repr__(self) -> str:
        return (f"PresenceSet(kind={self.kind}, peer={self.peer!r}, group_id={self.group_id},"
                f" activity={self.activity!r})")


class PresenceSubscribe:
    """PRESENCE_SUBSCRIBE (client -> server): watch (ADD) or stop watching (REMOVE) users."""

    FRAME_TYPE: Final = FrameType.PRESENCE_SUBSCRIBE
    __slots__ = ("addresses", "op")

    def __init__(self, op: int, addresses: Sequence[bytes]) -> None:
        self.op = op
        self.addresses = tuple(addresses)

    def encode_body(self) -> bytes:
        """See `ExtensionEvent.encode_body`."""
        try:
            _check_subscribe(self.op, self.addresses)
        except ValueError as exc:
            raise LocalWireError(str(exc)) from None
        return _SUBSCRIBE.pack(self.op, len(self.addresses)) + b"".join(
            bytes((len(a),)) + a for a in self.addresses)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PresenceSubscribe) and (
            (self.op, self.addresses) == (other.op, other.addresses))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PresenceSubscribe(op={self.op}, addresses={len(self.addresses)})"


class PresenceEntry:
    """One user's presence in a PRESENCE frame."""

    __slots__ = ("activity", "address", "group_id", "last_seen_ms", "state")

    def __init__(self, address: bytes, state: int, *, last_seen_ms: int = 0, group_id: int = 0,
                 activity: bytes = b"") -> None:
        self.address = address
        self.state = state
        self.last_seen_ms = last_seen_ms
        self.group_id = group_id
        self.activity = activity

    def encode(self) -> bytes:
        """The entry's bytes (PROTOCOL.md §8.2).

        Raises:
            ValueError: a field out of its range.
        """
        _check_entry(self.address, self.state, self.last_seen_ms, self.group_id, self.activity)
        return (bytes((len(self.address),)) + self.address
                + _ENTRY.pack(self.state, self.last_seen_ms, self.group_id, len(self.activity))
                + self.activity)

    def _key(self) -> tuple[bytes, int, int, int, bytes]:
        return (self.address, self.state, self.last_seen_ms, self.group_id, self.activity)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PresenceEntry) and self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"PresenceEntry({self.address!r}, state={self.state},"
                f" last_seen_ms={self.last_seen_ms}, group_id={self.group_id},"
                f" activity={self.activity!r})")


class PresenceUpdate:
    """PRESENCE (server -> client): 1 to `MAX_PRESENCE_ENTRIES` users' presence."""

    FRAME_TYPE: Final = FrameType.PRESENCE
    __slots__ = ("entries",)

    def __init__(self, entries: Sequence[PresenceEntry]) -> None:
        self.entries = tuple(entries)

    def encode_body(self) -> bytes:
        """See `ExtensionEvent.encode_body`."""
        if not 1 <= len(self.entries) <= MAX_PRESENCE_ENTRIES:
            raise LocalWireError(f"PRESENCE carries 1-{MAX_PRESENCE_ENTRIES} entries,"
                                 f" not {len(self.entries)}")
        try:
            return _U16.pack(len(self.entries)) + b"".join(e.encode() for e in self.entries)
        except (ValueError, struct.error) as exc:
            raise LocalWireError(f"PRESENCE {exc}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PresenceUpdate) and self.entries == other.entries

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PresenceUpdate({list(self.entries)!r})"


def pack_presence(entries: Sequence[bytes]) -> bytes:
    """A whole PRESENCE frame (header included) from encoded entries: the server's fan-out
    encodes an entry once for every watcher (`PresenceEntry.encode`)."""
    body = _U16.pack(len(entries)) + b"".join(entries)
    return struct.pack(">IB", len(body), FrameType.PRESENCE) + body


# --- range checks (one rule for encoders and decoders) -----------------------------------


def _check_address(address: bytes, what: str) -> None:
    if not 1 <= len(address) <= MAX_ADDRESS_BYTES:
        raise ValueError(f"{what} must be 1-{MAX_ADDRESS_BYTES} bytes, not {len(address)}")


def _check_activity(activity: bytes) -> None:
    if len(activity) > MAX_ACTIVITY_BYTES:
        raise ValueError(f"activity of {len(activity)} bytes exceeds {MAX_ACTIVITY_BYTES}")
    activity.decode("utf-8")  # UnicodeDecodeError is a ValueError


def _check_set(kind: int, peer: bytes, group_id: int, activity: bytes) -> None:
    if kind not in _KINDS:
        raise ValueError(f"unknown PRESENCE_SET kind {kind}")
    if not 0 <= group_id <= STORED_U64_MAX:
        raise ValueError(f"group_id {group_id} out of range 0..{STORED_U64_MAX}")
    if kind == PresenceKind.ACTIVITY:
        if peer or group_id:
            raise ValueError("an ACTIVITY names no peer and no group")
        _check_activity(activity)
        return
    if activity:
        raise ValueError("only ACTIVITY carries an activity")
    if bool(peer) == bool(group_id):
        raise ValueError("typing names either a peer or a group")
    if peer:
        _check_address(peer, "peer")


def _check_subscribe(op: int, addresses: Sequence[bytes]) -> None:
    if op not in _OPS:
        raise ValueError(f"unknown PRESENCE_SUBSCRIBE op {op}")
    if not 1 <= len(addresses) <= MAX_SUBSCRIBE_ADDRESSES:
        raise ValueError(f"PRESENCE_SUBSCRIBE names 1-{MAX_SUBSCRIBE_ADDRESSES} addresses,"
                         f" not {len(addresses)}")
    for address in addresses:
        _check_address(address, "address")


def _check_entry(address: bytes, state: int, last_seen_ms: int, group_id: int,
                 activity: bytes) -> None:
    _check_address(address, "address")
    if state not in _STATES:
        raise ValueError(f"unknown presence state {state}")
    if not 0 <= last_seen_ms <= STORED_U64_MAX:
        raise ValueError(f"last_seen_ms {last_seen_ms} out of range 0..{STORED_U64_MAX}")
    if not 0 <= group_id <= STORED_U64_MAX:
        raise ValueError(f"group_id {group_id} out of range 0..{STORED_U64_MAX}")
    _check_activity(activity)


# --- decoders --------------------------------------------------------------------------------


def _exact(body: bytes, used: int, name: str) -> None:
    if used != len(body):
        raise ValueError(f"{len(body) - used} trailing or missing bytes in {name}")


def decode_set(body: bytes) -> PresenceSet:
    """A PRESENCE_SET body.

    Raises:
        ValueError, struct.error: malformed, or a field out of range.
    """
    kind, group_id, plen = _SET.unpack_from(body, 0)
    p = _SET.size + plen
    peer = body[_SET.size:p]
    alen = body[p]
    activity = body[p + 1:p + 1 + alen]
    _exact(body, p + 1 + alen, "PRESENCE_SET")
    _check_set(kind, peer, group_id, activity)
    return PresenceSet(kind, peer=peer, group_id=group_id, activity=activity)


def decode_subscribe(body: bytes) -> PresenceSubscribe:
    """A PRESENCE_SUBSCRIBE body.

    Raises:
        ValueError, struct.error: malformed, or a count or address out of range.
    """
    op, count = _SUBSCRIBE.unpack_from(body, 0)
    if count > MAX_SUBSCRIBE_ADDRESSES:  # before reading any of them
        raise ValueError(f"PRESENCE_SUBSCRIBE names {count} addresses, more than"
                         f" {MAX_SUBSCRIBE_ADDRESSES}")
    p = _SUBSCRIBE.size
    addresses = []
    for _ in range(count):
        alen = body[p]
        addresses.append(body[p + 1:p + 1 + alen])
        p += 1 + alen
    _exact(body, p, "PRESENCE_SUBSCRIBE")
    _check_subscribe(op, addresses)
    return PresenceSubscribe(op, addresses)


def decode_presence(body: bytes) -> PresenceUpdate:
    """A PRESENCE body.

    Raises:
        ValueError, struct.error: malformed, or a count or field out of range.
    """
    (count,) = _U16.unpack_from(body, 0)
    if not 1 <= count <= MAX_PRESENCE_ENTRIES:
        raise ValueError(f"PRESENCE carries 1-{MAX_PRESENCE_ENTRIES} entries, not {count}")
    p = _U16.size
    entries = []
    for _ in range(count):
        alen = body[p]
        address = body[p + 1:p + 1 + alen]
        p += 1 + alen
        state, last_seen, group_id, actlen = _ENTRY.unpack_from(body, p)
        p += _ENTRY.size
        activity = body[p:p + actlen]
        p += actlen
        _check_entry(address, state, last_seen, group_id, activity)
        entries.append(PresenceEntry(address, state, last_seen_ms=last_seen, group_id=group_id,
                                     activity=activity))
    _exact(body, p, "PRESENCE")
    return PresenceUpdate(entries)


#: frame type -> (event class, body decoder, "client" or "server").
FRAMES: dict[int, tuple[type, Callable[[bytes], Any], str]] = {
    FrameType.PRESENCE_SET: (PresenceSet, decode_set, "client"),
    FrameType.PRESENCE_SUBSCRIBE: (PresenceSubscribe, decode_subscribe, "client"),
    FrameType.PRESENCE: (PresenceUpdate, decode_presence, "server"),
}
