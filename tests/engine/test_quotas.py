"""Per-user quotas in the engine (issue 12 finding 6): rates, registrations, ids per commit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.config.limits import EngineLimits
from appliance.credentials import token_hash
from appliance.engine.clock import FakeClock
from appliance.engine.core import Engine
from appliance.engine.quotas import IdBudget, Quotas
from appliance.engine.session import Session
from appliance.errors import AuthError, ConfigError
from appliance.protocol.wire import Ack, CloseCode, Hello, Message, ReadReport, Status
from appliance.protocol.wire.frames import MAX_IDS_PER_FRAME
from appliance.storage.sqlite import SqliteStorage
from tests.engine.test_delivery import FakeLink, Scheduler


def test_id_budget_pauses_until_the_batch_is_taken() -> None:
    link = FakeLink()
    session = Session(link, 1, 1, b"a", b"d", 1, 0)
    budget = IdBudget(limit=100)
    budget.charge(session, 60)
    assert not link.paused
    budget.charge(session, 60)
    assert link.paused
    assert budget.batch_taken() == [session]
    held = budget.batch_taken()  # a batch without ids is committing...
    budget.charge(session, 200)  # ...while the next one is charged
    assert held == []  # so its commit does not resume the session
    assert budget.batch_taken() == [session]


async def _engine(tmp: Path, **limits: object) -> tuple[Engine, FakeClock, Scheduler,
                                                        dict[str, bytes]]:
    clock = FakeClock()
    store = await SqliteStorage.open(tmp / "q.sqlite3", clock.wall_ms())
    tokens = {}
    for name in ("alice", "bob"):
        user = await store.create_user(1, name, clock.wall_ms())
        tokens[name] = f"tok-{name}".encode()
        await store.store_token(user.user_id, token_hash(tokens[name]),
                                clock.wall_ms() + 10**9, clock.wall_ms())
    sched = Scheduler()
    return Engine(store, clock, EngineLimits(**limits), sched), clock, sched, tokens  # type: ignore[arg-type]


def test_messages_over_the_send_rate_are_refused_and_not_stored(tmp_path: Path) -> None:
    async def go() -> None:
        engine, clock, sched, tokens = await _engine(tmp_path, send_rate_per_s=10.0,
                                                     send_burst=3)
        try:
            alice_link, bob_link = FakeLink(), FakeLink()
            alice = await engine.open_session(alice_link, Hello(tokens["alice"], b"a"))
            await engine.open_session(bob_link, Hello(tokens["bob"], b"b"))
            await sched.settle()
            for n in range(1, 6):
                engine.on_message(alice, Message(n, b"bob", b"hi"))
            engine.on_message(alice, Message(6, b"bob", b"rt", expiry_s=0))
            await sched.settle()
            # Real-time messages are not counted (never stored).
            assert sorted(alice_link.statuses()) == [
                (1, Status.SENT), (2, Status.SENT), (3, Status.SENT),
                (4, Status.RATE_LIMITED), (5, Status.RATE_LIMITED), (6, Status.SENT)]
            assert sorted(m.id for m in bob_link.messages()) == [1, 2, 3, 6]
            clock.advance(0.1)  # one token back
            engine.on_message(alice, Message(4, b"bob", b"hi"))
            await sched.settle()
            assert alice_link.statuses()[-1] == (4, Status.SENT)
        finally:
            await sched.settle()
            await engine.store.close()
    asyncio.run(go())


def test_new_devices_over_the_registration_rate_are_refused_at_hello(tmp_path: Path) -> None:
    async def go() -> None:
        engine, clock, sched, tokens = await _engine(
            tmp_path, device_registration_burst=2, device_registrations_per_hour=1.0)
        try:
            for device in (b"d1", b"d2"):
                session = await engine.open_session(FakeLink(), Hello(tokens["alice"], device))
                engine.close_session(session)
            with pytest.raises(AuthError) as refused:
                await engine.open_session(FakeLink(), Hello(tokens["alice"], b"d3"))
            assert refused.value.close_code == CloseCode.TOO_MANY_DEVICES
            assert "too fast" in str(refused.value)
            # A known device is not a registration; another user has its own rate.
            await engine.open_session(FakeLink(), Hello(tokens["alice"], b"d1"))
            await engine.open_session(FakeLink(), Hello(tokens["bob"], b"b1"))
            clock.advance(3600)
            await engine.open_session(FakeLink(), Hello(tokens["alice"], b"d3"))
        finally:
            await sched.settle()
            await engine.store.close()
    asyncio.run(go())


def test_ack_and_read_floods_pause_the_connection_and_take_at_most_a_window(
        tmp_path: Path) -> None:
    async def go() -> None:
        engine, _clock, sched, tokens = await _engine(tmp_path, window=500)
        try:
            link = FakeLink()
            mallory = await engine.open_session(link, Hello(tokens["alice"], b"m"))
            await sched.settle()
            engine.on_ack(mallory, Ack(tuple(range(10**9, 10**9 + 8000))))
            engine.on_read(mallory, ReadReport(peer=b"bob", group_id=0,
                                               ids=tuple(range(1, 8001))))
            # At most MAX_IDS_PER_FRAME unknown seqs or ids are taken from a frame...
            assert len(engine.commit.batch.acks) == MAX_IDS_PER_FRAME
            assert len(mallory.acked) == MAX_IDS_PER_FRAME
            assert [len(r[4]) for r in engine.commit.batch.reads] == [MAX_IDS_PER_FRAME]
            # ...and over a window, the connection is not read until they are committed.
            assert link.paused
            await sched.settle()
            assert not link.paused
            assert mallory.acked == set()
        finally:
            await sched.settle()
            await engine.store.close()
    asyncio.run(go())


def test_connected_devices_are_seen_again_before_they_could_go_stale(tmp_path: Path) -> None:
    async def go() -> None:
        engine, clock, sched, tokens = await _engine(tmp_path, device_stale_s=3600)
        try:
            session = await engine.open_session(FakeLink(), Hello(tokens["alice"], b"a"))
            await sched.settle()
            await engine.sweep_once()
            await sched.settle()
            clock.advance(600)
            await engine.sweep_once()  # within a quarter of device_stale_s: nothing
            assert engine.commit.batch.seen == {}
            clock.advance(400)
            await engine.sweep_once()
            assert engine.commit.batch.seen == {session.device_rowid: clock.wall_ms()}
        finally:
            await sched.settle()
            await engine.store.close()
    asyncio.run(go())


def test_sessions_take_send_credit_from_their_users_shared_rate() -> None:
    quotas = Quotas(EngineLimits(send_rate_per_s=1.0, send_burst=64))
    assert quotas.credit == 8
    phone, laptop = (Session(FakeLink(), 1, 1, b"a", d, n, 0) for n, d in ((1, b"p"), (2, b"l")))

    def send(session: Session) -> bool:  # what Engine.on_message does
        if session.send_credit <= 0 and not quotas.may_send(session, 0.0):
            return False
        session.send_credit -= 1
        return True

    sent = sum(send(phone) + send(laptop) for _ in range(100))
    assert sent == 64  # the user's burst, over both devices
    assert phone.send_block == 8  # blocks grew 1, 2, 4, 8
    assert not send(phone)
    assert quotas.may_send(phone, 1.0)  # one token back after a second


@pytest.mark.parametrize(("key", "value"), [
    ("send_rate_per_s", 0), ("send_burst", 0), ("max_queued_messages", 0),
    ("max_queued_bytes", 0), ("max_app_queued_bytes", -1), ("device_stale_s", 1),
    ("device_registrations_per_hour", 0), ("device_registration_burst", 0),
    ("max_rate_users", 1)])
def test_quota_config_keys_are_range_checked_by_name(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(None, {f"limits.{key}": value})
    assert refused.value.key_path == f"limits.{key}"


def test_quota_config_defaults_are_on() -> None:
    limits = load_config(None).limits
    assert limits.send_rate_per_s > 0
    assert limits.max_queued_messages > 0
    assert limits.device_stale_s < limits.max_expiry_s  # well before the 7-day retention


def test_new_devices_racing_their_hellos_stay_within_max_devices(tmp_path: Path) -> None:
    """Attack: HELLOs with new device ids sent at once.  The count of connected devices
    was checked before the new device was registered (a store write), so every HELLO
    that read the count before the first one was added got in: 4 devices with
    max_devices 1 (bounded only by the registration burst)."""
    async def go() -> None:
        engine, _clock, sched, tokens = await _engine(tmp_path, max_devices=1)
        try:
            answers = await asyncio.gather(
                *(engine.open_session(FakeLink(), Hello(tokens["alice"], b"d%d" % i))
                  for i in range(4)), return_exceptions=True)
            opened = [a for a in answers if isinstance(a, Session)]
            refused = [a for a in answers if isinstance(a, AuthError)]
            assert len(opened) == 1
            assert {e.close_code for e in refused} == {CloseCode.TOO_MANY_DEVICES}
            assert len(engine.registry.sessions_of(opened[0].user_id)) == 1
        finally:
            await sched.settle()
            await engine.store.close()
    asyncio.run(go())
