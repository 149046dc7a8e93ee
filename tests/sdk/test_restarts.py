"""Exactly once through server crashes and client crashes (issue #3)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.sdk import Backoff, IncomingMessage
from tests.sdk.conftest import World

pytestmark = pytest.mark.slow


class Inbox:
    """Everything bob's application was handed, in order."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.changed = asyncio.Event()

    def __call__(self, message: IncomingMessage) -> None:
        self.texts.append(message.text)
        self.changed.set()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(60):
            while len(set(self.texts)) < count:
                self.changed.clear()
                await self.changed.wait()


def test_server_killed_mid_stream_every_message_arrives_once(world: World) -> None:
    async def main() -> None:
        fast = Backoff(0.05, 0.3)
        async with world.client("alice", backoff=fast) as alice, \
                world.client("bob", backoff=fast) as bob:
            inbox = Inbox()
            bob.on_message(inbox)
            async with asyncio.timeout(10):
                await alice.wait_online()
                await bob.wait_online()
            sent = []
            for kill_round in range(3):
                for i in range(100):
                    sent.append(alice.send("bob", f"r{kill_round}-{i}"))
                    if i % 10 == 9:
                        await asyncio.sleep(0.001)  # keep a stream in flight
                    if i == 50:  # mid-stream: some stored, some in flight, some queued
                        port = world.server.port
                        await asyncio.to_thread(world.server.kill)
                        await asyncio.to_thread(world.server.start, port=port)
            async with asyncio.timeout(60):
                for m in sent:
                    await m.sent()
            await inbox.until(len(sent))
            assert sorted(inbox.texts) == sorted(m.text for m in sent)  # none twice
            assert len(inbox.texts) == len(set(inbox.texts)) == 300

    asyncio.run(main())


def _child(world: World, store: Path, mode: str, **extra: object) -> subprocess.Popen[str]:
    spec = world.tmp / f"{mode}.json"
    spec.write_text(json.dumps({"host": world.server.host, "port": world.server.port,
                                "token": world.tokens["alice"], "store": str(store),
                                "mode": mode, **extra}))
    return subprocess.Popen([sys.executable, "-m", "tests.sdk.outbox_child", str(spec)],
                            stdout=subprocess.PIPE, text=True)


def _wait_line(proc: subprocess.Popen[str], wanted: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == wanted:
            return
    raise AssertionError(f"child exited ({proc.wait()}) before printing {wanted!r}")


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


def test_client_killed_with_its_outbox_sends_each_message_once(world: World) -> None:
    store = world.tmp / "alice-child.db"
    port = world.server.port
    world.server.stop()  # nothing to reach: the messages wait in the outbox
    child = _child(world, store, "queue", count=40, prefix="q")
    _wait_line(child, "queued")
    _kill(child)

    world.server.start(port=port)
    child = _child(world, store, "stream", count=60, prefix="s")
    _wait_line(child, "stored")
    _wait_line(child, "sent 50")  # the 40 queued went first, then some of these
    _kill(child)  # with messages written to the server but not yet answered

    child = _child(world, store, "drain")
    _wait_line(child, "drained")
    assert child.wait(timeout=30) == 0
    assert child.stdout is not None
    child.stdout.close()

    async def receive() -> list[str]:
        async with world.client("bob") as bob:
            inbox = Inbox()
            bob.on_message(inbox)
            await inbox.until(100)
            return inbox.texts

    expected = [f"q{i}" for i in range(40)] + [f"s{i}" for i in range(60)]
    texts = asyncio.run(receive())
    assert sorted(texts) == sorted(expected)
    assert texts[:40] == expected[:40]  # the outbox went out in order
