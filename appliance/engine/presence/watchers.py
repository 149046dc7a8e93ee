"""Who watches whom: presence subscriptions, indexed by the watched user.

A device subscribes to users (PRESENCE_SUBSCRIBE); a change of a user's
presence goes to the devices watching it, found here by the user's id, then
through the session registry (`SessionRegistry.session_of_device`), the one
place that knows which devices are online.  Each watch carries whether that
device may see the user (its privacy, its blocks: decided by the store when
the watch is made and again when the user's settings change), so a change
fans out with no store read.

`WatchIndex` is what a cluster implements later (a later issue: the
watchers of a user may be devices of another process or node).
`LocalWatchIndex` holds this process's watches: memory only, per device,
dropped when the device disconnects, bounded by
``limits.max_presence_subscriptions`` per device (the caller checks).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Protocol


class Watched:
    """A watched user: its address (what entries name) and its watchers."""

    __slots__ = ("address", "devices")

    def __init__(self, address: bytes) -> None:
        self.address = address
        #: device row id -> whether that device may see this user.
        self.devices: dict[int, bool] = {}


class WatchIndex(Protocol):
    """Presence subscriptions: devices watching users."""

    def watch(self, device: int, user: int, address: bytes, visible: bool) -> None:
        """`device` watches `user` (at `address`), seeing it or not."""
        ...

    def unwatch(self, device: int, user: int) -> None:
        """`device` stops watching `user` (nothing happens if it did not)."""
        ...

    def drop_device(self, device: int) -> None:
        """`device` disconnected: every watch of its goes."""
        ...

    def watched(self, user: int) -> Watched | None:
        """`user`'s address and watchers, None when nobody watches it."""
        ...

    def watching(self, device: int) -> Collection[int]:
        """The users `device` watches."""
        ...

    def set_visible(self, user: int, devices: Mapping[int, bool]) -> None:
        """What these watching devices may now see of `user`."""
        ...


class LocalWatchIndex:
    """This process's presence subscriptions."""

    __slots__ = ("_by_device", "_by_user")

    def __init__(self) -> None:
        self._by_user: dict[int, Watched] = {}
        self._by_device: dict[int, set[int]] = {}

    def watch(self, device: int, user: int, address: bytes, visible: bool) -> None:
        """See `WatchIndex.watch`."""
        entry = self._by_user.get(user)
        if entry is None:
            entry = self._by_user[user] = Watched(address)
        entry.devices[device] = visible
        users = self._by_device.get(device)
        if users is None:
            self._by_device[device] = {user}
        else:
            users.add(user)

    def unwatch(self, device: int, user: int) -> None:
        """See `WatchIndex.unwatch`."""
        users = self._by_device.get(device)
        if users is None or user not in users:
            return
        users.discard(user)
        if not users:
            del self._by_device[device]
        self._forget(device, user)

    def _forget(self, device: int, user: int) -> None:
        entry = self._by_user.get(user)
        if entry is not None:
            entry.devices.pop(device, None)
            if not entry.devices:
                del self._by_user[user]

    def drop_device(self, device: int) -> None:
        """See `WatchIndex.drop_device`."""
        for user in self._by_device.pop(device, ()):
            self._forget(device, user)

    def watched(self, user: int) -> Watched | None:
        """See `WatchIndex.watched`."""
        return self._by_user.get(user)

    def watching(self, device: int) -> Collection[int]:
        """See `WatchIndex.watching`."""
        return self._by_device.get(device, ())

    def set_visible(self, user: int, devices: Mapping[int, bool]) -> None:
        """See `WatchIndex.set_visible`."""
        entry = self._by_user.get(user)
        if entry is None:
            return
        for device, visible in devices.items():
            if device in entry.devices:
                entry.devices[device] = visible

    def __len__(self) -> int:
        """How many devices watch someone."""
        return len(self._by_device)
