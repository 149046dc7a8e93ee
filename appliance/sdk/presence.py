"""Presence for the SDK's `Client` (PROTOCOL.md §8.2): watch users, say you are typing.

    client.subscribe_presence(["bob", "carol"])
    client.on_presence(lambda p: print(p.address, p.state.name))
    client.set_typing(peer="bob")
    client.set_activity("in a meeting")
    async for event in client.presence(): ...

The client asks the server for the protocol extensions in every HELLO and
learns what the server has from WELCOME (`Client.server_features` and
`Client.limits`, server_info.py).
Subscriptions and the activity text are the app's wishes: kept here and sent
again after every reconnect (the server keeps them only while a connection
lasts), and sent only to a server that announced PRESENCE.  Typing is sent
only while online (it would be stale later); the server ends a typing state
by itself after ``limits.typing_timeout_s`` unless refreshed.
"""

from __future__ import annotations

import unicodedata
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from appliance.protocol.wire import Feature
from appliance.protocol.wire.constants import MAX_ADDRESS_BYTES, STORED_U64_MAX
from appliance.protocol.wire.presence import (
    MAX_ACTIVITY_BYTES,
    MAX_SUBSCRIBE_ADDRESSES,
    PresenceKind,
    PresenceSet,
    PresenceState,
    PresenceSubscribe,
    PresenceUpdate,
    SubscribeOp,
)
from appliance.sdk.events import Listener, _Events, _Subscription
from appliance.sdk.models import Group
from appliance.sdk.server_info import ServerLimits

if TYPE_CHECKING:
    from appliance.sdk.native import NativeWire

__all__ = ["PresenceEvent", "PresenceFeatures", "PresenceState"]


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """A user's presence, as the server told it.

    `state` UNKNOWN: no such user, or one whose privacy (or a block) hides it
    from you.  OFFLINE: `last_seen_ms` says since when, to the minute (0:
    never connected).  ONLINE: `activity` is its activity text.  TYPING and
    TYPING_STOPPED: typing to you (`group_id` 0) or in group `group_id`.
    """

    address: str
    state: PresenceState
    last_seen_ms: int = 0
    activity: str = ""
    group_id: int = 0

    @property
    def typing(self) -> bool:
        return self.state is PresenceState.TYPING


def _address(text: str) -> bytes:
    if not text.isascii():  # the server keeps addresses in NFC (PROTOCOL.md)
        text = unicodedata.normalize("NFC", text)
    raw = text.encode()
    if not 1 <= len(raw) <= MAX_ADDRESS_BYTES:
        raise ValueError(f"an address is 1-{MAX_ADDRESS_BYTES} bytes, got {len(raw)}")
    return raw


class PresenceFeatures:
    """The presence half of `Client` (a mixin: the client holds the connection)."""

    _wire: NativeWire | None
    #: What the last WELCOME announced (the client's, server_info.py).
    limits: ServerLimits
    server_features: Feature
    _presence_events: _Events[PresenceEvent]
    _watched: dict[bytes, None]
    _activity: bytes
    _extension_handlers: dict[type, Callable[[Any], None]]

    def _presence_init(self) -> None:
        self._extension_handlers[PresenceUpdate] = self._on_frame_presence
        self._presence_events = _Events("presence")
        #: Addresses the app watches, in the order it asked (a dict as an ordered set).
        self._watched = {}
        self._activity = b""

    def _presence_wire(self) -> NativeWire | None:
        wire = self._wire
        if wire is None or not wire.online or not self.server_features & Feature.PRESENCE:
            return None
        return wire

    # --- subscriptions -------------------------------------------------------------------------

    def subscribe_presence(self, addresses: Iterable[str]) -> None:
        """Watch these users: their state now, then each change (`on_presence`).

        Kept across reconnects.  The server takes at most
        ``limits.max_presence_subscriptions`` per device.

        Raises:
            ValueError: an address that is not 1-64 bytes, or more users than the
                server announced it takes.
        """
        new = [a for a in dict.fromkeys(map(_address, addresses)) if a not in self._watched]
        most = self.limits.max_presence_subscriptions
        if most is not None and len(self._watched) + len(new) > most:
            raise ValueError(f"the server takes at most {most} presence subscriptions")
        self._watched.update(dict.fromkeys(new))
        wire = self._presence_wire()
        if wire is not None:
            self._send_subscribe(wire, SubscribeOp.ADD, new)

    def unsubscribe_presence(self, addresses: Iterable[str]) -> None:
        """Stop watching these users."""
        gone = [a for a in map(_address, addresses) if self._watched.pop(a, 0) is None]
        wire = self._presence_wire()
        if wire is not None:
            self._send_subscribe(wire, SubscribeOp.REMOVE, gone)

    @staticmethod
    def _send_subscribe(wire: NativeWire, op: SubscribeOp, addresses: list[bytes]) -> None:
        for start in range(0, len(addresses), MAX_SUBSCRIBE_ADDRESSES):
            chunk = addresses[start:start + MAX_SUBSCRIBE_ADDRESSES]
            wire.write(wire.codec.send(PresenceSubscribe(op, chunk)))

    # --- what this user does -------------------------------------------------------------------

    def set_typing(self, *, peer: str | None = None, group: Group | int | None = None,
                   typing: bool = True) -> bool:
        """Tell `peer` (or the members of `group`) that this user is typing, or stopped.

        Refresh it (call again) while typing: the server ends it after
        ``limits.typing_timeout_s``.  Returns False when it was not sent (offline, or the
        server has no presence).

        Raises:
            ValueError: neither or both of `peer` and `group`, or one out of range.
        """
        group_id = group.id if isinstance(group, Group) else (group or 0)
        if (peer is None) == (not group_id) or not 0 <= group_id <= STORED_U64_MAX:
            raise ValueError("name either a peer or a group (1..2**63-1)")
        kind = PresenceKind.TYPING if typing else PresenceKind.TYPING_STOPPED
        frame = PresenceSet(kind, peer=_address(peer) if peer is not None else b"",
                            group_id=group_id)
        wire = self._presence_wire()
        if wire is None:
            return False
        wire.write(wire.codec.send(frame))
        return True

    def set_activity(self, text: str) -> None:
        """This user's activity text, shown to its watchers while it is online ("" clears).

        Kept across reconnects.

        Raises:
            ValueError: more than 64 bytes of UTF-8.
        """
        raw = text.encode()
        if len(raw) > MAX_ACTIVITY_BYTES:
            raise ValueError(f"an activity is at most {MAX_ACTIVITY_BYTES} bytes of UTF-8")
        self._activity = raw
        wire = self._presence_wire()
        if wire is not None:
            wire.write(wire.codec.send(PresenceSet(PresenceKind.ACTIVITY, activity=raw)))

    # --- events ----------------------------------------------------------------------------------

    def on_presence(self, listener: Listener[PresenceEvent]) -> Callable[[], None]:
        """Call `listener` (a function or coroutine function) for each presence event.

        Returns a function that removes the listener.
        """
        return self._presence_events.add(listener)

    def presence(self) -> AsyncIterator[PresenceEvent]:
        """Presence events from now on: ``async for event in client.presence()``."""
        return _Subscription(self._presence_events.subscriptions)

    # --- hooks of the client ---------------------------------------------------------------------

    def _presence_online(self, wire: NativeWire) -> None:
        """A WELCOME (`server_features` is its): say again what the app asked for."""
        if not self.server_features & Feature.PRESENCE:
            return
        if self._watched:
            self._send_subscribe(wire, SubscribeOp.ADD, list(self._watched))
        if self._activity:
            wire.write(wire.codec.send(PresenceSet(PresenceKind.ACTIVITY,
                                                   activity=self._activity)))

    def _on_frame_presence(self, update: PresenceUpdate) -> None:
        emit = self._presence_events.emit
        for e in update.entries:
            emit(PresenceEvent(e.address.decode("utf-8", "replace"), PresenceState(e.state),
                               e.last_seen_ms, e.activity.decode("utf-8", "replace"),
                               e.group_id))
