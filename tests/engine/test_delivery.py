"""The engine in process: real SQLite store, fake links, a clock we move by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from appliance.config.limits import EngineLimits
from appliance.credentials import token_hash
from appliance.engine.clock import FakeClock
from appliance.engine.core import Engine
from appliance.engine.ports import FrameLink
from appliance.engine.session import Session
from appliance.errors import StorageUnavailableError
from appliance.protocol.wire import (
    Ack,
    Hello,
    Message,
    Role,
    State,
    Status,
    StatusReport,
    Welcome,
    WireConnection,
)
from appliance.storage.models import Login, Pending, WriteBatch, WriteResult
from appliance.storage.sqlite import SqliteStorage


class FakeLink(FrameLink):
    """Records what the engine writes, decoded by a real client-side codec."""

    def __init__(self) -> None:
        self.codec = WireConnection(Role.CLIENT)
        self.codec.send(Hello(b"t", b"d"))
        self.events: list[Any] = []
        self.closed: tuple[int, str] | None = None
        self.paused = False
        self.open = True

    def write(self, data: bytes) -> None:
        self.events.extend(self.codec.receive_data(data))

    def welcome(self, welcome: Welcome) -> None:
        server = WireConnection(Role.SERVER)
        server.state = State.AUTHENTICATING
        self.events.extend(self.codec.receive_data(server.send(welcome)))

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def statuses(self) -> list[tuple[int, int]]:
        return [(e.id, e.status) for e in self.events if isinstance(e, StatusReport)]

    def messages(self) -> list[Message]:
        return [e for e in self.events if isinstance(e, Message)]


class Scheduler:
    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []

    def soon(self, callback: Callable[[], None]) -> None:
        asyncio.get_running_loop().call_soon(callback)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self.tasks.append(asyncio.get_running_loop().create_task(coro, name=name))

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def settle(self) -> None:
        """Run until no task is pending (no sleeps: wait on the tasks themselves)."""
        for _ in range(100):
            await asyncio.sleep(0)
            pending = [t for t in self.tasks if not t.done()]
            if not pending:
                await asyncio.sleep(0)
                if not [t for t in self.tasks if not t.done()]:
                    return
            else:
                await asyncio.wait(pending)
        raise AssertionError("engine never settled")


class FlakyStore(SqliteStorage):
    """A real store whose writes can be made to fail, like a full disk.

    `lost_after_commit`: the write commits, then fails as a connection that
    broke before COMMIT's answer arrived would.  `reads_failing`: queue reads fail.
    """

    failing = False
    lost_after_commit = False
    reads_failing = False
    #: Set: authenticate waits for it (a HELLO read still in flight).
    hold_logins: asyncio.Event | None = None
    #: Set: writes wait for it (a commit the store takes its time over).
    hold_writes: asyncio.Event | None = None
    #: Set: writes raise it (a bug below the engine, not a StorageError).
    broken: Exception | None = None
    pending_reads = 0

    async def authenticate(self, token_hash: bytes, device_id: bytes) -> Login | None:
        login = await super().authenticate(token_hash, device_id)
        if self.hold_logins is not None:
            await self.hold_logins.wait()
        return login

    async def write(self, batch: WriteBatch, now_ms: int) -> WriteResult:
        if self.hold_writes is not None:
            await self.hold_writes.wait()
        if self.broken is not None:
            raise self.broken
        if self.failing:
            raise StorageUnavailableError("SQLite: database or disk is full")
        result = await super().write(batch, now_ms)
        if self.lost_after_commit:
            raise StorageUnavailableError("MariaDB: Lost connection to server during query")
        return result

    async def pending(self, device_rowid: int, user_id: int, now_ms: int, limit: int,
                      exclude: frozenset[int] = frozenset()) -> list[Pending]:
        if self.reads_failing:
            raise StorageUnavailableError("MariaDB: Can't connect to server")
        self.pending_reads += 1
        return await super().pending(device_rowid, user_id, now_ms, limit, exclude)


async def _setup(tmp: Path) -> tuple[Engine, FlakyStore, Scheduler, dict[str, bytes]]:
    clock = FakeClock()
    base = await SqliteStorage.open(tmp / "e.sqlite3", clock.wall_ms())
    store = FlakyStore(base._writer, base._wpool, base._readers)
    tokens = {}
    for name in ("alice", "bob"):
        user = await store.create_user(1, name, clock.wall_ms())
        tokens[name] = f"tok-{name}".encode()
        await store.store_token(user.user_id, token_hash(tokens[name]), clock.wall_ms() + 10**9,
                                clock.wall_ms())
    scheduler = Scheduler()
    # No commit pacing: it waits in real time (the fake clock stands still),
    # which made tests that count loop turns depend on the machine's speed.
    engine = Engine(store, clock, EngineLimits(max_unconfirmed=4, commit_window_ms=0.0),
                    scheduler)
    return engine, store, scheduler, tokens


def run(tmp: Path, body: Callable[..., Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        engine, store, scheduler, tokens = await _setup(tmp)
        try:
            await body(engine, store, scheduler, tokens)
        finally:
            await scheduler.settle()
            await store.close()
    asyncio.run(main())


async def _alice_and_bob(engine: Engine, sched: Scheduler, tokens: dict[str, bytes]
                         ) -> tuple[Session, FakeLink, Session, FakeLink]:
    """alice and bob online, one device each, with their links."""
    alice_link, bob_link = FakeLink(), FakeLink()
    alice = await engine.open_session(alice_link, Hello(tokens["alice"], b"a"))
    bob = await engine.open_session(bob_link, Hello(tokens["bob"], b"b"))
    await sched.settle()
    return alice, alice_link, bob, bob_link


def test_store_failure_answers_failed_never_sent_and_recovers(tmp_path: Path) -> None:
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        alice, alice_link, bob, bob_link = await _alice_and_bob(engine, sched, tokens)
        store.failing = True
        engine.on_message(alice, Message(1, b"bob", b"lost?"))
        await sched.settle()
        assert alice_link.statuses() == [(1, Status.FAILED)]
        assert bob_link.messages() == []
        store.failing = False
        engine.on_message(alice, Message(1, b"bob", b"resent"))
        await sched.settle()
        assert alice_link.statuses()[-1] == (1, Status.SENT)
        [got] = bob_link.messages()
        assert got.payload == b"resent"
        store.failing = True
        engine.on_ack(bob, Ack((got.seq,)))  # fails, and is retried until the store is back
        failures = engine.stats_failed_batches
        # The retry is paced (commit_window_ms): wait for the condition, not a
        # number of loop turns (1,000 turns took less than the pacing on a fast host).
        for _ in range(5000):  # at most 5 s
            if engine.stats_failed_batches > failures:
                break
            await asyncio.sleep(0.001)
        assert engine.stats_failed_batches == failures + 1
        assert (1, Status.DELIVERED) not in alice_link.statuses()
        store.failing = False
        await sched.settle()  # the retry commits the acknowledgement
        assert (1, Status.DELIVERED) in alice_link.statuses()
        assert bob.acked == set()

    run(tmp_path, body)


def test_what_a_failed_commit_stored_after_all_reaches_online_devices(tmp_path: Path) -> None:
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        alice, alice_link, _, bob_link = await _alice_and_bob(engine, sched, tokens)
        store.lost_after_commit = True  # committed, but the answer never came
        engine.on_message(alice, Message(1, b"bob", b"landed"))
        await sched.settle()
        assert alice_link.statuses() == [(1, Status.FAILED)]
        assert bob_link.messages() == []
        store.lost_after_commit = False
        store.reads_failing = True  # and the store is not fully back yet
        engine.on_message(alice, Message(2, b"bob", b"second"))
        await sched.settle()
        assert [m.payload for m in bob_link.messages()] == [b"second"]
        store.reads_failing = False
        engine.on_message(alice, Message(1, b"bob", b"landed"))  # the app's resend
        await sched.settle()
        assert alice_link.statuses()[-1] == (1, Status.SENT)  # the stored status
        # The first commit's message was pushed to no one: the re-read after
        # recovery finds it, once.
        assert sorted(m.payload for m in bob_link.messages()) == [b"landed", b"second"]

    run(tmp_path, body)


def test_a_message_committed_while_a_hello_is_read_still_reaches_that_device(
        tmp_path: Path) -> None:
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        alice, alice_link, bob, _ = await _alice_and_bob(engine, sched, tokens)
        engine.close_session(bob)
        # bob's device reconnects; its HELLO read sees an empty queue...
        store.hold_logins = asyncio.Event()
        bob_again = FakeLink()
        again = asyncio.get_running_loop().create_task(
            engine.open_session(bob_again, Hello(tokens["bob"], b"b")))
        await asyncio.sleep(0)
        # ...while a message for bob commits and finds no session to push to.
        engine.on_message(alice, Message(1, b"bob", b"in between"))
        await sched.settle()
        assert alice_link.statuses() == [(1, Status.SENT)]
        store.hold_logins.set()
        await again
        await sched.settle()
        assert [m.payload for m in bob_again.messages()] == [b"in between"]

    run(tmp_path, body)


def test_reconnects_read_no_queue_when_nothing_was_pushed_meanwhile(tmp_path: Path) -> None:
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        for round_ in range(3):  # each reconnect commits its last-seen time
            sessions = []
            for i in range(6):  # one after another: each read overlaps a commit
                sessions.append(await engine.open_session(
                    FakeLink(), Hello(tokens["alice" if i % 2 else "bob"], f"d{i}".encode())))
            await sched.settle()
            for session in sessions:
                engine.close_session(session)
            if round_ == 0:
                reads = store.pending_reads  # new devices: their inherited queue is read
        assert store.pending_reads == reads  # known, idle devices: no queue reads

    run(tmp_path, body)


def test_a_sender_too_far_ahead_of_the_store_is_paused(tmp_path: Path) -> None:
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        link = FakeLink()
        alice = await engine.open_session(link, Hello(tokens["alice"], b"a"))
        await sched.settle()
        for i in range(1, 5):
            engine.on_message(alice, Message(i, b"bob", b"x"))
        assert link.paused
        await sched.settle()
        assert not link.paused
        assert sorted(link.statuses()) == [(i, Status.SENT) for i in range(1, 5)]

    run(tmp_path, body)


def test_small_batches_are_paced_and_large_or_first_ones_are_not(tmp_path: Path) -> None:
    async def body(engine: Engine, store: FlakyStore, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        clock = engine.clock
        assert isinstance(clock, FakeClock)
        waits: list[float] = []

        async def sleep(seconds: float) -> None:  # records the pause, moves time
            waits.append(seconds)
            clock.advance(seconds)

        sched.sleep = sleep  # type: ignore[method-assign]
        engine.limits = EngineLimits(max_unconfirmed=1000, commit_window_ms=2.0, commit_batch=8)
        link = FakeLink()
        alice = await engine.open_session(link, Hello(tokens["alice"], b"a"))
        await sched.settle()
        clock.advance(1.0)  # a quiet second: the next commit goes at once
        waits.clear()
        engine.on_message(alice, Message(1, b"bob", b"x"))
        await sched.settle()
        assert waits == []
        engine.on_message(alice, Message(2, b"bob", b"x"))  # right after a commit: paced
        await sched.settle()
        assert waits == [pytest.approx(0.002)]
        for i in range(3, 3 + 8):  # a batch worth a commit of its own: not paced
            engine.on_message(alice, Message(i, b"bob", b"x"))
        await sched.settle()
        assert waits == [pytest.approx(0.002)]
        assert sorted(link.statuses()) == [(i, Status.SENT) for i in range(1, 11)]

    run(tmp_path, body)
