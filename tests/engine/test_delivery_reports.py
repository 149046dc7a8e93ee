"""Stored reports (PROTOCOL.md §3.5, §3.7): a report a device confirmed is never sent to it again.

On a real SQLite and MariaDB store, with the interleavings that once let a
confirmed DELIVERED report reach its device again (issue 16) forced by
holding a store call until the test releases it:

* the device reconnects and its HELLO reads the device's report cursor
  before the commit of its REPORT_ACK (sent on the old connection) lands:
  the HELLO took the stale cursor from that read once the commit had
  cleared the engine's record of the uncommitted confirmation;
* a re-read of the reports (after the store came back) is in flight when
  the device confirms a report it already had: the read's rows were sent
  as they came, confirmed or not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from appliance.config.limits import EngineLimits
from appliance.credentials import token_hash
from appliance.engine.clock import FakeClock
from appliance.engine.core import Engine
from appliance.engine.session import Session
from appliance.errors import StorageUnavailableError
from appliance.protocol.wire import Ack, Hello, Message, ReportAck, Status, StatusReport
from appliance.storage.interface import Storage
from tests.engine.test_delivery import FakeLink, Scheduler
from tests.storage.conftest import (
    Opener,
    backend as backend,  # the fixture: SQLite and MariaDB
)


class Gate:
    """Holds calls of one store method: each call runs, says so, then waits to be let through."""

    def __init__(self, store: Storage, name: str, *, before: bool = False,
                 when: Callable[..., bool] = lambda *args: True) -> None:
        self.arrived = asyncio.Event()
        self.open = asyncio.Event()
        original: Callable[..., Awaitable[Any]] = getattr(store, name)

        async def held(*args: Any, **kwargs: Any) -> Any:
            if not when(*args):
                return await original(*args, **kwargs)
            if before:  # held before the store sees it (a commit not started)
                self.arrived.set()
                await self.open.wait()
                return await original(*args, **kwargs)
            result = await original(*args, **kwargs)
            self.arrived.set()  # done: what it read is fixed now
            await self.open.wait()
            return result

        setattr(store, name, held)
        self._restore = lambda: setattr(store, name, original)

    def release(self) -> None:
        """Let the held calls and every later one through."""
        self.open.set()
        self._restore()


Body = Callable[[Engine, Storage, Scheduler, dict[str, bytes]], Coroutine[Any, Any, None]]


def run(backend: Opener, body: Body, limits: EngineLimits | None = None) -> None:
    """Run `body` on an engine over the backend's store, with users alice and bob (tokens)."""
    async def main() -> None:
        clock = FakeClock()
        store = await backend()
        scheduler = Scheduler()
        engine = Engine(store, clock, limits or EngineLimits(commit_window_ms=0.0), scheduler)
        try:
            tokens = {}
            for name in ("alice", "bob"):
                user = (await store.create_user(1, name, clock.wall_ms())).user_id
                tokens[name] = f"tok-{name}".encode()
                await store.store_token(user, token_hash(tokens[name]), clock.wall_ms() + 10**9,
                                        clock.wall_ms())
            await body(engine, store, scheduler, tokens)
        finally:
            await scheduler.settle()
            await store.close()
    asyncio.run(main())


def reports(link: FakeLink) -> list[tuple[int, int, int]]:
    """(id, status, report_seq) of the stored reports the device was sent."""
    return [(e.id, e.status, e.report_seq) for e in link.events
            if isinstance(e, StatusReport) and e.report_seq]


async def delivered_to_alice(engine: Engine, sched: Scheduler, tokens: dict[str, bytes]
                             ) -> tuple[Session, FakeLink, Session, int]:
    """alice's message 1 reached bob's device: alice's devices hold its DELIVERED report.

    alice has a second device that confirms nothing, so the report stays
    stored (on SQLite it would be trimmed at once were the first device
    alone to confirm it, hiding a resend).
    """
    alice_link, bob_link = FakeLink(), FakeLink()
    alice = await engine.open_session(alice_link, Hello(tokens["alice"], b"a"))
    await engine.open_session(FakeLink(), Hello(tokens["alice"], b"a2"))
    bob = await engine.open_session(bob_link, Hello(tokens["bob"], b"b"))
    await sched.settle()
    engine.on_message(alice, Message(1, b"bob", b"hi"))
    await sched.settle()
    [got] = bob_link.messages()
    engine.on_ack(bob, Ack((got.seq,)))
    await sched.settle()
    [(msg_id, status, report_seq)] = reports(alice_link)
    assert (msg_id, status) == (1, Status.DELIVERED)
    return alice, alice_link, bob, report_seq


def test_a_report_confirmed_while_the_device_reconnects_is_not_sent_again(
        backend: Opener) -> None:
    async def body(engine: Engine, store: Storage, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        alice, _, _, report_seq = await delivered_to_alice(engine, sched, tokens)
        # The device confirms the report; its commit has not started yet...
        commit = Gate(store, "write", before=True)
        engine.on_report_ack(alice, ReportAck(report_seq))
        await commit.arrived.wait()
        # ...when the device's connection breaks and it reconnects: the HELLO
        # reads the device's stored cursor, still below the report.
        engine.close_session(alice)
        login = Gate(store, "authenticate")
        again = FakeLink()
        hello = asyncio.get_running_loop().create_task(
            engine.open_session(again, Hello(tokens["alice"], b"a")))
        await login.arrived.wait()
        commit.release()  # the confirmation commits before the HELLO goes on
        await sched.settle()
        login.release()
        await hello
        await sched.settle()
        assert reports(again) == [], "a confirmed report was sent again"
        # And it stays confirmed on the next connection too.
        engine.close_session(await hello)
        last = FakeLink()
        await engine.open_session(last, Hello(tokens["alice"], b"a"))
        await sched.settle()
        assert reports(last) == []
    run(backend, body)


def test_a_report_confirmed_during_a_re_read_of_the_reports_is_not_sent_again(
        backend: Opener) -> None:
    async def body(engine: Engine, store: Storage, sched: Scheduler,
                   tokens: dict[str, bytes]) -> None:
        alice, alice_link, bob, report_seq = await delivered_to_alice(engine, sched, tokens)
        # A commit fails: the store may have kept it, so once one succeeds
        # every online device's reports are read again (`Delivery.recovered`).
        write = store.write

        async def failing(*args: Any, **kwargs: Any) -> Any:
            raise StorageUnavailableError("MariaDB: Lost connection to server during query")

        store.write = failing  # type: ignore[method-assign]
        engine.on_message(bob, Message(1, b"alice", b"lost?"))
        await sched.settle()
        store.write = write  # type: ignore[method-assign]
        reread = Gate(store, "pending_receipts", when=lambda user, *_: user == alice.user_id)
        engine.on_message(bob, Message(2, b"alice", b"back"))
        await reread.arrived.wait()  # the re-read saw the report still unconfirmed...
        engine.on_report_ack(alice, ReportAck(report_seq))  # ...then the device confirmed it
        reread.release()
        await sched.settle()
        assert reports(alice_link) == [(1, Status.DELIVERED, report_seq)]
    run(backend, body)
