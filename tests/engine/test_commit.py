"""When an ACK or a REPORT_ACK is durable (PROTOCOL.md §6.1), on SQLite and MariaDB.

With the next group commit, paced by `limits.commit_window_ms`; retried every
`RETRY_PAUSE_S` while the store fails; and until then the engine remembers it,
so a reconnect of the device is not sent that message again.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from appliance.config.limits import EngineLimits
from appliance.credentials import token_hash
from appliance.engine.clock import FakeClock
from appliance.engine.commit import RETRY_PAUSE_S
from appliance.engine.core import Engine
from appliance.engine.submit import Sender
from appliance.errors import StorageUnavailableError
from appliance.protocol.wire import Ack, Hello, Message, ReportAck, Status
from appliance.protocol.wire.groups import GroupFlag
from appliance.storage.interface import Storage
from tests.engine.groups.harness import World, run as run_world
from tests.engine.test_delivery import FakeLink, Scheduler
from tests.engine.test_delivery_groups import group_of
from tests.engine.test_delivery_reports import Gate, delivered_to_alice, reports, run
from tests.storage.conftest import (
    Opener,
    backend as backend,  # the fixture: SQLite and MariaDB
)

WINDOW_MS = 2.0
#: A NO_STORE group's members besides its sender, and the sender's fan-out burst.
MEMBERS = 50
BURST = 500


def record_sleeps(engine: Engine, sched: Scheduler) -> list[float]:
    """The engine's pauses, in order; each moves the fake clock instead of waiting."""
    clock = engine.clock
    assert isinstance(clock, FakeClock)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.advance(seconds)
        await asyncio.sleep(0)

    sched.sleep = sleep  # type: ignore[method-assign]
    return waits


def test_acks_are_durable_with_the_next_commit_within_the_window(backend: Opener) -> None:
    async def body(engine: Engine, store: Storage, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        alice, _, bob, report_seq = await delivered_to_alice(engine, sched, tokens)
        waits = record_sleeps(engine, sched)
        engine.on_message(alice, Message(2, b"bob", b"two"))
        await sched.settle()
        [seq] = [m.seq for m in bob.link.messages() if m.id == 2]  # type: ignore[attr-defined]
        # Right after that commit: the ACK and the REPORT_ACK wait for the window, no more.
        engine.on_ack(bob, Ack((seq,)))
        engine.on_report_ack(alice, ReportAck(report_seq))
        await sched.settle()
        assert waits
        assert all(0 < w <= WINDOW_MS / 1000 for w in waits)
        assert await store.pending(bob.device_rowid, bob.user_id, engine.clock.wall_ms(),
                                   10) == []
        login = await store.authenticate(token_hash(tokens["alice"]), b"a")
        assert login is not None
        assert login.device is not None
        assert login.device.report_cursor == report_seq
    run(backend, body, EngineLimits(commit_window_ms=WINDOW_MS))


def test_a_failed_commit_is_retried_every_pause_until_the_store_is_back(
        backend: Opener) -> None:
    async def body(engine: Engine, store: Storage, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        alice, alice_link, bob, _ = await delivered_to_alice(engine, sched, tokens)
        engine.on_message(alice, Message(2, b"bob", b"two"))
        await sched.settle()
        [seq] = [m.seq for m in bob.link.messages() if m.id == 2]  # type: ignore[attr-defined]
        waits = record_sleeps(engine, sched)
        write, failures = store.write, [3]

        async def failing(*args: Any, **kwargs: Any) -> Any:
            if failures[0]:
                failures[0] -= 1
                raise StorageUnavailableError("SQLite: database or disk is full")
            return await write(*args, **kwargs)

        store.write = failing  # type: ignore[method-assign]
        engine.on_ack(bob, Ack((seq,)))
        await sched.settle()
        assert waits == [pytest.approx(RETRY_PAUSE_S)] * 3
        assert engine.stats_failed_batches == 3
        assert await store.pending(bob.device_rowid, bob.user_id, engine.clock.wall_ms(),
                                   10) == []
        # One report (re-sent while alice has not confirmed it: the re-read after recovery).
        assert len({r for r in reports(alice_link) if r[:2] == (2, Status.DELIVERED)}) == 1
    run(backend, body)


def test_a_reconnect_before_the_ack_is_durable_is_not_sent_the_message_again(
        backend: Opener) -> None:
    async def body(engine: Engine, store: Storage, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        alice, _, bob, _ = await delivered_to_alice(engine, sched, tokens)
        engine.on_message(alice, Message(2, b"bob", b"two"))
        await sched.settle()
        [seq] = [m.seq for m in bob.link.messages() if m.id == 2]  # type: ignore[attr-defined]
        commit = Gate(store, "write", before=True)
        engine.on_ack(bob, Ack((seq,)))
        await commit.arrived.wait()  # the ACK's commit has not started
        engine.close_session(bob)
        again = FakeLink()
        await engine.open_session(again, Hello(tokens["bob"], b"b"))
        drains = [t for t in sched.tasks if t.get_name() == "drain-messages" and not t.done()]
        if drains:
            await asyncio.wait(drains)
        assert again.messages() == []
        commit.release()
        await sched.settle()
        last = FakeLink()
        await engine.open_session(last, Hello(tokens["bob"], b"b"))
        await sched.settle()
        assert last.messages() == []
        assert reports(last) == []
    run(backend, body)


def test_a_flood_to_a_no_store_group_pays_for_its_relays(backend: Opener) -> None:
    """A NO_STORE group's messages go through the commit (its roster) and are relayed,
    never stored: the commit never learnt such a group's cost, so every message let in
    at 1 token before the first commit settled was relayed to every member unpaid (one
    a commit), however deep in debt its sender was (found by the session 17 review:
    200 of 200 relayed with a burst worth 9)."""
    async def body(w: World) -> None:
        names = [f"m{i}" for i in range(MEMBERS)]
        gid = await group_of(w, "alice", *names)
        await w.store.update_group(1, gid, flags=GroupFlag.NO_STORE)
        alice, link = await w.connect("alice")
        _, member = await w.connect("m0")
        for i in range(1, 201):  # at once: all of them before the first commit
            w.engine.on_message(alice, Message(i, b"", b"x", group_id=gid, expiry_s=3600))
        await w.settle()
        relayed = len(member.messages())
        statuses = Counter(status for _, status in link.statuses())
        # The burst, and the first message (its group's cost not known yet) at most.
        assert relayed * (MEMBERS + 1) <= BURST + MEMBERS + 1, (relayed, statuses)
        assert statuses == {Status.SENT: relayed, Status.RATE_LIMITED: 200 - relayed}
        assert w.engine.refusals["fanout_limited"] == 200 - relayed
        assert w.engine.uncommitted == 0
    run_world(backend, body, EngineLimits(commit_window_ms=0.0, fanout_burst=BURST,
                                          fanout_rate_per_s=0.001))


def test_a_no_store_message_pays_for_each_device_it_is_relayed_to(backend: Opener) -> None:
    """A NO_STORE group message was charged a delivery per member while the relay
    writes a frame per online device: a member online on 4 devices cost 1 (a sender
    got up to ``max_devices`` times its fan-out rate)."""
    async def body(w: World) -> None:
        gid = await group_of(w, "alice", "bob")
        await w.store.update_group(1, gid, flags=GroupFlag.NO_STORE)
        alice, _ = await w.connect("alice")
        links = [(await w.connect("bob", b"d%d" % i))[1] for i in range(4)]
        w.engine.on_message(alice, Message(1, b"", b"x", group_id=gid, expiry_s=3600))
        await w.settle()
        assert [len(link.messages()) for link in links] == [1, 1, 1, 1]
        rates = w.engine.quotas.fanout.rates
        now = w.clock.monotonic()
        assert not rates.take_cost(w.users["alice"], now, 7)  # 10 - 4 = 6 left
        assert rates.take_cost(w.users["alice"], now, 6)
    run_world(backend, body, EngineLimits(commit_window_ms=0.0, fanout_burst=10,
                                          fanout_rate_per_s=0.001))


def test_the_drain_waits_for_what_was_queued_not_for_what_keeps_coming(
        backend: Opener) -> None:
    """At shutdown the engine commits what is queued before the devices are told
    GOING_AWAY.  It waited for an empty batch: a device that goes on sending (or
    ACKing) never leaves one, and held the stop for its whole deadline (found by the
    session 17 review; tests/transport/test_shutdown.py has it end to end)."""
    async def body(w: World) -> None:
        await w.user("alice")
        await w.user("bob")
        alice, link = await w.connect("alice")
        for i in range(1, 6):
            w.engine.on_message(alice, Message(i, b"bob", b"queued", expiry_s=3600))
        more = iter(range(100, 300))
        write = w.store.write

        async def busy(batch: Any, now_ms: int) -> Any:
            result = await write(batch, now_ms)
            for i in more:  # one more message during every commit, 200 in all
                w.engine.on_message(alice, Message(i, b"bob", b"more", expiry_s=3600))
                break
            return result

        w.store.write = busy  # type: ignore[method-assign]
        commits = w.engine.commit.commits
        await w.engine.drain_writes()
        assert w.engine.commit.commits - commits <= 2
        assert [s for s in link.statuses() if s[0] < 100] == [
            (i, Status.SENT) for i in range(1, 6)]
    run_world(backend, body, EngineLimits(commit_window_ms=0.0))


def test_the_drain_waits_for_the_messages_held_back_for_later_commits(
        backend: Opener) -> None:
    """Submitted messages past ``commit_max_submitted`` wait for the commits after
    while a device's messages go in every one: the drain waits for all of them."""
    async def body(w: World) -> None:
        alice_id = await w.user("alice")
        await w.user("bob")
        alice, _ = await w.connect("alice")
        answers = w.engine.submit(Sender(1, alice_id, b"alice"), [
            Message(i, b"bob", b"submitted", expiry_s=3600) for i in range(1, 7)])
        more = iter(range(100, 300))
        write = w.store.write

        async def busy(batch: Any, now_ms: int) -> Any:
            result = await write(batch, now_ms)
            for i in more:  # the device sends during every commit
                w.engine.on_message(alice, Message(i, b"bob", b"more", expiry_s=3600))
                break
            return result

        w.store.write = busy  # type: ignore[method-assign]
        await w.engine.drain_writes()
        assert answers.done()  # 2 a commit: three commits, all of them waited for
        assert [a.status for a in await answers] == [Status.SENT] * 6
    run_world(backend, body, EngineLimits(commit_window_ms=0.0, commit_max_submitted=2))


def test_groups_not_seen_yet_are_learnt_one_a_commit_and_only_while_paid(
        backend: Opener) -> None:
    """After a restart no group's cost is known, and each message costs 1 until its
    commit teaches the cost: one message to each of many big groups, at once, wrote
    them all in one commit, unpaid (20 groups of 51: 1,020 deliveries with a burst of
    500).  A commit takes one message of a group not seen yet, and only from a sender
    not in debt."""
    async def body(w: World) -> None:
        names = [f"m{i}" for i in range(MEMBERS)]
        groups = [await group_of(w, "alice", *names) for _ in range(20)]
        alice, link = await w.connect("alice")
        for i, gid in enumerate(groups, 1):  # at once: before any commit
            w.engine.on_message(alice, Message(i, b"", b"x", group_id=gid, expiry_s=3600))
        await w.settle()
        statuses = Counter(status for _, status in link.statuses())
        sent = statuses[Status.SENT]
        # The burst, and one group's deliveries the debt came from.
        assert sent * (MEMBERS + 1) <= BURST + MEMBERS + 1, statuses
        assert statuses == {Status.SENT: sent, Status.RATE_LIMITED: 20 - sent}
        assert w.engine.uncommitted == 0
    run_world(backend, body, EngineLimits(commit_window_ms=0.0, fanout_burst=BURST,
                                          fanout_rate_per_s=0.001))
