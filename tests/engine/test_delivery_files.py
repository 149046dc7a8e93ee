"""The engine and FILE messages (PROTOCOL.md §3.3.1), on a real SQLite and MariaDB store.

A payload that is not the convention is answered INVALID_FILE before anything
is batched; the files themselves are checked by the store, in the message's
transaction; a real-time FILE message is relayed and grants nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

from appliance.config.limits import EngineLimits
from appliance.credentials import token_hash
from appliance.engine.clock import FakeClock
from appliance.engine.core import Engine
from appliance.protocol.wire import Flag, Hello, Message, Status
from appliance.storage.interface import Storage
from appliance.storage.models import FileRecord
from tests.engine.test_delivery import FakeLink, Scheduler
from tests.storage.conftest import (
    Opener,
    backend as backend,  # the fixture: SQLite and MariaDB
)

RETENTION_MS = 30 * 86_400_000
FILE = Flag.FILE | Flag.DEFAULT


def shares(*ids: str) -> bytes:
    return json.dumps({"files": [{"id": i} for i in ids], "text": "hi"}).encode()


async def uploaded(store: Storage, owner: int, file_id: str, now_ms: int) -> str:
    await store.create_file(FileRecord(file_id, 1, owner, 3, 0, None, "image/png", "a.png", 0, 0,
                                       now_ms, now_ms + 86_400_000), 1 << 30)
    await store.complete_file(file_id, bytes(32), 3, "image/png", 1, 1)
    return file_id


Body = Callable[[Engine, Storage, Scheduler, dict[str, tuple[int, Any, FakeLink]]],
                Coroutine[Any, Any, None]]


def run(backend: Opener, body: Body) -> None:
    async def main() -> None:
        clock = FakeClock()
        store = await backend()
        store.file_retention_ms = RETENTION_MS
        scheduler = Scheduler()
        engine = Engine(store, clock, EngineLimits(commit_window_ms=0.0), scheduler)
        try:
            people = {}
            for name in ("alice", "bob", "carol"):
                user = (await store.create_user(1, name, clock.wall_ms())).user_id
                token = f"tok-{name}".encode()
                await store.store_token(user, token_hash(token), clock.wall_ms() + 10**9,
                                        clock.wall_ms())
                link = FakeLink()
                session = await engine.open_session(link, Hello(token, name.encode()))
                people[name] = (user, session, link)
            await scheduler.settle()
            await body(engine, store, scheduler, people)
        finally:
            await scheduler.settle()
            await store.close()
    asyncio.run(main())


def test_a_bad_payload_is_refused_before_it_is_batched(backend: Opener) -> None:
    async def body(engine: Engine, store: Storage, sched: Scheduler,
                   people: dict[str, tuple[int, Any, FakeLink]]) -> None:
        _, alice, alice_link = people["alice"]
        for i, payload in enumerate((b"not json", b'{"files": []}', shares("../etc/passwd"),
                                     shares(*("a" * 26 for _ in range(11))),
                                     b"[" * 10_000 + b"]" * 10_000), start=1):
            engine.on_message(alice, Message(i, b"bob", payload, flags=FILE))
            assert len(engine.commit.batch.messages) == 0  # answered at once, never stored
            engine.on_message(alice, Message(100 + i, b"bob", payload, flags=FILE, expiry_s=0))
        await sched.settle()
        refused = [(i, Status.INVALID_FILE) for i in range(1, 6)]
        assert sorted(alice_link.statuses()) == sorted(
            refused + [(100 + i, s) for i, s in refused])
        assert people["bob"][2].messages() == []
    run(backend, body)


def test_a_file_message_reaches_the_recipient_who_may_then_read_it(backend: Opener) -> None:
    async def body(engine: Engine, store: Storage, sched: Scheduler,
                   people: dict[str, tuple[int, Any, FakeLink]]) -> None:
        alice_id, alice, alice_link = people["alice"]
        bob_id, _, bob_link = people["bob"]
        carol_id, _, _ = people["carol"]
        now = engine.clock.wall_ms()
        mine = await uploaded(store, alice_id, "a" * 26, now)
        carols = await uploaded(store, carol_id, "c" * 26, now)
        engine.on_message(alice, Message(1, b"bob", shares(mine), flags=FILE, expiry_s=3600))
        engine.on_message(alice, Message(2, b"bob", shares(carols), flags=FILE))
        await sched.settle()
        assert alice_link.statuses() == [(1, Status.SENT), (2, Status.INVALID_FILE)]
        [got] = bob_link.messages()
        assert (got.id, got.payload, got.flags & Flag.FILE) == (1, shares(mine), Flag.FILE)
        assert await store.may_read(mine, bob_id, now + 3_600_000 + RETENTION_MS - 1)
        assert not await store.may_read(mine, bob_id, now + 3_600_000 + RETENTION_MS)
        assert not await store.may_read(carols, bob_id, now)
        # Real time: relayed as it is, and no grant (a signed link is the way).
        other = await uploaded(store, alice_id, "b" * 26, now)
        engine.on_message(alice, Message(3, b"bob", shares(other), flags=FILE, expiry_s=0))
        await sched.settle()
        assert alice_link.statuses()[-1] == (3, Status.SENT)
        assert bob_link.messages()[-1].payload == shares(other)
        assert not await store.may_read(other, bob_id, now)
    run(backend, body)
