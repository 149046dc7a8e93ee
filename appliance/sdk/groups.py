"""Groups from a device (PROTOCOL.md §8.3, §8.4): changes, announcements, aggregate reports.

``client.groups`` (one per `Client`)::

    change = await client.groups.create("team", {"bob": Perm.DEFAULT})
    await client.groups.add(change.group, ["carol"])
    client.groups.on_event(lambda e: print(e.event, e.group.id, e.members))

A change is one GROUP_MANAGE answered by one GROUP_RESULT; the server takes
one at a time per connection, so they are sent one after the other, each at
most `MAX_MANAGE_MEMBERS` members (a longer list goes in several requests).
Announcements are group messages from ``@app`` with `Flag.SYSTEM`: they also
arrive through ``client.on_message`` (and stay in the history); here they come
parsed, as `GroupEvent`.  The aggregate reports arrive as status updates
(``client.on_status``) with `Status.DELIVERED_ALL` and `Status.READ_ALL`,
each member's as before; ``await message.reached(Status.READ_ALL)`` waits for one.
"""

from __future__ import annotations

import asyncio
import json
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from appliance.protocol.wire import Feature, Flag, LocalWireError
from appliance.protocol.wire.groups import (
    FLAG_NAMES,
    MAX_MANAGE_MEMBERS,
    PERM_NAMES,
    GroupFlag,
    GroupManage,
    GroupOp,
    GroupResult,
    GroupResultCode,
    Perm,
)
from appliance.sdk.errors import ClientError, GroupRequestError
from appliance.sdk.events import Listener, _Events, _Subscription
from appliance.sdk.models import ConnectionEvent, ConnectionState, Group, IncomingMessage

if TYPE_CHECKING:
    from appliance.sdk.client import Client

__all__ = ["MAX_MANAGE_MEMBERS", "GroupChange", "GroupEvent", "GroupFlag", "Groups",
           "MemberChange", "Perm", "parse_announcement"]

#: Who speaks in an announcement (the app's reserved user).
APP_SENDER: Final = "@app"
#: How long a change waits for the connection, and then for its answer.
REQUEST_TIMEOUT_S: Final = 30.0
#: Members in one announcement the parser takes (the server sends ~100 per message).
_MAX_PARSED_MEMBERS: Final = 10_000


@dataclass(frozen=True, slots=True)
class GroupChange:
    """The answer to a change: the group, and how many members it has now."""

    group: Group
    members: int


@dataclass(frozen=True, slots=True)
class MemberChange:
    """A member an announcement names, with its permissions (None: a removal)."""

    address: str
    perms: int | None


@dataclass(frozen=True, slots=True)
class GroupEvent:
    """An announcement of a group's change (PROTOCOL.md §8.3), parsed.

    `event` is ``created``, ``member_added``, ``member_removed``,
    ``perms_changed``, ``renamed``, ``flags_changed`` or ``deleted`` (or a newer
    one this SDK does not know); `by` who made it (``@app``: the app's backend).
    """

    event: str
    group: Group
    by: str
    members: tuple[MemberChange, ...]
    name: str | None
    flags: int | None
    message: IncomingMessage


def _bits(value: Any, names: Mapping[str, int]) -> int | None:
    if not isinstance(value, list):
        return None
    return sum(names[n] for n in set(value) if isinstance(n, str) and n in names)


def parse_announcement(message: IncomingMessage) -> GroupEvent | None:
    """The `GroupEvent` a message carries; None for any other message, or junk.

    Only a group message from ``@app`` with `Flag.SYSTEM` (which only the
    server can set) is an announcement; its payload is never trusted beyond
    that: fields of the wrong type are left out.
    """
    if not (message.flags & Flag.SYSTEM and message.sender == APP_SENDER
            and message.group_id):
        return None
    try:
        doc = json.loads(message.payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("event"), str):
        return None
    members = []
    listed = doc.get("members")
    for entry in listed[:_MAX_PARSED_MEMBERS] if isinstance(listed, list) else ():
        if isinstance(entry, dict) and isinstance(entry.get("address"), str):
            members.append(MemberChange(entry["address"], _bits(entry.get("perms"), PERM_NAMES)))
    name, by = doc.get("name"), doc.get("by")
    return GroupEvent(doc["event"], Group(message.group_id), by if isinstance(by, str) else "",
                      tuple(members), name if isinstance(name, str) else None,
                      _bits(doc.get("flags"), FLAG_NAMES), message)


def _address(address: str) -> bytes:
    if not address.isascii():  # the server keeps addresses in NFC (PROTOCOL.md)
        address = unicodedata.normalize("NFC", address)
    return address.encode()


def _members(members: Mapping[str, int] | Iterable[str], perms: int
             ) -> list[tuple[bytes, int]]:
    if isinstance(members, Mapping):
        return [(_address(a), p) for a, p in members.items()]
    return [(_address(a), perms) for a in members]


class Groups:
    """Group changes and announcements of one `Client` (``client.groups``)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._request_id = 0
        self._answers: dict[int, asyncio.Future[GroupResult]] = {}
        self._lock = asyncio.Lock()
        self._events: _Events[GroupEvent] = _Events("group")
        client._extension_handlers[GroupResult] = self._on_result
        client.on_message(self._on_message)
        client.on_connection(self._on_connection)

    # --- announcements --------------------------------------------------------------------

    def on_event(self, listener: Listener[GroupEvent]) -> Callable[[], None]:
        """Call `listener` for each group announcement this device receives."""
        return self._events.add(listener)

    def events(self) -> AsyncIterator[GroupEvent]:
        """Group announcements from now on: ``async for event in client.groups.events()``."""
        return _Subscription(self._events.subscriptions)

    def _on_message(self, message: IncomingMessage) -> None:
        event = parse_announcement(message)
        if event is not None:
            self._events.emit(event)

    # --- changes --------------------------------------------------------------------------

    @property
    def supported(self) -> bool:
        """Whether the server takes group changes from clients (WELCOME FEATURES)."""
        return Feature.GROUP_MANAGE in self._client.server_features

    async def create(self, name: str, members: Mapping[str, int] | Iterable[str] = (), *,
                     perms: int = Perm.DEFAULT, flags: int = GroupFlag.DEFAULT) -> GroupChange:
        """A new group called `name`; this user joins it with every permission.

        `members`: addresses (each with `perms`) or address -> permission bits.

        Raises:
            GroupRequestError: refused (NO_USER, INVALID...) or unanswered.
            ClientError: not connected within the timeout, or the server has no
                group management.
        """
        listed = _members(members, perms)
        change = await self._request(GroupOp.CREATE, 0, name.encode(), flags,
                                     listed[:MAX_MANAGE_MEMBERS])
        if len(listed) > MAX_MANAGE_MEMBERS:
            change = await self._chunks(GroupOp.ADD, change.group.id,
                                        listed[MAX_MANAGE_MEMBERS:])
        return change

    async def add(self, group: Group, members: Mapping[str, int] | Iterable[str], *,
                  perms: int = Perm.DEFAULT) -> GroupChange:
        """Add members (or give members already in these permissions); needs ADMIN."""
        return await self._chunks(GroupOp.ADD, group.id, _members(members, perms))

    async def set_perms(self, group: Group, members: Mapping[str, int]) -> GroupChange:
        """Give members new permissions (each must be a member); needs ADMIN."""
        return await self._chunks(GroupOp.SET_PERMS, group.id, _members(members, 0))

    async def remove(self, group: Group, members: Iterable[str]) -> GroupChange:
        """Remove members (each hears it first); needs ADMIN."""
        return await self._chunks(GroupOp.REMOVE, group.id, _members(members, 0))

    async def rename(self, group: Group, name: str) -> GroupChange:
        """Give the group a new name; needs ADMIN."""
        return await self._request(GroupOp.RENAME, group.id, name.encode())

    async def set_flags(self, group: Group, flags: int) -> GroupChange:
        """Set the group's `GroupFlag` bits (SEND_BY_SELECTED, NO_STORE); needs ADMIN."""
        return await self._request(GroupOp.SET_FLAGS, group.id, flags=flags)

    async def leave(self, group: Group) -> GroupChange:
        """This user leaves the group."""
        return await self._request(GroupOp.LEAVE, group.id)

    async def delete(self, group: Group) -> None:
        """Delete the group (its members hear it first); needs ADMIN."""
        await self._request(GroupOp.DELETE, group.id)

    async def _chunks(self, op: int, group_id: int, members: list[tuple[bytes, int]]
                      ) -> GroupChange:
        if not members:
            raise ValueError("name at least one member")
        change = GroupChange(Group(group_id), 0)
        for start in range(0, len(members), MAX_MANAGE_MEMBERS):
            change = await self._request(op, group_id,
                                         members=members[start:start + MAX_MANAGE_MEMBERS])
        return change

    async def _request(self, op: int, group_id: int, name: bytes = b"", flags: int = 0,
                       members: list[tuple[bytes, int]] | None = None) -> GroupChange:
        client = self._client
        async with self._lock, asyncio.timeout(REQUEST_TIMEOUT_S):
            await client.wait_online()
            if not self.supported:
                raise ClientError("this server does not take group changes from clients")
            wire = client._wire
            if wire is None or not wire.online:
                raise GroupRequestError("the connection dropped", result=None,
                                        group_id=group_id)
            self._request_id = request_id = (self._request_id + 1) & 0xFFFF_FFFF
            try:  # encoded, so range-checked, before anything waits
                frame = wire.codec.send(GroupManage(request_id, op, group_id, name, flags,
                                                    tuple(members or ())))
            except LocalWireError as exc:
                raise ValueError(str(exc)) from None
            answer: asyncio.Future[GroupResult] = asyncio.get_running_loop().create_future()
            self._answers[request_id] = answer
            try:
                wire.write(frame)
                result = await answer
            finally:
                self._answers.pop(request_id, None)
        if result.result != GroupResultCode.OK:
            raise GroupRequestError(f"group change refused: {GroupResultCode(result.result).name}",
                                    result=result.result, group_id=result.group_id)
        return GroupChange(Group(result.group_id), result.members)

    def _on_result(self, result: GroupResult) -> None:
        answer = self._answers.get(result.request_id)
        if answer is not None and not answer.done():
            answer.set_result(result)

    def _on_connection(self, event: ConnectionEvent) -> None:
        if event.state is ConnectionState.ONLINE:
            return
        for request_id, answer in list(self._answers.items()):
            if not answer.done():
                answer.set_exception(GroupRequestError(
                    "the connection dropped before the answer: the change may or may not"
                    f" have been made (request {request_id})", result=None))
