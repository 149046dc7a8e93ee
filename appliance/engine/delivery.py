"""The delivery engine: every rule of SPEC M4 for 1:1 and group messages.

Flow of a reliable message (expiry > 0, not TRANSIENT):

1. `on_message` validates it and appends it to the open `WriteBatch`.
2. At the end of the loop turn the batch is handed to the store, which
   commits it on its writer thread (group commit: everything that arrived
   while the previous commit ran goes into the next one).
3. Only after COMMIT returned: the sender gets SENT, and each target device
   that is connected gets the message cut-through.  Devices that are not
   connected get it from the store when they reconnect (`_drain`).
4. A device's ACK deletes its delivery row in the next batch; the store turns
   the first delivery into a DELIVERED receipt, which is pushed to the
   sender's connected devices after its own commit and kept until each of
   them confirms it with REPORT_ACK.

Real-time messages (expiry 0 or TRANSIENT) never touch the store.
"""

from __future__ import annotations

import collections
import hashlib
import logging
from collections.abc import Iterable

from appliance.engine.clock import Clock
from appliance.engine.credentials import CredentialWatcher
from appliance.engine.figures import EngineFigures
from appliance.engine.ports import EngineLimits, Link, Scheduler
from appliance.engine.quotas import Quotas
from appliance.engine.session import NO_ACKS, Session
from appliance.errors import AttachmentError, AuthError, StorageError
from appliance.protocol.attachments import file_ids
from appliance.protocol.wire import (
    Ack,
    CloseCode,
    Flag,
    Hello,
    Message,
    ReadReport,
    ReportAck,
    Status,
    Welcome,
)
from appliance.protocol.wire.frames import MAX_IDS_PER_FRAME, pack_message, pack_status
from appliance.storage.interface import Storage
from appliance.storage.models import (
    Accepted,
    NewMessage,
    Outcome,
    Pending,
    Perm,
    Receipt,
    WriteBatch,
    WriteResult,
)

log = logging.getLogger(__name__)

_TRANSIENT = Flag.TRANSIENT
_FILE = Flag.FILE
_OUTGOING = Flag.OUTGOING_COPY
_SENT = int(Status.SENT)
_STORED = Outcome.STORED
_MAX_ADDRESS = 64


def _gone(session: Session) -> bool:
    # A function, not an attribute test, so that type checkers do not assume
    # the flag is unchanged across an await.
    return session.closed


def token_hash(token: bytes) -> bytes:
    """The stored form of an access token (SPEC M1: stored only as a hash)."""
    return hashlib.sha256(token).digest()


class Engine:
    """Routes messages between sessions and the store."""

    def __init__(self, store: Storage, clock: Clock, limits: EngineLimits,
                 scheduler: Scheduler, server_version: bytes = b"") -> None:
        self.store = store
        self.clock = clock
        self.limits = limits
        self.scheduler = scheduler
        self.server_version = server_version
        self.by_user: dict[int, list[Session]] = {}
        self.by_address: dict[tuple[int, bytes], int] = {}
        self.by_device: dict[int, Session] = {}
        self._batch = WriteBatch()
        self._senders: list[tuple[Session, Message]] = []
        self.quotas = Quotas(limits)
        self._flushing = False
        self._flush_queued = False
        self.stats_failed_batches = 0
        #: What `/metrics` reads (`appliance.engine.figures`); messages in the batch
        #: being committed (the open batch's are `len(self._senders)`).
        self.figures = EngineFigures()
        self._answered = self.figures.answered  # one lookup less per message
        self.committing = 0
        #: Refusals by reason (quotas, issue 12), for the operator's statistics.
        self.refusals: collections.Counter[str] = collections.Counter()
        self.store_failing = False
        #: A write or a queue read failed since the last successful commit: a
        #: failed COMMIT may still have landed (the connection broke after the
        #: server committed), and a failed read left a queue unsent.  The next
        #: successful commit re-reads every online device's queue (`_recovered`).
        self._unsure = False
        #: device -> handles it acknowledged whose deletion is not committed yet,
        #: and -> the report_seq it confirmed, not committed yet: a device that
        #: reconnects before the commit must not get those again.
        self._acking: dict[int, set[int]] = {}
        self._reporting: dict[int, int] = {}
        #: Counts group commits, so a HELLO can tell whether one landed while
        #: it was reading (see open_session).
        self.commits = 0
        #: Counts the commits that pushed stored messages or reports to online
        #: devices: only those can miss a device whose HELLO is being read.
        self.fanouts = 0
        self._last_commit = -1e9
        #: Re-checks live sessions' tokens (revocation, expiry, rename).
        self.credentials = CredentialWatcher(self)

    # --- connection lifecycle -----------------------------------------------

    async def open_session(self, link: Link, hello: Hello) -> Session:
        """Authenticate a HELLO, register the device and start its deliveries.

        Raises:
            AuthError: the token is unknown or expired, the device id is not
                acceptable, or the user has too many devices connected.
            StorageError: the store could not be read or written.
        """
        if not 1 <= len(hello.device_id) <= _MAX_ADDRESS:
            raise AuthError("device id must be 1-64 bytes", close_code=CloseCode.AUTH_FAILED)
        fanouts = self.fanouts
        generation = self.credentials.generation
        hashed = token_hash(hello.token)
        login = await self.store.authenticate(hashed, hello.device_id)
        now = self.clock.wall_ms()
        if login is None:
            raise AuthError("unknown access token", close_code=CloseCode.AUTH_FAILED)
        principal = login.principal
        if principal.token_expires_ms <= now:
            raise AuthError("access token expired", close_code=CloseCode.TOKEN_EXPIRED)
        online = self.by_user.get(principal.user_id, [])
        same = [s for s in online if s.device_id == hello.device_id]
        if not same and len(online) >= self.limits.max_devices:
            raise AuthError(f"more than {self.limits.max_devices} devices connected",
                            close_code=CloseCode.TOO_MANY_DEVICES)
        device = login.device
        has_pending, has_receipts = login.has_pending, login.has_receipts
        if device is None:
            if not self.quotas.may_register(principal.user_id, self.clock.monotonic()):
                self.refusals["device_registration_rate"] += 1
                raise AuthError("new devices registered too fast, retry later",
                                close_code=CloseCode.TOO_MANY_DEVICES)
            stale_before = now - self.limits.device_stale_s * 1000
            device = await self.store.register_device(principal.user_id, hello.device_id, now,
                                                      stale_before)
            # A new device starts after every report that exists (its cursor)
            # and has a queue only if it inherited its user's ("maybe" for a
            # device another HELLO registered meanwhile).
            has_pending = has_receipts = device.inherited
        else:
            self._batch.seen[device.device_rowid] = now  # bookkeeping: no need to wait
            self._queue_flush()
        if not link.open:
            raise AuthError("connection closed during the handshake",
                            close_code=CloseCode.NORMAL)
        for old in self.by_user.get(principal.user_id, []):
            if old.device_id == hello.device_id:
                self._detach(old)
                old.link.close(CloseCode.REPLACED, "the same device connected again")
        rowid = device.device_rowid
        cursor = max(device.report_cursor, self._reporting.get(rowid, 0))
        session = Session(link, principal.app_id, principal.user_id, principal.address,
                          hello.device_id, rowid, cursor, hashed, principal.token_expires_ms)
        session.acked = self._acking.get(rowid, NO_ACKS)
        self.by_user.setdefault(session.user_id, []).append(session)
        self.by_address[(session.app_id, session.address)] = session.user_id
        self.by_device[session.device_rowid] = session
        self.credentials.track(session, generation)
        link.welcome(Welcome(address=session.address, server_time_ms=now,
                             keepalive_s=self.limits.keepalive_s,
                             max_frame_bytes=self.limits.max_frame_bytes,
                             server_version=self.server_version))
        # An idle reconnect costs no further read, unless a commit pushed
        # messages or reports while we were reading (its cut-through could not
        # find this session yet).  Other commits (the devices' last-seen times
        # of a connect storm) cannot have missed it.
        raced = self.fanouts != fanouts
        if has_pending or raced:
            self.scheduler.spawn(self._drain(session), name="drain-messages")
        else:
            session.backlog = False
        if has_receipts or raced:
            self.scheduler.spawn(self._drain_receipts(session), name="drain-receipts")
        else:
            session.report_backlog = False
        return session

    def close_session(self, session: Session) -> None:
        """The connection is gone: forget the session (its queue stays stored)."""
        self._detach(session)

    def end_session(self, session: Session, code: int, reason: str) -> None:
        """Close a session from the server's side: nothing it sends counts any more."""
        self._detach(session)
        session.link.close(code, reason)

    def _detach(self, session: Session) -> None:
        if session.closed:
            return
        session.closed = True
        peers = self.by_user.get(session.user_id)
        if peers is not None:
            peers[:] = [s for s in peers if s is not session]
            if not peers:
                del self.by_user[session.user_id]
                # After a rename the address may already name another user.
                key = (session.app_id, session.address)
                if self.by_address.get(key) == session.user_id:
                    del self.by_address[key]
        if self.by_device.get(session.device_rowid) is session:
            del self.by_device[session.device_rowid]

    # --- frames from a device ----------------------------------------------

    def on_message(self, session: Session, m: Message) -> None:
        """A MESSAGE frame from `session` (SPEC M2-M4)."""
        limits = self.limits
        if len(m.payload) > limits.max_payload_bytes:
            self._status(session, m.id, Status.TOO_LARGE)
            return
        if bool(m.group_id) == bool(m.peer) or len(m.peer) > _MAX_ADDRESS:
            self._status(session, m.id, Status.INVALID_DEST)
            return
        flags = m.flags = m.flags & Flag.CLIENT_MASK
        if flags & _FILE and not self._files_named(session, m):
            return
        if m.expiry_s == 0 or flags & _TRANSIENT:
            if m.group_id or not self._relay_online(session, m):
                session.relays += 1
                if session.relays >= limits.max_pending_relays:
                    # `>=`, not `==`: another resume (commits, ACK budget) may
                    # let one more in; it pauses again here.
                    session.link.pause_reading()
                self.scheduler.spawn(self._relay(session, m), name="relay")
            return
        # The per-user rate counts what is stored (quotas.py): real-time
        # messages are bounded by the connection limits and SLOW_CONSUMER.
        if session.send_credit <= 0 \
                and not self.quotas.may_send(session, self.clock.monotonic()):
            self.refusals["rate_limited"] += 1
            self._status(session, m.id, Status.RATE_LIMITED)
            return
        session.send_credit -= 1
        if m.expiry_s > limits.max_expiry_s:
            m.expiry_s = limits.max_expiry_s
        self._batch.messages.append(NewMessage(
            session.app_id, session.user_id, session.device_rowid, m.id, m.peer, m.group_id,
            m.refid, self.clock.wall_ms() + m.expiry_s * 1000, m.type, flags,
            m.priority & 15, m.payload))
        self._senders.append((session, m))
        session.unconfirmed += 1
        if session.unconfirmed == limits.max_unconfirmed:
            session.link.pause_reading()
        self._queue_flush()

    def _files_named(self, session: Session, m: Message) -> bool:
        """Whether a FILE message's payload is the convention (PROTOCOL.md §3.3.1); else
        INVALID_FILE, before anything is batched.  The store checks the files themselves."""
        try:
            file_ids(m.payload, self.limits.max_payload_bytes)
        except AttachmentError:
            self._status(session, m.id, Status.INVALID_FILE)
            return False
        return True

    def on_ack(self, session: Session, ack: Ack) -> None:
        """An ACK: the device holds these messages; never send them again."""
        inflight = session.inflight
        acked = session.acked
        if acked is NO_ACKS:
            acked = session.acked = set()
        acks = self._batch.acks
        device = session.device_rowid
        # Seqs not sent on this connection (sent on an earlier one, or never)
        # cost the store a lookup each: at most MAX_IDS_PER_FRAME of them per
        # frame are taken (PROTOCOL.md §3.4; any other real one is sent again
        # and acknowledged again).
        unknown, most = 0, MAX_IDS_PER_FRAME
        for seq in ack.seqs:
            priority = inflight.pop(seq, -1)
            if priority < 0:
                unknown += 1
                if unknown > most:
                    continue
            acks.append((device, seq, priority))
            acked.add(seq)
        if unknown:
            self.quotas.ids.charge(session, min(unknown, most))
        self._acking[device] = acked  # a reconnect before the commit must see these
        self._queue_flush()
        if session.backlog and not session.draining \
                and len(inflight) <= self.limits.window // 2:
            self.scheduler.spawn(self._drain(session), name="drain-messages")

    def on_read(self, session: Session, read: ReadReport) -> None:
        """A READ report from the recipient (SPEC M3)."""
        # Each id costs the store a lookup: at most MAX_IDS_PER_FRAME per frame
        # (PROTOCOL.md §3.6; clients send more in several frames).
        ids = read.ids if len(read.ids) <= MAX_IDS_PER_FRAME else read.ids[:MAX_IDS_PER_FRAME]
        self._batch.reads.append((session.user_id, session.app_id, read.peer, read.group_id,
                                  ids))
        self.quotas.ids.charge(session, len(ids))
        self._queue_flush()

    def on_report_ack(self, session: Session, ack: ReportAck) -> None:
        """The device confirmed stored status reports up to `ack.report_seq`."""
        acks = self._batch.report_acks
        if ack.report_seq > acks.get(session.device_rowid, 0):
            acks[session.device_rowid] = ack.report_seq
            self._reporting[session.device_rowid] = ack.report_seq
            session.report_cursor = max(session.report_cursor, ack.report_seq)
            self._queue_flush()

    def _status(self, session: Session, msg_id: int, status: int, ts: int = 0) -> None:
        self._answered[status & 0xFF] += 1
        if msg_id:  # id 0 = the sender wants no status (SPEC M4)
            session.link.write(pack_status(msg_id, status, 0, ts))

    # --- group commit -------------------------------------------------------

    def _queue_flush(self) -> None:
        if not self._flush_queued and not self._flushing:
            self._flush_queued = True
            self.scheduler.soon(self._start_flush)

    def _start_flush(self) -> None:
        self._flush_queued = False
        if not self._flushing and len(self._batch):
            self._flushing = True
            self.scheduler.spawn(self._flush(), name="group-commit")

    async def _flush(self) -> None:
        try:
            while len(self._batch):
                await self._pace()
                batch, senders = self._batch, self._senders
                self._batch, self._senders = WriteBatch(), []
                self.committing = len(senders)
                batch.quota = self.quotas.queue
                paused = self.quotas.ids.batch_taken()
                try:
                    result = await self.store.write(batch, self.clock.wall_ms())
                except StorageError as exc:
                    # What is retried waits for `_retry_later`; looping here
                    # would spin on a store that keeps failing.
                    self.committing = 0
                    self._batch_failed(senders, batch, exc)
                    self._resume(paused)
                    return
                # One observation per batch (`_pace` stamped its start), none per message.
                self.figures.commit_seconds.observe(self.clock.monotonic() - self._last_commit)
                self.committing = 0
                self._resume(paused)
                self.commits += 1
                self._acks_committed(batch)
                self._committed(senders, result)
                if self._unsure:
                    self._recovered()
        finally:
            self._flushing = False

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
        if window > 0 and len(self._batch) < self.limits.commit_batch:
            wait = self._last_commit + window - self.clock.monotonic()
            if wait > 0:
                await self.scheduler.sleep(wait)
        self._last_commit = self.clock.monotonic()

    def _batch_failed(self, senders: list[tuple[Session, Message]], batch: WriteBatch,
                      exc: StorageError) -> None:
        # Honest failure (SPEC M4): nothing of the batch was committed, so no
        # sender hears SENT.  Acknowledgements, reads and report confirmations
        # are idempotent: they are retried with the next batch.
        self.stats_failed_batches += 1
        self._unsure = True
        log.error("group commit failed, %d messages refused: %s", len(senders), exc)
        for session, m in senders:
            self._confirmed(session)
            self._status(session, m.id, Status.FAILED)
        retry = self._batch
        retry.acks[:0] = batch.acks
        retry.reads[:0] = batch.reads
        for device, seq in batch.report_acks.items():
            if seq > retry.report_acks.get(device, 0):
                retry.report_acks[device] = seq
        if len(retry) and not self.store_failing:
            self.store_failing = True
            self.scheduler.spawn(self._retry_later(), name="retry-commit")

    def _recovered(self) -> None:
        """The store commits again: send every online device what it may have missed.

        What a failed commit stored after all, and what a failed queue read
        left behind, is in the store but was pushed to nobody (SPEC M4:
        delivery resumes by itself when the database returns).
        """
        self._unsure = False
        self.fanouts += 1
        log.info("store is back: re-reading the queues of %d online devices",
                 len(self.by_device))
        for session in list(self.by_device.values()):
            session.backlog = True
            session.skipped += 1
            if not session.draining:
                self.scheduler.spawn(self._drain(session), name="drain-messages")
            session.report_backlog = True
            session.report_skipped += 1
            self.scheduler.spawn(self._drain_receipts(session), name="drain-receipts")

    async def _retry_later(self) -> None:
        await self.scheduler.sleep(0.5)
        self.store_failing = False
        self._queue_flush()

    def _acks_committed(self, batch: WriteBatch) -> None:
        acking = self._acking
        for device, seq, _ in batch.acks:
            pending = acking.get(device)
            if pending is not None:
                pending.discard(seq)
                if not pending:
                    del acking[device]
        reporting = self._reporting
        for device, seq in batch.report_acks.items():
            if reporting.get(device) == seq:
                del reporting[device]

    def _committed(self, senders: list[tuple[Session, Message]], result: WriteResult) -> None:
        now = self.clock.wall_ms()
        stored = False
        for (session, m), acc in zip(senders, result.accepted, strict=True):
            self._confirmed(session)
            if acc.outcome is _STORED:
                stored = True
                self._status(session, m.id, _SENT, acc.timestamp_ms)
                self._fan_out(session, m, acc, now)
            else:
                if acc.status == Status.INBOX_FULL:
                    self.refusals["inbox_full"] += 1
                self._status(session, m.id, acc.status, acc.timestamp_ms)
        if stored or result.receipts:
            self.fanouts += 1
        if result.receipts:
            self._push_receipts(result.receipts)

    def _resume(self, sessions: list[Session]) -> None:
        """Read again from sessions paused for their ACK and READ ids (`IdBudget`).

        Not one that its own messages paused (`max_unconfirmed`): `_confirmed`
        resumes that one.
        """
        half = self.limits.max_unconfirmed // 2
        for session in sessions:
            if not session.closed and session.unconfirmed <= half:
                session.link.resume_reading()

    def _confirmed(self, session: Session) -> None:
        session.unconfirmed -= 1
        if session.unconfirmed == self.limits.max_unconfirmed // 2:
            session.link.resume_reading()

    def _fan_out(self, sender: Session, m: Message, acc: Accepted, now: int) -> None:
        by_device = self.by_device
        incoming = outgoing = b""
        expires = acc.timestamp_ms + m.expiry_s * 1000 if m.expiry_s else now
        for device in acc.targets:
            target = by_device.get(device)
            if target is None:
                continue
            if target.backlog or len(target.inflight) >= self.limits.window:
                target.backlog = True
                target.skipped += 1
                continue
            if acc.seq in target.inflight or acc.seq in target.acked:
                # A backlog read on the reader thread can see a commit before
                # its result reaches this loop: it was sent from the store.
                continue
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

    def _push_receipts(self, receipts: list[Receipt]) -> None:
        reported = self.figures.reported
        for r in receipts:
            reported[r.status & 0xFF] += 1
            frame = b""
            for target in self.by_user.get(r.user_id, ()):
                if target.report_backlog:
                    target.report_skipped += 1
                    continue
                if not frame:
                    frame = pack_status(r.msg_id, r.status, r.report_seq, r.timestamp_ms,
                                        r.group_id, r.peer)
                target.link.write(frame)

    # --- store and forward ----------------------------------------------------

    async def _drain(self, session: Session) -> None:
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
                self._unsure = True  # re-read once the store commits again
                return
            if _gone(session):  # it may have closed while we waited
                return
            self._send_pending(session, rows, self.clock.wall_ms())
            if len(rows) >= room:
                return  # full page: more waits; on_ack asks for it
            if session.skipped == skipped:
                session.backlog = False
                return

    def _send_pending(self, session: Session, rows: list[Pending], now: int) -> None:
        inflight = session.inflight
        acked = session.acked
        write = session.link.write
        for p in rows:
            if p.seq in inflight or p.seq in acked or p.expires_ms <= now:
                continue  # checked at every delivery attempt (SPEC M4)
            flags = p.flags | _OUTGOING if p.outgoing else p.flags
            write(pack_message(p.msg_id, p.peer, p.payload, p.group_id, p.refid, p.seq,
                               p.timestamp_ms, max(1, (p.expires_ms - now + 999) // 1000),
                               p.type, flags, p.priority))
            inflight[p.seq] = p.priority

    async def _drain_receipts(self, session: Session) -> None:
        """Send the stored status reports the device has not confirmed."""
        cursor = session.report_cursor
        while not session.closed:
            skipped = session.report_skipped
            try:
                rows = await self.store.pending_receipts(session.user_id, cursor, 1000)
            except StorageError as exc:
                log.warning("cannot read receipts of %r: %s", session, exc)
                self.figures.store_errors["read"] += 1
                self._unsure = True
                return
            if _gone(session):
                return
            for r in rows:
                session.link.write(pack_status(r.msg_id, r.status, r.report_seq,
                                               r.timestamp_ms, r.group_id, r.peer))
                cursor = r.report_seq
            if len(rows) < 1000 and session.report_skipped == skipped:
                session.report_backlog = False
                return

    # --- real-time messages -------------------------------------------------------

    def _relay_online(self, session: Session, m: Message) -> bool:
        """Hot path of a 1:1 real-time message: no task, no store.  False if offline."""
        user = self.by_address.get((session.app_id, m.peer))
        if user is None:
            return False
        self._relay_to(session, m, (user,), self.clock.wall_ms())
        return True

    async def _relay(self, session: Session, m: Message) -> None:
        """Deliver an expiry-0 message to devices online now; store nothing."""
        try:
            await self._relay_looked_up(session, m)
        finally:
            session.relays -= 1
            if (session.relays == self.limits.max_pending_relays // 2 and not session.closed
                    and session.unconfirmed < self.limits.max_unconfirmed):
                session.link.resume_reading()

    async def _relay_looked_up(self, session: Session, m: Message) -> None:
        now = self.clock.wall_ms()
        if m.group_id:
            members = await self.store.group_members(session.app_id, m.group_id)
            if members is None:
                self._status(session, m.id, Status.INVALID_DEST)
                return
            me = next((x for x in members if x.user_id == session.user_id), None)
            if me is None or not me.perms & Perm.SEND:
                self._status(session, m.id, Status.NOT_MEMBER)
                return
            users = [x.user_id for x in members if x.perms & Perm.RECEIVE]
        else:
            user = self.by_address.get((session.app_id, m.peer))
            if user is None:
                exists = await self.store.find_user(session.app_id, m.peer)
                self._status(session, m.id,
                             Status.USER_OFFLINE if exists is not None else Status.INVALID_DEST)
                return
            users = [user]
        self._relay_to(session, m, users, now)

    def _relay_to(self, session: Session, m: Message, users: Iterable[int], now: int) -> None:
        frame = pack_message(m.id, session.address, m.payload, m.group_id, m.refid, 0, now, 0,
                             m.type, m.flags | _TRANSIENT, m.priority & 15)
        delivered = 0
        for user in users:
            for target in self.by_user.get(user, ()):
                if target is not session:
                    target.link.write(frame)
                    delivered += 1
        self._status(session, m.id, _SENT if delivered else Status.USER_OFFLINE, now)

    # --- expiry -------------------------------------------------------------------

    async def sweep_once(self) -> int:
        """Expire what is due; push the EXPIRED reports.  Returns how many."""
        receipts = await self.store.sweep(self.clock.wall_ms(), self.limits.max_expiry_s * 1000)
        self.commits += 1
        if self.quotas.seen_refresh_due(self.clock.monotonic()) and self.by_device:
            now = self.clock.wall_ms()
            self._batch.seen.update(dict.fromkeys(self.by_device, now))
            self._queue_flush()
        if self._unsure:  # nothing else may write for a while: the sweep proves it works
            self._recovered()
        if receipts:
            self.fanouts += 1
            self._push_receipts(receipts)
        return len(receipts)

    @property
    def uncommitted(self) -> int:
        """Messages accepted and not committed yet (the open batch and the one committing;
        their senders hear SENT once it lands): the queue depth of /metrics, STATUS=
        and `tidings status`."""
        return len(self._senders) + self.committing

    async def drain_writes(self) -> None:
        """Commit whatever is queued and wait for it (used at shutdown)."""
        while self._flushing or len(self._batch):
            if not self._flushing:
                self._flushing = True
                await self._flush()
            else:
                await self.scheduler.sleep(0.005)
