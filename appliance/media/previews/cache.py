"""A bounded cache with a time to live per entry (least recently used goes first)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """At most `max_entries` costing at most `max_cost` in all; each entry expires `ttl_s`
    after it was put.

    `clock` is monotonic seconds (``time.monotonic`` or a test's).  An expired
    entry is dropped when met; past either bound the least recently used go.
    The cost is the caller's measure (bytes, roughly): memory stays bounded
    however large the entries an attacker can make.
    """

    __slots__ = ("_clock", "_entries", "cost", "max_cost", "max_entries")

    def __init__(self, max_entries: int, clock: Callable[[], float],
                 max_cost: int | None = None) -> None:
        self.max_entries = max_entries
        self.max_cost = max_entries if max_cost is None else max_cost
        self.cost = 0
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V, int]] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The live value for `key`, or None (a hit counts as a use)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: K, value: V, ttl_s: float, cost: int = 1) -> None:
        """Store `value` for `ttl_s` seconds, evicting the least recently used past a bound."""
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (self._clock() + ttl_s, value, cost)
        self.cost += cost
        while len(self._entries) > self.max_entries or self.cost > self.max_cost:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: K) -> None:
        self.cost -= self._entries.pop(key)[2]

    def __len__(self) -> int:
        return len(self._entries)
