"""Presence (SPEC M6, PROTOCOL.md §8.2): who is online, typing, doing what, seen when.

A user's presence is the union of its devices: it goes ONLINE when its
first device connects (`SessionRegistry.add` says so) and OFFLINE only when
its last one leaves (`SessionRegistry.remove`); a device that leaves and
comes back within one loop turn (a REPLACED reconnect) changes nothing.
Its activity text lives while it is online.  Nothing of this is stored but
its last-seen time, to the minute, written with the group commit when its
last device leaves (once a minute at most): never a store write per
message, frame or connect.

Devices watch users (`subscriptions`); a change fans out to the watching
devices that may see the user (the store decides that when the watch is
made, `storage.routing.presence_visible`, and again whenever the user's
privacy, contacts or blocks change: `users_changed`), through the session
registry, as one PRESENCE frame encoded once.  Typing goes to a peer or a
group's members (`typing_relay`).  Only sessions that set EXTENSIONS ever
get a PRESENCE frame.  Nothing crosses apps: addresses resolve in the
viewer's app.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

from appliance.config.limits import EngineLimits
from appliance.engine.blocks import BlockCache
from appliance.engine.clock import Clock
from appliance.engine.commit import GroupCommit
from appliance.engine.ports import Scheduler
from appliance.engine.presence import entries
from appliance.engine.presence.subscriptions import Subscriptions
from appliance.engine.presence.typing_relay import TypingRelay
from appliance.engine.presence.watchers import LocalWatchIndex, Watched, WatchIndex
from appliance.engine.registry import SessionRegistry
from appliance.engine.session import Session
from appliance.protocol.wire.presence import (
    PresenceEntry,
    PresenceKind,
    PresenceSet,
    PresenceState,
    PresenceSubscribe,
    pack_presence,
)
from appliance.ratelimit import UserRates
from appliance.storage.interface import Storage
from appliance.storage.models import PresenceRecord

log = logging.getLogger(__name__)

_MINUTE_MS = 60_000


class Presence:
    """The engine's presence part."""

    def __init__(self, store: Storage, clock: Clock, limits: EngineLimits, scheduler: Scheduler,
                 registry: SessionRegistry, commit: GroupCommit, blocks: BlockCache,
                 end_session: Callable[[Session, int, str], None],
                 watchers: WatchIndex | None = None) -> None:
        self.store = store
        self.clock = clock
        self.limits = limits
        self.scheduler = scheduler
        self.registry = registry
        self.commit = commit
        self.blocks = blocks
        self.watchers: WatchIndex = watchers if watchers is not None else LocalWatchIndex()
        #: user id -> its activity text, while it is online (never stored).
        self.activity: dict[int, bytes] = {}
        #: Raised by every change of users' settings (`Subscriptions._read`).
        self.changes = 0
        self.subscriptions = Subscriptions(self, end_session)
        self.typing = TypingRelay(self)
        self._sets = UserRates(limits.presence_rate_per_s, limits.presence_burst,
                               limits.max_rate_users)
        #: Users whose last device left in this loop turn: user -> its address.
        self._leaving: dict[int, bytes] = {}
        self._settle_queued = False
        #: user -> the last-seen minute last written (so a minute is written once).
        self._stamped: dict[int, int] = {}
        self.stats_deliveries = 0
        self.stats_snapshots = 0
        self.stats_dropped_sets = 0

    # --- devices come and go ----------------------------------------------------------

    def online(self, session: Session) -> None:
        """`session` is its user's first connected device."""
        user = session.user_id
        if self._leaving.pop(user, None) is not None:
            return  # it left and came back in one loop turn: nobody noticed
        self._fan_out(user, entries.online(session.address))

    def detached(self, session: Session, last: bool) -> None:
        """`session` is gone; `last`: it was its user's last connected device."""
        device = session.device_rowid
        self.subscriptions.device_gone(device)
        self.watchers.drop_device(device)
        if last:
            self._leaving[session.user_id] = session.address
            if not self._settle_queued:
                self._settle_queued = True
                self.scheduler.soon(self._settle)

    def _settle(self) -> None:
        """The users whose last device left this turn and did not come back are offline."""
        self._settle_queued = False
        leaving, self._leaving = self._leaving, {}
        for user, address in leaving.items():
            if self.registry.sessions_of(user):
                continue
            self.activity.pop(user, None)
            self.typing.user_gone(user)
            self._fan_out(user, entries.offline(address, self._stamp(user)))

    def stopping(self) -> None:
        """The server stops: every user online now was last seen now (written by the
        commit the shutdown drains)."""
        for user in self.registry.users():
            self._stamp(user)

    def _stamp(self, user: int) -> int:
        """Write the user's last-seen minute with the next group commit, once per minute."""
        now = self.clock.wall_ms()
        minute = now - now % _MINUTE_MS
        if self._stamped.get(user) != minute:
            if len(self._stamped) >= self.limits.max_rate_users:
                self._stamped.clear()
            self._stamped[user] = minute
            self.commit.batch.last_seen[user] = minute
            self.commit.queue_flush()
        return minute

    # --- frames from a device -----------------------------------------------------------

    def on_set(self, session: Session, frame: PresenceSet) -> None:
        """A PRESENCE_SET: typing, typing stopped, or the user's activity text."""
        if not self._sets.take(session.device_rowid, self.clock.monotonic()):
            self.stats_dropped_sets += 1  # above the device's rate: dropped, never queued
            return
        if frame.kind == PresenceKind.ACTIVITY:
            self._set_activity(session, frame.activity)
        else:
            self.typing.on_typing(session, frame)

    def on_subscribe(self, session: Session, frame: PresenceSubscribe) -> None:
        """A PRESENCE_SUBSCRIBE (`Subscriptions`)."""
        self.subscriptions.on_subscribe(session, frame)

    def _set_activity(self, session: Session, activity: bytes) -> None:
        user = session.user_id
        if activity:
            if self.activity.get(user) == activity:
                return
            self.activity[user] = activity
        elif self.activity.pop(user, None) is None:
            return
        self._fan_out(user, entries.online(session.address, activity))

    def resume(self, session: Session) -> None:
        """Read from `session` again once its subscriptions are served, unless the
        engine's own backpressure holds it (its commits, its relays)."""
        limits = self.limits
        if (not session.closed and session.unconfirmed < limits.max_unconfirmed
                and session.relays < limits.max_pending_relays):
            session.link.resume_reading()

    # --- what watchers see -------------------------------------------------------------

    def _fan_out(self, user: int, entry: bytes) -> int:
        """Send `entry` (of `user`) to every device that watches it and may see it."""
        watched = self.watchers.watched(user)
        if watched is None:
            return 0
        frame = pack_presence((entry,))
        session_of = self.registry.session_of_device
        sent = 0
        # A snapshot: a write may close a slow consumer, whose watches then go.
        for device, visible in list(watched.devices.items()):
            if visible:
                target = session_of(device)
                if target is not None and target.extensions:
                    target.link.write(frame)
                    sent += 1
        self.stats_deliveries += sent
        return sent

    def entry_of(self, record: PresenceRecord) -> bytes:
        """The entry a viewer gets for a user (`record` says whether it may see it)."""
        return self._entry(record.address, record).encode()

    def _entry(self, address: bytes, record: PresenceRecord | None) -> PresenceEntry:
        if record is None or not record.visible:
            return PresenceEntry(address, PresenceState.UNKNOWN)
        if self.registry.sessions_of(record.user_id):
            return PresenceEntry(address, PresenceState.ONLINE,
                                 activity=self.activity.get(record.user_id, b""))
        return PresenceEntry(address, PresenceState.OFFLINE, last_seen_ms=record.last_seen_ms)

    async def lookup(self, app_id: int, viewer_id: int | None, address: bytes
                     ) -> PresenceEntry:
        """A user's presence as `viewer_id` may see it (None: the app, which sees all).

        Raises:
            StorageError: the store cannot be read.
        """
        (record,) = await self.store.presence_of(app_id, viewer_id, [address])
        return self._entry(address, record)

    async def users_changed(self, user_ids: Collection[int]) -> None:
        """These users' privacy, contacts or blocks changed (or they were renamed, deleted,
        revoked): whoever watches them sees what it may now see.

        Raises:
            StorageError: the store cannot be read.
        """
        self.changes += 1
        self.blocks.forget(user_ids)
        for user in user_ids:
            watched = self.watchers.watched(user)
            if watched is None:
                continue
            if await self.store.user_address(user) != watched.address:
                self._unwatch_everywhere(user, watched)
            else:
                await self._recheck(user)

    def _unwatch_everywhere(self, user: int, watched: Watched) -> None:
        """`user` was renamed or deleted: its watches end, each watcher told UNKNOWN.

        A watch follows a user id shown under the address it was made with;
        kept, a renamed user went on being shown under its old address (a
        watcher of "alice" saw "alicia" come and go, and a later "alice" could
        not be told apart).  A watcher that wants the address's new owner
        subscribes again, and that owner's privacy decides then.
        """
        hidden = entries.unknown(watched.address)
        session_of = self.registry.session_of_device
        for device, visible in list(watched.devices.items()):
            self.watchers.unwatch(device, user)
            session = session_of(device)
            if visible and session is not None:
                entries.send(session, (hidden,), self.limits.max_frame_bytes)

    async def _recheck(self, user: int) -> None:
        session_of = self.registry.session_of_device
        watched = self.watchers.watched(user)
        assert watched is not None
        viewers = {}
        app_id = 0
        for device in watched.devices:
            session = session_of(device)
            if session is not None:
                viewers[device] = session.user_id
                app_id = session.app_id  # a watch never crosses apps: the user's app
        allowed = await self.store.presence_viewers(user, set(viewers.values()))
        watched = self.watchers.watched(user)
        if watched is None:
            return
        flipped = {device: viewer in allowed for device, viewer in viewers.items()
                   if watched.devices.get(device, viewer in allowed) != (viewer in allowed)}
        if not flipped:
            return
        self.watchers.set_visible(user, flipped)
        shown = (await self._current(app_id, user, watched.address)
                 if any(flipped.values()) else b"")
        hidden = entries.unknown(watched.address)
        for device, visible in flipped.items():
            session = session_of(device)
            if session is not None:
                entries.send(session, (shown if visible else hidden,),
                             self.limits.max_frame_bytes)

    async def _current(self, app_id: int, user: int, address: bytes) -> bytes:
        """The user's entry for a viewer that may see it."""
        if not self.registry.sessions_of(user):
            (record,) = await self.store.presence_of(app_id, None, [address])
            if record is None or record.user_id != user:
                return entries.unknown(address)  # deleted, or renamed meanwhile
            if not self.registry.sessions_of(user):
                return entries.offline(address, record.last_seen_ms)
        return entries.online(address, self.activity.get(user, b""))

    # --- the timer --------------------------------------------------------------------

    def expire(self, now: float) -> int:
        """End the typing states whose time passed by `now` (monotonic); how many."""
        return self.typing.expire(now)

    async def run(self) -> None:
        """End typing states as their time passes, until cancelled (one task per server)."""
        clock = self.clock
        while True:
            now = clock.monotonic()
            self.expire(now)
            due = self.typing.timers.next_deadline()
            wait = self.limits.typing_timeout_s if due is None else due - now
            await self.scheduler.sleep(max(wait, 0.01))

    def set_limits(self, limits: EngineLimits) -> None:
        """The configuration changed (a reload)."""
        self.limits = limits
        self.typing.timers.timeout_s = limits.typing_timeout_s

    def handlers(self) -> dict[type, Callable[[Session, Any], None]]:
        """The extension frames this part takes: frame class -> handler."""
        return {PresenceSet: self.on_set, PresenceSubscribe: self.on_subscribe}
