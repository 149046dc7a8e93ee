"""Delivery of stored messages: fan-out after a commit, paging of queues, receipts.

Flow of a reliable message (expiry > 0, not TRANSIENT):

1. `Engine.on_message` validates it and `GroupCommit` batches it.
2. After COMMIT returned (`committed`): the sender gets SENT, and each
   target device that is connected gets the message cut-through
   (`_fan_out`).  Devices that are not connected get it from the store
   when they reconnect (`drain`), in priority order, a window at a time.
3. A device's ACK deletes its delivery row in the next batch; the store
   turns the first delivery into a DELIVERED receipt, which is pushed to
   the sender's connected devices after its own commit (`push_receipts`)
   and kept until each of them confirms it with REPORT_ACK
   (`drain_receipts` sends the ones a device has not confirmed).
"""

from __future__ import annotations

import logging

from appliance.config.limits import EngineLimits
from appliance.engine.answers import Answers
from appliance.engine.clock import Clock
from appliance.engine.figures import EngineFigures
from appliance.engine.ports import Scheduler
from appliance.engine.registry import SessionRegistry
from appliance.engine.relay import Relay
from appliance.engine.session import Session
from appliance.errors import StorageError
from appliance.protocol.wire import Flag, Message, Status
from appliance.protocol.wire.frames import pack_message
from appliance.storage.interface import Storage
from appliance.storage.models import Accepted, Outcome, Pending, Receipt, WriteResult

log = logging.getLogger(__name__)

_OUTGOING = Flag.OUTGOING_COPY
_SENT = int(Status.SENT)
_STORED = Outcome.STORED
_RELAY = Outcome.RELAY
#: Reports only clients with `HelloFlag.EXTENSIONS` are sent (PROTOCOL.md §8.4).
_AGGREGATE = frozenset((int(Status.DELIVERED_ALL), int(Status.READ_ALL)))
#: Stored reports read per query while a device catches up.
_RECEIPTS_PER_READ = 1000


def _gone(session: Session) -> bool:
    # A function, not an attribute test, so that type checkers do not assume
    # the flag is unchanged across an await.
    return session.closed


class Delivery:
    """Sends what the store holds to the devices that should have it."""

    def __init__(self, store: Storage, clock: Clock, limits: EngineLimits, scheduler: Scheduler,
                 registry: SessionRegistry, figures: EngineFigures, answers: Answers) -> None:
        self.store = store
        self.clock = clock
        self.limits = limits
        self.scheduler = scheduler
        self.registry = registry
        self.figures = figures
        self._answer = answers.answer
        #: Refusals by reason, for the operator's statistics (the engine's).
        self.refusals: dict[str, int] | None = None
        #: A write or a queue read failed since the last successful commit: a
        #: failed COMMIT may still have landed (the connection broke after the
        #: server committed), and a failed read left a queue unsent.  The next
        #: successful commit re-reads every online device's queue (`recovered`).
        self.unsure = False
        #: Counts the commits that pushed stored messages or reports to online
        #: devices: only those can miss a device whose HELLO is being read.
        self.fanouts = 0
        #: Set by the engine: relays what the store would not keep (`Outcome.RELAY`).
        self.relay: Relay

    # --- after a commit ------------------------------------------------------------

    def committed(self, senders: list[tuple[Session, Message]], result: WriteResult) -> None:
        """A batch landed: answer its senders, push its messages and receipts."""
        now = self.clock.wall_ms()
        stored = False
        answer = self._answer
        for (session, m), acc in zip(senders, result.accepted, strict=True):
            if acc.outcome is _STORED:
                stored = True
                answer(session, m.id, _SENT, acc.timestamp_ms)
                self._fan_out(session, m, acc, now)
            elif acc.outcome is _RELAY:  # a NO_STORE group: real-time, its members' ids
                self.relay.relay_committed(session, m, acc.targets, now)
            else:
                if acc.status == Status.INBOX_FULL and self.refusals is not None:
                    self.refusals["inbox_full"] += 1
                answer(session, m.id, acc.status, acc.timestamp_ms)
        if stored or result.receipts:
            self.fanouts += 1
        if result.receipts:
            self.push_receipts(result.receipts)
        if self.unsure:
            self.recovered()

    def _fan_out(self, sender: Session, m: Message, acc: Accepted, now: int) -> None:
        session_of_device = self.registry.session_of_device
        window = self.limits.window
        incoming = outgoing = b""
        expires = acc.timestamp_ms + m.expiry_s * 1000 if m.expiry_s else now
        for device in acc.targets:
            target = session_of_device(device)
            if target is None:
                continue
            if target.backlog or len(target.inflight) >= window:
                target.backlog = True
                target.skipped += 1
                continue
            if acc.seq in target.inflight or acc.seq in target.acked:
                # A backlog read on the reader thread can see a commit before
                # its result reaches this loop: it was sent from the store.
                continue
            # One encoding per message, written to every target (`Link.write`'s
            # fast path): its own copy for the sender's other devices.
            if target.user_id == sender.user_id and device != sender.device_rowid \
                    and (m.group_id or m.peer != sender.address):
                if not outgoing:
                    outgoing = self._frame(m, acc, m.peer, m.flags | _OUTGOING, expires, now)
                target.link.write(outgoing)
            else:
                if not incoming:
                    incoming = self._frame(m, acc, sender.address, m.flags, expires, now)
                target.link.write(incoming)
            target.inflight[acc.seq] = m.priority & 15

    @staticmethod
    def _frame(m: Message, acc: Accepted, peer: bytes, flags: int, expires: int,
               now: int) -> bytes:
        remaining = max(1, (expires - now + 999) // 1000)
        return pack_message(m.id, peer, m.payload, m.group_id, m.refid, acc.seq,
                            acc.timestamp_ms, remaining, m.type, flags, m.priority & 15)

    def push_receipts(self, receipts: list[Receipt]) -> None:
        """Send stored reports to their user's connected devices (each confirms them)."""
        reported = self.figures.reported
        sessions_of = self.registry.sessions_of
        for r in receipts:
            reported[r.status & 0xFF] += 1
            # DELIVERED_ALL and READ_ALL only to clients that asked for extensions: an
            # older one's REPORT_ACK, cumulative, passes them by (PROTOCOL.md §8.4).
            extended = r.group_id and r.status in _AGGREGATE
            for target in sessions_of(r.user_id):
                if target.report_backlog:
                    target.report_skipped += 1
                    continue
                if extended and not target.extensions:
                    continue
                target.link.status(r.msg_id, r.status, r.timestamp_ms, r.report_seq,
                                   r.group_id, r.peer)

    def recovered(self) -> None:
        """The store commits again: send every online device what it may have missed.

        What a failed commit stored after all, and what a failed queue read
        left behind, is in the store but was pushed to nobody (SPEC M4:
        delivery resumes by itself when the database returns).
        """
        self.unsure = False
        self.fanouts += 1
        sessions = self.registry.sessions()
        log.info("store is back: re-reading the queues of %d online devices", len(sessions))
        for session in sessions:
            session.backlog = True
            session.skipped += 1
            if not session.draining:
                self.scheduler.spawn(self.drain(session), name="drain-messages")
            session.report_backlog = True
            session.report_skipped += 1
            self.scheduler.spawn(self.drain_receipts(session), name="drain-receipts")

    # --- store and forward -------------------------------------------------------------

    async def drain(self, session: Session) -> None:
        """Send the next page of a device's stored queue (priority, then age)."""
        if session.draining:
            return
        session.draining = True
        try:
            await self._drain_pages(session)
        finally:
            session.draining = False

    async def _drain_pages(self, session: Session) -> None:
        while not session.closed:
            room = self.limits.window - len(session.inflight)
            if room <= 0:
                return  # resumed by on_ack once the device has caught up
            skipped = session.skipped
            now = self.clock.wall_ms()
            try:
                rows = await self.store.pending(session.device_rowid, session.user_id, now, room,
                                                frozenset(session.inflight).union(session.acked))
            except StorageError as exc:
                log.warning("cannot read queue of %r: %s", session, exc)
                self.figures.store_errors["read"] += 1
                self.unsure = True  # re-read once the store commits again
                return
            if _gone(session):  # it may have closed while we waited
                return
            self._send_pending(session, rows, self.clock.wall_ms())
            if len(rows) >= room:
                return  # full page: more waits; on_ack asks for it
            if session.skipped == skipped:
                session.backlog = False
                return

    @staticmethod
    def _send_pending(session: Session, rows: list[Pending], now: int) -> None:
        # Encoded per device (each has its own page), so through the typed call:
        # the Message costs ~1 us per row, next to a store read per page.
        inflight = session.inflight
        acked = session.acked
        deliver = session.link.deliver
        for p in rows:
            if p.seq in inflight or p.seq in acked or p.expires_ms <= now:
                continue  # checked at every delivery attempt (SPEC M4)
            deliver(Message(p.msg_id, p.peer, p.payload, group_id=p.group_id, refid=p.refid,
                            seq=p.seq, timestamp_ms=p.timestamp_ms,
                            expiry_s=max(1, (p.expires_ms - now + 999) // 1000), type=p.type,
                            flags=p.flags | _OUTGOING if p.outgoing else p.flags,
                            priority=p.priority))
            inflight[p.seq] = p.priority

    async def drain_receipts(self, session: Session) -> None:
        """Send the stored status reports the device has not confirmed.

        Never one it confirmed (PROTOCOL.md §3.7), whatever commits meanwhile:
        the read also compares with the device's cursor as stored when it runs
        (the session's may come from a HELLO read older than the commit of
        the device's last REPORT_ACK), and a row the device confirmed while
        the read was in flight (`Engine.on_report_ack`) is not sent.
        """
        cursor = session.report_cursor
        while not session.closed:
            skipped = session.report_skipped
            cursor = max(cursor, session.report_cursor)
            try:
                rows = await self.store.pending_receipts(session.user_id, cursor,
                                                         _RECEIPTS_PER_READ,
                                                         session.device_rowid)
            except StorageError as exc:
                log.warning("cannot read receipts of %r: %s", session, exc)
                self.figures.store_errors["read"] += 1
                self.unsure = True
                return
            if _gone(session):
                return
            status = session.link.status
            extensions = session.extensions
            confirmed = session.report_cursor
            for r in rows:
                if r.report_seq > confirmed and (extensions or r.status not in _AGGREGATE):
                    status(r.msg_id, r.status, r.timestamp_ms, r.report_seq, r.group_id, r.peer)
                cursor = r.report_seq
            if len(rows) < _RECEIPTS_PER_READ and session.report_skipped == skipped:
                session.report_backlog = False
                return
