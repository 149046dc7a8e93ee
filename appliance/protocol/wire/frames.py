"""Frame layouts of the native wire protocol (PROTOCOL.md beside this file).

Owns: the event classes and the pure functions that turn one frame body into
an event and back (the codes and bounds are `constants`).  No I/O, no asyncio,
no storage; `connection.py` adds the byte stream and the state
machine on top.

Every frame is ``u32 body length | u8 frame type | body`` (big endian).  The
layouts below are `struct` formats so that encoding and decoding a message on
the hot path is one `pack`/`unpack_from` call each (SPEC M12: the protocol is
documented byte by byte; PROTOCOL.md is the normative text).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from appliance.protocol.wire.constants import (  # re-exported: importers use frames
    DEFAULT_EXPIRY_S,
    HEADER as HEADER,
    HEADER_SIZE as HEADER_SIZE,
    MAGIC as MAGIC,
    MAX_ADDRESS_BYTES as MAX_ADDRESS_BYTES,
    MAX_IDS_PER_FRAME as MAX_IDS_PER_FRAME,
    MAX_PRE_OPEN_FRAME_BYTES as MAX_PRE_OPEN_FRAME_BYTES,
    PREFACE as PREFACE,
    PRIORITY_MAX as PRIORITY_MAX,
    PROTOCOL_VERSION as PROTOCOL_VERSION,
    STORED_U64_MAX as STORED_U64_MAX,
    TYPE_MAX as TYPE_MAX,
    U64_MAX as U64_MAX,
    CloseCode as CloseCode,
    Flag as Flag,
    FrameType as FrameType,
    Status as Status,
)
from appliance.protocol.wire.errors import LocalWireError, RemoteWireError

# --- events ---------------------------------------------------------------
# Plain slotted classes for the two hot-path events (Message, Status): a
# frozen dataclass pays object.__setattr__ per field at construction, which
# costs ~40% more per message on the delivery path.


class Message:
    """A MESSAGE frame: every M2 property plus the server's delivery handle.

    From a client, `peer` is the destination address (empty when `group_id`
    names a group) and `seq`/`timestamp_ms` are 0.  From the server, `peer`
    is the sender's address (or the destination, with `Flag.OUTGOING_COPY`),
    `seq` is the handle the device acknowledges with ACK, and `expiry_s` is
    the lifetime *remaining* when the frame was written.
    """

    __slots__ = ("expiry_s", "flags", "group_id", "id", "payload", "peer", "priority",
                 "refid", "seq", "timestamp_ms", "type")

    def __init__(self, id: int = 0, peer: bytes = b"", payload: bytes = b"", *,
                 group_id: int = 0, refid: int = 0, seq: int = 0, timestamp_ms: int = 0,
                 expiry_s: int = DEFAULT_EXPIRY_S, type: int = 0, flags: int = Flag.DEFAULT,
                 priority: int = 0) -> None:
        self.id = id
        self.peer = peer
        self.payload = payload
        self.group_id = group_id
        self.refid = refid
        self.seq = seq
        self.timestamp_ms = timestamp_ms
        self.expiry_s = expiry_s
        self.type = type
        self.flags = flags
        self.priority = priority

    def _key(self) -> tuple[int | bytes, ...]:
        return (self.id, self.peer, self.payload, self.group_id, self.refid, self.seq,
                self.timestamp_ms, self.expiry_s, self.type, self.flags, self.priority)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]  # mutable value object

    def __repr__(self) -> str:
        return (f"Message(id={self.id}, peer={self.peer!r}, group_id={self.group_id}, "
                f"seq={self.seq}, flags={self.flags:#x}, priority={self.priority}, "
                f"expiry_s={self.expiry_s}, payload={len(self.payload)}B)")


class StatusReport:
    """A STATUS frame: what happened to message `id` that this user sent.

    `report_seq` is non-zero for stored reports (DELIVERED, READ, EXPIRED);
    the device confirms those with REPORT_ACK so they are not sent again.
    `peer` names the member who delivered or read a group message.
    """

    __slots__ = ("group_id", "id", "peer", "report_seq", "status", "timestamp_ms")

    def __init__(self, id: int, status: int, *, report_seq: int = 0, timestamp_ms: int = 0,
                 group_id: int = 0, peer: bytes = b"") -> None:
        self.id = id
        self.status = status
        self.report_seq = report_seq
        self.timestamp_ms = timestamp_ms
        self.group_id = group_id
        self.peer = peer

    def _key(self) -> tuple[int | bytes, ...]:
        return (self.id, self.status, self.report_seq, self.timestamp_ms, self.group_id,
                self.peer)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StatusReport) and self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]  # mutable value object

    def __repr__(self) -> str:
        return (f"StatusReport(id={self.id}, status={self.status}, "
                f"report_seq={self.report_seq}, peer={self.peer!r})")


@dataclass(frozen=True, slots=True)
class Hello:
    """HELLO: the client authenticates a device with an access token."""

    token: bytes
    device_id: bytes
    keepalive_s: int = 30
    client_flags: int = 0


@dataclass(frozen=True, slots=True)
class Welcome:
    """WELCOME: the server accepted the HELLO."""

    address: bytes
    server_time_ms: int
    keepalive_s: int
    max_frame_bytes: int
    server_version: bytes = b""
    #: The extension fields (`WelcomeField` -> u32), sent only to a client that
    #: set `HelloFlag.EXTENSIONS`; None: none were sent (PROTOCOL.md §3.2).
    info: dict[int, int] | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    """ACK: the device has safely received the messages with these handles."""

    seqs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ReadReport:
    """READ: the user read these messages from `peer` (or from group `group_id`)."""

    peer: bytes
    group_id: int
    ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ReportAck:
    """REPORT_ACK: every stored status report up to `report_seq` was received."""

    report_seq: int


@dataclass(frozen=True, slots=True)
class Ping:
    """PING: keepalive; the other side answers PONG with the same nonce."""

    nonce: int


@dataclass(frozen=True, slots=True)
class Pong:
    """PONG: the answer to a PING."""

    nonce: int


@dataclass(frozen=True, slots=True)
class Close:
    """CLOSE: the sender is closing the connection, with a reason."""

    code: int
    reason: str = ""


Event = (Message | StatusReport | Hello | Welcome | Ack | ReadReport | ReportAck | Ping | Pong
         | Close)

# --- layouts --------------------------------------------------------------

_MSG = struct.Struct(">QQQQIIIBQB")  # id refid seq ts expiry type flags prio group addrlen
_STATUS = struct.Struct(">QBQQQB")  # id status report_seq ts group addrlen
_HELLO = struct.Struct(">HIH")  # keepalive_s client_flags token_len ; then token, u8 + device
_WELCOME = struct.Struct(">QIIB")  # server_time max_frame keepalive addrlen
_U64 = struct.Struct(">Q")
_INFO_FIELD = struct.Struct(">BI")  # WELCOME extension field: tag, value
_U16 = struct.Struct(">H")
_READ = struct.Struct(">QB")  # group addrlen ; then addr, u16 count, ids

_MSG_SIZE: Final = _MSG.size
_pack_msg_frame = struct.Struct(">IB" + _MSG.format[1:]).pack
_pack_status_frame = struct.Struct(">IB" + _STATUS.format[1:]).pack
_STATUS_SIZE: Final = _STATUS.size
_pack_msg = _MSG.pack
_unpack_msg = _MSG.unpack_from
_pack_header = HEADER.pack
_MESSAGE: Final = int(FrameType.MESSAGE)
_STATUS_T: Final = int(FrameType.STATUS)


def encode_message(m: Message) -> bytes:
    """Return the whole MESSAGE frame (header included) for `m`.

    Raises:
        LocalWireError: a field does not fit its wire width.
    """
    # The ranges `decode_message` enforces (`seq` from a client is ignored, so
    # only its width is checked).
    if not (0 <= m.priority <= PRIORITY_MAX and 0 <= m.group_id <= STORED_U64_MAX
            and 0 <= m.type <= TYPE_MAX):
        raise _local(_message_range(m.priority, m.group_id, m.type))
    return pack_message(m.id, m.peer, m.payload, m.group_id, m.refid, m.seq, m.timestamp_ms,
                        m.expiry_s, m.type, m.flags, m.priority)


def pack_message(id: int, peer: bytes, payload: bytes, group_id: int, refid: int, seq: int,
                 timestamp_ms: int, expiry_s: int, type: int, flags: int, priority: int) -> bytes:
    """`encode_message` from loose fields: the server's delivery hot path.

    One `struct.pack` for header and fixed part, no event object (saves ~1 us
    per message per recipient).  Only the wire widths are checked here: the
    server passes values that came through `decode_message`'s range checks,
    and re-checking them per recipient would cost the fan-out.

    Raises:
        LocalWireError: a field does not fit its wire width.
    """
    try:
        head = _pack_msg_frame(_MSG_SIZE + len(peer) + len(payload), _MESSAGE, id, refid, seq,
                               timestamp_ms, expiry_s, type, flags, priority, group_id, len(peer))
    except struct.error as exc:
        raise _local(f"MESSAGE field out of range: {exc}") from exc
    return head + peer + payload


def encode_status(s: StatusReport) -> bytes:
    """Return the whole STATUS frame for `s`.

    Raises:
        LocalWireError: a field does not fit its wire width.
    """
    return pack_status(s.id, s.status, s.report_seq, s.timestamp_ms, s.group_id, s.peer)


def pack_status(id: int, status: int, report_seq: int = 0, timestamp_ms: int = 0,
                group_id: int = 0, peer: bytes = b"") -> bytes:
    """`encode_status` from loose fields (hot path: one per message sent).

    Raises:
        LocalWireError: a field does not fit its wire width.
    """
    try:
        return _pack_status_frame(_STATUS_SIZE + len(peer), _STATUS_T, id, status, report_seq,
                                  timestamp_ms, group_id, len(peer)) + peer
    except struct.error as exc:
        raise _local(f"STATUS field out of range: {exc}") from exc


def encode(event: Event) -> bytes:
    """Return the whole frame for any event.

    Raises:
        LocalWireError: a field does not fit its wire width.
    """
    if type(event) is Message:
        return encode_message(event)
    if type(event) is StatusReport:
        return encode_status(event)
    try:
        ftype, body = _encode_control(event)
    except (struct.error, OverflowError, UnicodeEncodeError) as exc:
        raise _local(f"{type(event).__name__} field out of range: {exc}") from exc
    return _pack_header(len(body), ftype) + body


def _encode_control(event: Event) -> tuple[int, bytes]:
    if isinstance(event, Hello):
        return FrameType.HELLO, (_HELLO.pack(event.keepalive_s, event.client_flags,
                                             len(event.token)) + event.token
                                 + _short(event.device_id))
    if isinstance(event, Welcome):
        if b"\0" in event.server_version:
            raise _local("WELCOME server_version must not contain NUL (it starts the fields)")
        return FrameType.WELCOME, (_WELCOME.pack(event.server_time_ms, event.max_frame_bytes,
                                                 event.keepalive_s, len(event.address))
                                   + event.address + event.server_version
                                   + _welcome_info(event.info))
    if isinstance(event, Ack):
        if event.seqs and not 0 <= max(event.seqs) <= STORED_U64_MAX:
            raise _local(_out_of_range("ACK", "seq", max(event.seqs), STORED_U64_MAX))
        return FrameType.ACK, _U16.pack(len(event.seqs)) + b"".join(
            _U64.pack(s) for s in event.seqs)
    if isinstance(event, ReadReport):
        if not 0 <= event.group_id <= STORED_U64_MAX:
            raise _local(_out_of_range("READ", "group_id", event.group_id, STORED_U64_MAX))
        return FrameType.READ, (_READ.pack(event.group_id, len(event.peer)) + event.peer
                                + _U16.pack(len(event.ids))
                                + b"".join(_U64.pack(i) for i in event.ids))
    if isinstance(event, ReportAck):
        if not 0 <= event.report_seq <= STORED_U64_MAX:
            raise _local(_out_of_range("REPORT_ACK", "report_seq", event.report_seq,
                                       STORED_U64_MAX))
        return FrameType.REPORT_ACK, _U64.pack(event.report_seq)
    if isinstance(event, Ping):
        return FrameType.PING, _U64.pack(event.nonce)
    if isinstance(event, Pong):
        return FrameType.PONG, _U64.pack(event.nonce)
    if isinstance(event, Close):
        return FrameType.CLOSE, _U16.pack(event.code) + event.reason.encode()
    raise _local(f"not a wire event: {event!r}")


def _short(value: bytes) -> bytes:
    if len(value) > 255:
        raise OverflowError("a u8-prefixed field is longer than 255 bytes")
    return bytes((len(value),)) + value


def _local(message: str) -> LocalWireError:
    return LocalWireError(message)


# --- decoding -------------------------------------------------------------


def decode_message(buf: bytes | bytearray | memoryview, start: int, end: int) -> Message:
    """Decode a MESSAGE body occupying ``buf[start:end]``.

    Raises:
        RemoteWireError: the body is shorter than its fixed part or its address.
    """
    if end - start < _MSG_SIZE:
        raise RemoteWireError("MESSAGE body too short", close_code=CloseCode.PROTOCOL_ERROR)
    (mid, refid, seq, ts, expiry, mtype, flags, prio, group, alen) = _unpack_msg(buf, start)
    # Three plain comparisons: the only per-message cost of the range rule.
    if prio > PRIORITY_MAX or group > STORED_U64_MAX or mtype > TYPE_MAX:
        raise RemoteWireError(_message_range(prio, group, mtype),
                              close_code=CloseCode.PROTOCOL_ERROR)
    p = start + _MSG_SIZE
    if p + alen > end:
        raise RemoteWireError("MESSAGE address overruns the frame",
                              close_code=CloseCode.PROTOCOL_ERROR)
    m = Message.__new__(Message)
    m.id = mid
    m.refid = refid
    m.seq = seq
    m.timestamp_ms = ts
    m.expiry_s = expiry
    m.type = mtype
    m.flags = flags
    m.priority = prio
    m.group_id = group
    m.peer = bytes(buf[p:p + alen])
    m.payload = bytes(buf[p + alen:end])
    return m


def _message_range(prio: int, group: int, mtype: int) -> str:
    if not 0 <= prio <= PRIORITY_MAX:
        return _out_of_range("MESSAGE", "priority", prio, PRIORITY_MAX)
    if not 0 <= group <= STORED_U64_MAX:
        return _out_of_range("MESSAGE", "group_id", group, STORED_U64_MAX)
    return _out_of_range("MESSAGE", "type", mtype, TYPE_MAX)


def _out_of_range(frame: str, name: str, value: int, top: int) -> str:
    return f"{frame} {name} {value} out of range 0..{top}"


def _check(frame: str, name: str, value: int, top: int) -> None:
    """Refuse a received value above `top` (decoders; values are unsigned already)."""
    if value > top:
        raise RemoteWireError(_out_of_range(frame, name, value, top),
                              close_code=CloseCode.PROTOCOL_ERROR)


def decode_status(buf: bytes | bytearray | memoryview, start: int, end: int) -> StatusReport:
    """Decode a STATUS body occupying ``buf[start:end]`` (the client's hot path).

    Raises:
        RemoteWireError: the body does not match the STATUS layout.
    """
    if end - start < _STATUS_SIZE:
        raise RemoteWireError("STATUS body too short", close_code=CloseCode.PROTOCOL_ERROR)
    mid, status, rseq, ts, group, alen = _STATUS.unpack_from(buf, start)
    if start + _STATUS_SIZE + alen != end:
        raise RemoteWireError("malformed STATUS frame: address length does not match",
                              close_code=CloseCode.PROTOCOL_ERROR)
    s = StatusReport.__new__(StatusReport)
    s.id = mid
    s.status = status
    s.report_seq = rseq
    s.timestamp_ms = ts
    s.group_id = group
    s.peer = bytes(buf[start + _STATUS_SIZE:end])
    return s


def decode_body(ftype: int, body: bytes) -> Event:
    """Decode the body of a non-MESSAGE frame of type `ftype`.

    Raises:
        RemoteWireError: unknown type, or a body that does not match its layout.
    """
    try:
        decoder = _DECODERS[ftype]
    except KeyError:
        raise RemoteWireError(f"unknown frame type 0x{ftype:02x}",
                              close_code=CloseCode.PROTOCOL_ERROR) from None
    try:
        return decoder(body)
    except RemoteWireError:
        raise
    except (struct.error, IndexError, ValueError) as exc:
        name = FrameType(ftype).name
        raise RemoteWireError(f"malformed {name} frame: {exc}",
                              close_code=CloseCode.PROTOCOL_ERROR) from None


def _exact(body: bytes, used: int, name: str) -> None:
    if used != len(body):
        raise ValueError(f"{len(body) - used} trailing or missing bytes in {name}")


def _dec_hello(body: bytes) -> Hello:
    keepalive, cflags, tlen = _HELLO.unpack_from(body, 0)
    p = _HELLO.size
    token = body[p:p + tlen]
    p += tlen
    dlen = body[p]
    device = body[p + 1:p + 1 + dlen]
    _exact(body, p + 1 + dlen, "HELLO")
    return Hello(token=token, device_id=device, keepalive_s=keepalive, client_flags=cflags)


def _dec_welcome(body: bytes) -> Welcome:
    ts, max_frame, keepalive, alen = _WELCOME.unpack_from(body, 0)
    p = _WELCOME.size
    if p + alen > len(body):
        raise ValueError("address overruns WELCOME")
    version, nul, tail = body[p + alen:].partition(b"\0")
    info = None
    if nul:
        if len(tail) % _INFO_FIELD.size:
            raise ValueError("WELCOME extension fields are not 5-byte entries")
        info = dict(_INFO_FIELD.iter_unpack(tail))
    return Welcome(address=body[p:p + alen], server_time_ms=ts, keepalive_s=keepalive,
                   max_frame_bytes=max_frame, server_version=version, info=info)


def _welcome_info(info: dict[int, int] | None) -> bytes:
    """The WELCOME extension fields (PROTOCOL.md §3.2).

    Raises:
        ValueError: a tag or a value out of range (`encode` makes it a LocalWireError).
    """
    # The server version is text without NUL: the NUL that follows it starts the
    # fields, so a client that never asked for them sees the version alone (§3.2).
    if info is None:
        return b""
    return b"\0" + b"".join(_INFO_FIELD.pack(tag, value) for tag, value in info.items())


def _dec_ack(body: bytes) -> Ack:
    (count,) = _U16.unpack_from(body, 0)
    _exact(body, 2 + 8 * count, "ACK")
    seqs = struct.unpack_from(f">{count}Q", body, 2)
    if count:
        _check("ACK", "seq", max(seqs), STORED_U64_MAX)
    return Ack(seqs=seqs)


def _dec_status(body: bytes) -> StatusReport:
    return decode_status(body, 0, len(body))


def _dec_read(body: bytes) -> ReadReport:
    group, alen = _READ.unpack_from(body, 0)
    _check("READ", "group_id", group, STORED_U64_MAX)
    p = _READ.size + alen
    peer = body[_READ.size:p]
    (count,) = _U16.unpack_from(body, p)
    _exact(body, p + 2 + 8 * count, "READ")
    return ReadReport(peer=peer, group_id=group, ids=struct.unpack_from(f">{count}Q", body, p + 2))


def _dec_report_ack(body: bytes) -> ReportAck:
    _exact(body, 8, "REPORT_ACK")
    (report_seq,) = _U64.unpack(body)
    _check("REPORT_ACK", "report_seq", report_seq, STORED_U64_MAX)
    return ReportAck(report_seq)


def _dec_ping(body: bytes) -> Ping:
    _exact(body, 8, "PING")
    return Ping(_U64.unpack(body)[0])


def _dec_pong(body: bytes) -> Pong:
    _exact(body, 8, "PONG")
    return Pong(_U64.unpack(body)[0])


def _dec_close(body: bytes) -> Close:
    (code,) = _U16.unpack_from(body, 0)
    try:
        reason = body[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("CLOSE reason is not UTF-8") from None
    return Close(code=code, reason=reason)


def _dec_message_body(body: bytes) -> Message:
    return decode_message(body, 0, len(body))


_DECODERS: dict[int, Callable[[bytes], Event]] = {
    FrameType.HELLO: _dec_hello,
    FrameType.WELCOME: _dec_welcome,
    FrameType.MESSAGE: _dec_message_body,
    FrameType.ACK: _dec_ack,
    FrameType.STATUS: _dec_status,
    FrameType.READ: _dec_read,
    FrameType.REPORT_ACK: _dec_report_ack,
    FrameType.PING: _dec_ping,
    FrameType.PONG: _dec_pong,
    FrameType.CLOSE: _dec_close,
}
