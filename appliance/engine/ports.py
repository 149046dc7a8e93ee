"""What the engine needs from the layer above it (the transport).

The transport implements these; the engine never sees a socket or a loop.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from appliance.protocol.wire import Welcome


class Link(Protocol):
    """One client connection as the engine drives it."""

    @property
    def open(self) -> bool:
        """False once the connection is gone (it may go while a HELLO is checked)."""
        ...

    def write(self, data: bytes) -> None:
        """Queue encoded frames for the peer (coalesced per loop turn)."""
        ...

    def welcome(self, welcome: Welcome) -> None:
        """Send WELCOME: the connection is now open for messages."""
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


@dataclass(frozen=True, slots=True)
class EngineLimits:
    """The engine's slice of the configuration (config key ``limits.*``)."""

    max_devices: int = 8
    max_payload_bytes: int = 64 * 1024
    max_expiry_s: int = 7 * 86400
    window: int = 1000
    #: A sender with this many messages awaiting commit is not read from until
    #: half of them are confirmed (TCP then pushes back on the client).
    max_unconfirmed: int = 5000
    #: Group commit pacing (see `Engine._pace`): a batch smaller than
    #: `commit_batch` waits until `commit_window_ms` after the previous commit.
    commit_window_ms: float = 2.0
    commit_batch: int = 64
    sweep_interval_s: float = 5.0
    #: How often the server reads the credential change log and closes the
    #: sessions whose token was revoked, whose user was deleted or renamed
    #: (by this process or the CLI), and how late an expired token's session
    #: may be closed at most (PROTOCOL.md §5.1 promises 1 s with 0.5).
    credentials_poll_s: float = 0.5
    keepalive_s: int = 60
    max_frame_bytes: int = 64 * 1024 + 512
