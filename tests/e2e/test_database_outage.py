"""MariaDB stopped for 30 s while a sender streams (SPEC M14, issue 5).

The server must answer every message it cannot commit with an error status
(never SENT), keep its client connections up, and resume by itself within
5 s of the database returning, with 0 acknowledged messages lost and nothing
passed twice to the receiving application.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from appliance.protocol.wire import Message, Status, StatusReport
from tests.conftest import tidings
from tests.metrics.scraping import HTTP1, samples, scrape, value
from tests.support.client import Client
from tests.support.mariadb import MariaDBServer
from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

OUTAGE_S = 30.0
RESUME_WITHIN_S = 5.0
WINDOW = 10
#: How long the sender waits before resending a message refused with FAILED
#: (an app's retry backoff, not a readiness guess).
RETRY_S = 0.25
_OK = (Status.SENT, Status.DELIVERED, Status.READ)


@dataclass
class Sender:
    """Streams numbered reliable messages, resending what was refused."""

    client: Client
    progress: Progress
    next_id: int = 1
    sending: bool = True
    inflight: dict[int, float] = field(default_factory=dict)  # id -> when last sent
    retry_at: dict[int, float] = field(default_factory=dict)
    acked: dict[int, float] = field(default_factory=dict)  # id -> when SENT arrived
    failed: list[tuple[int, float]] = field(default_factory=list)
    down: tuple[float, float] = (float("inf"), float("inf"))  # when the database was down
    sent_while_down: list[int] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return not self.sending and not self.inflight and not self.retry_at

    def _send(self, msg_id: int, now: float) -> None:
        self.inflight[msg_id] = now
        self.client.send(Message(msg_id, b"receiver", f"m{msg_id}".encode()))

    def _fill(self) -> None:
        now = time.monotonic()
        for msg_id, when in list(self.retry_at.items()):
            if when <= now and len(self.inflight) < WINDOW:
                del self.retry_at[msg_id]
                self._send(msg_id, now)
        while self.sending and len(self.inflight) + len(self.retry_at) < WINDOW:
            self._send(self.next_id, now)
            self.next_id += 1

    async def run(self) -> None:
        while not self.done:
            self._fill()
            try:
                event = await self.client.next_event(timeout=0.1)
            except TimeoutError:
                continue
            if not isinstance(event, StatusReport):
                continue
            if event.report_seq:  # a DELIVERED report: confirm it
                self.client.report_ack(event.report_seq)
                continue
            self.progress.poke()
            sent_at = self.inflight.pop(event.id, None)
            if sent_at is None:
                continue
            now = time.monotonic()
            if event.status in _OK:
                self.acked[event.id] = now
                if self.down[0] < sent_at and now < self.down[1]:
                    self.sent_while_down.append(event.id)
            else:
                assert event.status == Status.FAILED, event
                self.failed.append((event.id, now))
                self.retry_at[event.id] = now + RETRY_S


@dataclass
class Receiver:
    client: Client
    progress: Progress
    got: dict[int, float] = field(default_factory=dict)  # id -> first arrival
    passed_twice: int = 0

    async def run(self, until: asyncio.Event) -> None:
        while not until.is_set():
            try:
                m = await self.client.message(timeout=0.1)
            except TimeoutError:
                continue
            self.progress.poke()
            msg_id = int(m.payload[1:])
            if msg_id in self.got:
                self.passed_twice += 1  # an app dedupes by (sender, id); the server must too
            else:
                self.got[msg_id] = time.monotonic()


class Progress:
    """Woken by the sender and the receiver whenever something arrives: no polling."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def poke(self) -> None:
        self._changed.set()

    async def until(self, predicate: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


def test_database_down_30s_errors_reported_nothing_lost_resumes(tmp_path: Path) -> None:
    db = MariaDBServer(tmp_path / "db")  # a server of its own: this test stops it
    db.start()
    data = tmp_path / "data"
    data.mkdir()
    db.use_in(data, "outage")
    tokens, _ = provision(data, ["sender", "receiver"])
    key = tidings(data, "operator", "key").stdout.strip()
    server = ServerProcess(data)
    server.start()

    async def go() -> tuple[Sender, Receiver, float, float]:
        progress = Progress()
        sender = Sender(await Client.connect(server.host, server.port, tokens["sender"]),
                        progress)
        receiver = Receiver(await Client.connect(server.host, server.port, tokens["receiver"]),
                            progress)
        finished = asyncio.Event()
        tasks = [asyncio.ensure_future(sender.run()),  # noqa: TID251
                 asyncio.ensure_future(receiver.run(finished))]  # noqa: TID251
        try:
            await progress.until(lambda: len(sender.acked) >= 200, 30)
            await asyncio.get_running_loop().run_in_executor(None, db.stop)
            stopped = time.monotonic()
            sender.down = (stopped, float("inf"))
            await asyncio.sleep(OUTAGE_S)  # the outage itself, while the sender streams
            await asyncio.get_running_loop().run_in_executor(None, db.start)  # READY=1
            started = time.monotonic()
            sender.down = (stopped, started)
            await progress.until(lambda: any(t > started for t in sender.acked.values())
                         and any(t > started for t in receiver.got.values()), 30)
            sender.sending = False
            await progress.until(lambda: sender.done, 60)
            await progress.until(lambda: set(sender.acked) <= set(receiver.got), 60)
        finally:
            finished.set()
            sender.sending = False
            for task in tasks:
                if not task.done():
                    task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            await sender.client.close()
            await receiver.client.close()
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result,
                                                                    asyncio.CancelledError):
                raise result
        return sender, receiver, stopped, started

    try:
        sender, receiver, stopped, started = asyncio.run(go())
        figures = samples(scrape(server, *HTTP1, key=key).text)  # the operator saw it too
    finally:
        assert server.stop() == 0
        db.stop()
    failed_during = [i for i, t in sender.failed if stopped <= t <= started]
    resumed_sent = min(t for t in sender.acked.values() if t > started) - started
    resumed_delivered = min(t for t in receiver.got.values() if t > started) - started
    lost = sorted(set(sender.acked) - set(receiver.got))
    print(f"\noutage: {len(sender.acked)} acknowledged, {len(sender.failed)} FAILED"
          f" ({len(failed_during)} during the outage), SENT resumed {resumed_sent:.2f} s and"
          f" delivery {resumed_delivered:.2f} s after the database returned, lost {len(lost)}")
    assert failed_during, "senders must hear an error while the database is down"
    assert sender.sent_while_down == []
    assert sender.client.closed is None
    assert receiver.client.closed is None
    assert resumed_sent <= RESUME_WITHIN_S
    assert resumed_delivered <= RESUME_WITHIN_S
    assert lost == []
    assert receiver.passed_twice == 0
    assert value(figures, "tidings_store_errors_total", operation="commit") >= 1
    assert value(figures, "tidings_messages_accepted_total", status="failed") \
        == len(sender.failed)
    assert "Traceback" not in server.output
