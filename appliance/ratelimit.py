"""A token bucket: the one rate rule (per HTTP connection, per IP, per user).

Pure: the caller passes its clock's monotonic time, so the edge, the transport,
the engine and media share it without importing each other.  `UserRates` is a
bounded table of buckets by user id (sends, device registrations, uploads,
link previews).
"""

from __future__ import annotations

from collections.abc import Hashable

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


class _UserBucket(TokenBucket):
    __slots__ = ()

    def take_up_to(self, now: float, wanted: int) -> int:
        """Take up to `wanted` whole tokens at once; how many were taken."""
        tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        granted = max(0, min(wanted, int(tokens)))  # none while in debt (`charge`)
        self._tokens = tokens - granted
        return granted

    def take_cost(self, now: float, cost: int) -> bool:
        """Spend `cost` tokens at once, or none.  A cost above the burst passes when the
        bucket is full, leaving it in debt: what costs more than the burst is still
        possible, at the rate."""
        tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if tokens < min(cost, self.burst):
            self._tokens = tokens
            return False
        self._tokens = tokens - cost
        return True

    def charge(self, now: float, amount: float) -> None:
        """Spend `amount` (a refund when negative) whatever is left: the bucket may go
        into debt, and takes nothing until the rate has paid it back."""
        tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens = min(self.burst, tokens - amount)

    def idle_full(self, now: float) -> bool:
        """Whether the bucket has refilled: forgetting it changes nothing."""
        return self._tokens + (now - self._at) * self.rate >= self.burst


class UserRates:
    """A token bucket per user (an id, or any hashable key), for at most `max_users` users."""

    __slots__ = ("_buckets", "burst", "max_users", "rate")

    def __init__(self, rate: float, burst: float, max_users: int) -> None:
        self.rate, self.burst, self.max_users = rate, burst, max_users
        self._buckets: dict[Hashable, _UserBucket] = {}

    def take(self, user_id: Hashable, now: float) -> bool:
        """Spend one token of `user_id`'s; False when it has none left."""
        return self.take_up_to(user_id, now, 1) == 1

    def take_up_to(self, user_id: Hashable, now: float, wanted: int) -> int:
        """Spend up to `wanted` tokens of `user_id`'s; how many it got."""
        return self._bucket(user_id, now).take_up_to(now, wanted)

    def take_cost(self, user_id: Hashable, now: float, cost: int) -> bool:
        """Spend `cost` tokens of `user_id`'s at once, or none (`_UserBucket.take_cost`)."""
        return self._bucket(user_id, now).take_cost(now, cost)

    def charge(self, user_id: Hashable, now: float, amount: float) -> None:
        """Spend `amount` of `user_id`'s tokens, into debt if need be (`_UserBucket.charge`)."""
        self._bucket(user_id, now).charge(now, amount)

    def _bucket(self, user_id: Hashable, now: float) -> _UserBucket:
        bucket = self._buckets.get(user_id)
        if bucket is None:
            if len(self._buckets) >= self.max_users:
                self._evict(now)
            bucket = self._buckets[user_id] = _UserBucket(now, self.rate, self.burst)
        return bucket

    def _evict(self, now: float) -> None:
        """Make room: drop the buckets that refilled, else the oldest quarter.

        Amortised O(1) per new user.  Dropping a bucket that has not refilled
        gives its user a fresh burst: the price of a bounded table, paid only
        by a server that sees more than `max_users` users within a refill time.
        """
        buckets = self._buckets
        for user in [u for u, b in buckets.items() if b.idle_full(now)]:
            del buckets[user]
        if len(buckets) >= self.max_users:
            for user in list(buckets)[:max(1, len(buckets) // 4)]:
                del buckets[user]

    def __len__(self) -> int:
        return len(self._buckets)
