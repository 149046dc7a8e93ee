"""Blocking end to end (issue 16): a real `tidings serve`, real sockets, REST with a user's token.

The blocked sender's 1:1 messages are answered BLOCKED, reliable and
real-time; a resend of one stored before the block keeps its stored status;
a group message skips the members who block its sender; nothing of the
blocker's presence reaches the blocked user, also through a subscription
made before the block; a block made by another process (the command line)
reaches the running server; unblocking restores everything.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from appliance.config import load_config
from appliance.config.database import resolve_database
from appliance.engine.clock import SystemClock
from appliance.protocol.wire import HelloFlag, Message, Status
from appliance.protocol.wire.presence import (
    PresenceKind,
    PresenceSet,
    PresenceState,
    PresenceSubscribe,
    PresenceUpdate,
    SubscribeOp,
)
from appliance.service.database import running
from appliance.storage import open_storage
from tests.conftest import StoreBackend
from tests.support.client import Client
from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

USERS = ["alice", "bob", "carol"]


@dataclass
class World:
    server: ServerProcess
    data: Path
    tokens: dict[str, str]
    group_id: int
    clients: list[Client] = field(default_factory=list)

    async def connect(self, user: str, device: str = "d1") -> Client:
        client = await Client.connect(self.server.host, self.server.port, self.tokens[user],
                                      device, client_flags=HelloFlag.EXTENSIONS)
        self.clients.append(client)
        return client

    def rest(self, method: str, path: str, user: str) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=30)
        conn.request(method, path, headers={"Authorization": f"Bearer {self.tokens[user]}"})
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, json.loads(data) if data else None

    async def block(self, user: str, other: str, *, blocked: bool = True) -> None:
        status, _ = await asyncio.to_thread(self.rest, "PUT" if blocked else "DELETE",
                                            f"/v1/blocks/{other}", user)
        assert status == 204


@pytest.fixture
def world(tmp_path: Path, store_backend: StoreBackend) -> Iterator[World]:
    data = tmp_path / "data"
    data.mkdir()
    store_backend.prepare(data)
    tokens, groups = provision(data, USERS, {"team": USERS})
    server = ServerProcess(data)
    server.start()
    try:
        yield World(server, data, tokens, groups["team"])
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.output, server.output


def run(fn: Callable[[World], Coroutine[Any, Any, None]], world: World) -> None:
    async def main() -> None:
        try:
            await fn(world)
        finally:
            for client in world.clients:
                await client.close()
    asyncio.run(main())


async def answer(client: Client, msg_id: int) -> int:
    """The immediate answer to `msg_id` (stored reports on the way are skipped)."""
    while True:
        status = await client.status()
        if status.id == msg_id and not status.report_seq:
            return status.status


async def incoming(client: Client) -> Message:
    """The next message (stored reports on the way are skipped)."""
    while True:
        event = await client.next_event()
        if isinstance(event, Message):
            return event


def block_from_another_process(data: Path, user: str, other: str) -> None:
    """What the command line would do: the store opened by this (test) process."""
    async def go() -> None:
        clock = SystemClock()
        store = await open_storage(load_config(None, {
            "storage.data_dir": data,
            "storage.database": os.environ.get("TIDINGS_DATABASE")}).storage, clock.wall_ms())
        try:
            user_id = await store.find_user(1, user.encode())
            assert user_id is not None
            assert await store.set_block(1, user_id, other.encode(), True, clock.wall_ms())
        finally:
            await store.close()
    config = load_config(None, {"storage.data_dir": data,
                                "storage.database": os.environ.get("TIDINGS_DATABASE")})
    with running(resolve_database(config.storage.database, data), data):
        asyncio.run(go())


def test_a_blocked_sender_gets_blocked_and_unblock_restores(world: World) -> None:
    async def go(w: World) -> None:
        alice, bob = await w.connect("alice"), await w.connect("bob")
        alice.send(Message(1, b"bob", b"before"))
        assert await answer(alice, 1) == Status.SENT
        assert (await bob.message()).payload == b"before"
        await w.block("bob", "alice")
        alice.send(Message(2, b"bob", b"reliable"))
        assert await answer(alice, 2) == Status.BLOCKED
        alice.send(Message(3, b"bob", b"real-time", expiry_s=0))
        assert await answer(alice, 3) == Status.BLOCKED
        alice.send(Message(1, b"bob", b"before"))  # a resend of one stored before the block
        assert await answer(alice, 1) in (Status.SENT, Status.DELIVERED)
        bob.send(Message(1, b"alice", b"one way"))  # a block is one way
        assert await answer(bob, 1) == Status.SENT
        assert (await alice.message()).payload == b"one way"
        assert w.rest("GET", "/v1/blocks", "bob") == (200, {"blocks": ["alice"]})
        await w.block("bob", "alice", blocked=False)
        alice.send(Message(4, b"bob", b"again", expiry_s=0))
        assert await answer(alice, 4) == Status.SENT
        assert (await incoming(bob)).payload == b"again"
    run(go, world)


def test_a_group_message_skips_members_who_block_its_sender(world: World) -> None:
    async def go(w: World) -> None:
        alice, bob, carol = [await w.connect(n) for n in USERS]
        await w.block("carol", "alice")
        alice.send(Message(1, b"", b"stored", group_id=w.group_id))
        assert await answer(alice, 1) == Status.SENT
        alice.send(Message(2, b"", b"live", group_id=w.group_id, expiry_s=0))
        assert await answer(alice, 2) == Status.SENT
        assert [(await bob.message()).payload for _ in range(2)] == [b"stored", b"live"]
        bob.send(Message(3, b"", b"marker", group_id=w.group_id, expiry_s=0))
        got = await carol.message()
        assert got.payload == b"marker", "nothing of alice's came before the marker"
    run(go, world)


def test_nothing_of_the_blockers_presence_reaches_the_blocked(world: World) -> None:
    async def go(w: World) -> None:
        alice = await w.connect("alice")
        alice.send(PresenceSubscribe(SubscribeOp.ADD, [b"bob"]))  # before the block
        await alice.expect(PresenceUpdate)
        bob = await w.connect("bob")
        assert _states(await alice.expect(PresenceUpdate)) == [(b"bob", PresenceState.ONLINE)]
        await w.block("bob", "alice")
        assert _states(await alice.expect(PresenceUpdate)) == [(b"bob", PresenceState.UNKNOWN)]
        bob.send(PresenceSet(PresenceKind.TYPING, peer=b"alice"))
        bob.send(PresenceSet(PresenceKind.ACTIVITY, activity=b"hiding"))
        alice.send(PresenceSubscribe(SubscribeOp.ADD, [b"bob", b"carol"]))
        assert _states(await alice.expect(PresenceUpdate)) == [
            (b"bob", PresenceState.UNKNOWN), (b"carol", PresenceState.OFFLINE)]
        status, doc = w.rest("GET", "/v1/users/bob/presence", "alice")
        assert (status, doc["state"], doc["activity"]) == (200, "unknown", None)
        await w.block("bob", "alice", blocked=False)
        (entry,) = (await alice.expect(PresenceUpdate)).entries  # type: ignore[attr-defined]
        assert (entry.address, entry.state, entry.activity) == (b"bob", PresenceState.ONLINE,
                                                                b"hiding")
    run(go, world)


def test_a_block_by_another_process_reaches_the_running_server(world: World) -> None:
    async def go(w: World) -> None:
        alice, bob = await w.connect("alice"), await w.connect("bob")
        alice.send(PresenceSubscribe(SubscribeOp.ADD, [b"bob"]))
        assert _states(await alice.expect(PresenceUpdate)) == [(b"bob", PresenceState.ONLINE)]
        alice.send(Message(1, b"bob", b"cached", expiry_s=0))  # the relay caches bob's blocks
        assert await answer(alice, 1) == Status.SENT
        await bob.message()
        await asyncio.to_thread(block_from_another_process, w.data, "bob", "alice")
        # Within the change log's poll (0.5 s) the watcher is told...
        assert _states(await alice.expect(PresenceUpdate, timeout=5)) == [
            (b"bob", PresenceState.UNKNOWN)]
        # ...and both message paths refuse.
        alice.send(Message(2, b"bob", b"live", expiry_s=0))
        assert await answer(alice, 2) == Status.BLOCKED
        alice.send(Message(3, b"bob", b"stored"))
        assert await answer(alice, 3) == Status.BLOCKED
    run(go, world)


def _states(event: object) -> list[tuple[bytes, int]]:
    assert isinstance(event, PresenceUpdate)
    return [(e.address, e.state) for e in event.entries]
