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


def test_a_cost_is_taken_whole_or_not_at_all_and_a_debt_is_paid_back_at_the_rate() -> None:
    rates = UserRates(rate=100.0, burst=1000, max_users=10)
    assert rates.take_cost(1, 0.0, 600)
    assert not rates.take_cost(1, 0.0, 600)  # 400 left: none of it is taken
    assert rates.take_cost(1, 0.0, 400)
    # A cost above the burst passes on a full bucket, into debt.
    assert rates.take_cost(2, 0.0, 5000)
    assert not rates.take_cost(2, 39.0, 1)  # 1,000 - 5,000 + 3,900
    assert rates.take_up_to(2, 39.0, 10) == 0  # no tokens while in debt
    assert rates.take_cost(2, 40.1, 1)  # paid back after 40 s at 100/s
    # `charge` puts into debt whatever is left, and refunds (never beyond the burst).
    rates.charge(3, 0.0, 1500)
    assert not rates.take_cost(3, 4.9, 1)
    assert rates.take_cost(3, 5.1, 1)
    rates.charge(3, 5.1, -10_000)
    assert rates.take_up_to(3, 5.1, 2000) == 1000
