"""Group commit: what devices send is batched, paced and committed together.

Everything that arrives while a commit runs goes into the next one (SPEC M4:
a message is SENT only after its COMMIT returned).  A commit costs the store
~0.3-0.5 ms of CPU whatever its size, so a small batch waits up to
``limits.commit_window_ms`` after the previous commit (`_pace`).  A batch
that fails is answered FAILED; its acknowledgements, reads and report
confirmations (idempotent) are retried with the next batch, after a pause
while the store keeps failing.

Senders are paused while ``limits.max_unconfirmed`` of their messages wait
for a commit, and resumed when half of them are answered (backpressure: TCP
then pushes back on the client).
"""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING

from appliance.config.limits import EngineLimits
from appliance.engine.answers import Answers
from appliance.engine.clock import Clock
from appliance.engine.fanout import BatchCharges
from appliance.engine.figures import EngineFigures
from appliance.engine.ports import Pending, Scheduler
from appliance.engine.quotas import Quotas
from appliance.engine.session import Session
from appliance.errors import StorageError
from appliance.protocol.wire import Flag, Message, Status
from appliance.storage.interface import Storage
from appliance.storage.models import NewMessage, WriteBatch

if TYPE_CHECKING:
    from appliance.engine.delivery import Delivery

log = logging.getLogger(__name__)

_FAILED = int(Status.FAILED)
_RATE_LIMITED = int(Status.RATE_LIMITED)
_SYSTEM = Flag.SYSTEM
#: Seconds between two attempts to commit the acknowledgements, reads and report
#: confirmations of a failed batch while the store fails (PROTOCOL.md §6.1).
RETRY_PAUSE_S = 0.5


class GroupCommit:
    """The open batch, the commit in progress, and what waits on either."""

    def __init__(self, store: Storage, clock: Clock, limits: EngineLimits, scheduler: Scheduler,
                 quotas: Quotas, figures: EngineFigures, answers: Answers,
                 refusals: collections.Counter[str]) -> None:
        self.store = store
        self.refusals = refusals
        self.clock = clock
        self.limits = limits
        self.scheduler = scheduler
        self.quotas = quotas
        self.figures = figures
        self._answer = answers.answer
        #: Set by the engine once delivery exists (it needs this object too).
        self.delivery: Delivery
        #: The open batch: what the next commit writes.  Replaced at every commit,
        #: so callers look it up each time (never keep a reference).
        self.batch = WriteBatch()
        self._senders: list[tuple[Session, Message]] = []
        #: Messages of submissions (`Engine.submit`: device_rowid 0) in the open batch.
        self._submitted = 0
        #: What each group message waiting for a commit was charged, settled after it.
        self._charges = BatchCharges(quotas.fanout)
        self._fanout = quotas.fanout
        self._flushing = False
        self._flush_queued = False
        #: Messages in the batch being committed (the open batch's are `len(self._senders)`).
        self.committing = 0
        #: Counts group commits, so a HELLO can tell whether one landed while
        #: it was reading (see `Engine.open_session`).
        self.commits = 0
        #: Commits begun and ended (or failed): what `drain` waits for.
        self._began = self._ended = 0
        #: `drain` waits on it: woken at the end of every commit.
        self._drained: Pending[None] | None = None
        self.stats_failed_batches = 0
        self.store_failing = False
        #: device -> handles it acknowledged whose deletion is not committed yet,
        #: and -> the report_seq it confirmed, not committed yet: a device that
        #: reconnects before the commit must not get those again.
        self.acking: dict[int, set[int]] = {}
        self.reporting: dict[int, int] = {}
        self._last_commit = -1e9

    # --- what enters the batch ------------------------------------------------

    def add_message(self, session: Session, m: Message, new: NewMessage, cost: int = 0
                    ) -> None:
        """A reliable message for the next commit; its sender hears SENT after it.
        `cost`: the deliveries a group message was charged for (`GroupFanout`)."""
        self.batch.messages.append(new)
        self._senders.append((session, m))
        if not session.device_rowid:
            self._submitted += 1
        if new.group_id:  # an announcement's cost is 0: it is learnt from, not paid
            self._charges.add(m, cost)
        session.unconfirmed += 1
        if session.unconfirmed == self.limits.max_unconfirmed:
            session.link.pause_reading()
        self.queue_flush()

    @property
    def uncommitted(self) -> int:
        """Messages accepted and not committed yet (the open batch and the one committing)."""
        return len(self._senders) + self.committing

    def queue_flush(self) -> None:
        """Commit the open batch once this loop turn's frames are in it."""
        if not self._flush_queued and not self._flushing:
            self._flush_queued = True
            self.scheduler.soon(self._start_flush)

    def _start_flush(self) -> None:
        self._flush_queued = False
        if not self._flushing and len(self.batch):
            self._flushing = True
            self.scheduler.spawn(self._flush(), name="group-commit")

    # --- the commit ---------------------------------------------------------------

    async def _flush(self) -> None:
        try:
            while len(self.batch):
                await self._pace()
                batch, senders = self.batch, self._senders
                self.batch, self._senders = WriteBatch(), []
                charges = self._charges
                if self._submitted > self.limits.commit_max_submitted or charges:
                    self._hold_back(batch, senders)
                else:
                    self._submitted = 0
                charged = charges.take(senders) if charges else None
                self.committing = len(senders)
                self._began += 1
                batch.quota = self.quotas.queue
                paused = self.quotas.ids.batch_taken()
                try:
                    result = await self.store.write(batch, self.clock.wall_ms())
                except Exception as exc:  # see below
                    # What is retried waits for `_retry_later`; looping here
                    # would spin on a store that keeps failing.  Not only a
                    # StorageError: whatever a bug below raises fails this batch
                    # (answered FAILED), never every sender in it for good.
                    if not isinstance(exc, StorageError):
                        log.exception("group commit failed unexpectedly")
                        exc = StorageError(f"{type(exc).__name__}: {exc}")
                    self.committing = 0
                    self._commit_ended()
                    if charged:
                        charges.settle(senders, charged, None, self.clock.monotonic())
                    self._failed(senders, batch, exc)
                    self._resume(paused)
                    return
                # One observation per batch (`_pace` stamped its start), none per message.
                self.figures.commit_seconds.observe(self.clock.monotonic() - self._last_commit)
                self.committing = 0
                self._commit_ended()
                self._resume(paused)
                self.commits += 1
                self._acks_committed(batch)
                for session, _ in senders:
                    self.confirmed(session)
                if charged:
                    charges.settle(senders, charged, result, self.clock.monotonic())
                self.delivery.committed(senders, result)
        finally:
            self._flushing = False
            self._commit_ended(commit=False)

    def _commit_ended(self, *, commit: bool = True) -> None:
        """A commit ended (or the flushing did): wake `drain`."""
        self._ended += commit
        waiter, self._drained = self._drained, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _hold_back(self, batch: WriteBatch, senders: list[tuple[Session, Message]]) -> None:
        """Leave submitted messages past ``limits.commit_max_submitted``, and group
        messages past ``limits.commit_max_fanout`` deliveries, for the next commit.

        Devices' 1:1 messages all go now.  A backend submits up to
        ``max_app_submitted`` at once; each commit then wrote all of them, and
        the devices' messages in it waited as long (honest p99 108-124 ms while
        a backend sent 47,000 msg/s in arrays of 100; 41-46 ms with 500 a commit,
        the backend ~5 % slower).  A group message to 2,000 devices writes as
        many rows as 2,000 1:1 messages: a commit takes group messages while
        their groups' costs at the last commit fit (at least one), and one
        message of a group it has not seen yet (its cost is learnt from it).  A
        message charged less than its group is now known to cost pays the rest
        now, or is answered RATE_LIMITED and not written: what the estimate
        missed is never written unpaid, but for one message per group and commit.
        What stays is first in the next batch, in order.
        """
        most, most_rows = self.limits.commit_max_submitted, self.limits.commit_max_fanout
        known, charges = self._fanout.known, self._charges
        now = self.clock.monotonic()
        kept: list[NewMessage] = []
        kept_senders: list[tuple[Session, Message]] = []
        later, later_senders = self.batch.messages, self._senders
        taken = rows = later_submitted = 0
        unknown: set[int] = set()
        for new, pair in zip(batch.messages, senders, strict=True):
            submitted = not pair[0].device_rowid
            hold = submitted and taken >= most
            if new.group_id and not hold:
                cost = known(new.group_id)
                if cost is None:
                    # Its cost is learnt from this commit (it paid 1): one such message
                    # a commit, and only from a sender not in debt, or one message to
                    # each of many big groups is written unpaid (after a restart).
                    if unknown:
                        hold = True
                    elif not new.flags & _SYSTEM and not charges.solvent(pair, now):
                        self._refuse_unpaid(pair)
                        continue  # not written
                    else:
                        unknown.add(new.group_id)
                    cost = 1
                elif not new.flags & _SYSTEM and not charges.pay(pair, cost, now):
                    self._refuse_unpaid(pair)
                    continue  # not written (announcements are not charged: the
                    # change they tell was)
                hold = hold or bool(rows and rows + cost > most_rows)
                if not hold:
                    rows += cost
            if hold:
                later.append(new)
                later_senders.append(pair)
                later_submitted += submitted
            else:
                kept.append(new)
                kept_senders.append(pair)
                taken += submitted
        batch.messages[:] = kept
        senders[:] = kept_senders
        self._submitted = later_submitted

    def _refuse_unpaid(self, pair: tuple[Session, Message]) -> None:
        """Group message `pair` could not pay its deliveries (`BatchCharges`, which
        refunded it): answered RATE_LIMITED and not written."""
        session, m = pair
        self.confirmed(session)
        self._answer(session, m.id, _RATE_LIMITED)
        self.refusals["fanout_limited"] += 1

    async def _pace(self) -> None:
        """Let a small batch grow for up to `commit_window_ms` after the last commit.

        A commit costs the server ~0.3-0.5 ms of CPU whatever its size (BEGIN,
        one WAL frame per B-tree page touched, fdatasync), so at a moderate
        rate committing every few messages as soon as the previous commit
        returns spends most of the core on commit overhead and queues grow.
        A batch already worth a commit, or the first after a pause, goes at
        once: an idle server adds no latency.
        """
        window = self.limits.commit_window_ms / 1000
        if window > 0 and len(self.batch) < self.limits.commit_batch:
            wait = self._last_commit + window - self.clock.monotonic()
            if wait > 0:
                await self.scheduler.sleep(wait)
        self._last_commit = self.clock.monotonic()

    def _failed(self, senders: list[tuple[Session, Message]], batch: WriteBatch,
                exc: StorageError) -> None:
        # Honest failure (SPEC M4): nothing of the batch was committed, so no
        # sender hears SENT.  Acknowledgements, reads and report confirmations
        # are idempotent: they are retried with the next batch.
        self.stats_failed_batches += 1
        self.delivery.unsure = True
        log.error("group commit failed, %d messages refused: %s", len(senders), exc)
        for session, m in senders:
            self.confirmed(session)
            self._answer(session, m.id, _FAILED)
        retry = self.batch
        retry.acks[:0] = batch.acks
        retry.reads[:0] = batch.reads
        for device, seq in batch.report_acks.items():
            if seq > retry.report_acks.get(device, 0):
                retry.report_acks[device] = seq
        if len(retry) and not self.store_failing:
            self.store_failing = True
            self.scheduler.spawn(self._retry_later(), name="retry-commit")

    async def _retry_later(self) -> None:
        await self.scheduler.sleep(RETRY_PAUSE_S)
        self.store_failing = False
        self.queue_flush()

    def _acks_committed(self, batch: WriteBatch) -> None:
        acking = self.acking
        for device, seq, _ in batch.acks:
            pending = acking.get(device)
            if pending is not None:
                pending.discard(seq)
                if not pending:
                    del acking[device]
        reporting = self.reporting
        for device, seq in batch.report_acks.items():
            if reporting.get(device) == seq:
                del reporting[device]

    # --- backpressure ---------------------------------------------------------------

    def _resume(self, sessions: list[Session]) -> None:
        """Read again from sessions paused for their ACK and READ ids (`IdBudget`).

        Not one that its own messages paused (`max_unconfirmed`): `confirmed`
        resumes that one.
        """
        half = self.limits.max_unconfirmed // 2
        for session in sessions:
            if not session.closed and session.unconfirmed <= half:
                session.link.resume_reading()

    def confirmed(self, session: Session) -> None:
        """One message of `session` was answered after a commit (or its failure)."""
        session.unconfirmed -= 1
        if session.unconfirmed == self.limits.max_unconfirmed // 2:
            session.link.resume_reading()

    async def drain(self) -> None:
        """Commit what is queued now and wait for it (used at shutdown).

        Only what is queued now: what arrives meanwhile goes with those commits,
        unwaited for.  Waiting for an empty batch let a device that sends or ACKs
        every few milliseconds (never an empty batch) hold every stop for its
        whole deadline (10 s; an upgrade's downtime).  The next commit to begin
        takes the open batch, but for the messages `_hold_back` leaves for the one
        after (looked up by identity, alive while queued).
        """
        queued = {id(m) for _, m in self._senders}
        last = self._began + (1 if len(self.batch) else 0)
        while self._ended < last:
            if not self._flushing:
                if not len(self.batch):
                    return
                self._flushing = True
                self.scheduler.spawn(self._flush(), name="group-commit")
            self._drained = waiter = self.scheduler.future()
            await waiter
            if queued and any(id(m) in queued for _, m in self._senders):
                last = self._began + 1  # held back: the next commit takes them
