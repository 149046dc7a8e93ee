"""Bounds of PROTOCOL.md §6.1 that the engine's sweep and answers give, on SQLite and MariaDB.

* EXPIRED comes with the first sweep after the expiry, at most `SWEEP_LIMIT`
  delivery rows a sweep (the server sweeps every `limits.sweep_interval_s`:
  tests/e2e/test_delivery.py checks that interval end to end);
* a duplicate is answered with the stored status and the time the message was
  first accepted, report_seq 0;
* dedupe lasts `limits.max_expiry_s` after acceptance, whatever the expiry.
"""

from __future__ import annotations

from appliance.config.limits import EngineLimits
from appliance.engine.clock import FakeClock
from appliance.engine.core import Engine
from appliance.engine.session import Session
from appliance.protocol.wire import Ack, Hello, Message, ReadReport, Status, StatusReport
from appliance.storage.interface import Storage
from appliance.storage.models import NewMessage, Perm, WriteBatch
from appliance.storage.sql.expiry import SWEEP_LIMIT
from tests.engine.test_delivery import FakeLink, Scheduler
from tests.engine.test_delivery_reports import run
from tests.storage.conftest import (
    Opener,
    backend as backend,  # the fixture: SQLite and MariaDB
)

MINUTE_S = 60


def answers(link: FakeLink) -> list[StatusReport]:
    return [e for e in link.events if isinstance(e, StatusReport)]


def clock_of(engine: Engine) -> FakeClock:
    clock = engine.clock
    assert isinstance(clock, FakeClock)
    return clock


async def online(engine: Engine, sched: Scheduler, token: bytes,
                 device: bytes) -> tuple[Session, FakeLink]:
    link = FakeLink()
    session = await engine.open_session(link, Hello(token, device))
    await sched.settle()
    return session, link


def test_expired_is_reported_by_the_first_sweep_after_the_expiry(backend: Opener) -> None:
    async def body(engine: Engine, store: Storage, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        clock = clock_of(engine)
        alice, link = await online(engine, sched, tokens["alice"], b"a")
        engine.on_message(alice, Message(1, b"bob", b"x", expiry_s=MINUTE_S))
        await sched.settle()
        [sent] = answers(link)
        clock.advance(MINUTE_S - 0.001)
        assert await engine.sweep_once() == 0  # not yet due
        clock.advance(0.001)
        assert await engine.sweep_once() == 1  # due: the first sweep reports it
        expired = answers(link)[-1]
        assert (expired.id, expired.status, expired.peer) == (1, Status.EXPIRED, b"bob")
        assert expired.report_seq > 0
        assert expired.timestamp_ms == clock.wall_ms() == sent.timestamp_ms + MINUTE_S * 1000
    run(backend, body)


def test_a_wave_larger_than_a_sweep_takes_one_more_sweep_per_limit(backend: Opener) -> None:
    async def body(engine: Engine, store: Storage, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        clock = clock_of(engine)
        alice, _ = await online(engine, sched, tokens["alice"], b"a")
        now = clock.wall_ms()
        wave = [NewMessage(1, alice.user_id, alice.device_rowid, i, b"bob", 0, 0, now + 1000, 0,
                           3, 0, b"w") for i in range(1, SWEEP_LIMIT + 2)]
        await store.write(WriteBatch(messages=wave), now)
        clock.advance(1)
        assert [await engine.sweep_once() for _ in range(3)] == [SWEEP_LIMIT, 1, 0]
    run(backend, body)


def test_a_duplicate_is_answered_with_the_stored_status_and_first_acceptance_time(
        backend: Opener) -> None:
    async def body(engine: Engine, store: Storage, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        clock = clock_of(engine)
        alice, alice_link = await online(engine, sched, tokens["alice"], b"a")
        bob, bob_link = await online(engine, sched, tokens["bob"], b"b")
        group = await store.create_group(1, "g", clock.wall_ms())
        for member in (alice, bob):
            await store.set_member(1, group.group_id, member.user_id, Perm.DEFAULT)
        engine.on_message(alice, Message(1, b"bob", b"one"))
        engine.on_message(alice, Message(2, b"", b"all", group_id=group.group_id))
        await sched.settle()
        first = {s.id: s.timestamp_ms for s in answers(alice_link)}

        async def resend(msg_id: int) -> tuple[int, int, int, bytes]:
            clock.advance(5)
            payload = b"one" if msg_id == 1 else b"all"
            engine.on_message(alice, Message(msg_id, b"" if msg_id == 2 else b"bob", payload,
                                             group_id=group.group_id if msg_id == 2 else 0))
            await sched.settle()
            dup = answers(alice_link)[-1]
            assert (dup.id, dup.timestamp_ms) == (msg_id, first[msg_id])
            return dup.status, dup.report_seq, dup.group_id, dup.peer

        assert await resend(1) == (Status.SENT, 0, 0, b"")
        engine.on_ack(bob, Ack(tuple(m.seq for m in bob_link.messages())))
        await sched.settle()
        assert await resend(1) == (Status.DELIVERED, 0, 0, b"")
        engine.on_read(bob, ReadReport(b"alice", 0, (1,)))
        await sched.settle()
        assert await resend(1) == (Status.READ, 0, 0, b"")
        # A group message: its members' progress is in the stored reports only.
        assert (2, Status.DELIVERED) in alice_link.statuses()
        assert await resend(2) == (Status.SENT, 0, 0, b"")
        assert [m.id for m in bob_link.messages()] == [1, 2]  # never delivered again
    run(backend, body)


def test_dedupe_lasts_max_expiry_after_acceptance_whatever_the_expiry(backend: Opener) -> None:
    hour_s = 3600

    async def body(engine: Engine, store: Storage, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        clock = clock_of(engine)
        alice, link = await online(engine, sched, tokens["alice"], b"a")
        engine.on_message(alice, Message(1, b"bob", b"x", expiry_s=MINUTE_S))
        await sched.settle()
        [sent] = answers(link)
        clock.advance(MINUTE_S)
        assert await engine.sweep_once() == 1  # EXPIRED

        async def resend() -> StatusReport:
            engine.on_message(alice, Message(1, b"bob", b"x", expiry_s=MINUTE_S))
            await sched.settle()
            return answers(link)[-1]

        clock.advance(hour_s - MINUTE_S - 0.001)  # max_expiry_s after acceptance, almost
        await engine.sweep_once()
        dup = await resend()
        assert (dup.status, dup.timestamp_ms, dup.report_seq) == (Status.EXPIRED,
                                                                  sent.timestamp_ms, 0)
        clock.advance(0.001)
        await engine.sweep_once()  # the record goes: a resend is a new message
        new = await resend()
        assert (new.status, new.timestamp_ms) == (Status.SENT, clock.wall_ms())
        _, bob_link = await online(engine, sched, tokens["bob"], b"b")
        assert [m.payload for m in bob_link.messages()] == [b"x"]
    run(backend, body, EngineLimits(commit_window_ms=0.0, max_expiry_s=hour_s))
