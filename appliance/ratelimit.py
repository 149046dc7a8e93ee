"""A token bucket: the one rate rule (per HTTP connection, per IP, per user).

Pure: the caller passes its clock's monotonic time, so the edge, the transport
and the engine share it without importing each other.
"""

from __future__ import annotations

#: Requests per second one connection may make, and the burst it may save up.
RATE_PER_S = 500.0
BURST = 1000.0


class TokenBucket:
    """`take(now)` is False once the connection is over its rate."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, now: float, rate: float = RATE_PER_S, burst: float = BURST) -> None:
        self.rate, self.burst = rate, burst
        self._tokens = burst
        self._at = now

    def take(self, now: float) -> bool:
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
