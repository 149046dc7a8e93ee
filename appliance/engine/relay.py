"""Real-time messages (expiry 0 or TRANSIENT): to the devices online now, never stored.

A 1:1 message to an online user is written at once, in the caller's turn
(`relay_online`: no task, no store).  Anything that needs the store (a
group's members, whether an offline address exists, a recipient's blocks
not cached yet) runs as a task; while ``limits.max_pending_relays`` of one
sender's wait on it, the sender is not read from (a flood once held 763 MiB
of payloads, issue 12).

Blocks (issue 16) decide as the writer does (`storage.routing`): a 1:1
message to a user who blocks its sender is answered BLOCKED; a group message
skips the members who block its sender.  Each check is a lookup in the
engine's `BlockCache`, never a store read per message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from appliance.config.limits import EngineLimits
from appliance.engine.answers import Answers
from appliance.engine.blocks import BlockCache
from appliance.engine.clock import Clock
from appliance.engine.fanout import GroupFanout
from appliance.engine.ports import Scheduler
from appliance.engine.registry import SessionRegistry
from appliance.engine.session import Session
from appliance.errors import StorageError
from appliance.protocol.wire import Flag, Message, Status
from appliance.protocol.wire.frames import pack_message
from appliance.storage.interface import Storage
from appliance.storage.routing import group_recipients, peer_recipients

_TRANSIENT = Flag.TRANSIENT
_SYSTEM = Flag.SYSTEM
_SENT = int(Status.SENT)
_OFFLINE = int(Status.USER_OFFLINE)
_BLOCKED = int(Status.BLOCKED)
_FAILED = int(Status.FAILED)
_RATE_LIMITED = int(Status.RATE_LIMITED)

log = logging.getLogger(__name__)


class Relay:
    """Delivers real-time messages to connected devices."""

    def __init__(self, store: Storage, clock: Clock, limits: EngineLimits, scheduler: Scheduler,
                 registry: SessionRegistry, answers: Answers, blocks: BlockCache,
                 fanout: GroupFanout) -> None:
        self.store = store
        self._fanout = fanout
        self.clock = clock
        self.limits = limits
        self.scheduler = scheduler
        self.registry = registry
        self._answer = answers.answer
        self._blocks = blocks
        self._blocks_of = blocks.known
        #: Refusals by reason (`Engine.refusals`, set by the engine).
        self.refusals: dict[str, int] | None = None
        self._user_at = registry.user_at
        self._sessions_of = registry.sessions_of
        self._wall_ms = clock.wall_ms

    def relay(self, session: Session, m: Message) -> None:
        """Relay `m` (validated by the engine) from `session`."""
        # Hot path of a 1:1 real-time message to an online user: no task, no store,
        # written inline (one call less than a helper: ~5 % of a transient message).
        if not m.group_id:
            user = self._user_at((session.app_id, m.peer))
            if user is not None:
                blocked = self._blocks_of(user)
                if blocked is not None:  # else its blocks are read first, off this path
                    if session.user_id in blocked:
                        self._answer(session, m.id, _BLOCKED)
                    else:
                        self.relay_to(session, m, (user,), self._wall_ms())
                    return
        session.relays += 1
        if session.relays >= self.limits.max_pending_relays:
            # `>=`, not `==`: another resume (commits, ACK budget) may
            # let one more in; it pauses again here.
            session.link.pause_reading()
        self.scheduler.spawn(self._relay(session, m), name="relay")

    async def _relay(self, session: Session, m: Message) -> None:
        try:
            await self._relay_looked_up(session, m)
        except StorageError as exc:
            # Answered, as a failed commit is (SPEC M4: an honest FAILED): a
            # sender left without an answer waits for it forever, and the
            # REST sender's budget of unanswered messages never comes back.
            # Debug only: a sender's every message would log a line while the
            # store is down (its commits' failures say so once per batch).
            log.debug("real-time message %d not relayed: %s", m.id, exc)
            self._answer(session, m.id, _FAILED)
        finally:
            session.relays -= 1
            if (session.relays == self.limits.max_pending_relays // 2 and not session.closed
                    and session.unconfirmed < self.limits.max_unconfirmed):
                session.link.resume_reading()

    async def _relay_looked_up(self, session: Session, m: Message) -> None:
        now = self.clock.wall_ms()
        if m.group_id:
            roster = await self.store.group_roster(session.app_id, m.group_id)
            # The writer decides stored group messages by the same rule.
            users = group_recipients(roster, session.app_id, session.user_id)
            if isinstance(users, int):
                self._answer(session, m.id, users)
                return
            # Of the members online, those who block the sender are skipped.
            online = [u for u in users if self.registry.sessions_of(u)]
            found = await self._blocks.load(online)
            sender = session.user_id
            users = [u for u in online if sender not in found[u]]
        else:
            user = self.registry.user_at((session.app_id, m.peer))
            offline = user is None
            if user is None:
                user = await self.store.find_user(session.app_id, m.peer)
            blocked = user is not None and session.user_id in (
                await self._blocks.load((user,)))[user]
            users = peer_recipients(user, blocked)
            if isinstance(users, int) or offline:
                # INVALID_DEST, BLOCKED, or a user with no device online.
                self._answer(session, m.id, users if isinstance(users, int) else _OFFLINE)
                return
        if m.group_id:
            self._relay_paid(session, m, users, now)
            return
        # `relay_to` answers USER_OFFLINE if the devices left while we read.
        self.relay_to(session, m, users, now)

    def _relay_paid(self, session: Session, m: Message, users: list[int], now: int) -> None:
        """Relay group message `m` once its devices online are paid for, else answer
        RATE_LIMITED (`appliance.engine.fanout`).  `Engine.on_message` charged 1: the
        rest is taken before the relay, as a stored message's is before its commit
        (`GroupCommit._paid`).  Charged after the relay, every lookup already waiting
        (`max_pending_relays` per device) was relayed unpaid: 60 messages to 50
        members online made 3,000 frames with a burst of 500."""
        fanout, sessions_of = self._fanout, self._sessions_of
        cost = sum(len(sessions_of(user)) for user in users)  # the sender's own: settled
        if cost > 1 and not fanout.take(session.user_id, self.clock.monotonic(), cost - 1):
            fanout.settle(session.user_id, self.clock.monotonic(), 1, 0)
            if self.refusals is not None:
                self.refusals["fanout_limited"] += 1
            self._answer(session, m.id, _RATE_LIMITED, now)
            return
        delivered = self.relay_to(session, m, users, now)
        fanout.settle(session.user_id, self.clock.monotonic(), max(cost, 1), delivered)

    def relay_committed(self, session: Session, m: Message, users: tuple[int, ...],
                        now: int) -> None:
        """Relay a NO_STORE group's message after its commit, which charged it a delivery
        per member (`BatchCharges`); the relay writes one per device online: the
        rest is charged here (a member online on 4 devices cost 1: up to
        ``max_devices`` times the fan-out rate).  Members offline are not refunded:
        the commit routed to them.  Announcements are exempt."""
        delivered = self.relay_to(session, m, users, now)
        if delivered > len(users) and not m.flags & _SYSTEM:
            self._fanout.settle(session.user_id, self.clock.monotonic(), len(users), delivered)

    def relay_to(self, session: Session, m: Message, users: Iterable[int], now: int) -> int:
        """Write `m` to every connected device of `users` but `session`'s; answer the sender
        SENT if one got it, else USER_OFFLINE (also for a NO_STORE group's, `Delivery`);
        how many devices got it."""
        frame = pack_message(m.id, session.address, m.payload, m.group_id, m.refid, 0, now, 0,
                             m.type, m.flags | _TRANSIENT, m.priority & 15)
        delivered = 0
        sessions_of = self._sessions_of
        for user in users:
            for target in sessions_of(user):
                if target is not session:
                    target.link.write(frame)
                    delivered += 1
        self._answer(session, m.id, _SENT if delivered else _OFFLINE, now)
        return delivered
