"""The writer's directory cache (`storage.sql.directory`): bounded by what exists.

Attack first: messages to group ids that name no group.  Before, each such id
was cached as "no group" for as long as the directory did not change: one
backend sending arrays of random group ids (REST, no per-user rate) grew the
server by 96 MiB in 20 s (~80 bytes an id), for good.
"""

from __future__ import annotations

import random

import pytest

from appliance.protocol.wire.constants import STORED_U64_MAX, Status
from appliance.storage.interface import Storage
from appliance.storage.models import NewMessage, Outcome, Perm, WriteBatch
from tests.storage.conftest import Opener, run

NOW = 1_700_000_000_000
APP = 1


def _to_group(sender: int, msg_id: int, group_id: int) -> NewMessage:
    return NewMessage(APP, sender, 0, msg_id, b"", group_id, 0, NOW + 60_000, 0, 0, 0, b"x")


def test_ids_of_no_group_are_not_remembered(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        sender = (await store.create_user(APP, "mallory", NOW)).user_id
        group = await store.create_group(APP, "real", NOW)
        await store.set_member(APP, group.group_id, sender, Perm.DEFAULT)
        rng = random.Random(16)
        for batch_no in range(5):
            messages = [_to_group(sender, batch_no * 1000 + i + 1,
                                  rng.randrange(group.group_id + 1, STORED_U64_MAX))
                        for i in range(1000)]
            messages.append(_to_group(sender, 10**6 + batch_no, group.group_id))
            result = await store.write(WriteBatch(messages=messages), NOW)
            assert {a.status for a in result.accepted[:-1]} == {Status.INVALID_DEST}
            assert result.accepted[-1].outcome is Outcome.STORED
        directory = store._writer.state.directory  # type: ignore[attr-defined]
        assert len(directory._groups) <= 1  # the group that exists, not 5,000 that do not
    run(backend, go)


def _to_user(sender: int, msg_id: int, address: bytes) -> NewMessage:
    return NewMessage(APP, sender, 0, msg_id, address, 0, 0, NOW + 60_000, 0, 0, 0, b"x")


def test_a_batch_to_many_new_addresses_costs_a_few_reads(backend: Opener) -> None:
    """Attack first: a backend's arrays to 1,000 addresses of no one.  Each address
    cost the writer one read inside the commit (1,000+ statements a batch): under
    an HTTP/2 flood of such arrays a commit of 500 took ~100 ms and every
    device's message in it waited as long (honest p99 500-900 ms).  Now the
    batch's users and blocks are read `CHUNK` at a time (`Directory.prefetch`)."""
    async def go(store: Storage) -> None:
        sender = (await store.create_user(APP, "backend", NOW)).user_id
        real = [(await store.create_user(APP, f"real{i}", NOW)).user_id for i in range(6)]
        await store.set_block(APP, real[0], b"backend", True, NOW)
        await store.set_block(APP, real[1], b"backend", True, NOW)
        conn = store._writer.state.conn  # type: ignore[attr-defined]
        statements: list[str] = []
        execute = conn.execute

        def counting(sql: str, *args: object) -> object:
            statements.append(sql)
            return execute(sql, *args)

        conn.execute = counting
        messages = [_to_user(sender, i + 1, f"ghost{i}".encode()) for i in range(1200)]
        messages += [_to_user(sender, 2000 + i, f"real{i}".encode()) for i in range(6)]
        result = await store.write(WriteBatch(messages=messages), NOW)
        reads = [sql for sql in statements if sql.lstrip().upper().startswith("SELECT")]
        statuses = [a.status for a in result.accepted]
        assert set(statuses[:1200]) == {Status.INVALID_DEST}
        assert statuses[1200:] == [Status.BLOCKED, Status.BLOCKED] + [Status.SENT] * 4
        # 3 chunks of addresses, 1 of blocks, then the batch's own (dedupe, quotas, ...).
        assert len(reads) < 20, reads
        directory = store._writer.state.directory  # type: ignore[attr-defined]
        assert not directory._absent  # addresses of no one are forgotten after the batch
        # An address of no one then, of someone now: its next message is stored.
        conn.execute = execute
        await store.create_user(APP, "ghost7", NOW)
        again = await store.write(WriteBatch(messages=[_to_user(sender, 5000, b"ghost7")]), NOW)
        assert again.accepted[0].outcome is Outcome.STORED
        # A block set after the batch read its pairs is seen by the next batch.
        await store.set_block(APP, real[2], b"backend", True, NOW)
        later = await store.write(WriteBatch(messages=[_to_user(sender, 5001, b"real2")]), NOW)
        assert later.accepted[0].status is Status.BLOCKED
    run(backend, go)


def test_the_writers_caches_start_again_past_their_bound(
        backend: Opener, monkeypatch: pytest.MonkeyPatch) -> None:
    """The caches of users, devices and per-user counters grew with every user ever
    messaged (~0.7 KB each, found by the session 18 review): an app backend messaging
    millions of users grew the server by gigabytes.  Past `MAX_CACHED_ENTRIES` they
    start again at the next transaction, and what they held is read again as needed."""
    from appliance.storage.sql import state
    monkeypatch.setattr(state, "MAX_CACHED_ENTRIES", 60)

    async def go(store: Storage) -> None:
        sender = (await store.create_user(APP, "backend", NOW)).user_id
        for i in range(100):
            await store.create_user(APP, f"u{i}", NOW)
        writer_state = store._writer.state  # type: ignore[attr-defined]
        peak = 0
        for batch_no in range(10):
            messages = [_to_user(sender, batch_no * 10 + i + 1, f"u{batch_no * 10 + i}".encode())
                        for i in range(10)]
            result = await store.write(WriteBatch(messages=messages), NOW)
            assert {a.outcome for a in result.accepted} == {Outcome.STORED}
            peak = max(peak, len(writer_state.directory) + len(writer_state.highest)
                       + len(writer_state.usage))
        # At most the bound, plus one batch's worth (the check runs as a transaction begins).
        assert peak <= 60 + 10 * 4, peak
        # Read again as needed: a message to the first user is still routed and stored.
        again = await store.write(WriteBatch(messages=[_to_user(sender, 500, b"u0")]), NOW)
        assert again.accepted[0].outcome is Outcome.STORED
    run(backend, go)
