"""The data phase of a server-side WebSocket (RFC 6455 §5), sans-I/O.

wsproto does the opening handshake; after it, this small codec carries the
connection: wsproto's frame layer keeps ~1.3 KB of state per connection
(an event deque, decoders, buffers), which is most of what an idle WebSocket
costs beyond a native connection (issue #4 bounds that at 1.5 KB).  This one
keeps a buffer and two integers.

It also applies the message size limit from the frame *header*, before any
payload is buffered.
"""

from __future__ import annotations

from dataclasses import dataclass

# RFC 6455 §5.2 opcodes and §7.4.1 close codes.
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
NORMAL, PROTOCOL_ERROR, UNSUPPORTED_DATA, TOO_BIG = 1000, 1002, 1003, 1009


@dataclass(frozen=True, slots=True)
class Data:
    """Payload bytes of a binary message (a message may arrive in several)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class PingReceived:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Closed:
    """The peer closed (or broke the protocol): answer with `code`, then hang up."""

    code: int
    reason: str


Event = Data | PingReceived | Closed


class ServerWebSocket:
    """Frames from a client in, `Event`s out; server frames built by `frame`."""

    __slots__ = ("_buf", "_in_message", "_message_bytes", "max_message_bytes")

    def __init__(self, max_message_bytes: int, leftover: bytes = b"") -> None:
        self.max_message_bytes = max_message_bytes
        self._buf = bytearray(leftover)
        self._message_bytes = 0
        self._in_message = False

    def receive(self, data: bytes) -> list[Event]:
        """Every event the bytes received so far complete; a `Closed` ends the stream."""
        buf = self._buf
        buf += data
        events: list[Event] = []
        pos, end = 0, len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            fin, opcode, length = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            head = 2
            if not b1 & 0x80:
                return self._fail(events, PROTOCOL_ERROR, "client frames must be masked")
            if b0 & 0x70:
                return self._fail(events, PROTOCOL_ERROR, "no extension was negotiated")
            if length == 126:
                if end - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if opcode >= CLOSE:
                if length > 125 or not fin:
                    return self._fail(events, PROTOCOL_ERROR, "malformed control frame")
            elif opcode not in (CONTINUATION, BINARY):
                if opcode == TEXT:
                    return self._fail(events, UNSUPPORTED_DATA, "binary messages only")
                return self._fail(events, PROTOCOL_ERROR, f"unknown opcode {opcode}")
            elif (opcode == CONTINUATION) != self._in_message:
                return self._fail(events, PROTOCOL_ERROR, "unexpected continuation")
            elif self._message_bytes + length > self.max_message_bytes:
                return self._fail(events, TOO_BIG,
                                  f"message above {self.max_message_bytes} bytes")
            if end - pos < head + 4 + length:
                break  # wait for the whole frame (bounded by the check above)
            mask = bytes(buf[pos + head:pos + head + 4])
            start = pos + head + 4
            payload = _unmask(bytes(buf[start:start + length]), mask)
            pos = start + length
            if opcode in (BINARY, CONTINUATION):
                self._in_message = not fin
                self._message_bytes = 0 if fin else self._message_bytes + length
                if payload:
                    events.append(Data(payload))
            elif opcode == PING:
                events.append(PingReceived(payload))
            elif opcode == CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else NORMAL
                events.append(Closed(code, payload[2:].decode("utf-8", "replace")))
                del buf[:]
                return events
        del buf[:pos]
        return events

    def _fail(self, events: list[Event], code: int, reason: str) -> list[Event]:
        del self._buf[:]
        events.append(Closed(code, reason))
        return events


def frame(opcode: int, payload: bytes = b"") -> bytes:
    """A server frame (unmasked, FIN set)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return head + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A CLOSE frame with `code` and up to 123 bytes of reason."""
    return frame(CLOSE, code.to_bytes(2, "big") + reason.encode()[:123])


def _unmask(data: bytes, mask: bytes) -> bytes:
    # XOR with the 4-byte key repeated, as one big-integer operation: ~50x
    # faster in CPython than a byte loop.
    if not data or mask == b"\x00\x00\x00\x00":
        return data
    n = len(data)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")
