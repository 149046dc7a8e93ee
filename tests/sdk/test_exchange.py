"""Two SDK clients against a real server: 1:1 and group messages, statuses, history."""

from __future__ import annotations

import asyncio

import pytest

from appliance.sdk import (
    AuthenticationError,
    Client,
    ConnectionState,
    Group,
    IncomingMessage,
    InvalidDestinationError,
    Status,
    StatusUpdate,
)
from tests.sdk.conftest import World

pytestmark = pytest.mark.slow


async def _next(it, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        return await anext(it)


def test_one_to_one_statuses_arrive_in_order(world: World) -> None:
    async def main() -> None:
        async with world.client("alice") as alice, world.client("bob") as bob:
            updates: list[StatusUpdate] = []
            alice.on_status(updates.append)
            inbox = bob.messages()
            async with asyncio.timeout(10):
                await alice.wait_online()
                await bob.wait_online()
            message = alice.send("bob", "hello bob", type=7, priority=3, refid=99)
            assert message.status == Status.OUTBOX
            got: IncomingMessage = await _next(inbox)
            assert (got.sender, got.peer, got.text, got.type, got.priority, got.refid,
                    got.id) == ("alice", "alice", "hello bob", 7, 3, 99, message.id)
            async with asyncio.timeout(10):
                await message.reached(Status.DELIVERED)
            assert bob.mark_read("alice") == 1
            async with asyncio.timeout(10):
                await message.reached(Status.READ)
            assert [u.status for u in updates] == [Status.SENT, Status.DELIVERED, Status.READ]
            assert updates[1].peer == "bob"
            assert message.status == Status.READ
            history = bob.read_session("alice").older(10)
            assert [(m.text, m.read, m.outgoing) for m in history] == [("hello bob", True, False)]
            mine = alice.read_session("bob").older(10)
            assert [(m.text, m.status, m.outgoing) for m in mine] == [
                ("hello bob", Status.READ, True)]

    asyncio.run(main())


def test_group_message_reaches_every_member_with_per_member_reports(world: World) -> None:
    async def main() -> None:
        team = Group(world.groups["team"])
        async with world.client("alice") as alice, world.client("bob") as bob, \
                world.client("carol") as carol:
            bob_in, carol_in, reports = bob.messages(), carol.messages(), alice.statuses()
            for c in (alice, bob, carol):
                async with asyncio.timeout(10):
                    await c.wait_online()
            message = alice.send(team, b"\x00binary\xff")
            for inbox in (bob_in, carol_in):
                got = await _next(inbox)
                assert (got.sender, got.group_id, got.payload) == ("alice", team.id,
                                                                  b"\x00binary\xff")
            seen = []
            while len([u for u in seen if u.status == Status.DELIVERED]) < 2:
                seen.append(await _next(reports))
            assert seen[0].status == Status.SENT
            assert {u.peer for u in seen if u.status == Status.DELIVERED} == {"bob", "carol"}
            # Then the aggregate (PROTOCOL.md §8.4): every member has it.
            aggregate = await _next(reports)
            assert (aggregate.status, aggregate.peer) == (Status.DELIVERED_ALL, "")
            bob.mark_read(team)
            update = await _next(reports)
            assert (update.status, update.peer, update.message_id) == (Status.READ, "bob",
                                                                       message.id)
            assert [m.sender for m in carol.read_session(team).older()] == ["alice"]

    asyncio.run(main())


def test_paging_newest_first_and_typed_errors(world: World) -> None:
    async def main() -> None:
        async with world.client("alice") as alice:
            async with asyncio.timeout(10):
                await alice.wait_online()
            sent = [alice.send("bob", f"m{i}") for i in range(7)]
            async with asyncio.timeout(10):
                for m in sent:
                    await m.sent()
            session = alice.read_session("bob")
            pages = [[m.text for m in session.older(3)] for _ in range(4)]
            assert pages == [["m6", "m5", "m4"], ["m3", "m2", "m1"], ["m0"], []]
            nobody = alice.send("nobody", "hi")
            with pytest.raises(InvalidDestinationError) as err:
                async with asyncio.timeout(10):
                    await nobody.sent()
            assert err.value.status == Status.INVALID_DEST
            assert nobody.status == Status.INVALID_DEST
            with pytest.raises(InvalidDestinationError):
                alice.send("x" * 65, "too long an address")
            with pytest.raises(ValueError, match="priority"):
                alice.send("bob", "x", priority=16)
        assert alice.state is ConnectionState.STOPPED

    asyncio.run(main())


def test_a_wrong_token_is_refused_for_good(world: World) -> None:
    async def main() -> None:
        client = Client(world.server.host, world.server.port, "tdg_not-a-token")
        async with client:
            with pytest.raises(AuthenticationError, match="AUTH_FAILED"):
                async with asyncio.timeout(10):
                    await client.wait_online()
            assert client.state is ConnectionState.STOPPED

    asyncio.run(main())
