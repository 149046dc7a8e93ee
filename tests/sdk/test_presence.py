"""The SDK's presence and blocking against a real server: listeners, iterators, reconnects.

Attacks and misuse first: bad arguments raise before anything is sent; a
server that sent a bad presence frame costs the connection, not the app.
"""

from __future__ import annotations

import asyncio

import pytest

from appliance.protocol.wire import Feature
from appliance.sdk import (
    BlockedError,
    Client,
    Group,
    NoSuchUserError,
    PresenceEvent,
    PresenceState,
)
from tests.sdk.conftest import World

pytestmark = pytest.mark.slow


async def next_event(events: asyncio.Queue[PresenceEvent], timeout: float = 10
                     ) -> PresenceEvent:
    async with asyncio.timeout(timeout):
        return await events.get()


async def online(client: Client) -> Client:
    await client.start()
    async with asyncio.timeout(10):
        await client.wait_online()
    return client


def test_bad_arguments_raise_before_anything_is_sent(world: World) -> None:
    async def go() -> None:
        async with world.client("bob") as bob:
            with pytest.raises(ValueError, match="1-64 bytes"):
                bob.subscribe_presence(["x" * 65])
            with pytest.raises(ValueError, match="either a peer or a group"):
                bob.set_typing()
            with pytest.raises(ValueError, match="either a peer or a group"):
                bob.set_typing(peer="alice", group=Group(3))
            with pytest.raises(ValueError, match="at most 64 bytes"):
                bob.set_activity("é" * 33)
            assert not bob.set_typing(peer="alice")  # not online yet: not sent
            await bob.wait_online()
            most = bob.limits.max_presence_subscriptions
            assert most == 1000
            with pytest.raises(ValueError, match=f"at most {most}"):
                bob.subscribe_presence([f"u{i}" for i in range(most + 1)])
    asyncio.run(go())


def test_presence_events_reach_listeners_and_iterators_across_reconnects(
        world: World) -> None:
    async def go() -> None:
        seen: asyncio.Queue[PresenceEvent] = asyncio.Queue()
        bob = world.client("bob")
        bob.on_presence(seen.put_nowait)
        bob.subscribe_presence(["alice", "nobody"])  # before the first connection
        await online(bob)
        assert Feature.PRESENCE in bob.server_features
        assert bob.limits.typing_timeout_s == 5
        first = {(e.address, e.state) for e in [await next_event(seen), await next_event(seen)]}
        assert first == {("alice", PresenceState.OFFLINE), ("nobody", PresenceState.UNKNOWN)}
        stream = bob.presence()
        alice = await online(world.client("alice"))
        assert (await next_event(seen)).state is PresenceState.ONLINE
        alice.set_activity("on a call")
        event = await next_event(seen)
        assert (event.state, event.activity) == (PresenceState.ONLINE, "on a call")
        assert alice.set_typing(peer="bob")
        typing = await next_event(seen)
        assert typing.typing
        assert typing.group_id == 0
        assert alice.set_typing(peer="bob", typing=False)
        assert (await next_event(seen)).state is PresenceState.TYPING_STOPPED
        iterated = [await anext(stream) for _ in range(4)]
        assert [e.state for e in iterated] == [PresenceState.ONLINE, PresenceState.ONLINE,
                                               PresenceState.TYPING,
                                               PresenceState.TYPING_STOPPED]
        # The server drops a connection's subscriptions; the SDK subscribes again.
        await bob.close()
        bob2 = world.client("bob")  # the same store: the same device
        bob2.on_presence(seen.put_nowait)
        bob2.subscribe_presence(["alice"])
        await online(bob2)
        again = await next_event(seen)
        assert (again.address, again.state, again.activity) == ("alice", PresenceState.ONLINE,
                                                                "on a call")
        await alice.close()
        gone = await next_event(seen)
        assert gone.state is PresenceState.OFFLINE
        assert gone.last_seen_ms > 0
        bob2.unsubscribe_presence(["alice"])
        await bob2.close()
    asyncio.run(go())


def test_typing_in_a_group(world: World) -> None:
    async def go() -> None:
        seen: asyncio.Queue[PresenceEvent] = asyncio.Queue()
        carol = await online(world.client("carol"))
        carol.on_presence(seen.put_nowait)
        alice = await online(world.client("alice"))
        assert alice.set_typing(group=Group(world.groups["team"]))
        event = await next_event(seen)
        assert (event.address, event.typing, event.group_id) == ("alice", True,
                                                                 world.groups["team"])
        await alice.close()
        await carol.close()
    asyncio.run(go())


def test_blocking_from_the_sdk(world: World) -> None:
    async def go() -> None:
        async with world.client("alice") as alice, world.client("bob") as bob:
            await bob.wait_online()
            await bob.block("alice")
            await bob.block("alice")
            assert await bob.blocked() == ["alice"]
            with pytest.raises(NoSuchUserError):
                await bob.block("nobody")
            message = alice.send("bob", "let me in")
            with pytest.raises(BlockedError):
                async with asyncio.timeout(10):
                    await message.sent()
            await bob.unblock("alice")
            assert await bob.blocked() == []
            assert await bob.presence_privacy() == "everyone"
            await bob.set_presence_privacy("nobody")
            assert await bob.presence_privacy() == "nobody"
            with pytest.raises(ValueError, match="everyone, contacts, nobody"):
                await bob.set_presence_privacy("friends")
            async with asyncio.timeout(10):
                await alice.send("bob", "thanks").sent()
    asyncio.run(go())
