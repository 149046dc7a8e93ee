"""Group management frames (PROTOCOL.md §8.3): GROUP_MANAGE, GROUP_RESULT.

A member with the ADMIN permission changes a group from a client:
GROUP_MANAGE carries a request id, an operation, the group, and what the
operation needs (a name, flags, members with their permissions); the server
answers each with one GROUP_RESULT carrying the same request id.  Also the
group-level flags and member permissions as they travel on the wire and are
kept by the store (defined here, the lowest layer, and imported by it).

Every integer is range-checked on both sides; every count is bounded
(`MAX_MANAGE_MEMBERS`); bodies are exact (PROTOCOL.md §2).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, Final

from appliance.protocol.wire.constants import (
    MAX_ADDRESS_BYTES,
    STORED_U64_MAX,
    U32_MAX,
    FrameType,
)
from appliance.protocol.wire.errors import LocalWireError


class Perm:
    """Group member permission bits (SPEC M5): plain ints, the writer tests them per member."""

    SEND: Final = 1
    RECEIVE: Final = 2
    #: May manage the group: members, name, flags, deletion (GROUP_MANAGE, §8.3).
    ADMIN: Final = 4
    DEFAULT: Final = SEND | RECEIVE
    ALL: Final = SEND | RECEIVE | ADMIN


class GroupFlag:
    """Group-level flags (PROTOCOL.md §8.3), kept in the store's ``groups.flags``."""

    #: Only members with the SEND permission may post; without it every member may.
    SEND_BY_SELECTED: Final = 1
    #: Real-time only: messages to the group are relayed to the members online and
    #: never stored, whatever their expiry (SENT if a device got one, else USER_OFFLINE).
    NO_STORE: Final = 2
    #: What a group gets unless its creator says otherwise (and what every group
    #: had before the flags existed: only SEND members post).
    DEFAULT: Final = SEND_BY_SELECTED
    ALL: Final = SEND_BY_SELECTED | NO_STORE


#: Members a group may have (PROTOCOL.md §8.3): each message to it writes a
#: delivery row per member device, each change is announced to every member, and
#: its roster is held whole (the relay, the writer's cache, ``GET /v1/groups/{id}``).
MAX_GROUP_MEMBERS = 10_000

#: Names of the permission and flag bits, as the REST API and the announcements spell them.
PERM_NAMES: Final = {"send": Perm.SEND, "receive": Perm.RECEIVE, "admin": Perm.ADMIN}
FLAG_NAMES: Final = {"send_by_selected": GroupFlag.SEND_BY_SELECTED,
                     "no_store": GroupFlag.NO_STORE}


def bit_names(bits: int, names: dict[str, int]) -> list[str]:
    """The names of the bits set in `bits` (`PERM_NAMES`, `FLAG_NAMES`), in their order."""
    return [name for name, bit in names.items() if bits & bit]


class GroupOp(IntEnum):
    """What a GROUP_MANAGE asks for (PROTOCOL.md §8.3)."""

    CREATE = 1
    ADD = 2
    REMOVE = 3
    SET_PERMS = 4
    RENAME = 5
    SET_FLAGS = 6
    LEAVE = 7
    DELETE = 8


class GroupResultCode(IntEnum):
    """The outcome of a GROUP_MANAGE (PROTOCOL.md §8.3)."""

    OK = 0
    #: The store could not be written: nothing changed; send it again later.
    FAILED = 1
    #: No such group in the requester's app.
    NO_GROUP = 2
    #: The requester is not a member with ADMIN (LEAVE: not a member at all).
    FORBIDDEN = 3
    #: An address names no user of the app, or (REMOVE, SET_PERMS) no member.
    NO_USER = 4
    #: The request does not make sense: a bad name, an address given twice,
    #: members where none belong (or none where they must), flags out of range.
    INVALID = 5
    #: Another request of this connection is still being handled.
    BUSY = 6
    #: The user is over its send rate (each request counts as a message).
    RATE_LIMITED = 7
    #: The group would have more than `MAX_GROUP_MEMBERS` members: nothing changed.
    FULL = 8


#: Members one GROUP_MANAGE may name (a bigger change takes several frames).
MAX_MANAGE_MEMBERS: Final = 100
#: A group name's limit in UTF-8 bytes (the store keeps 255 characters).
MAX_GROUP_NAME_BYTES: Final = 255

_MANAGE = struct.Struct(">IBQIB")  # request_id op group_id flags name_len
_COUNT = struct.Struct(">H")
_RESULT = struct.Struct(">IBQI")  # request_id result group_id members


@dataclass(frozen=True, slots=True)
class GroupManage:
    """GROUP_MANAGE (client -> server): one change to a group.

    `members` lists (address, permission bits): the members to add (ADD,
    CREATE), re-permission (SET_PERMS) or remove (REMOVE, whose bits are 0).
    `name` is UTF-8 (CREATE, RENAME); `flags` are `GroupFlag` bits (CREATE,
    SET_FLAGS); `group_id` is 0 for CREATE.
    """

    FRAME_TYPE: ClassVar[int] = FrameType.GROUP_MANAGE

    request_id: int
    op: int
    group_id: int = 0
    name: bytes = b""
    flags: int = 0
    members: tuple[tuple[bytes, int], ...] = ()

    def encode_body(self) -> bytes:
        """See `ExtensionEvent.encode_body`."""
        _check_manage(self.request_id, self.op, self.group_id, self.name, self.flags,
                      self.members, LocalWireError)
        return (_MANAGE.pack(self.request_id, self.op, self.group_id, self.flags,
                             len(self.name)) + self.name + _COUNT.pack(len(self.members))
                + b"".join(bytes((perms, len(address))) + address
                           for address, perms in self.members))


@dataclass(frozen=True, slots=True)
class GroupResult:
    """GROUP_RESULT (server -> client): the answer to the GROUP_MANAGE `request_id`.

    `group_id` is the group concerned (the new one for CREATE); `members` its
    number of members after the change (0 when it failed, or after DELETE).
    """

    FRAME_TYPE: ClassVar[int] = FrameType.GROUP_RESULT

    request_id: int
    result: int
    group_id: int = 0
    members: int = 0

    def encode_body(self) -> bytes:
        """See `ExtensionEvent.encode_body`."""
        if not (0 <= self.request_id <= U32_MAX and self.result in _RESULTS
                and 0 <= self.group_id <= STORED_U64_MAX and 0 <= self.members <= U32_MAX):
            raise LocalWireError(f"GROUP_RESULT field out of range: {self!r}")
        return _RESULT.pack(self.request_id, self.result, self.group_id, self.members)


_OPS = frozenset(int(op) for op in GroupOp)
_RESULTS = frozenset(int(code) for code in GroupResultCode)


def _check_manage(request_id: int, op: int, group_id: int, name: bytes, flags: int,
                  members: tuple[tuple[bytes, int], ...],
                  error: type[Exception]) -> None:
    """Every range GROUP_MANAGE has (both directions raise: `error` says which)."""
    if not 0 <= request_id <= U32_MAX:
        raise error(f"GROUP_MANAGE request_id {request_id} out of range 0..{U32_MAX}")
    if op not in _OPS:
        raise error(f"GROUP_MANAGE op {op} is not one of {sorted(_OPS)}")
    if not 0 <= group_id <= STORED_U64_MAX:
        raise error(f"GROUP_MANAGE group_id {group_id} out of range 0..{STORED_U64_MAX}")
    if len(name) > MAX_GROUP_NAME_BYTES:
        raise error(f"GROUP_MANAGE name of {len(name)} bytes exceeds {MAX_GROUP_NAME_BYTES}")
    if not 0 <= flags <= GroupFlag.ALL:
        raise error(f"GROUP_MANAGE flags {flags} out of range 0..{GroupFlag.ALL}")
    if len(members) > MAX_MANAGE_MEMBERS:
        raise error(f"GROUP_MANAGE names {len(members)} members, at most"
                    f" {MAX_MANAGE_MEMBERS}")
    for address, perms in members:
        if not 1 <= len(address) <= MAX_ADDRESS_BYTES:
            raise error(f"GROUP_MANAGE address of {len(address)} bytes, not"
                        f" 1..{MAX_ADDRESS_BYTES}")
        if not 0 <= perms <= Perm.ALL:
            raise error(f"GROUP_MANAGE perms {perms} out of range 0..{Perm.ALL}")


def decode_manage(body: bytes) -> GroupManage:
    """A GROUP_MANAGE body.

    Raises:
        ValueError, struct.error: malformed or out of range (the codec closes the
            connection with PROTOCOL_ERROR naming the reason).
    """
    request_id, op, group_id, flags, name_len = _MANAGE.unpack_from(body, 0)
    p = _MANAGE.size
    name = body[p:p + name_len]
    p += name_len
    (count,) = _COUNT.unpack_from(body, p)
    p += _COUNT.size
    if count > MAX_MANAGE_MEMBERS:  # before reading any entry: the loop is bounded
        raise ValueError(f"GROUP_MANAGE names {count} members, at most {MAX_MANAGE_MEMBERS}")
    members = []
    for _ in range(count):
        perms, alen = body[p], body[p + 1]
        address = body[p + 2:p + 2 + alen]
        if len(address) != alen:
            raise ValueError("GROUP_MANAGE address overruns the frame")
        members.append((address, perms))
        p += 2 + alen
    if p != len(body):
        raise ValueError(f"{len(body) - p} trailing bytes in GROUP_MANAGE")
    _check_manage(request_id, op, group_id, name, flags, tuple(members), ValueError)
    return GroupManage(request_id, op, group_id, name, flags, tuple(members))


def decode_result(body: bytes) -> GroupResult:
    """A GROUP_RESULT body.

    Raises:
        ValueError, struct.error: malformed or out of range.
    """
    if len(body) != _RESULT.size:
        raise ValueError(f"GROUP_RESULT body of {len(body)} bytes, not {_RESULT.size}")
    request_id, result, group_id, members = _RESULT.unpack(body)
    if result not in _RESULTS:
        raise ValueError(f"GROUP_RESULT result {result} is not one of {sorted(_RESULTS)}")
    if group_id > STORED_U64_MAX:
        raise ValueError(f"GROUP_RESULT group_id {group_id} out of range 0..{STORED_U64_MAX}")
    return GroupResult(request_id, result, group_id, members)


#: frame type -> (event class, body decoder, "client" or "server").
FRAMES: dict[int, tuple[type, Callable[[bytes], Any], str]] = {
    FrameType.GROUP_MANAGE: (GroupManage, decode_manage, "client"),
    FrameType.GROUP_RESULT: (GroupResult, decode_result, "server"),
}
