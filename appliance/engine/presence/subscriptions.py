"""PRESENCE_SUBSCRIBE: a device watches users and gets their state at once (PROTOCOL.md §8.2).

An ADD resolves its addresses in the subscriber's app (one store read for up
to 1000 of them: `PresenceStore.presence_of`), which also says whether the
subscriber may see each user; the answer is every address's state, in as
few PRESENCE frames as fit.  A REMOVE needs no store read.

Bounded, against a hostile client:
* at most ``limits.max_presence_subscriptions`` users per device (announced
  in WELCOME): a device that asks for more is closed with PROTOCOL_ERROR;
* one device's frames are served in order, one at a time, and the device is
  not read from while any wait (the queue holds what one read brought);
* the addresses one device has resolved are rate-limited (twice its quota
  at once, then a tenth of it per second): a client that subscribes and
  unsubscribes in a loop waits, it does not keep the store busy.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from appliance.engine.presence import entries
from appliance.engine.session import Session
from appliance.errors import StorageError
from appliance.protocol.wire import CloseCode
from appliance.protocol.wire.presence import PresenceSubscribe, SubscribeOp
from appliance.ratelimit import UserRates
from appliance.storage.models import PresenceRecord

if TYPE_CHECKING:
    from appliance.engine.presence.core import Presence

log = logging.getLogger(__name__)

#: Reads of one ADD tried again when settings changed while they ran.
_ATTEMPTS = 3


class Subscriptions:
    """Serves PRESENCE_SUBSCRIBE frames, device by device."""

    def __init__(self, presence: Presence,
                 end_session: Callable[[Session, int, str], None]) -> None:
        self._presence = presence
        self._end_session = end_session
        #: device row id -> frames waiting (the device is not read from meanwhile).
        self._queues: dict[int, deque[PresenceSubscribe]] = {}
        quota = presence.limits.max_presence_subscriptions
        self._lookups = UserRates(quota / 10, 2 * quota, presence.limits.max_rate_users)

    def on_subscribe(self, session: Session, frame: PresenceSubscribe) -> None:
        """A PRESENCE_SUBSCRIBE from `session`."""
        if not session.extensions or session.closed:
            return  # it could never be answered: PRESENCE goes to EXTENSIONS clients only
        device = session.device_rowid
        queue = self._queues.get(device)
        if queue is not None:
            queue.append(frame)
            return
        if frame.op == SubscribeOp.REMOVE:
            self._remove(device, frame.addresses)
            return
        self._queues[device] = queue = deque((frame,))
        session.link.pause_reading()
        self._presence.scheduler.spawn(self._serve(session, queue), name="presence-subscribe")

    def device_gone(self, device: int) -> None:
        """The device disconnected: what it asked for and did not get is dropped."""
        self._queues.pop(device, None)

    async def _serve(self, session: Session, queue: deque[PresenceSubscribe]) -> None:
        device = session.device_rowid
        try:
            while queue and not session.closed:
                frame = queue.popleft()
                if frame.op == SubscribeOp.REMOVE:
                    self._remove(device, frame.addresses)
                elif not await self._add(session, frame.addresses):
                    return
        except StorageError as exc:
            # Nothing is answered for what was not read: the client's next
            # reconnect subscribes again.
            log.warning("presence subscriptions of a device not served: %s", exc)
        finally:
            if self._queues.get(device) is queue:
                del self._queues[device]
            self._presence.resume(session)

    async def _add(self, session: Session, addresses: Sequence[bytes]) -> bool:
        """Watch the users at `addresses` and send their state; False: session ended."""
        presence = self._presence
        watchers = presence.watchers
        device = session.device_rowid
        wanted = list(dict.fromkeys(addresses))
        await self._throttle(device, len(wanted))
        records = await self._read(session, wanted)
        if session.closed:
            return False
        # Users count, not addresses: one that names nobody is answered, not watched.
        watching = watchers.watching(device)
        new = {r.user_id for r in records if r is not None and r.user_id not in watching}
        quota = presence.limits.max_presence_subscriptions
        if len(watching) + len(new) > quota:
            self._end_session(session, CloseCode.PROTOCOL_ERROR,
                              f"more than {quota} presence subscriptions")
            return False
        shown = []
        for address, record in zip(wanted, records, strict=True):
            if record is None:
                shown.append(entries.unknown(address))
                continue
            watchers.watch(device, record.user_id, record.address, record.visible)
            shown.append(presence.entry_of(record))
        presence.stats_snapshots += entries.send(session, shown, presence.limits.max_frame_bytes)
        return True

    async def _read(self, session: Session, wanted: list[bytes]) -> list[PresenceRecord | None]:
        """The store's records, read again if a user's settings changed meanwhile (the
        re-check of that change could not see this watch yet)."""
        presence = self._presence
        attempt = 1
        while True:
            changes = presence.changes
            records = await presence.store.presence_of(session.app_id, session.user_id, wanted)
            if changes == presence.changes or attempt == _ATTEMPTS:
                return records
            attempt += 1

    async def _throttle(self, device: int, count: int) -> None:
        """Wait until `device` may resolve `count` more addresses."""
        presence = self._presence
        rates = self._lookups
        while True:
            count -= rates.take_up_to(device, presence.clock.monotonic(), count)
            if count <= 0:
                return
            await presence.scheduler.sleep(count / rates.rate)

    def _remove(self, device: int, addresses: Sequence[bytes]) -> None:
        watchers = self._presence.watchers
        by_address: dict[bytes, int] = {}
        for user in list(watchers.watching(device)):
            watched = watchers.watched(user)
            if watched is not None:
                by_address[watched.address] = user
        for address in addresses:
            found = by_address.get(address)
            if found is not None:
                watchers.unwatch(device, found)
