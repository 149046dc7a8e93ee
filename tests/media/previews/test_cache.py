"""TtlCache: entries expire, and the least recently used goes past the bound."""

from __future__ import annotations

from appliance.media.previews.cache import TtlCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_their_ttl() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(10, clock)
    cache.put("a", 1, 10.0)
    cache.put("b", 2, 100.0)
    clock.now = 9.9
    assert cache.get("a") == 1
    clock.now = 10.0
    assert cache.get("a") is None
    assert cache.get("b") == 2
    assert len(cache) == 1


def test_least_recently_used_goes_first() -> None:
    cache: TtlCache[int, int] = TtlCache(3, Clock())
    for key in range(3):
        cache.put(key, key, 60.0)
    assert cache.get(0) == 0  # 0 is now the most recent
    cache.put(3, 3, 60.0)
    assert cache.get(1) is None
    assert [cache.get(k) for k in (0, 2, 3)] == [0, 2, 3]
    for key in range(100, 1100):
        cache.put(key, key, 60.0)
    assert len(cache) == 3


def test_the_cost_bound_evicts_too() -> None:
    cache: TtlCache[int, str] = TtlCache(100, Clock(), max_cost=1000)
    for key in range(10):
        cache.put(key, "x", 60.0, cost=300)
    assert len(cache) == 3
    assert cache.cost == 900
    cache.put(9, "y", 60.0, cost=100)  # replacing an entry replaces its cost
    assert cache.cost == 700
    cache.put(50, "huge", 60.0, cost=5000)  # larger than the bound: not kept, nor anything
    assert cache.get(50) is None
    assert cache.cost == 0
