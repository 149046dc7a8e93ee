"""Presence end to end (SPEC M6, PROTOCOL.md §8.2): a real `tidings serve`, real sockets.

Two users with three devices each; privacy set over REST; users of another
app; a subscriber of 500 users; old clients; and the attacks: subscription
floods, huge lists, typing floods, bad activity texts, with the server's
RSS and an honest client of another app watched throughout.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from appliance.engine.clock import SystemClock
from appliance.protocol.wire import (
    Close,
    CloseCode,
    Feature,
    HelloFlag,
    Message,
    Status,
    WelcomeField,
)
from appliance.protocol.wire.presence import (
    MAX_PRESENCE_ENTRIES,
    PresenceEntry,
    PresenceKind,
    PresenceSet,
    PresenceState,
    PresenceSubscribe,
    PresenceUpdate,
    SubscribeOp,
)
from tests.conftest import StoreBackend, tidings
from tests.support.client import Client, ServerClosedError
from tests.support.hostile import HONEST_APP, HONEST_USERS, RSS_BUDGET_BYTES, HonestPair, RssWatch
from tests.support.provision import provision, write_config
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

USERS = ["alice", "bob", "carol", "dave"]
OTHER = "other"
ONLINE, OFFLINE, UNKNOWN = PresenceState.ONLINE, PresenceState.OFFLINE, PresenceState.UNKNOWN
TYPING, STOPPED = PresenceState.TYPING, PresenceState.TYPING_STOPPED


@dataclass
class World:
    server: ServerProcess
    tokens: dict[str, str]
    others: dict[str, str]
    honest: dict[str, str]
    group_id: int
    secret: str
    clients: list[Client] = field(default_factory=list)

    async def connect(self, user: str, device: str = "d1", *, extensions: bool = True,
                      tokens: dict[str, str] | None = None) -> Client:
        client = await Client.connect(self.server.host, self.server.port,
                                      (tokens or self.tokens)[user], device,
                                      client_flags=HelloFlag.EXTENSIONS if extensions else 0)
        self.clients.append(client)
        return client

    def rest(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=30)
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, json.loads(data) if data else None

    async def close_all(self) -> None:
        for client in self.clients:
            await client.close()
        self.clients.clear()


@pytest.fixture
def world(tmp_path: Path, store_backend: StoreBackend) -> Iterator[World]:
    data = tmp_path / "data"
    data.mkdir()
    store_backend.prepare(data)
    tokens, groups = provision(data, USERS, {"team": ["alice", "bob", "carol"]})
    others, _ = provision(data, ["mallory", "alice"], app=OTHER)
    honest, _ = provision(data, HONEST_USERS, app=HONEST_APP)
    secret = subprocess.run([sys.executable, "-m", "appliance", "--data-dir", str(data),
                             "app", "secret"], capture_output=True, text=True, check=True,
                            timeout=60).stdout.strip()
    config = write_config(tmp_path / "tidings.toml", typing_timeout_s=1, max_devices=8,
                          max_presence_subscriptions=600)
    server = ServerProcess(data, env={"TIDINGS_CONFIG": str(config)})
    server.start()
    try:
        yield World(server, tokens, others, honest, groups["team"], secret)
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.output, server.output


def run(fn: Callable[[World], Coroutine[Any, Any, None]], world: World) -> None:
    async def main() -> None:
        try:
            await fn(world)
        finally:
            await world.close_all()
    asyncio.run(main())


async def entries(client: Client, timeout: float = 10.0) -> list[tuple[bytes, int]]:
    """The entries of the next frame, which must be a PRESENCE."""
    event = await client.expect(PresenceUpdate, timeout)
    assert isinstance(event, PresenceUpdate)
    return [(e.address, e.state) for e in event.entries]


async def full(client: Client, timeout: float = 10.0) -> list[PresenceEntry]:
    event = await client.expect(PresenceUpdate, timeout)
    assert isinstance(event, PresenceUpdate)
    return list(event.entries)


async def goodbye(client: Client) -> None:
    """CLOSE, then wait until the server hung up: it has let the device go."""
    client.send(Close(CloseCode.NORMAL, "bye"))
    with pytest.raises(ServerClosedError):
        await client.next_event()


def subscribe(*names: str) -> PresenceSubscribe:
    return PresenceSubscribe(SubscribeOp.ADD, [n.encode() for n in names])


# --- attacks -------------------------------------------------------------------------------


def test_old_clients_never_receive_a_presence_frame(world: World) -> None:
    async def go(w: World) -> None:
        old = await w.connect("bob", "old", extensions=False)
        old.send(subscribe("alice"))
        assert w.tokens  # an extension frame from an old client is taken, never answered
        alice = await w.connect("alice")
        alice.send(PresenceSet(PresenceKind.TYPING, peer=b"bob"))
        alice.send(PresenceSet(PresenceKind.ACTIVITY, activity=b"here"))
        await goodbye(alice)
        # What it gets next is the marker: nothing came before it.
        carol = await w.connect("carol")
        carol.send(Message(5, b"bob", b"marker", expiry_s=0))
        got = await old.message()
        assert (got.id, got.payload) == (5, b"marker")
        assert old.welcome is not None
        assert old.welcome.info is None  # no extension fields either
    run(go, world)


def test_presence_never_crosses_apps(world: World) -> None:
    async def go(w: World) -> None:
        mallory = await w.connect("mallory", tokens=w.others)
        mallory.send(subscribe("bob", "alice"))
        assert await entries(mallory) == [(b"bob", UNKNOWN), (b"alice", OFFLINE)]
        await w.connect("bob")
        alice = await w.connect("alice")  # app 1's alice: not the one mallory watches
        alice.send(PresenceSet(PresenceKind.TYPING, peer=b"mallory"))
        their_alice = await w.connect("alice", tokens=w.others)
        assert await entries(mallory) == [(b"alice", ONLINE)]
        del their_alice
        mallory.send(subscribe("carol"))  # a marker: nothing of app 1 came before it
        assert await entries(mallory) == [(b"carol", UNKNOWN)]
    run(go, world)


def test_bad_activity_texts_and_huge_lists_close_with_a_reason(world: World) -> None:
    async def go(w: World) -> None:
        for body, why in [
                (struct.pack(">BQB", 3, 0, 0) + b"\x41" + b"x" * 65, "exceeds 64"),
                (struct.pack(">BQB", 3, 0, 0) + b"\x02\xc3\x28", "utf-8"),
                (struct.pack(">BH", 1, 1001) + b"\x01a" * 1001, "more than 1000")]:
            client = await w.connect("mallory", tokens=w.others)
            ftype = 0x40 if body[0] == 3 else 0x41
            client.send_raw(struct.pack(">IB", len(body), ftype) + body)
            closed = await client.closed_by_server()
            assert closed.code == CloseCode.PROTOCOL_ERROR
            assert why in closed.reason.lower()
    run(go, world)


def test_floods_stay_bounded_and_hurt_no_one(world: World) -> None:
    """Subscribe/unsubscribe loops, more subscriptions than allowed, typing floods:
    each bounded, the server's RSS flat, an honest pair of another app unaffected."""
    async def go(w: World) -> None:
        with RssWatch(w.server.proc.pid) as rss:  # type: ignore[union-attr]
            async with HonestPair(w.server, w.honest) as honest:
                mallory = await w.connect("mallory", tokens=w.others)
                victim = await w.connect("alice", tokens=w.others)
                names = [b"x%04d" % i for i in range(500)] + [b"alice"]
                started = time.monotonic()
                # 3 x 501 addresses: twice the quota at once (1,200), then 60 a second.
                for _ in range(3):
                    mallory.send(PresenceSubscribe(SubscribeOp.ADD, names))
                    mallory.send(PresenceSubscribe(SubscribeOp.REMOVE, [b"alice"]))
                    for _ in range(50):
                        mallory.send(PresenceSet(PresenceKind.TYPING, peer=b"alice"))
                answered = 0
                while answered < 3 * len(names):  # served in order, one list at a time
                    answered += len(await full(mallory, timeout=30))
                assert time.monotonic() - started > 4, "address lookups must be rate-limited"
                typing = 0
                victim.send(subscribe("mallory"))  # a marker behind the typing flood
                while (got := await entries(victim)) != [(b"mallory", ONLINE)]:
                    typing += len(got)
                assert typing <= 8 + 2 * 5, typing  # the burst, and the rate while it ran
                over = await w.connect("bob")
                over.send(subscribe(*USERS))
                assert len(await entries(over)) == 4
                await w.connect("alice")
                assert await entries(over) == [(b"alice", ONLINE)]
        assert rss.growth < RSS_BUDGET_BYTES, rss
        honest.assert_healthy()
    run(go, world)


# --- two users, three devices each ----------------------------------------------------------


def test_presence_is_the_union_of_devices_and_typing_expires(world: World) -> None:
    async def go(w: World) -> None:
        bobs = [await w.connect("bob", f"b{i}") for i in range(3)]
        info = bobs[0].welcome.info if bobs[0].welcome else None
        assert info is not None
        assert info[WelcomeField.MAX_PRESENCE_SUBSCRIPTIONS] == 600
        assert info[WelcomeField.TYPING_TIMEOUT_S] == 1
        assert Feature(info[WelcomeField.FEATURES]) & Feature.PRESENCE
        for bob in bobs:
            bob.send(subscribe("alice"))
            assert await entries(bob) == [(b"alice", OFFLINE)]
        alices = [await w.connect("alice", f"a{i}") for i in range(3)]
        for bob in bobs:  # online at the first device, and only then
            assert await entries(bob) == [(b"alice", ONLINE)]
        await goodbye(alices[0])
        await goodbye(alices[1])
        bobs[0].send(subscribe("alice"))  # still online: the snapshot says so
        assert await entries(bobs[0]) == [(b"alice", ONLINE)]
        # Typing reaches every device of the peer and ends by itself (1 s here).
        alices[2].send(PresenceSet(PresenceKind.TYPING, peer=b"bob"))
        started = time.monotonic()
        for bob in bobs:
            assert await entries(bob) == [(b"alice", TYPING)]
        for bob in bobs:
            assert await entries(bob, timeout=5) == [(b"alice", STOPPED)]
        assert time.monotonic() - started >= 0.9
        await goodbye(alices[2])
        for bob in bobs:  # offline only when the last device leaves, with its last seen
            (entry,) = await full(bob)
            assert (entry.address, entry.state) == (b"alice", OFFLINE)
            assert entry.last_seen_ms % 60_000 == 0
            assert abs(entry.last_seen_ms - SystemClock().wall_ms()) < 120_000
    run(go, world)


def test_typing_in_a_group_activity_and_typing_stopped(world: World) -> None:
    async def go(w: World) -> None:
        alice, bob, carol = [await w.connect(n) for n in ("alice", "bob", "carol")]
        dave = await w.connect("dave")  # no member
        alice.send(PresenceSet(PresenceKind.TYPING, group_id=w.group_id))
        for member in (bob, carol):
            (entry,) = await full(member)
            assert (entry.address, entry.state, entry.group_id) == (b"alice", TYPING,
                                                                    w.group_id)
        alice.send(PresenceSet(PresenceKind.TYPING_STOPPED, group_id=w.group_id))
        for member in (bob, carol):
            assert await entries(member) == [(b"alice", STOPPED)]
        dave.send(subscribe("alice"))  # nothing of the group's typing came before it
        assert await entries(dave) == [(b"alice", ONLINE)]
        alice.send(PresenceSet(PresenceKind.ACTIVITY, activity="en réunion".encode()))
        (entry,) = await full(dave)
        assert (entry.state, entry.activity.decode()) == (ONLINE, "en réunion")
    run(go, world)


def test_a_subscriber_of_500_users_gets_their_states_in_bounded_frames(world: World) -> None:
    names = [f"user-{i:03}" for i in range(500)]
    conn = http.client.HTTPConnection(world.server.host, world.server.port, timeout=30)
    for name in names:  # one kept-alive connection: a second or so
        conn.request("POST", "/v1/users", body=json.dumps({"address": name}),
                     headers={"Authorization": f"Bearer {world.secret}"})
        response = conn.getresponse()
        assert response.status == 201, response.read()
        response.read()
    conn.close()

    async def go(w: World) -> None:
        bob = await w.connect("bob")
        bob.send(subscribe(*names))
        first, second = await full(bob), await full(bob)
        assert (len(first), len(second)) == (MAX_PRESENCE_ENTRIES, 500 - MAX_PRESENCE_ENTRIES)
        assert [e.address.decode() for e in first + second] == names
        assert {e.state for e in first + second} == {OFFLINE}
    run(go, world)


def test_privacy_set_over_rest_reaches_watchers_at_once(world: World) -> None:
    async def go(w: World) -> None:
        bob, carol = await w.connect("bob"), await w.connect("carol")
        for watcher in (bob, carol):
            watcher.send(subscribe("alice"))
            await entries(watcher)
        await w.connect("alice")
        for watcher in (bob, carol):
            assert await entries(watcher) == [(b"alice", ONLINE)]
        token = w.tokens["alice"]
        assert w.rest("PUT", "/v1/privacy", token, {"presence": "nobody"}) == (
            200, {"presence": "nobody"})
        for watcher in (bob, carol):
            assert await entries(watcher) == [(b"alice", UNKNOWN)]
        status, doc = w.rest("GET", "/v1/users/alice/presence", w.tokens["bob"])
        assert (status, doc["state"], doc["last_seen_ms"]) == (200, "unknown", None)
        status, doc = w.rest("GET", "/v1/users/alice/presence", token)
        assert doc["state"] == "online"  # its own presence, always
        assert w.rest("PUT", "/v1/privacy", token, {"presence": "everyone"})[0] == 200
        for watcher in (bob, carol):
            assert await entries(watcher) == [(b"alice", ONLINE)]
        # From another process, the command line: seen through the store's log (~1 s).
        data_dir = w.server.data_dir
        await asyncio.to_thread(tidings, data_dir, "user", "block", "alice", "carol")
        assert await entries(carol) == [(b"alice", UNKNOWN)]
        carol.send(Message(1, b"alice", b"hi"))
        assert (await carol.status()).status == Status.BLOCKED
        await asyncio.to_thread(tidings, data_dir, "user", "privacy", "alice", "nobody")
        assert await entries(bob) == [(b"alice", UNKNOWN)]
    run(go, world)


def test_a_real_time_message_and_presence_share_the_connection(world: World) -> None:
    """A presence frame between messages breaks nothing for an EXTENSIONS client."""
    async def go(w: World) -> None:
        bob = await w.connect("bob")
        bob.send(subscribe("alice"))
        await entries(bob)
        alice = await w.connect("alice")
        alice.send(Message(1, b"bob", b"hi", expiry_s=0))
        assert await entries(bob) == [(b"alice", ONLINE)]
        got = await bob.message()
        assert got.payload == b"hi"
        assert (await alice.status()).status == Status.SENT
    run(go, world)
