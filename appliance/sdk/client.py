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
from collections.abc import AsyncIterator, Callable
from os import PathLike
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
    Hello,
    Message,
    Ping,
    ReadReport,
    ReportAck,
    Status,
    StatusReport,
    Welcome,
    encode_message,
)
from appliance.sdk.errors import (
    ClientClosedError,
    ClientConnectionError,
    ClientError,
    ConnectFailedError,
    HandshakeTimeoutError,
    InvalidDestinationError,
    TooLargeError,
)
from appliance.sdk.events import Backoff, Listener, _Events, _Subscription
from appliance.sdk.models import (
    ConnectionEvent,
    ConnectionState,
    FileInfo,
    Group,
    IncomingMessage,
    OutgoingMessage,
    StatusUpdate,
    StoredMessage,
    file_payload,
)
from appliance.sdk.native import NativeWire
from appliance.sdk.server_info import HELLO_FLAGS, server_info
from appliance.sdk.store import LocalStore, queued

if TYPE_CHECKING:
    from appliance.sdk.files import FileTransfer, Progress
    from appliance.sdk.groups import Groups

log = logging.getLogger(__name__)


_MAX_IDS_PER_FRAME = MAX_IDS_PER_FRAME  # what the server takes from one ACK or READ
#: Frame overhead of a MESSAGE besides peer and payload (PROTOCOL.md §3.3).
_MESSAGE_OVERHEAD = 5 + 54
_RETRIED = (Status.FAILED, Status.RATE_LIMITED)


def _check_ranges(**fields: tuple[int, int]) -> None:
    for name, (value, top) in fields.items():
        if not 0 <= value <= top:
            raise ValueError(f"{name} must be 0..{top}, got {value}")




class ReadSession:
    """One conversation's history from the local store, newest first, in pages."""

    def __init__(self, client: Client, peer: str, group_id: int) -> None:
        self._client = client
        self.peer = peer
        self.group_id = group_id
        self._cursor: int | None = None
        self.exhausted = False

    def older(self, limit: int = 50) -> list[StoredMessage]:
        """The next `limit` older messages (an empty list at the beginning)."""
        if self.exhausted:
            return []
        rows = self._client._store_or_raise().history(
            self.peer.encode(), self.group_id, limit, self._cursor)
        if len(rows) < limit:
            self.exhausted = True
        if rows:
            self._cursor = rows[-1][0]
        return [m for _, m in rows]

    def mark_read(self, ids: list[int] | None = None) -> int:
        """Mark the conversation's received messages read and send READ reports."""
        return self._client.mark_read(Group(self.group_id) if self.group_id else self.peer, ids)


class Client:
    """One device of one user.

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
        for events in (self._message_events, self._status_events, self._connection_events):
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

    # --- events ----------------------------------------------------------------

    def on_message(self, listener: Listener[IncomingMessage]) -> Callable[[], None]:
        """Call `listener` (a function or coroutine function) for each new message.

        Returns a function that removes the listener.
        """
        return self._message_events.add(listener)

    def on_status(self, listener: Listener[StatusUpdate]) -> Callable[[], None]:
        """Call `listener` for each status change of a message this user sent."""
        return self._status_events.add(listener)

    def on_connection(self, listener: Listener[ConnectionEvent]) -> Callable[[], None]:
        """Call `listener` for each connection state change."""
        return self._connection_events.add(listener)

    def messages(self) -> AsyncIterator[IncomingMessage]:
        """New messages from now on: ``async for message in client.messages()``."""
        return _Subscription(self._message_events.subscriptions)

    def statuses(self) -> AsyncIterator[StatusUpdate]:
        """Status changes from now on."""
        return _Subscription(self._status_events.subscriptions)

    def connection_events(self) -> AsyncIterator[ConnectionEvent]:
        """Connection state changes from now on."""
        return _Subscription(self._connection_events.subscriptions)

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
        if len(data) + len(peer_bytes) + _MESSAGE_OVERHEAD > self.max_frame_bytes:
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

    # --- files (files.py: HTTP on the same port) --------------------------------------

    def _file_transfer(self) -> FileTransfer:
        if self._closing:
            raise ClientClosedError("this client was closed")
        if self._files is None:
            # Imported here: files need h11 (a dependency of the wheel), messaging nothing.
            try:
                from appliance.sdk.files import FileTransfer
                from appliance.sdk.http import Endpoint
            except ImportError:
                raise ClientError("files need h11: pip install h11") from None
            self._files = FileTransfer(Endpoint(self.host, self.port, self._token, self.ssl,
                                                self.connect_timeout_s), self.backoff)
        return self._files

    async def upload_file(self, path: str | PathLike[str], *, name: str | None = None,
                          content_type: str | None = None, progress: Progress | None = None
                          ) -> FileInfo:
        """Upload a file (resumable, streamed from disk); see `send_file`.

        Raises:
            FileTransferError: its subclasses say why (`QuotaExceededError`...).
        """
        return await self._file_transfer().upload(path, name=name, content_type=content_type,
                                                  progress=progress)

    async def send_file(self, to: str | Group, path: str | PathLike[str], *,
                        caption: str | None = None, content_type: str | None = None,
                        name: str | None = None, progress: Progress | None = None,
                        expiry_s: int | None = None, type: int = 0, priority: int = 0,
                        flags: int = Flag.DEFAULT, refid: int = 0) -> OutgoingMessage:
        """Upload a file, then send it: a MESSAGE with `Flag.FILE` whose payload is
        ``{"files": [...], "text": caption}`` (PROTOCOL.md §3.3.1).  The server lets
        the recipient (the user, or the group's members) download it.

        `progress(sent_bytes, total_bytes)` (a function or coroutine function) is
        called at most ten times a second, and once at the end.

        Raises:
            FileTransferError: the upload failed (see `upload_file`).
            TooLargeError: the caption cannot fit in a message (checked first).
            and what `send` raises.
        """
        self._store_or_raise()
        size = len(file_payload([FileInfo("a" * 26, name or Path(path).name, "x" * 127, 2**53,
                                          "0" * 64, 99999, 99999)], caption))
        if size + MAX_ADDRESS_BYTES + _MESSAGE_OVERHEAD > self.max_frame_bytes:
            raise TooLargeError(f"a caption of {len(caption or '')} characters does not fit"
                                " in a message", status=Status.TOO_LARGE, message_id=0)
        info = await self.upload_file(path, name=name, content_type=content_type,
                                      progress=progress)
        return self.send(to, file_payload([info], caption), expiry_s=expiry_s, type=type,
                         priority=priority, flags=flags | Flag.FILE, refid=refid)

    async def download_file(self, file: str | FileInfo, path: str | PathLike[str], *,
                            progress: Progress | None = None) -> Path:
        """Download a file (an id, or a `FileInfo` of `IncomingMessage.files`) to
        `path`, or into the directory `path`; resumed after a cut, checked
        against its SHA-256, then renamed into place.  Returns the file's path."""
        return await self._file_transfer().download(file, path, progress=progress)

    async def file_link(self, file_id: str, ttl_s: int | None = None) -> str:
        """A signed URL that reads the file without a token for `ttl_s` seconds
        (the server's ``media.link_ttl_s`` by default, 7 days at most)."""
        return await self._file_transfer().link(file_id, ttl_s)

    # --- reading -----------------------------------------------------------------

    def read_session(self, conversation: str | Group) -> ReadSession:
        """A conversation's history, newest first: ``session.older(20)`` pages back."""
        if isinstance(conversation, Group):
            return ReadSession(self, "", conversation.id)
        return ReadSession(self, conversation, 0)

    def mark_read(self, conversation: str | Group, ids: list[int] | None = None) -> int:
        """Mark received messages of a conversation read (all, or those `ids`).

        READ reports go to their senders now, or when the client is next
        online.  Returns how many messages changed.
        """
        store = self._store_or_raise()
        if isinstance(conversation, Group):
            changed = store.mark_read(b"", conversation.id, ids)
        else:
            changed = store.mark_read(conversation.encode(), 0, ids)
        if changed and self.state is ConnectionState.ONLINE:
            self._send_reads()
        return changed

    def _send_reads(self) -> None:
        wire = self._wire
        store = self._store
        if wire is None or store is None or not wire.online:
            return
        for sender, group_id, ids in store.unreported_reads():
            for start in range(0, len(ids), _MAX_IDS_PER_FRAME):
                wire.write(wire.codec.send(ReadReport(
                    sender, group_id, tuple(ids[start:start + _MAX_IDS_PER_FRAME]))))

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
            for start in range(0, len(seqs), _MAX_IDS_PER_FRAME):
                wire.write(wire.codec.send(Ack(tuple(seqs[start:start + _MAX_IDS_PER_FRAME]))))
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

    # --- the connection task -------------------------------------------------------------

    def _set_state(self, state: ConnectionState, error: ClientConnectionError | None = None,
                   retry_in_s: float | None = None) -> None:
        if state is self.state and error is None:
            return
        self.state = state
        if error is not None:
            self.last_error = error
        if state is ConnectionState.ONLINE:
            self._online.set()
        else:
            self._online.clear()
        self._connection_events.emit(ConnectionEvent(state, error, retry_in_s))

    async def _run(self) -> None:
        attempt = 0
        try:
            while True:
                self._set_state(ConnectionState.CONNECTING)
                error, was_online = await self._connect_once()
                if self.closing:
                    break
                if not error.retryable:
                    self._set_state(ConnectionState.STOPPED, error)
                    return
                attempt = 0 if was_online else attempt + 1
                delay = self.backoff.delay(attempt)
                self._set_state(ConnectionState.OFFLINE, error, delay)
                await asyncio.sleep(delay)
        finally:
            self._wire = None

    async def _connect_once(self) -> tuple[ClientConnectionError, bool]:
        """One connection, from TCP connect to its end; returns why it ended."""
        loop = asyncio.get_running_loop()
        try:
            transport, wire = await asyncio.wait_for(
                loop.create_connection(self._new_wire, self.host, self.port, ssl=self.ssl,
                                       server_hostname=self.host if self.ssl else None),
                self.connect_timeout_s)
        except (OSError, TimeoutError) as exc:
            return ConnectFailedError(f"cannot connect to {self.host}:{self.port}: "
                                      f"{str(exc) or 'timed out'}"), False
        # uvloop may call connection_made only after create_connection returned.
        wire.transport = transport
        self._wire = wire
        try:
            wire.start(wire.codec.send(Hello(self._token, self.device_id.encode(),
                                             self.keepalive_s, HELLO_FLAGS)))
            try:
                welcome = await asyncio.wait_for(asyncio.shield(wire.welcome),
                                                 self.connect_timeout_s)
            except TimeoutError:
                wire.fail(HandshakeTimeoutError(
                    f"no WELCOME within {self.connect_timeout_s} s"), CloseCode.NORMAL)
                return await wire.closed, False
            except ClientConnectionError:
                return await wire.closed, False
            self._online_with(wire, welcome)
            await self._keepalive(wire, welcome.keepalive_s or self.keepalive_s)
            return await wire.closed, True
        finally:
            wire.online = False
            self._wire = None
            if wire.transport is not None:
                wire.transport.abort()
            self._fail_realtime()

    def _new_wire(self) -> NativeWire:
        if not self.websocket:
            return NativeWire(self)
        try:
            from appliance.sdk.websocket import WebSocketWire
        except ImportError:
            raise ClientError("WebSocket needs wsproto: pip install 'tidings-sdk[websocket]'"
                              ) from None
        return WebSocketWire(self, f"{self.host}:{self.port}")

    def _online_with(self, wire: NativeWire, welcome: Welcome) -> None:
        self.address = welcome.address.decode("utf-8", "replace")
        self.max_frame_bytes = welcome.max_frame_bytes
        self.limits, self.server_features = server_info(welcome)
        wire.online = True
        store = self._store
        assert store is not None
        # What the store holds unanswered goes first, in order, with its ids
        # (PROTOCOL.md §6 rule 1); what this turn sends follows with its commit.
        waiting, expired = self._outbox(store)
        for m in waiting:
            self._write_message(wire, m)
        self._st_new.extend(StatusReport(i, Status.EXPIRED) for i in expired)
        if expired:
            self._queue_commit()
        self._send_reads()
        self._set_state(ConnectionState.ONLINE)

    async def _keepalive(self, wire: NativeWire, keepalive_s: int) -> None:
        """PING when idle; give up on a server silent for two keepalive periods."""
        nonce = 0
        while not wire.closed.done():
            try:
                await asyncio.wait_for(asyncio.shield(wire.closed), keepalive_s / 2)
                return
            except TimeoutError:
                pass
            now = time.monotonic()
            if now - wire.last_rx > 2 * keepalive_s:
                wire.fail(ConnectFailedError(f"server silent for {2 * keepalive_s} s"),
                          CloseCode.IDLE_TIMEOUT)
            elif now - wire.last_tx >= keepalive_s / 2:
                nonce += 1
                wire.write(wire.codec.send(Ping(nonce)))

