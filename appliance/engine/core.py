"""The delivery engine: every rule of SPEC M4 for 1:1 and group messages.

`Engine` is the facade the transport and the REST API call.  It validates
what a device sends and hands it to the part responsible:

* `registry` (`LocalRegistry`): who is connected, by user and device, per app;
* `commit` (`GroupCommit`): batching, pacing, retry of reliable messages,
  acknowledgements, reads and report confirmations;
* `delivery` (`Delivery`): fan-out after a commit, paging of stored queues,
  receipts;
* `relay` (`Relay`): real-time messages (expiry 0 or TRANSIENT), never stored;
* `credentials` (`CredentialWatcher`): a session lasts only as long as its token;
* `presence` (`Presence`): online, offline, typing, activity, last seen (SPEC M6),
  and `blocks` (`BlockCache`): who blocks whom, for the real-time path.

Real-time messages never touch the store; reliable ones are SENT only after
their COMMIT (see `appliance.engine.delivery` for a message's whole path).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import Any

from appliance.config.limits import EngineLimits
from appliance.credentials import token_hash
from appliance.engine import groups
from appliance.engine.answers import Answers
from appliance.engine.blocks import BlockCache
from appliance.engine.clock import Clock
from appliance.engine.commit import GroupCommit
from appliance.engine.credentials import CredentialWatcher
from appliance.engine.delivery import Delivery
from appliance.engine.figures import EngineFigures
from appliance.engine.ports import Link, Pending, Scheduler
from appliance.engine.presence.core import Presence
from appliance.engine.quotas import Quotas
from appliance.engine.registry import LocalRegistry
from appliance.engine.relay import Relay
from appliance.engine.session import NO_ACKS, Session
from appliance.engine.submit import Sender, SubmitBudget, Submitted, submit_all
from appliance.errors import AttachmentError, AuthError
from appliance.protocol.attachments import file_ids
from appliance.protocol.wire import (
    Ack,
    CloseCode,
    Feature,
    Flag,
    Hello,
    HelloFlag,
    Message,
    ReadReport,
    ReportAck,
    Status,
    Welcome,
    WelcomeField,
)
from appliance.protocol.wire.constants import MAX_ADDRESS_BYTES, MAX_IDS_PER_FRAME
from appliance.storage.interface import Storage
from appliance.storage.models import NewMessage

_TRANSIENT = Flag.TRANSIENT
_FILE = Flag.FILE
_SYSTEM = Flag.SYSTEM


class Engine:
    """Routes messages between sessions and the store."""

    def __init__(self, store: Storage, clock: Clock, limits: EngineLimits,
                 scheduler: Scheduler, server_version: bytes = b"") -> None:
        self.store = store
        self.clock = clock
        self._limits = limits
        self.scheduler = scheduler
        self.server_version = server_version
        #: What `/metrics` reads (`appliance.engine.figures`).
        self.figures = EngineFigures()
        #: Refusals by reason (quotas, issue 12), for the operator's statistics.
        self.refusals: collections.Counter[str] = collections.Counter()
        self.quotas = Quotas(limits)
        self._fanout = self.quotas.fanout
        answers = Answers(self.figures)
        self._answer = answers.answer
        self.registry = LocalRegistry()
        self.commit = GroupCommit(store, clock, limits, scheduler, self.quotas, self.figures,
                                  answers, self.refusals)
        self.delivery = Delivery(store, clock, limits, scheduler, self.registry, self.figures,
                                 answers)
        self.delivery.refusals = self.refusals
        self.commit.delivery = self.delivery
        #: Who blocks whom (issue 16), cached for the real-time path.
        self.blocks = BlockCache(store, limits.max_cached_blocks)
        self.relay = Relay(store, clock, limits, scheduler, self.registry, answers, self.blocks,
                           self.quotas.fanout)
        self.relay.refusals = self.refusals
        #: Messages submitted (`submit`) and not answered yet, server-wide and per app.
        self.submissions = SubmitBudget(limits, self.refusals)
        #: Re-checks live sessions' tokens (revocation, expiry, rename).
        self.credentials = CredentialWatcher(self)
        #: What WELCOME tells a client that asked for extensions (PROTOCOL.md §3.2):
        #: parts of the engine add their `Feature` bits and fields.
        self.features = Feature(0)
        self.welcome_fields: dict[int, int] = {}
        #: Extension frame event class -> its handler (`on_extension`); parts add theirs.
        self.extension_handlers: dict[type, Callable[[Session, Any], None]] = {}
        self.delivery.relay = self.relay
        #: Group management from clients and the REST API, with its announcements.
        self.groups = groups.install(self)
        self.presence = Presence(store, clock, limits, scheduler, self.registry, self.commit,
                                 self.blocks, self.end_session)
        self.extension_handlers.update(self.presence.handlers())
        self.features |= Feature.PRESENCE | Feature.BLOCKING
        self._presence_fields()
        # Settings changed by another process (blocks, privacy, contacts) reach
        # presence through the credential change log.
        self.credentials.directory_changed = self.presence.users_changed

    @property
    def limits(self) -> EngineLimits:
        """The engine's configuration (``[limits]``)."""
        return self._limits

    @limits.setter
    def limits(self, limits: EngineLimits) -> None:
        # Every part reads its own reference on its path: replaced in all of them.
        self._limits = self.commit.limits = self.delivery.limits = self.relay.limits = limits
        self.submissions.limits = limits
        self.presence.set_limits(limits)
        self._presence_fields()

    def _presence_fields(self) -> None:
        self.welcome_fields[WelcomeField.MAX_PRESENCE_SUBSCRIPTIONS] = \
            self._limits.max_presence_subscriptions
        self.welcome_fields[WelcomeField.TYPING_TIMEOUT_S] = self._limits.typing_timeout_s

    # --- connection lifecycle -----------------------------------------------

    async def open_session(self, link: Link, hello: Hello) -> Session:
        """Authenticate a HELLO, register the device and start its deliveries.

        Raises:
            AuthError: the token is unknown or expired, the device id is not
                acceptable, or the user has too many devices connected.
            StorageError: the store could not be read or written.
        """
        if not 1 <= len(hello.device_id) <= MAX_ADDRESS_BYTES:
            raise AuthError("device id must be 1-64 bytes", close_code=CloseCode.AUTH_FAILED)
        delivery, commit, registry = self.delivery, self.commit, self.registry
        fanouts = delivery.fanouts
        generation = self.credentials.generation
        hashed = token_hash(hello.token)
        login = await self.store.authenticate(hashed, hello.device_id)
        now = self.clock.wall_ms()
        if login is None:
            raise AuthError("unknown access token", close_code=CloseCode.AUTH_FAILED)
        principal = login.principal
        if principal.token_expires_ms <= now:
            raise AuthError("access token expired", close_code=CloseCode.TOKEN_EXPIRED)
        self._within_devices(principal.user_id, hello.device_id)
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
            # Checked again: the user's other new devices may have come in meanwhile.
            self._within_devices(principal.user_id, hello.device_id)
            # A new device starts after every report that exists (its cursor)
            # and has a queue only if it took over a placeholder's or a stale
            # device's ("maybe" for a device another HELLO registered meanwhile).
            has_pending = has_receipts = device.inherited
        else:
            commit.batch.seen[device.device_rowid] = now  # bookkeeping: no need to wait
            commit.queue_flush()
        if not link.open:
            raise AuthError("connection closed during the handshake",
                            close_code=CloseCode.NORMAL)
        for old in list(registry.sessions_of(principal.user_id)):
            if old.device_id == hello.device_id:
                self._detach(old)
                old.link.close(CloseCode.REPLACED, "the same device connected again")
        rowid = device.device_rowid
        # The stored cursor may predate a REPORT_ACK whose commit landed during
        # the read (its `reporting` entry is gone by now): `drain_receipts`
        # compares with the cursor stored when it reads (issue 16).
        cursor = max(device.report_cursor, commit.reporting.get(rowid, 0))
        session = Session(link, principal.app_id, principal.user_id, principal.address,
                          hello.device_id, rowid, cursor, hashed, principal.token_expires_ms)
        session.acked = commit.acking.get(rowid, NO_ACKS)
        session.extensions = bool(hello.client_flags & HelloFlag.EXTENSIONS)
        first = registry.add(session)
        self.credentials.track(session, generation)
        link.welcome(Welcome(address=session.address, server_time_ms=now,
                             keepalive_s=self.limits.keepalive_s,
                             max_frame_bytes=self.limits.max_frame_bytes,
                             server_version=self.server_version,
                             info=self.welcome_info() if session.extensions else None))
        if first:
            self.presence.online(session)
        # An idle reconnect costs no further read, unless a commit pushed
        # messages or reports while we were reading (its cut-through could not
        # find this session yet).  Other commits (the devices' last-seen times
        # of a connect storm) cannot have missed it.
        raced = delivery.fanouts != fanouts
        if has_pending or raced:
            self.scheduler.spawn(delivery.drain(session), name="drain-messages")
        else:
            session.backlog = False
        if has_receipts or raced:
            self.scheduler.spawn(delivery.drain_receipts(session), name="drain-receipts")
        else:
            session.report_backlog = False
        return session

    def _within_devices(self, user_id: int, device_id: bytes) -> None:
        online = [s.device_id for s in self.registry.sessions_of(user_id)]
        if len(online) >= self.limits.max_devices and device_id not in online:
            raise AuthError(f"more than {self.limits.max_devices} devices connected",
                            close_code=CloseCode.TOO_MANY_DEVICES)

    def welcome_info(self) -> dict[int, int]:
        """The WELCOME extension fields: the limits a client needs, and the features."""
        limits = self.limits
        return {WelcomeField.MAX_PAYLOAD_BYTES: limits.max_payload_bytes,
                WelcomeField.MAX_EXPIRY_S: limits.max_expiry_s,
                WelcomeField.WINDOW: limits.window,
                WelcomeField.MAX_DEVICES: limits.max_devices,
                WelcomeField.FEATURES: int(self.features),
                **self.welcome_fields}

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
        self.presence.detached(session, self.registry.remove(session))

    # --- frames from a device ----------------------------------------------

    def on_message(self, session: Session, m: Message, server_flags: int = 0) -> None:
        """A MESSAGE frame from `session` (SPEC M2-M4).

        `server_flags`: bits the server sets (`Flag.SYSTEM` on its own
        announcements, `submit`); a device's are always cleared.
        """
        limits = self._limits  # the attribute, not the property: once per message
        if len(m.payload) > limits.max_payload_bytes:
            self._answer(session, m.id, Status.TOO_LARGE)
            return
        if bool(m.group_id) == bool(m.peer) or len(m.peer) > MAX_ADDRESS_BYTES:
            self._answer(session, m.id, Status.INVALID_DEST)
            return
        flags = m.flags = m.flags & Flag.CLIENT_MASK | server_flags
        if flags & _FILE and not self._files_named(session, m):
            return
        # A group message is charged its deliveries (`appliance.engine.fanout`): a
        # relayed one 1 now and the rest once its roster is read, before the relay;
        # a stored one its group's cost at the last commit.  Announcements are paid
        # by the change they tell.
        charged = m.group_id and not server_flags & _SYSTEM
        if m.expiry_s == 0 or flags & _TRANSIENT:
            if charged and not self._charge_fanout(session, m, 1):
                return
            self.relay.relay(session, m)
            return
        # The per-user rate counts what is stored (quotas.py): real-time
        # messages are bounded by the connection limits and SLOW_CONSUMER.
        if session.send_credit <= 0 \
                and not self.quotas.may_send(session, self.clock.monotonic()):
            self.refusals["rate_limited"] += 1
            self._answer(session, m.id, Status.RATE_LIMITED)
            return
        session.send_credit -= 1
        cost = 0
        if charged:
            cost = self._fanout.estimate(m.group_id)
            if not self._charge_fanout(session, m, cost):
                return
        if m.expiry_s > limits.max_expiry_s:
            m.expiry_s = limits.max_expiry_s
        self.commit.add_message(session, m, NewMessage(
            session.app_id, session.user_id, session.device_rowid, m.id, m.peer, m.group_id,
            m.refid, self.clock.wall_ms() + m.expiry_s * 1000, m.type, flags,
            m.priority & 15, m.payload), cost)

    def _charge_fanout(self, session: Session, m: Message, cost: int) -> bool:
        """Whether `session`'s user could pay group message `m`'s `cost`; else answered."""
        if self._fanout.take(session.user_id, self.clock.monotonic(), cost):
            return True
        self.refusals["fanout_limited"] += 1
        self._answer(session, m.id, Status.RATE_LIMITED)
        return False

    def _files_named(self, session: Session, m: Message) -> bool:
        """Whether a FILE message's payload is the convention (PROTOCOL.md §3.3.1); else
        INVALID_FILE, before anything is batched.  The store checks the files themselves."""
        try:
            file_ids(m.payload, self.limits.max_payload_bytes)
        except AttachmentError:
            self._answer(session, m.id, Status.INVALID_FILE)
            return False
        return True

    def on_ack(self, session: Session, ack: Ack) -> None:
        """An ACK: the device holds these messages; never send them again."""
        inflight = session.inflight
        acked = session.acked
        if acked is NO_ACKS:
            acked = session.acked = set()
        commit = self.commit
        acks = commit.batch.acks
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
        commit.acking[device] = acked  # a reconnect before the commit must see these
        commit.queue_flush()
        if session.backlog and not session.draining \
                and len(inflight) <= self.limits.window // 2:
            self.scheduler.spawn(self.delivery.drain(session), name="drain-messages")

    def on_read(self, session: Session, read: ReadReport) -> None:
        """A READ report from the recipient (SPEC M3)."""
        # Each id costs the store a lookup: at most MAX_IDS_PER_FRAME per frame
        # (PROTOCOL.md §3.6; clients send more in several frames).
        ids = read.ids if len(read.ids) <= MAX_IDS_PER_FRAME else read.ids[:MAX_IDS_PER_FRAME]
        self.commit.batch.reads.append((session.user_id, session.app_id, read.peer,
                                        read.group_id, ids))
        self.quotas.ids.charge(session, len(ids))
        self.commit.queue_flush()

    def on_report_ack(self, session: Session, ack: ReportAck) -> None:
        """The device confirmed stored status reports up to `ack.report_seq`."""
        commit = self.commit
        acks = commit.batch.report_acks
        if ack.report_seq > acks.get(session.device_rowid, 0):
            acks[session.device_rowid] = ack.report_seq
            commit.reporting[session.device_rowid] = ack.report_seq
            session.report_cursor = max(session.report_cursor, ack.report_seq)
            commit.queue_flush()

    # --- senders that are not connections ------------------------------------------

    def submit(self, sender: Sender, messages: Sequence[Message]) -> Pending[list[Submitted]]:
        """Send `messages` as `sender`, as its device would; answered in order.

        Every message needs an id of its own within the call (the answer finds
        its message by it).  The future resolves with one `Submitted` per
        message once each is answered (after its commit, for a stored one).
        Receipts go to the sender's devices.  Raises as `submit_many` does.
        """
        return self.submit_many([(sender, messages)])[0]

    def submit_many(self, submissions: Sequence[tuple[Sender, Sequence[Message]]]
                    ) -> list[Pending[list[Submitted]]]:
        """`submit` for several senders at once: one future each, in order.

        All of them enter the open batch now, so they share one group commit
        (awaiting one sender's answers before submitting the next cost a
        commit per sender).  Nothing is batched unless all of them fit the
        budget of unanswered submitted messages (`SubmitBudget`).

        Raises:
            ValueError: see `checked_counts`.
            BusyError, TooManyRequestsError: no room (`SubmitBudget.take`).
        """
        return submit_all(submissions, self.submissions, self.scheduler, self.on_message)

    def on_extension(self, session: Session, event: object) -> None:
        """An extension frame from `session` (PROTOCOL.md §8): to the part that registered
        its event class in `extension_handlers`; one nobody handles is ignored."""
        handler = self.extension_handlers.get(type(event))
        if handler is not None:
            handler(session, event)

    # --- expiry -------------------------------------------------------------------

    async def sweep_once(self) -> int:
        """Expire what is due; push the EXPIRED reports.  Returns how many."""
        receipts = await self.store.sweep(self.clock.wall_ms(), self.limits.max_expiry_s * 1000)
        commit, delivery = self.commit, self.delivery
        commit.commits += 1
        if self.quotas.seen_refresh_due(self.clock.monotonic()) and len(self.registry):
            now = self.clock.wall_ms()
            commit.batch.seen.update({s.device_rowid: now for s in self.registry.sessions()})
            commit.queue_flush()
        if delivery.unsure:  # nothing else may write for a while: the sweep proves it works
            delivery.recovered()
        if receipts:
            delivery.fanouts += 1
            delivery.push_receipts(receipts)
        return len(receipts)

    # --- figures ------------------------------------------------------------------

    @property
    def uncommitted(self) -> int:
        """Messages accepted and not committed yet (the open batch and the one committing;
        their senders hear SENT once it lands): the queue depth of /metrics, STATUS=
        and `tidings status`."""
        return self.commit.uncommitted

    @property
    def commits(self) -> int:
        """Group commits (and sweeps) so far."""
        return self.commit.commits

    @property
    def stats_failed_batches(self) -> int:
        """Group commits that failed."""
        return self.commit.stats_failed_batches

    @property
    def store_failing(self) -> bool:
        """Whether the last commit failed and its retry waits."""
        return self.commit.store_failing

    async def drain_writes(self) -> None:
        """Commit whatever is queued and wait for it (used at shutdown)."""
        await self.commit.drain()
