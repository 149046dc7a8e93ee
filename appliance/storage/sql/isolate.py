"""Committing what is good in a batch the store refused.

A group-commit batch carries many senders' writes.  When the store refuses
one of them (a value it cannot hold, a bug), the whole transaction is rolled
back; without this, every sender of the batch would be told FAILED and the
engine, which retries acknowledgements with the next batch, would fail that
one too, and every one after it (issue 12: one user stalled every app).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from appliance.errors import StorageError, StorageUnavailableError
from appliance.protocol.wire.constants import Status
from appliance.storage.models import Accepted, Outcome, Receipt, WriteBatch, WriteResult

log = logging.getLogger(__name__)

Commit = Callable[[WriteBatch, int], WriteResult]


def isolate(commit: Commit, batch: WriteBatch, now_ms: int) -> WriteResult:
    """Commit `batch` in halves, recursively, leaving out each item that fails alone.

    Only on the failure path: k bad items among n cost O(k log n)
    transactions.  A message left out is answered FAILED (nothing stored); an
    acknowledgement, read or report confirmation left out is dropped (the
    device sends it again if it still matters).  Each item left out is
    logged on one line.

    Raises:
        StorageUnavailableError: the store went away meanwhile; what was
            committed before stays committed, the rest is FAILED by the caller.
    """
    # FAILED (PROTOCOL.md §4): nothing stored, resend later with the same id.
    accepted = [Accepted(Outcome.REJECTED, Status.FAILED)] * len(batch.messages)
    receipts: list[Receipt] = []
    parts = _items(batch)

    def run(part: list[WriteBatch]) -> None:
        sub = _merge(part)
        try:
            result = commit(sub, now_ms)
        except StorageUnavailableError:
            raise
        except StorageError as exc:
            if len(part) == 1:
                log.warning("a write was refused by the store and left out of its batch: %s",
                            exc)
                return
            half = len(part) // 2
            run(part[:half])
            run(part[half:])
            return
        slots = [slot for one in part for slot in _message_slot(one)]
        for slot, acc in zip(slots, result.accepted, strict=True):
            accepted[slot] = acc
        receipts.extend(result.receipts)

    index = {id(m): i for i, m in enumerate(batch.messages)}

    def _message_slot(one: WriteBatch) -> list[int]:
        return [index[id(m)] for m in one.messages]

    run(parts)
    return WriteResult(accepted, receipts)


def _items(batch: WriteBatch) -> list[WriteBatch]:
    """One single-item batch per write of `batch`, messages first (as `apply` orders them)."""
    items = [WriteBatch(messages=[m]) for m in batch.messages]
    items += [WriteBatch(acks=[a]) for a in batch.acks]
    items += [WriteBatch(reads=[r]) for r in batch.reads]
    items += [WriteBatch(report_acks={d: s}) for d, s in batch.report_acks.items()]
    items += [WriteBatch(seen={d: ms}) for d, ms in batch.seen.items()]
    items += [WriteBatch(last_seen={u: ms}) for u, ms in batch.last_seen.items()]
    return items


def _merge(part: list[WriteBatch]) -> WriteBatch:
    merged = WriteBatch()
    for one in part:
        merged.messages += one.messages
        merged.acks += one.acks
        merged.reads += one.reads
        merged.report_acks.update(one.report_acks)
        merged.seen.update(one.seen)
        merged.last_seen.update(one.last_seen)
    return merged
