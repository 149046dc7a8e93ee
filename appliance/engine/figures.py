"""What the engine counts for the operator's metrics (`appliance.metrics` reads it at scrape time).

The message path pays one list increment per message (the status answered
to its sender) and nothing else; everything per commit (its latency) is
observed once per group-commit batch, not per message.  No lock: the event
loop is the only writer, and a scrape runs on it too.
"""

from __future__ import annotations

import bisect
import collections
from typing import Final

#: Commit latency bucket bounds, seconds: an fdatasync on an SSD is ~0.5-2 ms,
#: a MariaDB commit over a LAN a few ms, a stalled disk seconds.
COMMIT_BUCKETS_S: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                           1.0, 2.5, 5.0, 10.0)
#: Statuses are one byte on the wire (PROTOCOL.md §3.5): a table indexed by the code.
STATUS_CODES: Final = 256


class Histogram:
    """Fixed buckets (non-cumulative counts; the last one is +Inf), a sum and a count."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le is inclusive).
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)


class EngineFigures:
    """Counters the engine keeps for `/metrics`, by status code or operation."""

    __slots__ = ("answered", "commit_seconds", "reported", "store_errors")

    def __init__(self) -> None:
        #: Messages answered to their sender, by the status answered (SENT or a
        #: refusal): native, WebSocket and REST sends alike.
        self.answered = [0] * STATUS_CODES
        #: Status reports produced for senders (DELIVERED, READ, EXPIRED; SPEC M3).
        self.reported = [0] * STATUS_CODES
        #: Seconds per successful group commit, one observation per batch.
        self.commit_seconds = Histogram(COMMIT_BUCKETS_S)
        #: Store calls that failed, by operation ("read", "sweep"; failed commits are
        #: `Engine.stats_failed_batches`).
        self.store_errors: collections.Counter[str] = collections.Counter()
