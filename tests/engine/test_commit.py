"""When an ACK or a REPORT_ACK is durable (PROTOCOL.md §6.1), on SQLite and MariaDB.

With the next group commit, paced by `limits.commit_window_ms`; retried every
`RETRY_PAUSE_S` while the store fails; and until then the engine remembers it,
so a reconnect of the device is not sent that message again.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from appliance.config.limits import EngineLimits
from appliance.credentials import token_hash
from appliance.engine.clock import FakeClock
from appliance.engine.commit import RETRY_PAUSE_S
from appliance.engine.core import Engine
from appliance.errors import StorageUnavailableError
from appliance.protocol.wire import Ack, Hello, Message, ReportAck, Status
from appliance.storage.interface import Storage
from tests.engine.test_delivery import FakeLink, Scheduler
from tests.engine.test_delivery_reports import Gate, delivered_to_alice, reports, run
from tests.storage.conftest import (
    Opener,
    backend as backend,  # the fixture: SQLite and MariaDB
)

WINDOW_MS = 2.0


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
