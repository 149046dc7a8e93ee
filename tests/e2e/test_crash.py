"""SIGKILL the server at random moments while two senders stream to one receiver.

The checker (reliability.md §2.1) classifies every message:
  * lost: the sender was told SENT, the receiver never got it -> must be 0;
  * stored twice: the receiver got one (sender, id) under two handles -> must be 0;
  * duplicated to the application: the receiver, deduplicating by (sender, id)
    as every client must (PROTOCOL.md §6), passes it on twice -> must be 0;
  * redelivered within one server lifetime after the receiver acknowledged it
    -> must be 0 (only an acknowledgement lost in a crash may cause a resend).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from appliance.protocol.wire import Message, Status, StatusReport
from tests.conftest import StoreBackend
from tests.support.client import Client, ServerClosedError
from tests.support.components import frozen_binary
from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

PER_SENDER = 4000
KILLS = 22
WINDOW = 25
_DROPPED = (ConnectionError, OSError, ServerClosedError, asyncio.IncompleteReadError, TimeoutError)


@dataclass
class Sender:
    name: str
    token: str
    next_id: int = 1
    unconfirmed: set[int] = field(default_factory=set)
    acked: set[int] = field(default_factory=set)
    resent: int = 0

    @property
    def done(self) -> bool:
        return self.next_id > PER_SENDER and not self.unconfirmed

    def frame(self, msg_id: int) -> Message:
        return Message(msg_id, b"receiver", f"{self.name}:{msg_id}".encode())

    async def run(self, server: ServerProcess) -> None:
        client = await Client.connect(server.host, server.port, self.token, "only")
        try:
            inflight = set(self.unconfirmed)
            for msg_id in sorted(inflight):  # resend with the same id after reconnect
                client.send(self.frame(msg_id))
                self.resent += 1
            while not self.done:
                while len(inflight) < WINDOW and self.next_id <= PER_SENDER:
                    msg_id, self.next_id = self.next_id, self.next_id + 1
                    self.unconfirmed.add(msg_id)
                    inflight.add(msg_id)
                    client.send(self.frame(msg_id))
                event = await client.next_event(timeout=30)
                if isinstance(event, StatusReport):
                    self.on_status(event, client, inflight)
        finally:
            await client.close()

    def on_status(self, event: StatusReport, client: Client, inflight: set[int]) -> None:
        if event.report_seq:
            client.report_ack(event.report_seq)
            return
        assert event.status in (Status.SENT, Status.DELIVERED, Status.READ), event
        self.acked.add(event.id)
        self.unconfirmed.discard(event.id)
        inflight.discard(event.id)


@dataclass
class Receiver:
    token: str
    epoch: int = 0
    app: list[tuple[bytes, int]] = field(default_factory=list)
    seen: set[tuple[bytes, int]] = field(default_factory=set)
    handles: dict[tuple[bytes, int], set[int]] = field(default_factory=dict)
    acked_in_epoch: dict[tuple[bytes, int], int] = field(default_factory=dict)
    redelivered_same_epoch: int = 0
    redelivered_after_crash: int = 0

    async def run(self, server: ServerProcess, total: int) -> None:
        client = await Client.connect(server.host, server.port, self.token, "only")
        try:
            while len(self.seen) < total:
                m = await client.message(timeout=30)  # acknowledges after recording below
                self.record(m)
        finally:
            await client.close()

    def record(self, m: Message) -> None:
        key = (m.peer, m.id)
        assert m.payload == m.peer + b":" + str(m.id).encode()
        self.handles.setdefault(key, set()).add(m.seq)
        if key in self.acked_in_epoch:
            if self.acked_in_epoch[key] == self.epoch:
                self.redelivered_same_epoch += 1
            else:
                self.redelivered_after_crash += 1
        self.acked_in_epoch[key] = self.epoch
        if key not in self.seen:  # the application-level dedupe every client does
            self.seen.add(key)
            self.app.append(key)


async def _epoch(server: ServerProcess, senders: list[Sender], receiver: Receiver,
                 duration: float | None) -> None:
    tasks = [asyncio.ensure_future(s.run(server)) for s in senders]  # noqa: TID251
    tasks.append(asyncio.ensure_future(receiver.run(server, PER_SENDER * len(senders))))  # noqa: TID251
    if duration is None:
        async with asyncio.timeout(120):
            await asyncio.gather(*tasks)
        return
    await asyncio.wait(tasks, timeout=duration)
    server.kill()
    for task in tasks:
        if not task.done():
            task.cancel()
    for result in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(result, BaseException) and not isinstance(
                result, (*_DROPPED, asyncio.CancelledError)):
            raise result


@pytest.mark.parametrize("build", ["python", "frozen"])
def test_sigkill_loses_nothing_acknowledged_and_duplicates_nothing(
        tmp_path: Path, store_backend: StoreBackend, build: str) -> None:
    # Frozen, SIGKILL reaches the one-file bootloader only; the server must die
    # with it or the next start finds the port and the store's lock taken.
    command = [str(frozen_binary())] if build == "frozen" else None
    data = tmp_path / "data"
    data.mkdir()
    store_backend.prepare(data)
    tokens, _ = provision(data, ["s1", "s2", "receiver"])
    senders = [Sender("s1", tokens["s1"]), Sender("s2", tokens["s2"])]
    receiver = Receiver(tokens["receiver"])
    rng = random.Random(20261123)

    async def go() -> None:
        for epoch in range(KILLS + 1):
            receiver.epoch = epoch
            server = ServerProcess(data, command=command)
            server.start(timeout=60)
            try:
                await _epoch(server, senders, receiver,
                             None if epoch == KILLS else rng.uniform(0.05, 0.6))
            finally:
                if epoch == KILLS:
                    assert server.stop() == 0

    asyncio.run(go())
    lost = [(s.name, i) for s in senders for i in s.acked
            if (s.name.encode(), i) not in receiver.seen]
    stored_twice = {k: v for k, v in receiver.handles.items() if len(v) > 1}
    app_dupes = len(receiver.app) - len(set(receiver.app))
    print(f"\ncrash test on {store_backend.name} ({build}): {KILLS} SIGKILLs,"
          f" {sum(len(s.acked) for s in senders)} acknowledged, "
          f"lost {len(lost)}, stored twice {len(stored_twice)}, app duplicates {app_dupes}, "
          f"redelivered after a crash {receiver.redelivered_after_crash} (ack lost with it), "
          f"resent after reconnect {sum(s.resent for s in senders)}")
    assert all(s.done for s in senders)
    assert lost == []
    assert stored_twice == {}
    assert app_dupes == 0
    assert receiver.redelivered_same_epoch == 0
    assert len(receiver.seen) == PER_SENDER * len(senders)
