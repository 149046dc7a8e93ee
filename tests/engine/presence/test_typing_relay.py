"""Typing in the engine: to every device of the peer or the group's members, ended by
itself after the timeout (the clock is moved by hand), and rate-limited per device.
"""

from __future__ import annotations

from appliance.engine.presence.entries import typing_frame
from appliance.protocol.wire.presence import PresenceEntry, pack_presence
from tests.engine.presence.conftest import (
    STOPPED,
    TYPING,
    Runner,
    World,
    clear,
    frames,
    presence,
    states,
    typing_to,
)

# --- attacks -------------------------------------------------------------------------------


def test_typing_floods_are_dropped_above_the_devices_rate(world_runner: Runner) -> None:
    async def body(w: World) -> None:
        alice, _ = await w.connect("alice")
        _, b_link = await w.connect("bob")
        for _ in range(100):
            w.engine.on_extension(alice, typing_to(b"bob"))
        await w.settle()
        assert len(presence(b_link)) == 8  # limits.presence_burst
        assert w.engine.presence.stats_dropped_sets == 92
        w.clock.advance(1.0)  # presence_rate_per_s tokens come back
        w.engine.on_extension(alice, typing_to(b"bob"))
        await w.settle()
        assert len(presence(b_link)) == 9
    world_runner(body)


# --- typing --------------------------------------------------------------------------------


def test_typing_reaches_every_device_of_the_peer_and_expires_by_itself(
        world_runner: Runner) -> None:
    async def body(w: World) -> None:
        alice = [(await w.connect("alice", f"a{i}"))[0] for i in range(3)]
        bobs = [(await w.connect("bob", f"b{i}"))[1] for i in range(3)]
        old = (await w.connect("bob", "old", extensions=False))[1]
        w.engine.on_extension(alice[0], typing_to(b"bob"))
        await w.settle()
        assert [states(link) for link in bobs] == [[(b"alice", TYPING)]] * 3
        w.clock.advance(4.9)
        assert w.engine.presence.expire(w.clock.monotonic()) == 0
        w.engine.on_extension(alice[1], typing_to(b"bob"))  # a refresh, from another device
        await w.settle()
        w.clock.advance(0.2)
        assert w.engine.presence.expire(w.clock.monotonic()) == 0  # refreshed: still typing
        w.clock.advance(4.9)
        assert w.engine.presence.expire(w.clock.monotonic()) == 1
        assert [states(link) for link in bobs] == [
            [(b"alice", TYPING), (b"alice", TYPING), (b"alice", STOPPED)]] * 3
        assert frames(old) == []
        assert len(w.engine.presence.typing.timers) == 0
    world_runner(body)


def test_typing_stopped_and_the_last_device_leaving_end_typing(world_runner: Runner) -> None:
    async def body(w: World) -> None:
        alice, _ = await w.connect("alice")
        bob, b_link = await w.connect("bob")
        # Stopped before the store said who blocks whom: bob is told nothing at all.
        w.engine.on_extension(alice, typing_to(b"bob"))
        w.engine.on_extension(alice, typing_to(b"bob", active=False))
        await w.settle()
        assert states(b_link) == []
        w.engine.on_extension(alice, typing_to(b"bob"))
        await w.settle()
        w.engine.on_extension(alice, typing_to(b"bob", active=False))
        w.engine.on_extension(alice, typing_to(b"bob", active=False))  # nothing more to stop
        await w.settle()
        assert states(b_link) == [(b"alice", TYPING), (b"alice", STOPPED)]
        clear(b_link)
        w.engine.on_extension(alice, typing_to(b"bob"))
        await w.settle()
        w.engine.close_session(alice)
        await w.settle()
        assert states(b_link) == [(b"alice", TYPING), (b"alice", STOPPED)]
        w.clock.advance(10)
        assert w.engine.presence.expire(w.clock.monotonic()) == 0
        del bob
    world_runner(body)


def test_typing_in_a_group_reaches_its_members_not_the_typist(world_runner: Runner) -> None:
    async def body(w: World) -> None:
        group = await w.store.create_group(1, "team", w.clock.wall_ms())
        for name in ("alice", "bob", "carol"):
            await w.store.set_member(1, group.group_id, w.ids[name], 3)
        alice, a_link = await w.connect("alice")
        _, b_link = await w.connect("bob")
        _, c_link = await w.connect("carol")
        mallory, m_link = await w.connect("other/mallory")
        w.engine.on_extension(alice, typing_to(group=group.group_id))
        w.engine.on_extension(mallory, typing_to(group=group.group_id))  # another app's group
        await w.settle()
        for link in (b_link, c_link):
            assert [(e.address, e.state, e.group_id) for e in presence(link)] == [
                (b"alice", TYPING, group.group_id)]
        assert presence(a_link) == presence(m_link) == []
        w.clock.advance(5)
        w.engine.presence.expire(w.clock.monotonic())
        assert states(b_link)[-1] == (b"alice", STOPPED)
    world_runner(body)


def test_the_typing_fast_path_encodes_what_the_codec_does() -> None:
    for address, group, active in [(b"a", 0, True), (b"x" * 64, 2**63 - 1, False),
                                   ("é".encode(), 7, True)]:
        state = TYPING if active else STOPPED
        want = pack_presence([PresenceEntry(address, state, group_id=group).encode()])
        assert typing_frame(address, group, active) == want
