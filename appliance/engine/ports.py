"""What the engine needs from the layer above it (the transport).

The transport implements these; the engine never sees a socket or a loop.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Generator
from typing import Any, Protocol, TypeVar

from appliance.protocol.wire import Message, Welcome
from appliance.protocol.wire.frames import HEADER, pack_message, pack_status
from appliance.protocol.wire.groups import GroupResult

T = TypeVar("T")


class Link(Protocol):
    """One client connection as the engine drives it."""

    @property
    def open(self) -> bool:
        """False once the connection is gone (it may go while a HELLO is checked)."""
        ...

    def write(self, data: bytes) -> None:
        """Queue encoded frames for the peer (coalesced per loop turn).

        The fast path: fan-out and relay encode a message once and write the
        same bytes to every target device.
        """
        ...

    def status(self, msg_id: int, status: int, timestamp_ms: int = 0, report_seq: int = 0,
               group_id: int = 0, peer: bytes = b"") -> None:
        """Send one STATUS (PROTOCOL.md §3.5): an answer to the sender, or a stored report."""
        ...

    def deliver(self, message: Message) -> None:
        """Send one MESSAGE as the server sends it (`seq`, `timestamp_ms`, remaining expiry)."""
        ...

    def welcome(self, welcome: Welcome) -> None:
        """Send WELCOME: the connection is now open for messages."""
        ...

    def group_result(self, result: GroupResult) -> None:
        """Send GROUP_RESULT (PROTOCOL.md §8.3; only to a session with `extensions`)."""
        ...

    def close(self, code: int, reason: str) -> None:
        """Send CLOSE with `code` and `reason`, then close the connection."""
        ...

    def pause_reading(self) -> None:
        """Stop reading from the peer (backpressure while its sends commit)."""
        ...

    def resume_reading(self) -> None:
        """Read from the peer again."""
        ...


class FrameLink:
    """`Link.status` and `Link.deliver` for a link that carries encoded frames.

    A byte-stream link (the native protocol, WebSocket) inherits these and
    implements `write`; a link that is not one (the REST sender of
    `Engine.submit`) implements the typed calls itself.
    """

    __slots__ = ()

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def status(self, msg_id: int, status: int, timestamp_ms: int = 0, report_seq: int = 0,
               group_id: int = 0, peer: bytes = b"") -> None:
        """See `Link.status`."""
        self.write(pack_status(msg_id, status, report_seq, timestamp_ms, group_id, peer))

    def deliver(self, message: Message) -> None:
        """See `Link.deliver`."""
        m = message
        self.write(pack_message(m.id, m.peer, m.payload, m.group_id, m.refid, m.seq,
                                m.timestamp_ms, m.expiry_s, m.type, m.flags, m.priority))

    def group_result(self, result: GroupResult) -> None:
        """See `Link.group_result`."""
        body = result.encode_body()
        self.write(HEADER.pack(len(body), result.FRAME_TYPE) + body)


class Pending(Protocol[T]):
    """What `Scheduler.future` returns (an asyncio future, without importing asyncio)."""

    def done(self) -> bool: ...

    def set_result(self, result: T, /) -> None: ...

    def __await__(self) -> Generator[Any, None, T]: ...


class Scheduler(Protocol):
    """Deferred and background work, supplied by the transport."""

    def soon(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the current batch of I/O events is handled."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run `coro` as a supervised background task."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` (shutdown, sweeps, commit pacing: never per message)."""
        ...

    def future(self) -> Pending[Any]:
        """A future on the engine's loop (`Engine.submit` answers through one)."""
        ...


