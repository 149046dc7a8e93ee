"""Typing notifications: to the peer of a conversation, or to a group's members.

A TYPING to a peer goes to that peer's devices online with EXTENSIONS; in a
group, to its members with RECEIVE (the typing user must be a member with
SEND: `storage.routing.group_recipients`, the message rule, one roster read).
Typing is part of a conversation, like a message: it is not subject to the
typing user's presence privacy, but never crosses a block either way (who
blocks whom: `appliance.engine.blocks`, cached).  Typing toward a peer who is
offline, or an address of another app, reaches nobody and tells nothing.

Each state lasts ``limits.typing_timeout_s`` unless refreshed; then, or on
TYPING_STOPPED, or when the typing user's last device leaves, the same
recipients are told TYPING_STOPPED (`typing_timers`).  A device's
PRESENCE_SET frames are rate-limited (``limits.presence_rate_per_s``): the
ones above it are dropped, never queued.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from appliance.engine.presence import entries
from appliance.engine.presence.typing_timers import Target, Typing, TypingTimers
from appliance.engine.session import Session
from appliance.errors import StorageError
from appliance.protocol.wire.presence import PresenceKind, PresenceSet
from appliance.storage.routing import group_recipients

if TYPE_CHECKING:
    from appliance.engine.presence.core import Presence

log = logging.getLogger(__name__)


class TypingRelay:
    """Delivers typing states and ends them."""

    def __init__(self, presence: Presence) -> None:
        self._presence = presence
        self.timers = TypingTimers(presence.limits.typing_timeout_s)
        #: (user, target) -> whether a TYPING waiting on the store is still wanted: a
        #: TYPING_STOPPED that arrives meanwhile cancels it (frames keep their order).
        self._waiting: dict[tuple[int, Target], bool] = {}
        self.stats_sent = 0

    def on_typing(self, session: Session, frame: PresenceSet) -> None:
        """A TYPING or TYPING_STOPPED (already within the device's rate)."""
        active = frame.kind == PresenceKind.TYPING
        target: Target = (frame.group_id, frame.peer)
        user = session.user_id
        if not active:
            if (user, target) in self._waiting:
                self._waiting[user, target] = False
            state = self.timers.stop(user, target)
            if state is not None:
                self._tell(state.recipients, state.address, frame.group_id, False)
            return
        presence = self._presence
        if frame.group_id:
            self._waiting[user, target] = True
            presence.scheduler.spawn(self._to_group(session, frame.group_id), name="typing")
            return
        peer = presence.registry.user_at((session.app_id, frame.peer))
        if peer is None or peer == user:
            return  # offline, unknown, or another app's: nobody to tell
        blocks = presence.blocks
        mine, theirs = blocks.known(user), blocks.known(peer)
        if mine is None or theirs is None:
            self._waiting[user, target] = True
            presence.scheduler.spawn(self._to_peer(session, target, peer), name="typing")
            return
        if peer not in mine and user not in theirs:
            self._start(session, target, (peer,))

    async def _to_peer(self, session: Session, target: Target, peer: int) -> None:
        try:
            found = await self._presence.blocks.load((session.user_id, peer))
        except StorageError as exc:
            log.debug("typing dropped, blocks unreadable: %s", exc)
            found = None
        if not self._waiting.pop((session.user_id, target), True) or found is None:
            return  # stopped meanwhile
        if peer not in found[session.user_id] and session.user_id not in found[peer]:
            self._start(session, target, (peer,))

    async def _to_group(self, session: Session, group_id: int) -> None:
        target: Target = (group_id, b"")
        user = session.user_id
        try:
            recipients = await self._members(session, group_id)
        finally:
            wanted = self._waiting.pop((user, target), True)
        if recipients is not None and wanted and not session.closed:
            self._start(session, target, recipients)

    async def _members(self, session: Session, group_id: int) -> tuple[int, ...] | None:
        """The members told of typing in the group: None if the typist may not send to it."""
        presence = self._presence
        user = session.user_id
        try:
            roster = await presence.store.group_roster(session.app_id, group_id)
            members = group_recipients(roster, session.app_id, user)
            if isinstance(members, int):
                return None  # no such group in this app, or not a member who may send
            sessions_of = presence.registry.sessions_of
            online = [m for m in members if m != user
                      and any(s.extensions for s in sessions_of(m))]
            found = await presence.blocks.load((user, *online))
        except StorageError as exc:
            log.debug("typing dropped, store unreadable: %s", exc)
            return None
        mine = found[user]
        return tuple(m for m in online if m not in mine and user not in found[m])

    def _start(self, session: Session, target: Target, recipients: tuple[int, ...]) -> None:
        presence = self._presence
        self.timers.start(session.user_id, target, session.address, recipients,
                          presence.clock.monotonic())
        self._tell(recipients, session.address, target[0], True, session)

    def _tell(self, recipients: tuple[int, ...], address: bytes, group_id: int, active: bool,
              sender: Session | None = None) -> None:
        if not recipients:
            return
        frame = entries.typing_frame(address, group_id, active)
        sessions_of = self._presence.registry.sessions_of
        sent = 0
        for user in recipients:
            for target in sessions_of(user):
                if target.extensions and target is not sender:
                    target.link.write(frame)
                    sent += 1
        self.stats_sent += sent

    def stopped(self, target: Target, state: Typing) -> None:
        """A state ended (expired, or its user went offline): tell its recipients."""
        self._tell(state.recipients, state.address, target[0], False)

    def expire(self, now: float) -> int:
        """End the states whose time passed; how many."""
        ended = self.timers.expired(now)
        for target, state in ended:
            self.stopped(target, state)
        return len(ended)

    def user_gone(self, user: int) -> None:
        """The user's last device left: its typing states end now."""
        for target, state in self.timers.stop_all(user):
            self.stopped(target, state)
