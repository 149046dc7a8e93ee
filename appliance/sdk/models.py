"""What the SDK hands to an app: messages, status updates, connection states."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

from appliance.protocol.attachments import MAX_FILES_PER_MESSAGE, is_file_id
from appliance.protocol.wire import Flag, Status
from appliance.sdk.errors import ClientConnectionError, SendError, send_error

__all__ = ["ConnectionEvent", "ConnectionState", "FileInfo", "Group", "IncomingMessage",
           "OutgoingMessage", "Status", "StatusUpdate", "StoredMessage", "file_payload",
           "is_error", "moves_forward", "parse_file_payload"]

_SENT, _READ, _EXPIRED = Status.SENT, Status.READ, Status.EXPIRED
_RETRIED = (Status.FAILED, Status.RATE_LIMITED)
#: Frame overhead of a MESSAGE besides peer and payload (PROTOCOL.md §3.3): what
#: `Client.send` and `Client.send_file` add to the payload to check the frame limit.
MESSAGE_OVERHEAD = 5 + 54


def is_error(status: int) -> bool:
    """True for the error statuses (0x80 and above, PROTOCOL.md §4)."""
    return status >= 0x80


def moves_forward(current: int, new: int) -> bool:
    """Whether `new` may replace `current` (statuses only move forward, SPEC M3).

    OUTBOX < SENT < DELIVERED < READ; an error ends the message, except
    FAILED and RATE_LIMITED, after which the SDK resends it (and EXPIRED may
    still follow SENT).
    """
    if current == Status.OUTBOX or current in _RETRIED:
        return new != current
    if is_error(current):
        return False
    if is_error(new):
        return new == _EXPIRED and current == _SENT
    return new > current


_OCTET_STREAM = "application/octet-stream"
#: Digits of an integer the parser converts (a size of thousands of digits is junk).
_MAX_DIGITS = 20


@dataclass(frozen=True, slots=True)
class FileInfo:
    """A file on the server: what a FILE message lists, what an upload returns.

    `sha256` is the hex digest of the stored bytes (None while unknown);
    `width` and `height` are an image's pixels (0 for anything else).  Images
    are cleaned by the server (orientation applied, metadata removed), so
    their digest is the clean copy's, not the uploaded file's.
    """

    id: str
    name: str
    content_type: str
    size: int
    sha256: str | None = None
    width: int = 0
    height: int = 0

    @property
    def is_image(self) -> bool:
        """An image the server cleaned (it has thumbnails)."""
        return self.width > 0

    def to_json(self) -> dict[str, Any]:
        """The entry of the payload convention (PROTOCOL.md §3.3.1)."""
        return {"id": self.id, "name": self.name, "type": self.content_type, "size": self.size,
                "sha256": self.sha256, "width": self.width, "height": self.height}

    @classmethod
    def from_json(cls, doc: object) -> FileInfo | None:
        """An entry of a payload or the server's file document; None without a valid id.

        Anything else that is not what it should be takes its default: the
        payload comes from another client and is never trusted.
        """
        if not isinstance(doc, dict) or not is_file_id(doc.get("id")):
            return None
        name, kind, digest = doc.get("name"), doc.get("type"), doc.get("sha256")
        return cls(
            id=doc["id"], name=name if isinstance(name, str) and name else "file",
            content_type=kind if isinstance(kind, str) and kind else _OCTET_STREAM,
            size=_count(doc.get("size")),
            sha256=digest.lower() if isinstance(digest, str) and _is_hex_digest(digest) else None,
            width=_count(doc.get("width")), height=_count(doc.get("height")))


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _is_hex_digest(value: str) -> bool:
    return len(value) == 64 and all(ch in "0123456789abcdefABCDEF" for ch in value)


def _bounded_int(text: str) -> int | None:
    return int(text) if len(text) <= _MAX_DIGITS else None


def file_payload(files: list[FileInfo] | tuple[FileInfo, ...], caption: str | None = None
                 ) -> bytes:
    """The payload of a FILE message: ``{"files": [...], "text": caption}`` as UTF-8 JSON."""
    doc: dict[str, Any] = {"files": [f.to_json() for f in files]}
    if caption is not None:
        doc["text"] = caption
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def parse_file_payload(payload: bytes) -> tuple[tuple[FileInfo, ...], str | None]:
    """The files and caption of a FILE message's payload; ``((), None)`` for junk.

    Bounded: the payload is one frame (64 KiB by default), nesting past
    Python's recursion limit and integers of more than 20 digits are junk,
    at most `MAX_FILES_PER_MESSAGE` entries are read.
    """
    try:
        doc = json.loads(payload.decode("utf-8"), parse_int=_bounded_int,
                         parse_float=lambda _: None, parse_constant=lambda _: None)
    except (ValueError, RecursionError):  # UnicodeDecodeError, JSONDecodeError
        return (), None
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), list):
        return (), None
    found = (FileInfo.from_json(entry) for entry in doc["files"][:MAX_FILES_PER_MESSAGE])
    caption = doc.get("text")
    return tuple(f for f in found if f is not None), caption if isinstance(caption, str) else None


def _attachments(flags: int, payload: bytes) -> tuple[tuple[FileInfo, ...], str | None]:
    return parse_file_payload(payload) if flags & Flag.FILE else ((), None)


@dataclass(frozen=True, slots=True)
class Group:
    """A group destination: ``client.send(Group(42), "hi")``."""

    id: int


class ConnectionState(Enum):
    """Where the client's connection stands."""

    CONNECTING = "connecting"  # TCP connect and HELLO in progress
    ONLINE = "online"  # WELCOME received: messages flow
    OFFLINE = "offline"  # lost or refused; the client retries after a backoff
    STOPPED = "stopped"  # closed by the app, or refused for good (see the error)


@dataclass(frozen=True, slots=True)
class ConnectionEvent:
    """A change of `ConnectionState`; `error` says why it went OFFLINE or STOPPED."""

    state: ConnectionState
    error: ClientConnectionError | None = None
    retry_in_s: float | None = None


class IncomingMessage:
    """A message this device received (or a copy of one another device of ours sent)."""

    __slots__ = ("_attached", "expiry_s", "flags", "group_id", "id", "outgoing_copy", "payload",
                 "peer", "priority", "refid", "sender", "seq", "timestamp_ms", "type")

    def __init__(self, *, id: int, sender: str, peer: str, group_id: int, refid: int, seq: int,
                 timestamp_ms: int, expiry_s: int, type: int, flags: int, priority: int,
                 payload: bytes, outgoing_copy: bool) -> None:
        self.id = id
        #: Who sent it (our own address for an outgoing copy).
        self.sender = sender
        #: The conversation: the other user of a 1:1 chat, "" in a group.
        self.peer = peer
        self.group_id = group_id
        self.refid = refid
        self.seq = seq
        self.timestamp_ms = timestamp_ms
        self.expiry_s = expiry_s
        self.type = type
        self.flags = flags
        self.priority = priority
        self.payload = payload
        self.outgoing_copy = outgoing_copy
        self._attached: tuple[tuple[FileInfo, ...], str | None] | None = None

    @property
    def text(self) -> str:
        """The payload as UTF-8 text (undecodable bytes replaced)."""
        return self.payload.decode("utf-8", "replace")

    @property
    def files(self) -> tuple[FileInfo, ...]:
        """The files of a FILE message (`Flag.FILE`): download them with
        ``client.download_file(info, path)``.  Empty for any other message, and
        for a payload that is not the convention (`payload` keeps it)."""
        if self._attached is None:
            self._attached = _attachments(self.flags, self.payload)
        return self._attached[0]

    @property
    def caption(self) -> str | None:
        """The ``text`` of a FILE message's payload, if it has one."""
        if self._attached is None:
            self._attached = _attachments(self.flags, self.payload)
        return self._attached[1]

    @property
    def realtime(self) -> bool:
        """A real-time message: not stored by the server, not redelivered."""
        return self.seq == 0 or bool(self.flags & Flag.TRANSIENT)

    def __repr__(self) -> str:
        where = f"group={self.group_id}" if self.group_id else f"peer={self.peer!r}"
        return (f"IncomingMessage(id={self.id}, sender={self.sender!r}, {where},"
                f" payload={len(self.payload)}B)")


class OutgoingMessage:
    """A message this device sent; `status` follows the server's reports.

    ``await message.sent()`` returns once the server stored it (SENT) and
    raises the matching `SendError` if it ended in an error instead;
    ``await message.reached(Status.DELIVERED)`` waits further.
    """

    __slots__ = ("__weakref__", "_waiters", "expiry_s", "flags", "group_id", "id",
                 "payload", "peer", "priority", "refid", "status", "timestamp_ms", "type")

    def __init__(self, *, id: int, peer: str, group_id: int,
                 payload: bytes, refid: int = 0, expiry_s: int = 0, type: int = 0,
                 flags: int = 0, priority: int = 0, status: int = Status.OUTBOX,
                 timestamp_ms: int = 0) -> None:
        self.id = id
        self.peer = peer
        self.group_id = group_id
        self.payload = payload
        self.refid = refid
        self.expiry_s = expiry_s
        self.type = type
        self.flags = flags
        self.priority = priority
        self.status = status
        self.timestamp_ms = timestamp_ms
        self._waiters: list[tuple[int, asyncio.Future[None]]] | None = None

    @property
    def text(self) -> str:
        """The payload as UTF-8 text."""
        return self.payload.decode("utf-8", "replace")

    @property
    def files(self) -> tuple[FileInfo, ...]:
        """The files of a FILE message (`Client.send_file`); empty otherwise."""
        return _attachments(self.flags, self.payload)[0]

    def _update(self, status: int, timestamp_ms: int) -> None:
        self.status = status
        if timestamp_ms and status == _SENT:
            self.timestamp_ms = timestamp_ms
        waiters = self._waiters
        if not waiters:
            return
        keep = []
        resent = self._resent(status)
        for target, fut in waiters:
            if fut.done():
                continue
            if resent:
                keep.append((target, fut))  # resent by the SDK: keep waiting
            elif is_error(status):
                fut.set_exception(send_error(status, self.id))
            elif status >= target:
                fut.set_result(None)
            else:
                keep.append((target, fut))
        self._waiters = keep

    def _resent(self, status: int) -> bool:
        """Whether the SDK resends the message after `status` (FAILED, RATE_LIMITED).

        Only a queued message is: a real-time one (expiry 0, TRANSIENT, or
        id 0) is sent once, so its FAILED or RATE_LIMITED is final.
        """
        return (status in _RETRIED and self.id != 0 and self.expiry_s != 0
                and not self.flags & Flag.TRANSIENT)

    async def reached(self, status: int = Status.SENT) -> None:
        """Wait until the message reaches `status` (SENT, DELIVERED or READ).

        Raises:
            SendError: the message ended in an error status instead.
        """
        current = self.status
        if is_error(current) and not self._resent(current):
            raise send_error(current, self.id)
        if current != Status.OUTBOX and current not in _RETRIED and current >= status:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append((status, fut))
        await fut

    async def sent(self) -> None:
        """Wait for SENT (stored by the server); see `reached`."""
        await self.reached(Status.SENT)

    def __repr__(self) -> str:
        where = f"group={self.group_id}" if self.group_id else f"to={self.peer!r}"
        try:
            status = Status(self.status).name
        except ValueError:
            status = hex(self.status)
        return f"OutgoingMessage(id={self.id}, {where}, status={status})"


@dataclass(slots=True)  # not frozen: built per report, frozen costs a setattr per field
class StatusUpdate:
    """A status report for a message this user sent (from any of its devices).

    `peer` names who delivered or read it (the member, for a group message);
    `message` is the live `OutgoingMessage` when this client still holds it.
    """

    message_id: int
    status: int
    peer: str
    group_id: int
    timestamp_ms: int
    message: OutgoingMessage | None

    @property
    def error(self) -> SendError | None:
        """The typed error for an error status, else None."""
        return send_error(self.status, self.message_id) if is_error(self.status) else None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message of a conversation's history, from the local store.

    `status` of a message we sent is its latest report (OUTBOX until the
    server answers); of a received one, DELIVERED, or READ once marked read.
    """

    id: int
    outgoing: bool
    sender: str
    peer: str
    group_id: int
    refid: int
    timestamp_ms: int
    type: int
    flags: int
    priority: int
    status: int
    read: bool
    payload: bytes

    @property
    def text(self) -> str:
        """The payload as UTF-8 text."""
        return self.payload.decode("utf-8", "replace")

    @property
    def files(self) -> tuple[FileInfo, ...]:
        """The files of a FILE message; empty otherwise (see `IncomingMessage.files`)."""
        return _attachments(self.flags, self.payload)[0]

    @property
    def caption(self) -> str | None:
        """The caption of a FILE message, if it has one."""
        return _attachments(self.flags, self.payload)[1]
