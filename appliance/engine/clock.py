"""Time as an injected dependency, so tests can move it by hand."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Wall time for timestamps and expiry; monotonic time for timeouts."""

    def wall_ms(self) -> int:
        """Milliseconds since the Unix epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes backwards."""
        ...


class SystemClock:
    """The real clocks.

    `wall_ms` never goes backwards within a process: a backward step of the
    system clock must not resurrect or extend a message (reliability.md §1.7).
    """

    __slots__ = ("_high",)

    def __init__(self) -> None:
        self._high = 0

    def wall_ms(self) -> int:
        """See `Clock.wall_ms`."""
        now = int(time.time() * 1000)
        if now > self._high:
            self._high = now
        return self._high

    def monotonic(self) -> float:
        """See `Clock.monotonic`."""
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, wall_ms: int = 1_700_000_000_000) -> None:
        self._wall_ms = wall_ms
        self._mono = 0.0

    def wall_ms(self) -> int:
        """See `Clock.wall_ms`."""
        return self._wall_ms

    def monotonic(self) -> float:
        """See `Clock.monotonic`."""
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward."""
        self._wall_ms += int(seconds * 1000)
        self._mono += seconds
