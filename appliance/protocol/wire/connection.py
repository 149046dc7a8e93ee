"""One end of a native wire connection, as a sans-I/O state machine.

Feed received bytes to `receive_data`, which returns the events they
complete; turn events into bytes with `send`.  Contains no I/O.

Rules (the h11 "theory of operation", adapted):

1. Which frame may be received or sent in which state is decided only by the
   tables `_RECV` and `_SEND` below.  A pair missing from a table is a
   protocol violation: a received one raises `RemoteWireError`, a sent one
   `LocalWireError`.
2. After any `RemoteWireError` the connection is poisoned (state ERROR) and
   every later call raises, so no half-parsed input is ever acted upon.
3. A frame's declared length is checked against `max_frame_bytes` before a
   single byte of its body is buffered (PROTOCOL.md §2).
"""

from __future__ import annotations

import struct
from enum import Enum

from appliance.protocol.wire.errors import LocalWireError, RemoteWireError
from appliance.protocol.wire.extensions import (
    EXTENSION_FRAMES,
    EXTENSION_TYPES,
    FROM_CLIENT,
    ExtensionEvent,
)
from appliance.protocol.wire.frames import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    MAX_PRE_OPEN_FRAME_BYTES,
    PREFACE,
    PROTOCOL_VERSION,
    CloseCode,
    Event,
    FrameType,
    Hello,
    Message,
    decode_body,
    decode_message,
    decode_status,
    encode,
    encode_message,
)


class Role(Enum):
    """Which end of the connection this object is."""

    CLIENT = "client"
    SERVER = "server"


class State(Enum):
    """Connection states; the tables below say what each one allows."""

    AWAIT_PREFACE = "await_preface"  # server: nothing received yet
    AWAIT_HELLO = "await_hello"  # server: preface received
    AUTHENTICATING = "authenticating"  # server: HELLO received, WELCOME not yet sent
    IDLE = "idle"  # client: HELLO not sent yet
    AWAIT_WELCOME = "await_welcome"  # client: HELLO sent
    OPEN = "open"
    CLOSED = "closed"
    ERROR = "error"


_F = FrameType
_S = State
_OPEN_FROM_CLIENT = (_F.MESSAGE, _F.ACK, _F.READ, _F.REPORT_ACK, _F.PING, _F.PONG)
_OPEN_FROM_SERVER = (_F.MESSAGE, _F.STATUS, _F.PING, _F.PONG)

#: (role, state, frame type received) -> next state
_RECV: dict[tuple[Role, State, int], State] = {
    (Role.SERVER, _S.AWAIT_HELLO, _F.HELLO): _S.AUTHENTICATING,
    **{(Role.SERVER, _S.OPEN, t): _S.OPEN for t in _OPEN_FROM_CLIENT},
    (Role.CLIENT, _S.AWAIT_WELCOME, _F.WELCOME): _S.OPEN,
    **{(Role.CLIENT, _S.OPEN, t): _S.OPEN for t in _OPEN_FROM_SERVER},
    **{(r, s, _F.CLOSE): _S.CLOSED for r in Role for s in State
       if s not in (_S.CLOSED, _S.ERROR, _S.AWAIT_PREFACE, _S.IDLE)},
}

#: (role, state, frame type sent) -> next state
_SEND: dict[tuple[Role, State, int], State] = {
    (Role.SERVER, _S.AUTHENTICATING, _F.WELCOME): _S.OPEN,
    **{(Role.SERVER, _S.OPEN, t): _S.OPEN for t in _OPEN_FROM_SERVER},
    (Role.CLIENT, _S.IDLE, _F.HELLO): _S.AWAIT_WELCOME,
    **{(Role.CLIENT, _S.OPEN, t): _S.OPEN for t in _OPEN_FROM_CLIENT},
    **{(r, s, _F.CLOSE): _S.CLOSED for r in Role for s in State
       if s not in (_S.CLOSED, _S.ERROR)},
}

_EVENT_TYPES: dict[str, int] = {
    "Hello": _F.HELLO, "Welcome": _F.WELCOME, "Message": _F.MESSAGE, "Ack": _F.ACK,
    "StatusReport": _F.STATUS, "ReadReport": _F.READ, "ReportAck": _F.REPORT_ACK,
    "Ping": _F.PING, "Pong": _F.PONG, "Close": _F.CLOSE,
}

_MESSAGE = int(_F.MESSAGE)
_STATUS = int(_F.STATUS)
_unpack_header = HEADER.unpack_from
_DEFAULT_MAX_FRAME = 1 << 20


class WireConnection:
    """One end of a native-protocol connection.

    Args:
        role: which end this is.
        max_frame_bytes: the largest frame body accepted from the peer.
    """

    __slots__ = ("_buf", "_max", "role", "state")

    def __init__(self, role: Role, *, max_frame_bytes: int = _DEFAULT_MAX_FRAME) -> None:
        self.role = role
        self.state = State.AWAIT_PREFACE if role is Role.SERVER else State.IDLE
        self._max = max_frame_bytes
        self._buf = bytearray()

    def receive_data(self, data: bytes) -> list[Event]:
        """Buffer `data` from the peer and return every event it completes.

        Raises:
            RemoteWireError: the peer violated the protocol; send a CLOSE with
                `err.close_code` and close.  The connection is then in ERROR.
        """
        if self.state is State.ERROR:
            raise RemoteWireError("connection already failed", close_code=CloseCode.PROTOCOL_ERROR)
        buf = self._buf
        buf += data
        try:
            if self.state is State.AWAIT_PREFACE and not self._take_preface(buf):
                return []
            return self._frames(buf)
        except RemoteWireError:
            self.state = State.ERROR
            buf.clear()
            raise

    def _take_preface(self, buf: bytearray) -> bool:
        have = bytes(buf[:len(PREFACE)])
        if not MAGIC.startswith(have[:len(MAGIC)]):
            raise RemoteWireError("not the Tidings wire protocol (bad preface)",
                                  close_code=CloseCode.HELLO_REQUIRED)
        if len(have) < len(PREFACE):
            return False
        if have[-1] != PROTOCOL_VERSION:
            raise RemoteWireError(f"unsupported protocol version {have[-1]}",
                                  close_code=CloseCode.UNSUPPORTED_VERSION)
        del buf[:len(PREFACE)]
        self.state = State.AWAIT_HELLO
        return True

    def _frames(self, buf: bytearray) -> list[Event]:
        # Hot path: parse every complete frame with offsets into one buffer and
        # trim it once at the end (del buf[:n] is amortised O(n), wsproto idiom).
        events: list[Event] = []
        pos = 0
        end = len(buf)
        role = self.role
        # Until WELCOME, a server takes a HELLO or a CLOSE and no more (a peer
        # that has not authenticated gets a small, fixed buffer).
        limit = (self._max if role is Role.CLIENT or self.state is State.OPEN
                 else MAX_PRE_OPEN_FRAME_BYTES)
        while end - pos >= HEADER_SIZE:
            length, ftype = _unpack_header(buf, pos)
            if length > limit:
                raise RemoteWireError(f"frame of {length} bytes exceeds the {limit}-byte limit",
                                      close_code=CloseCode.FRAME_TOO_LARGE)
            body_end = pos + HEADER_SIZE + length
            if body_end > end:
                break
            state = self.state
            if ftype == _MESSAGE and state is State.OPEN:
                events.append(decode_message(buf, pos + HEADER_SIZE, body_end))
            elif ftype == _STATUS and state is State.OPEN and role is Role.CLIENT:
                events.append(decode_status(buf, pos + HEADER_SIZE, body_end))
            else:
                nxt = _RECV.get((role, state, ftype))
                if nxt is None and state is State.OPEN and ftype in EXTENSION_FRAMES:
                    events.append(self._extension(ftype, bytes(buf[pos + HEADER_SIZE:body_end])))
                    pos = body_end
                    continue
                if nxt is None:
                    raise RemoteWireError(self._unexpected(ftype),
                                          close_code=self._unexpected_code())
                events.append(decode_body(ftype, bytes(buf[pos + HEADER_SIZE:body_end])))
                self.state = nxt
            pos = body_end
        if pos:
            del buf[:pos]
        return events

    def _send_extension(self, ftype: int, event: ExtensionEvent) -> bytes:
        _, _, sender = EXTENSION_FRAMES[ftype]
        if self.state is not State.OPEN or (sender == FROM_CLIENT) != (self.role is Role.CLIENT):
            raise LocalWireError(f"cannot send {type(event).__name__} in state {self.state.value}")
        body = event.encode_body()
        return HEADER.pack(len(body), ftype) + body

    def _extension(self, ftype: int, body: bytes) -> Event:
        """An extension frame (extensions.py) in OPEN, if the peer may send it."""
        cls, decoder, sender = EXTENSION_FRAMES[ftype]
        try:
            name = FrameType(ftype).name
        except ValueError:  # a family's frame need not be in FrameType
            name = f"{cls.__name__} (0x{ftype:02x})"
        if (sender == FROM_CLIENT) != (self.role is Role.SERVER):
            raise RemoteWireError(f"{name} not allowed from this side",
                                  close_code=CloseCode.PROTOCOL_ERROR)
        try:
            return decoder(body)  # type: ignore[no-any-return]
        except RemoteWireError:
            raise
        # A family's decoder is asked for ValueError or struct.error; whatever else
        # the peer's bytes make it raise is the peer's fault too, never an
        # exception out of the codec (the transport would drop the connection
        # with a traceback and no CLOSE).
        except (struct.error, ArithmeticError, LookupError, TypeError, ValueError,
                LocalWireError) as exc:
            raise RemoteWireError(f"malformed {name}: {exc}",
                                  close_code=CloseCode.PROTOCOL_ERROR) from None

    def _unexpected(self, ftype: int) -> str:
        try:
            name = FrameType(ftype).name
        except ValueError:
            return f"unknown frame type 0x{ftype:02x}"
        if self.state is State.AWAIT_HELLO:
            return f"{name} before HELLO"
        return f"{name} not allowed in state {self.state.value}"

    def _unexpected_code(self) -> int:
        if self.state is State.AWAIT_HELLO:
            return CloseCode.HELLO_REQUIRED
        return CloseCode.PROTOCOL_ERROR

    def send(self, event: Event | ExtensionEvent) -> bytes:
        """Return the bytes that carry `event`, advancing the state.

        Raises:
            LocalWireError: this event may not be sent in the current state.
        """
        if type(event) is Message and self.state is State.OPEN:
            return encode_message(event)
        ext = EXTENSION_TYPES.get(type(event))
        if ext is not None:
            return self._send_extension(ext, event)  # type: ignore[arg-type]
        ftype = _EVENT_TYPES.get(type(event).__name__)
        nxt = None if ftype is None else _SEND.get((self.role, self.state, ftype))
        if nxt is None:
            raise LocalWireError(f"cannot send {type(event).__name__} in state {self.state.value}")
        data = encode(event)
        self.state = nxt
        if isinstance(event, Hello):
            return PREFACE + data
        return data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buf)
