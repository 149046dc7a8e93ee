"""Who is connected: sessions by user and device, per app.

The one place that knows which devices are online (issue 16).  Everything
else asks it, never a dict of its own, so that a cluster (a later issue: several
worker processes and nodes over NATS) can answer for devices that live in
another process by implementing `SessionRegistry`.

`LocalRegistry` is this process's.  Its lookups are bound `dict.get` methods
(`session_of_device`, `user_at`): the fan-out and relay paths call them once
per target and per message, and a Python method around a dict lookup would
add ~60 ns to each (performance.md: the message path is counted in hundreds
of nanoseconds).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from appliance.engine.session import Session

_NONE: tuple[Session, ...] = ()


class SessionRegistry(Protocol):
    """The connected devices the engine delivers to."""

    #: `session_of_device(device_rowid)`: the session of a device, None if offline.
    session_of_device: Callable[[int], Session | None]

    def sessions_of(self, user_id: int) -> Sequence[Session]:
        """The connected devices of a user (empty if none)."""
        ...

    def user_at(self, key: tuple[int, bytes], /) -> int | None:
        """The user id of an online user by (app id, address); None if offline."""
        ...

    def add(self, session: Session) -> bool:
        """Register a session; True if it is its user's first connected device."""
        ...

    def remove(self, session: Session) -> bool:
        """Forget a session; True if it was its user's last connected device."""
        ...

    def sessions(self) -> list[Session]:
        """Every connected session (a snapshot: safe to change the registry meanwhile)."""
        ...

    def users(self) -> Iterable[int]:
        """The ids of the users with a connected device."""
        ...

    def __len__(self) -> int:
        """How many sessions are connected."""
        ...


class LocalRegistry:
    """The sessions of this process."""

    __slots__ = ("_by_address", "_by_device", "_by_user", "session_of_device", "user_at")

    def __init__(self) -> None:
        self._by_user: dict[int, list[Session]] = {}
        self._by_address: dict[tuple[int, bytes], int] = {}
        self._by_device: dict[int, Session] = {}
        self.session_of_device: Callable[[int], Session | None] = self._by_device.get
        self.user_at: Callable[[tuple[int, bytes]], int | None] = self._by_address.get

    def sessions_of(self, user_id: int) -> Sequence[Session]:
        """See `SessionRegistry.sessions_of`."""
        return self._by_user.get(user_id, _NONE)

    def add(self, session: Session) -> bool:
        """See `SessionRegistry.add`."""
        peers = self._by_user.get(session.user_id)
        first = peers is None
        if peers is None:
            self._by_user[session.user_id] = [session]
        else:
            peers.append(session)
        self._by_address[(session.app_id, session.address)] = session.user_id
        self._by_device[session.device_rowid] = session
        return first

    def remove(self, session: Session) -> bool:
        """See `SessionRegistry.remove`."""
        last = False
        peers = self._by_user.get(session.user_id)
        if peers is not None and session in peers:
            peers[:] = [s for s in peers if s is not session]
            # Its address goes with the last of the user's sessions under it: a
            # renamed user's other devices may be online under the new name (and
            # the old one then names another user, or no one).
            key = (session.app_id, session.address)
            if self._by_address.get(key) == session.user_id \
                    and not any(s.address == session.address for s in peers):
                del self._by_address[key]
            if not peers:
                last = True
                del self._by_user[session.user_id]
        if self._by_device.get(session.device_rowid) is session:
            del self._by_device[session.device_rowid]
        return last

    def sessions(self) -> list[Session]:
        """See `SessionRegistry.sessions`."""
        return list(self._by_device.values())

    def users(self) -> list[int]:
        """See `SessionRegistry.users`."""
        return list(self._by_user)

    def __len__(self) -> int:
        return len(self._by_device)
