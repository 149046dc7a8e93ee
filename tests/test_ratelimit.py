"""The per-connection request-rate bucket."""

from __future__ import annotations

from appliance.ratelimit import TokenBucket


def test_burst_then_rate() -> None:
    bucket = TokenBucket(0.0, rate=10.0, burst=5.0)
    assert [bucket.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.take(0.05) is False  # half a token
    assert bucket.take(0.1) is True  # one token after 0.1 s at 10/s
    assert bucket.take(100.0) is True  # refills, but never beyond the burst
    assert sum(bucket.take(100.0) for _ in range(10)) == 4
