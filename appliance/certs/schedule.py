"""When to renew, and when to try again after a failure (pure arithmetic).

- Renew when `renew_remaining` (default ⅓) of the lifetime remains — not a
  fixed "30 days before": Let's Encrypt's lifetimes shrink to 64 and 6 days
  (guide 6.3; certmagic's DefaultRenewalWindowRatio) — or earlier when the
  CA's renewal information (RFC 9773) suggests a time.
- After a failure, wait `retry_min_s` doubling per failure up to
  `retry_max_s`, with ±25 % jitter so a fleet that failed together does not
  come back together; never before the CA's Retry-After.
"""

from __future__ import annotations

import random


def renewal_due_ms(not_before_ms: int, not_after_ms: int, renew_remaining: float,
                   suggested_ms: int = 0) -> int:
    """When a certificate valid over [not_before, not_after] should be renewed.

    `suggested_ms` (0 = none) is the CA's renewal information; the earlier wins.
    """
    lifetime = max(0, not_after_ms - not_before_ms)
    due = not_after_ms - int(lifetime * renew_remaining)
    return min(due, suggested_ms) if suggested_ms else due


def backoff_ms(failures: int, retry_min_s: float, retry_max_s: float,
               rand: random.Random | None = None) -> int:
    """How long to wait after the `failures`-th failure in a row (1 = the first)."""
    exponent = min(max(failures, 1) - 1, 40)
    base = min(retry_max_s, retry_min_s * 2.0 ** exponent)
    jitter = (rand or random).uniform(0.75, 1.25)
    return int(min(retry_max_s, base * jitter) * 1000)


def next_attempt_ms(now_ms: int, failures: int, retry_min_s: float, retry_max_s: float,
                    retry_at_ms: int = 0, rand: random.Random | None = None) -> int:
    """The earliest time to ask a CA again: backoff, and not before its Retry-After."""
    return max(now_ms + backoff_ms(failures, retry_min_s, retry_max_s, rand), retry_at_ms)
