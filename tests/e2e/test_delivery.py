"""Every M4 rule of issue #2, end to end through a real `tidings serve` process.

Each test runs on SQLite and on MariaDB.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.protocol.wire import CloseCode, Flag, Message, Status
from tests.conftest import StoreBackend
from tests.support.client import Client, ServerClosedError
from tests.support.provision import provision, write_config
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

USERS = ["alice", "bob", "carol", "dave"]
#: The server's `limits.sweep_interval_s` in these tests.
SWEEP_INTERVAL_S = 0.2


class World:
    """A running server with users alice, bob, carol, dave and group 'team'."""

    def __init__(self, server: ServerProcess, tokens: dict[str, str], groups: dict[str, int]):
        self.server = server
        self.tokens = tokens
        self.groups = groups
        self.clients: list[Client] = []

    async def connect(self, user: str, device: str = "d1", *, welcome: bool = True) -> Client:
        client = await Client.connect(self.server.host, self.server.port, self.tokens[user],
                                      device, expect_welcome=welcome)
        self.clients.append(client)
        return client

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
    config = write_config(tmp_path / "tidings.toml", sweep_interval_s=SWEEP_INTERVAL_S,
                          max_devices=3)
    server = ServerProcess(data, env={"TIDINGS_CONFIG": str(config)})
    server.start()
    try:
        yield World(server, tokens, groups)
    finally:
        assert server.stop() == 0


def run(fn: Callable[[World], Coroutine[Any, Any, None]], world: World) -> None:
    async def main() -> None:
        try:
            await fn(world)
        finally:
            await world.close_all()

    asyncio.run(main())


async def barrier(sender: Client, receiver: Client, marker: int) -> Message:
    """Send a marker message and return the next message `receiver` gets.

    Used to prove that nothing else arrived before the marker, without sleeping.
    """
    sender.send(Message(marker, receiver.welcome.address if receiver.welcome else b"",
                        b"marker"))
    return await receiver.message()


def test_sent_only_after_store_then_cut_through_and_delivered(world: World) -> None:
    async def go(w: World) -> None:
        alice, bob = await w.connect("alice"), await w.connect("bob")
        alice.send(Message(1, b"bob", b"hello"))
        sent = await alice.status()
        assert (sent.id, sent.status) == (1, Status.SENT)
        got = await bob.message()
        assert (got.id, got.peer, got.payload) == (1, b"alice", b"hello")
        assert got.seq > 0
        assert got.timestamp_ms > 0
        delivered = await alice.status()
        assert (delivered.id, delivered.status, delivered.peer) == (1, Status.DELIVERED, b"bob")
        assert delivered.report_seq > 0
    run(go, world)


def test_store_and_forward_to_offline_user(world: World) -> None:
    async def go(w: World) -> None:
        alice = await w.connect("alice")
        for i in range(1, 4):
            alice.send(Message(i, b"bob", f"m{i}".encode()))
            assert (await alice.status()).status == Status.SENT
        bob = await w.connect("bob")
        got = [await bob.message() for _ in range(3)]
        assert [m.payload for m in got] == [b"m1", b"m2", b"m3"]
        reports = [await alice.status() for _ in range(3)]
        assert sorted(r.id for r in reports) == [1, 2, 3]
        assert {r.status for r in reports} == {Status.DELIVERED}
    run(go, world)


def test_resend_is_answered_with_stored_status_and_never_stored_twice(world: World) -> None:
    async def go(w: World) -> None:
        alice = await w.connect("alice")
        alice.send(Message(7, b"bob", b"once"))
        assert (await alice.status()).status == Status.SENT
        alice.send(Message(7, b"bob", b"once"))
        dup = await alice.status()
        assert (dup.id, dup.status, dup.report_seq) == (7, Status.SENT, 0)
        bob = await w.connect("bob")
        first = await bob.message()
        assert (first.id, first.payload) == (7, b"once")
        assert (await alice.status()).status == Status.DELIVERED
        alice.send(Message(7, b"bob", b"once"))
        assert (await alice.status()).status == Status.DELIVERED
        nxt = await barrier(alice, bob, 8)
        assert nxt.id == 8, "the resend must not have been delivered again"
    run(go, world)


def test_redelivered_after_reconnect_until_acknowledged_then_never(world: World) -> None:
    async def go(w: World) -> None:
        alice = await w.connect("alice")
        alice.send(Message(1, b"bob", b"keep"))
        await alice.status()
        bob = await w.connect("bob")
        unacked = await bob.message(ack=False)
        await bob.close()
        bob = await w.connect("bob")
        again = await bob.message()  # acknowledges this time
        assert (again.id, again.seq) == (1, unacked.seq)
        assert (await alice.status()).status == Status.DELIVERED
        await bob.close()
        bob = await w.connect("bob")
        assert (await barrier(alice, bob, 2)).id == 2
    run(go, world)


def test_queue_drains_by_priority_then_acceptance_order(world: World) -> None:
    async def go(w: World) -> None:
        alice = await w.connect("alice")
        plan = [(1, 5), (2, 0), (3, 15), (4, 0), (5, 5), (6, 15), (7, 0)]
        for msg_id, prio in plan:
            alice.send(Message(msg_id, b"bob", b"p", priority=prio))
            await alice.status()
        bob = await w.connect("bob")
        got = [(await bob.message()).id for _ in plan]
        assert got == [2, 4, 7, 1, 5, 3, 6]
    run(go, world)


def test_expired_message_is_never_delivered_and_sender_hears_expired(world: World) -> None:
    async def go(w: World) -> None:
        alice = await w.connect("alice")
        alice.send(Message(1, b"bob", b"soon gone", expiry_s=1))
        assert (await alice.status()).status == Status.SENT
        expired = await alice.status(timeout=10)
        assert (expired.id, expired.status, expired.peer) == (1, Status.EXPIRED, b"bob")
        alice.send(Message(1, b"bob", b"soon gone", expiry_s=1))
        resend = await alice.status()
        assert (resend.id, resend.status) == (1, Status.EXPIRED)  # the stored status
        bob = await w.connect("bob")
        assert (await barrier(alice, bob, 2)).id == 2
    run(go, world)


def test_expired_is_reported_within_a_sweep_interval_of_the_expiry(world: World) -> None:
    # PROTOCOL.md §6.1: at most sweep_interval_s plus one sweep's duration (a few ms
    # on this idle server; the margin absorbs a loaded test machine's scheduling).
    margin_ms = 250

    async def go(w: World) -> None:
        alice = await w.connect("alice")
        for i in range(1, 5):
            # Each send at another phase of the sweep loop (the previous EXPIRED came
            # with a sweep): a quarter interval later each time, so the expiries fall
            # from just after one sweep to just before the next.
            await asyncio.sleep((i - 1) * SWEEP_INTERVAL_S / 4)
            alice.send(Message(i, b"bob", b"soon gone", expiry_s=1))
            sent = await alice.status()
            expired = await alice.status(timeout=10)
            assert (expired.id, expired.status) == (i, Status.EXPIRED)
            # Both times are the server's: SENT's is the commit's, a little after
            # the expiry was counted from, hence the small negative allowance.
            late = expired.timestamp_ms - (sent.timestamp_ms + 1000)
            assert -100 <= late <= SWEEP_INTERVAL_S * 1000 + margin_ms, late
    run(go, world)


def test_expiry_zero_is_real_time_only(world: World) -> None:
    async def go(w: World) -> None:
        alice = await w.connect("alice")
        alice.send(Message(1, b"bob", b"now or never", expiry_s=0))
        assert (await alice.status()).status == Status.USER_OFFLINE
        alice.send(Message(2, b"nobody", b"x", expiry_s=0))
        assert (await alice.status()).status == Status.INVALID_DEST
        alice.send(Message(0, b"bob", b"fire and forget", expiry_s=0))
        bob = await w.connect("bob")
        alice.send(Message(3, b"bob", b"live", expiry_s=0))
        live = await bob.message()
        assert (live.id, live.seq, live.expiry_s, live.payload) == (3, 0, 0, b"live")
        first = await alice.status()
        assert (first.id, first.status) == (3, Status.SENT), "id 0 must get no status at all"
        assert (await barrier(alice, bob, 4)).id == 4, "nothing was stored for bob"
    run(go, world)


def test_receipts_reach_an_offline_sender_and_stop_once_confirmed(world: World) -> None:
    async def go(w: World) -> None:
        alice = await w.connect("alice")
        alice.send(Message(1, b"bob", b"read me"))
        await alice.status()
        await alice.close()
        bob = await w.connect("bob")
        await bob.message()
        bob.read(b"alice", (1,))
        alice = await w.connect("alice")
        delivered, read = await alice.status(), await alice.status()
        assert [(r.id, r.status) for r in (delivered, read)] == [(1, Status.DELIVERED),
                                                                  (1, Status.READ)]
        assert read.report_seq > delivered.report_seq > 0
        alice.report_ack(read.report_seq)
        await alice.close()
        alice = await w.connect("alice")
        alice.send(Message(2, b"bob", b"after"))
        nxt = await alice.status()
        assert (nxt.id, nxt.status) == (2, Status.SENT), "confirmed reports came back"
    run(go, world)


def test_every_device_gets_every_message_and_sender_devices_get_a_copy(world: World) -> None:
    async def go(w: World) -> None:
        alice_phone, alice_laptop = await w.connect("alice", "phone"), await w.connect("alice",
                                                                                         "laptop")
        bob_phone, bob_laptop = await w.connect("bob", "phone"), await w.connect("bob", "laptop")
        alice_phone.send(Message(1, b"bob", b"to all"))
        assert (await alice_phone.status()).status == Status.SENT
        for device in (bob_phone, bob_laptop):
            got = await device.message()
            assert (got.id, got.peer, got.payload) == (1, b"alice", b"to all")
        copy = await alice_laptop.message()
        assert (copy.id, copy.peer) == (1, b"bob")
        assert copy.flags & Flag.OUTGOING_COPY
        assert (await alice_phone.status()).status == Status.DELIVERED
    run(go, world)


def test_first_device_takes_the_queue_later_devices_get_what_follows(world: World) -> None:
    async def go(w: World) -> None:
        alice = await w.connect("alice")
        alice.send(Message(1, b"dave", b"waiting"))
        await alice.status()
        dave = await w.connect("dave", "first")
        assert (await dave.message(ack=False)).payload == b"waiting"
        # Still unacknowledged by the first device, yet not for the second:
        # it registered after the message was accepted (PROTOCOL.md §3.1).
        dave2 = await w.connect("dave", "second")
        assert (await barrier(alice, dave2, 2)).id == 2
        assert (await dave.message()).id == 2
    run(go, world)


def test_device_limit_and_same_device_replaces_old_connection(world: World) -> None:
    async def go(w: World) -> None:
        devices = [await w.connect("carol", f"d{i}") for i in range(3)]
        with pytest.raises(ServerClosedError):
            await w.connect("carol", "d3")
        again = await w.connect("carol", "d0")
        closed = await devices[0].closed_by_server()
        assert closed.code == CloseCode.REPLACED
        assert again.welcome is not None
    run(go, world)


def test_too_many_devices_is_refused_with_a_reason(world: World) -> None:
    async def go(w: World) -> None:
        _ = [await w.connect("carol", f"d{i}") for i in range(3)]
        extra = await w.connect("carol", "d9", welcome=False)
        closed = await extra.closed_by_server()
        assert closed.code == CloseCode.TOO_MANY_DEVICES
        assert "devices" in closed.reason
    run(go, world)


def test_group_fan_out_with_per_member_receipts(world: World) -> None:
    async def go(w: World) -> None:
        team = w.groups["team"]
        alice, bob, carol = [await w.connect(u) for u in ("alice", "bob", "carol")]
        alice.send(Message(1, b"", b"hi team", group_id=team))
        assert (await alice.status()).status == Status.SENT
        for member in (bob, carol):
            got = await member.message()
            assert (got.group_id, got.peer, got.payload) == (team, b"alice", b"hi team")
        reports = [await alice.status() for _ in range(2)]
        assert sorted((r.peer, r.status) for r in reports) == [(b"bob", Status.DELIVERED),
                                                                (b"carol", Status.DELIVERED)]
        assert all(r.group_id == team for r in reports)
        bob.read(b"alice", (1,), group_id=team)
        read = await alice.status()
        assert (read.peer, read.status) == (b"bob", Status.READ)
    run(go, world)


def test_group_errors_not_member_and_invalid_dest(world: World) -> None:
    async def go(w: World) -> None:
        dave = await w.connect("dave")
        dave.send(Message(1, b"", b"let me in", group_id=w.groups["team"]))
        assert (await dave.status()).status == Status.NOT_MEMBER
        dave.send(Message(2, b"", b"?", group_id=987654))
        assert (await dave.status()).status == Status.INVALID_DEST
    run(go, world)


def test_invalid_destination_and_too_large(world: World) -> None:
    async def go(w: World) -> None:
        alice = await w.connect("alice")
        alice.send(Message(1, b"nobody", b"?"))
        assert (await alice.status()).status == Status.INVALID_DEST
        alice.send(Message(2, b"bob", b"x" * (64 * 1024 + 1)))
        assert (await alice.status()).status == Status.TOO_LARGE
        alice.send(Message(3, b"", b"no destination"))
        assert (await alice.status()).status == Status.INVALID_DEST
    run(go, world)
