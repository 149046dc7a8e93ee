"""Real clients sending to an offline recipient, and draining its queue exactly once.

Used where the store changes hands while clients write (backup while sending,
upgrade with queued messages): the senders record when each message was
acknowledged SENT; the recipient later reads its queue up to a sentinel sent
last, so every message queued before it has arrived (one device's queue is
delivered in order) without waiting on a timer.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import Counter
from dataclasses import dataclass, field

from appliance.protocol.wire import Message, Status, StatusReport
from tests.support.client import Client

WINDOW = 20
SENTINEL_ID = 10**12


def payload(sender: str, msg_id: int) -> bytes:
    return f"{sender}:{msg_id}".encode()


class Progress:
    """Acknowledgements counted across senders; `reach(n)` waits for the n-th."""

    def __init__(self) -> None:
        self.count = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def add(self) -> None:
        self.count += 1
        for target, future in self._waiters:
            if target <= self.count and not future.done():
                future.set_result(None)

    async def reach(self, target: int, timeout: float = 60.0) -> None:
        if self.count >= target:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        async with asyncio.timeout(timeout):
            await future


@dataclass
class LoopingSender:
    """Sends to `to` until `stop` is set; `acked` holds every id the server said SENT."""

    name: str
    token: str
    to: bytes = b"receiver"
    next_id: int = 1
    acked: set[int] = field(default_factory=set)
    sent: set[int] = field(default_factory=set)
    progress: Progress = field(default_factory=Progress)

    async def run(self, host: str, port: int, stop: asyncio.Event,
                  tls: ssl.SSLContext | None = None) -> None:
        client = await Client.connect(host, port, self.token, "loop", tls=tls)
        inflight: set[int] = set()
        try:
            while not (stop.is_set() and not inflight):
                while len(inflight) < WINDOW and not stop.is_set():
                    msg_id, self.next_id = self.next_id, self.next_id + 1
                    inflight.add(msg_id)
                    self.sent.add(msg_id)
                    client.send(Message(msg_id, self.to, payload(self.name, msg_id)))
                event = await client.next_event(timeout=30)
                if isinstance(event, StatusReport) and not event.report_seq:
                    assert event.status == Status.SENT, event
                    self.acked.add(event.id)
                    inflight.discard(event.id)
                    self.progress.add()
        finally:
            await client.close()


async def send_sentinel(host: str, port: int, sender: str, token: str, to: bytes = b"receiver",
                        tls: ssl.SSLContext | None = None, sentinel_id: int = SENTINEL_ID
                        ) -> None:
    """One last message, acknowledged SENT, that ends `drain`."""
    client = await Client.connect(host, port, token, "sentinel", tls=tls)
    try:
        client.send(Message(sentinel_id, to, payload(sender, sentinel_id)))
        while True:
            event = await client.next_event(timeout=30)
            if isinstance(event, StatusReport) and event.id == sentinel_id:
                assert event.status == Status.SENT, event
                return
    finally:
        await client.close()


async def drain(host: str, port: int, token: str, sentinel_from: tuple[str, str],
                tls: ssl.SSLContext | None = None, sentinel_id: int = SENTINEL_ID
                ) -> Counter[tuple[bytes, int]]:
    """Every (sender, id) the recipient is handed before the sentinel, with counts
    (each drain of one recipient needs a sentinel id of its own)."""
    client = await Client.connect(host, port, token, "only", tls=tls)
    got: Counter[tuple[bytes, int]] = Counter()
    try:
        await send_sentinel(host, port, *sentinel_from, tls=tls, sentinel_id=sentinel_id)
        while True:
            message = await client.message(timeout=30)  # acknowledges it
            assert message.payload == payload(message.peer.decode(), message.id)
            if message.id == sentinel_id:
                return got
            got[(message.peer, message.id)] += 1
    finally:
        await client.close()


async def register_device(host: str, port: int, token: str, tls: ssl.SSLContext | None = None
                          ) -> None:
    """Connect the recipient's device once, so messages queue for it while it is away."""
    client = await Client.connect(host, port, token, "only", tls=tls)
    await client.close()
