"""The transport's fixed bounds, defined once, and the two helpers that enforce them.

The configurable ones are `TransportConfig` (``[transport]``); these are the
protocol constants every HTTP path (HTTP/1.1, HTTP/2, the redirect port)
shares, and the rule for closing a connection without waiting forever for a
peer that does not read.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable

#: Request header block (HTTP/1.1 headers, HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE).
MAX_HEADER_BYTES = 16 * 1024
#: Request body, on every HTTP version.
MAX_BODY_BYTES = 1024 * 1024
#: Requests served on one HTTP/1.1 connection before it is closed (keeps one
#: client from monopolising a connection slot forever).
MAX_REQUESTS = 10_000
SERVER_HEADER = b"tidings"

#: HTTP/2 (RFC 9113 §10.5): concurrent streams per connection; client resets
#: within `RESET_WINDOW_S` past which the connection ends ("rapid reset").
MAX_STREAMS = 100
MAX_RESETS = 200
RESET_WINDOW_S = 10.0
#: Requests answered 429 (past the per-connection request rate) that a connection
#: may draw per second, and save up: past them it ends (HTTP/2: GOAWAY
#: ENHANCE_YOUR_CALM).  A client that keeps sending past its 429s and their
#: Retry-After only spends the server's core on refusals (a backend's array
#: flood: ~3,000 a second on two connections); one that waits as told is
#: refused at most a window (`MAX_STREAMS`) of requests a second.
REFUSALS_PER_S = MAX_STREAMS
REFUSAL_BURST = 2 * MAX_STREAMS
#: HTTP/2 flow-control window of each stream (SETTINGS_INITIAL_WINDOW_SIZE):
#: what a client may send on a stream before the server grants more.  The
#: connection's own window starts at the same 65,535 (RFC 9113 §6.9.2).
H2_STREAM_WINDOW = 65_535

#: After a goodbye (CLOSE, GOAWAY, an HTTP error with ``connection: close``),
#: how long the peer has to read it before the connection is cut.
CLOSE_GRACE_S = 2.0
#: Write-buffer low-water mark as a fraction of the high one: reading resumes
#: once the peer has taken this much of its backlog.
LOW_WATER_FRACTION = 4


#: Why a connection is not read from: its own output is backed up (every
#: protocol), or a reason of the protocol's own (bit 1: the engine, the
#: pipelined backlog, the protocol inside a carrier).  Reading resumes when no
#: reason is left.
HELD_BY_PROTOCOL = 1
HELD_BY_OUTPUT = 2
#: The server's budget for request bodies in flight is spent (HTTP/1.1).
HELD_BY_BUDGET = 4
#: A streamed upload's handler has not taken what is buffered yet (HTTP/1.1).
HELD_BY_READER = 8


def hold(transport: asyncio.ReadTransport | None, held: int, reason: int) -> int:
    """Stop reading for `reason`; returns the new set of reasons."""
    if not held and transport is not None:
        transport.pause_reading()
    return held | reason


def release(transport: asyncio.ReadTransport | None, held: int, reason: int) -> int:
    """`reason` is gone; read again if no other is left.  Returns the new set."""
    held &= ~reason
    if not held and transport is not None and not transport.is_closing():
        transport.resume_reading()
    return held


def set_write_limits(transport: asyncio.BaseTransport, high_bytes: int) -> None:
    """Make `pause_writing` fire above `high_bytes` (and `resume_writing` below a quarter)."""
    # Duck-typed: uvloop's transports are not asyncio.WriteTransport subclasses.
    setter = getattr(transport, "set_write_buffer_limits", None)
    if setter is not None:
        setter(high=high_bytes, low=high_bytes // LOW_WATER_FRACTION)


def close_within(transport: asyncio.WriteTransport, grace_s: float = CLOSE_GRACE_S) -> None:
    """Close `transport`; if output is still buffered, abort it after `grace_s`.

    `close()` alone waits for the buffer to drain, i.e. forever for a peer
    that does not read, and the buffer (megabytes) lives that long.
    """
    pending = transport.get_write_buffer_size()
    transport.close()
    if pending:
        asyncio.get_running_loop().call_later(grace_s, transport.abort)


def cut(transport: asyncio.Transport) -> None:
    """Abort `transport` with a TCP reset (RFC 9293 §3.10.4 ABORT).

    `abort()` frees our buffers, but the kernel keeps what it holds for the
    peer (up to ``tcp_wmem``: 4 MiB) and goes on offering it to a peer that
    does not read, for minutes: every slow consumer cut would still pin that
    much of the server's memory.  A zero linger time makes the close a reset,
    which drops it at once.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class ByteBudget:
    """Bytes a set of holders may keep at once (HTTP/2 request bodies in flight).

    Holders that were refused register a callback with `wait`; `release` calls
    them all (each registers again if it is still short).
    """

    __slots__ = ("_waiters", "limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiters: list[Callable[[], None]] = []

    def take(self, n: int, *, force: bool = False) -> bool:
        """Reserve `n` bytes; False (nothing reserved) if that would pass the limit,
        unless `force`d (the caller bounds what it forces)."""
        if self.used + n > self.limit and not force:
            return False
        self.used += n
        return True

    def release(self, n: int) -> None:
        """Give back `n` reserved bytes and wake whoever waits for room."""
        self.used -= n
        if self._waiters and n:
            waiters, self._waiters = self._waiters, []
            for wake in waiters:
                wake()

    def wait(self, wake: Callable[[], None]) -> None:
        """Call `wake` at the next `release` (once)."""
        if wake not in self._waiters:
            self._waiters.append(wake)

    def forget(self, wake: Callable[[], None]) -> None:
        """`wake`'s holder is gone: do not call it."""
        if wake in self._waiters:
            self._waiters.remove(wake)
