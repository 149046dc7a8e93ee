"""The token bucket (per connection, per IP) and the bounded table of them per user."""

from __future__ import annotations

from appliance.ratelimit import TokenBucket, UserRates


def test_burst_then_rate() -> None:
    bucket = TokenBucket(0.0, rate=10.0, burst=5.0)
    assert [bucket.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.take(0.05) is False  # half a token
    assert bucket.take(0.1) is True  # one token after 0.1 s at 10/s
    assert bucket.take(100.0) is True  # refills, but never beyond the burst
    assert sum(bucket.take(100.0) for _ in range(10)) == 4


def test_user_rates_refill_and_stay_bounded() -> None:
    rates = UserRates(rate=10.0, burst=3, max_users=100)
    assert [rates.take(1, 0.0) for _ in range(4)] == [True, True, True, False]
    assert rates.take(2, 0.0)  # another user has its own bucket
    assert rates.take(1, 0.1)  # one token back after 0.1 s
    assert not rates.take(1, 0.1)
    # 10,000 users one after another: the table never holds more than max_users.
    for user in range(10, 10_010):
        rates.take(user, 1.0)
        assert len(rates) <= 100
    # Making room drops the buckets that refilled (forgetting them changes
    # nothing), else the oldest quarter.
    busy = UserRates(rate=1.0, burst=2, max_users=4)
    for user in (1, 2, 3, 4):
        busy.take(user, 0.0)
    busy.take(5, 0.5)  # none refilled: user 1 (the oldest) goes
    assert len(busy) == 4
    busy.take(6, 10.0)  # all refilled: all go
    assert len(busy) == 1


def test_user_rates_take_any_hashable_key() -> None:
    rates = UserRates(rate=1.0, burst=1, max_users=10)
    assert rates.take((1, 42), 0.0)
    assert rates.take((2, 42), 0.0)  # the same user id in another app: another bucket
    assert not rates.take((1, 42), 0.0)
