"""The asyncio client an app builds on (SPEC M17).

One `Client` is one device of one user.  It owns a connection task that
connects, authenticates, and reconnects with exponential backoff and jitter;
a local store (`LocalStore`) that holds the outbox, the history and what was
already received; and the listeners and iterators the app reads events from.

The delivery rules it follows are PROTOCOL.md §6: every message goes into
the local outbox before its frame is written, and is resent with the same id
after every reconnect until a status arrives; a received message is stored
(or recognised as a duplicate by (sender, id)) before its ACK is written;
status reports are applied forward-only before REPORT_ACK is written.  All
local writes of one loop turn share one SQLite transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl as ssl_module
import time
import unicodedata
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.errors import StorageError
from appliance.protocol.wire import (
    DEFAULT_EXPIRY_S,
    MAX_ADDRESS_BYTES,
    MAX_IDS_PER_FRAME,
    PRIORITY_MAX,
    STORED_U64_MAX,
    TYPE_MAX,
    U32_MAX,
    U64_MAX,
    Ack,
    Close,
    CloseCode,
    Flag,
    Message,
    ReportAck,
    Status,
    StatusReport,
    encode_message,
)
from appliance.sdk.blocking import BlockingFeatures
from appliance.sdk.connection import ConnectionFeatures
from appliance.sdk.errors import (
    ClientClosedError,
    ClientConnectionError,
    InvalidDestinationError,
    TooLargeError,
)
from appliance.sdk.events import Backoff, EventFeatures, _Events
from appliance.sdk.file_features import FileFeatures
from appliance.sdk.models import (
    MESSAGE_OVERHEAD,
    ConnectionEvent,
    ConnectionState,
    Group,
    IncomingMessage,
    OutgoingMessage,
    StatusUpdate,
)
from appliance.sdk.native import NativeWire
from appliance.sdk.presence import PresenceFeatures
from appliance.sdk.reading import (
    ReadingFeatures,
    ReadSession as ReadSession,  # re-exported, as before
)
from appliance.sdk.server_info import server_info
from appliance.sdk.store import LocalStore, queued

if TYPE_CHECKING:
    from appliance.sdk.files import FileTransfer
    from appliance.sdk.groups import Groups

log = logging.getLogger(__name__)


_RETRIED = (Status.FAILED, Status.RATE_LIMITED)


def _check_ranges(**fields: tuple[int, int]) -> None:
    for name, (value, top) in fields.items():
        if not 0 <= value <= top:
            raise ValueError(f"{name} must be 0..{top}, got {value}")


class Client(EventFeatures, ConnectionFeatures, ReadingFeatures, FileFeatures,
             PresenceFeatures, BlockingFeatures):
    """One device of one user.

    Its parts: listeners and iterators (`EventFeatures`, events.py), the
    connection task (`ConnectionFeatures`, connection.py), history and READ
    reports (`ReadingFeatures`, reading.py), files (`FileFeatures`,
    file_features.py), presence (`PresenceFeatures`) and blocks (`BlockingFeatures`).

    Args:
        host, port: the Tidings server.
        token: the access token the app's backend issued for this user.
        store: the local SQLite file (``":memory:"`` keeps nothing between runs:
            no outbox survives a restart and the device id changes).
        device_id: overrides the id kept in the store (created on first run).
        synchronous: ``"NORMAL"`` (survives app crashes) or ``"FULL"`` (also
            power cuts; an fsync per local commit).
        backoff: reconnect delays (`Backoff`).
        connect_timeout_s: for TCP connect and for WELCOME after HELLO.
        keepalive_s: PING after this long without sending (the server's
            WELCOME value wins).
        default_expiry_s: expiry of messages sent without one.
        commit_interval_s: the shortest time between two local commits (the
            added latency under load; an idle client commits at once).
        websocket: speak the protocol inside WebSocket (``/v1/ws``), as a browser
            does, e.g. through an HTTP proxy (needs the ``websocket`` extra: wsproto).
        ssl: a client TLS context (for example ``ssl.create_default_context()``,
            or one trusting the appliance's self-signed certificate).
    """

    def __init__(self, host: str, port: int, token: str, *, store: str | Path = ":memory:",
                 device_id: str | None = None, synchronous: str = "NORMAL",
                 backoff: Backoff | None = None, connect_timeout_s: float = 10.0,
                 keepalive_s: int = 30, default_expiry_s: int = DEFAULT_EXPIRY_S,
                 commit_interval_s: float = 0.002, websocket: bool = False,
                 ssl: ssl_module.SSLContext | None = None) -> None:
        self.host, self.port = host, port
        self._token = token.encode()
        self._store_path = store
        self._device_override = device_id
        self._synchronous = synchronous
        self.backoff = backoff or Backoff()
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self.default_expiry_s = default_expiry_s
        self.websocket = websocket
        self.ssl = ssl
        self.state = ConnectionState.STOPPED
        self.last_error: ClientConnectionError | None = None
        self.address = ""
        self.device_id = ""
        self.max_frame_bytes = 64 * 1024 + 512
        self.limits, self.server_features = server_info(None)  # WELCOME's (server_info.py)
        self._store: LocalStore | None = None
        self._wire: NativeWire | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._last_id = 0
        self._live: weakref.WeakValueDictionary[int, OutgoingMessage] = (
            weakref.WeakValueDictionary())
        self._realtime: dict[int, OutgoingMessage] = {}
        self._retries: dict[int, int] = {}
        self._out_new: list[OutgoingMessage] = []
        self._in_new: list[Message] = []
        self._st_new: list[StatusReport] = []
        self._commit_queued = False
        self._last_commit = 0.0
        self.commit_interval_s = commit_interval_s
        self._online = asyncio.Event()
        self._message_events: _Events[IncomingMessage] = _Events("message")
        self._status_events: _Events[StatusUpdate] = _Events("status")
        self._connection_events: _Events[ConnectionEvent] = _Events("connection")
        self._files: FileTransfer | None = None
        #: Extension frame event class -> its handler (sdk/groups.py...).
        self._extension_handlers: dict[type, Callable[[Any], None]] = {}
        self._groups: Groups | None = None
        self._presence_init()

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Open the local store and start connecting (returns at once)."""
        if self._task is not None:
            return
        if self._closing:
            raise ClientClosedError("this client was closed; create a new one")
        self._store = LocalStore(self._store_path, synchronous=self._synchronous)
        self.device_id = self._device_override or self._store.device_id().decode()
        self._last_id = self._store.highest_own_id()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tidings-client")

    async def wait_online(self) -> None:
        """Wait until the client is connected and authenticated.

        Bound it with ``async with asyncio.timeout(10):``.

        Raises:
            ClientConnectionError: the server refused this client for good
                (bad token, replaced...).
        """
        if self._task is None:
            await self.start()
        task = self._task
        assert task is not None
        online = asyncio.ensure_future(self._online.wait())
        try:
            await asyncio.wait({online, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            online.cancel()
        if not self._online.is_set():
            raise self.last_error or ClientClosedError("client stopped")

    async def close(self) -> None:
        """Stop: commit what is pending, say goodbye to the server, close the store."""
        if self._closing:
            return
        self._closing = True
        self._fail_realtime()
        if self._store is not None:
            self._commit()
        wire = self._wire
        if wire is not None and wire.transport is not None:
            wire.write(wire.codec.send(Close(CloseCode.NORMAL, "client closing")))
            wire.flush()
            wire.transport.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._set_state(ConnectionState.STOPPED)
        for events in (self._message_events, self._status_events, self._connection_events,
                       self._presence_events):
            events.end()
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._files is not None:
            self._files.close()

    @property
    def closing(self) -> bool:
        """True once `close` was called."""
        return self._closing

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- sending -----------------------------------------------------------------

    def send(self, to: str | Group, payload: bytes | str, *, expiry_s: int | None = None,
             type: int = 0, priority: int = 0, flags: int = Flag.DEFAULT, refid: int = 0,
             id: int | None = None) -> OutgoingMessage:
        """Send `payload` to a user (its address) or a `Group`.

        Returns at once with an `OutgoingMessage` in the OUTBOX status; it is
        stored in the local outbox in this loop turn and sent when the client
        is online, then follows the server's reports (``await msg.sent()``).
        `expiry_s` 0 (or `Flag.TRANSIENT`) sends a real-time message: never
        queued, FAILED when the client is offline.

        Raises:
            InvalidDestinationError: the address is empty or over 64 bytes.
            TooLargeError: the message cannot fit the server's frame limit.
            ValueError: priority, type, flags, expiry or id out of range.
            ClientClosedError: the client was closed.
        """
        store = self._store_or_raise()
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        group_id = to.id if isinstance(to, Group) else 0
        peer = "" if isinstance(to, Group) else to
        if not peer.isascii():  # the server keeps addresses in NFC (PROTOCOL.md)
            peer = unicodedata.normalize("NFC", peer)
        peer_bytes = peer.encode()
        msg_id = self._next_id() if id is None else id
        if not group_id and not 1 <= len(peer_bytes) <= MAX_ADDRESS_BYTES:
            raise InvalidDestinationError(f"address must be 1-{MAX_ADDRESS_BYTES} bytes, got"
                                          f" {len(peer_bytes)}", status=Status.INVALID_DEST,
                                          message_id=msg_id)
        if len(data) + len(peer_bytes) + MESSAGE_OVERHEAD > self.max_frame_bytes:
            raise TooLargeError(f"payload of {len(data)} bytes exceeds the server's limit",
                                status=Status.TOO_LARGE, message_id=msg_id)
        expiry = self.default_expiry_s if expiry_s is None else expiry_s
        if not (0 <= priority <= PRIORITY_MAX and 0 <= type <= TYPE_MAX
                and 0 <= flags <= Flag.CLIENT_MASK and 0 <= expiry <= U32_MAX
                and 0 <= msg_id <= U64_MAX and 0 <= refid <= U64_MAX
                and 0 <= group_id <= STORED_U64_MAX):
            _check_ranges(priority=(priority, PRIORITY_MAX), type=(type, TYPE_MAX),
                          flags=(flags, Flag.CLIENT_MASK), expiry_s=(expiry, U32_MAX),
                          id=(msg_id, U64_MAX), refid=(refid, U64_MAX),
                          group=(group_id, STORED_U64_MAX))
        message = OutgoingMessage(id=msg_id, peer=peer, group_id=group_id, payload=data,
                                  refid=refid, expiry_s=expiry, type=type, flags=flags,
                                  priority=priority)
        if msg_id:
            self._live[msg_id] = message
        del store
        self._out_new.append(message)
        self._queue_commit()
        return message

    def _next_id(self) -> int:
        # Time-ordered ids (ms << 20 | 20 random bits): unique per user with
        # overwhelming odds across its devices, increasing per device (which
        # lets the server skip its dedupe lookup), below 2**63 until 2248.
        candidate = (int(time.time() * 1000) << 20) | random.getrandbits(20)
        if candidate <= self._last_id:
            candidate = self._last_id + 1
        self._last_id = candidate
        return candidate

    def _write_message(self, wire: NativeWire, m: OutgoingMessage) -> None:
        wire.write(encode_message(Message(
            m.id, m.peer.encode(), m.payload, group_id=m.group_id, refid=m.refid,
            expiry_s=m.expiry_s, type=m.type, flags=m.flags, priority=m.priority)))

    # --- the outbox and the store ------------------------------------------------------

    def outbox(self) -> list[OutgoingMessage]:
        """Messages waiting for the server's answer, oldest first (also from earlier runs).

        Each is the live object that follows its reports: ``await m.sent()``.
        """
        return self._outbox(self._store_or_raise())[0]

    def _outbox(self, store: LocalStore) -> tuple[list[OutgoingMessage], list[int]]:
        rows, expired = store.outbox(int(time.time() * 1000))
        live = self._live
        waiting = []
        for row in rows:
            m = live.get(row.id)
            if m is None:
                m = live[row.id] = row
            waiting.append(m)
        return waiting, expired

    def _store_or_raise(self) -> LocalStore:
        if self._closing:
            raise ClientClosedError("this client was closed")
        if self._store is None:
            raise ClientClosedError("call `await client.start()` (or use `async with`) first")
        return self._store

    # --- frames from the server -----------------------------------------------------

    def _on_frame_message(self, m: Message) -> None:
        self._in_new.append(m)
        self._queue_commit()

    def _on_frame_status(self, s: StatusReport) -> None:
        self._st_new.append(s)
        self._queue_commit()

    def _on_frame_extension(self, event: object) -> None:
        handler = self._extension_handlers.get(type(event))
        if handler is not None:
            handler(event)

    @property
    def groups(self) -> Groups:
        """Group changes, announcements and aggregate reports (sdk/groups.py)."""
        if self._groups is None:
            from appliance.sdk.groups import Groups  # it imports this module
            self._groups = Groups(self)
        return self._groups

    # --- the per-turn commit -----------------------------------------------------------

    def _queue_commit(self) -> None:
        if not self._commit_queued:
            self._commit_queued = True
            loop = asyncio.get_running_loop()
            # At most one local commit per `commit_interval_s`: a commit costs
            # ~50-100 us whatever its size (WAL frames per page touched), so
            # under load a short pause lets several loop turns share one.
            due = self._last_commit + self.commit_interval_s
            if due > loop.time():
                loop.call_at(due, self._commit)
            else:
                loop.call_soon(self._commit)

    def _commit(self) -> None:
        self._commit_queued = False
        self._last_commit = asyncio.get_running_loop().time()
        store = self._store
        out, incoming, reports = self._out_new, self._in_new, self._st_new
        if store is None or not (out or incoming or reports):
            return
        self._out_new, self._in_new, self._st_new = [], [], []
        try:
            changed, fresh = store.commit(out, incoming,
                                          [(s.id, s.status, s.timestamp_ms) for s in reports],
                                          int(time.time() * 1000))
        except StorageError as exc:
            # Nothing of it was stored: no ACK, no REPORT_ACK (the server
            # repeats both), and the outgoing ones wait for the next try.
            log.error("local store failed, retrying in 1 s: %s", exc)
            self._out_new[:0] = out
            self._st_new[:0] = reports
            asyncio.get_running_loop().call_later(1.0, self._queue_commit)
            return
        wire = self._wire if self._wire is not None and self._wire.online else None
        self._apply_reports(reports, changed, wire)
        self._deliver(incoming, fresh, wire)
        for m in out:
            if wire is not None:
                self._write_message(wire, m)
                if m.id and not queued(m):
                    self._realtime[m.id] = m
            elif not queued(m):
                # Never queued: real-time messages go to who is online now.
                self._realtime[m.id] = m
                self._fail_realtime()

    def _apply_reports(self, reports: list[StatusReport], changed: list[bool],
                       wire: NativeWire | None) -> None:
        top = 0
        for s, moved in zip(reports, changed, strict=True):
            if s.report_seq > top:
                top = s.report_seq
            rt = self._realtime.pop(s.id, None)
            # Per-member reports of a group message are news even when the
            # aggregate status stays where it was.
            if moved or (s.group_id and s.report_seq):
                message = rt or self._live.get(s.id)
                if message is not None and moved:
                    message._update(s.status, s.timestamp_ms)
                self._status_events.emit(StatusUpdate(
                    s.id, s.status, s.peer.decode("utf-8", "replace"), s.group_id,
                    s.timestamp_ms, message))
            if s.status in _RETRIED:
                # Every refusal is retried, also one that repeats the status
                # the message has (refused again after a resend): `_resend`
                # finds nothing to send once the message left the outbox.
                # INBOX_FULL and the other errors are final: never resent.
                if rt is None and not s.report_seq:
                    self._retry_later(s.id)
            elif moved:
                self._retries.pop(s.id, None)
        if top and wire is not None:
            wire.write(wire.codec.send(ReportAck(top)))

    def _deliver(self, incoming: list[Message], fresh: list[bool], wire: NativeWire | None) -> None:
        seqs = [m.seq for m in incoming if m.seq]
        if seqs and wire is not None:
            for start in range(0, len(seqs), MAX_IDS_PER_FRAME):
                wire.write(wire.codec.send(Ack(tuple(seqs[start:start + MAX_IDS_PER_FRAME]))))
        own = self.address
        for m, new in zip(incoming, fresh, strict=True):
            if not new:
                continue
            copy = bool(m.flags & Flag.OUTGOING_COPY)
            address = m.peer.decode("utf-8", "replace")
            self._message_events.emit(IncomingMessage(
                id=m.id, sender=own if copy else address,
                peer=address if copy or not m.group_id else "", group_id=m.group_id,
                refid=m.refid, seq=m.seq, timestamp_ms=m.timestamp_ms, expiry_s=m.expiry_s,
                type=m.type, flags=m.flags, priority=m.priority, payload=m.payload,
                outgoing_copy=copy))

    def _retry_later(self, msg_id: int) -> None:
        attempt = self._retries.get(msg_id, 0)
        self._retries[msg_id] = attempt + 1
        asyncio.get_running_loop().call_later(self.backoff.delay(attempt), self._resend, msg_id)

    def _resend(self, msg_id: int) -> None:
        wire, store = self._wire, self._store
        if wire is None or store is None or not wire.online:
            return  # the outbox goes out again on the next WELCOME
        waiting, _ = self._outbox(store)
        for m in waiting:
            if m.id == msg_id:
                self._write_message(wire, m)

    def _fail_realtime(self) -> None:
        """Real-time messages still unanswered when the connection ends are FAILED."""
        for msg_id, m in list(self._realtime.items()):
            if msg_id:
                self._st_new.append(StatusReport(msg_id, Status.FAILED))
            else:  # id 0: no status on the wire, none stored
                del self._realtime[msg_id]
                m._update(Status.FAILED, 0)
                self._status_events.emit(StatusUpdate(0, Status.FAILED, "", m.group_id, 0, m))
        if self._st_new:
            self._queue_commit()
