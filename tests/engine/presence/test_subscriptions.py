"""PRESENCE_SUBSCRIBE in the engine: snapshots in bounded frames, quotas, floods, apps.

A real SQLite store, fake links decoding what the engine writes with the
client's codec.  Attacks first: other apps, hidden users, floods, quotas.
"""

from __future__ import annotations

from appliance.config.limits import EngineLimits
from appliance.protocol.wire import CloseCode
from appliance.protocol.wire.presence import (
    MAX_PRESENCE_ENTRIES,
    PresenceSubscribe,
    SubscribeOp,
)
from appliance.storage.models import Privacy
from tests.engine.presence.conftest import (
    OFFLINE,
    ONLINE,
    UNKNOWN,
    Runner,
    World,
    clear,
    frames,
    presence,
    states,
    subscribe,
    typing_to,
)

# --- attacks -------------------------------------------------------------------------------


def test_presence_never_crosses_apps(world_runner: Runner) -> None:
    async def body(w: World) -> None:
        mallory, m_link = await w.connect("other/mallory")
        w.engine.on_extension(mallory, subscribe(b"bob", b"carol", b"alice"))
        await w.settle()
        # bob and carol are users of app 1 only: unknown; alice exists in both apps,
        # and mallory sees the one of its own app (offline), never app 1's.
        assert states(m_link) == [(b"bob", UNKNOWN), (b"carol", UNKNOWN), (b"alice", OFFLINE)]
        clear(m_link)
        await w.connect("bob")
        alice, _ = await w.connect("alice")
        w.engine.on_extension(alice, typing_to(b"mallory"))
        await w.settle()
        assert states(m_link) == []
        # The other app's alice connecting is what mallory sees.
        await w.connect("other/alice")
        assert states(m_link) == [(b"alice", ONLINE)]
    world_runner(body)


def test_a_hidden_user_and_an_unknown_address_look_alike(world_runner: Runner) -> None:
    async def body(w: World) -> None:
        await w.store.set_privacy(1, w.ids["alice"], Privacy.NOBODY)
        await w.connect("alice")
        bob, link = await w.connect("bob")
        w.engine.on_extension(bob, subscribe(b"alice", b"nobody"))
        await w.settle()
        hidden, unknown = presence(link)
        assert (hidden.state, unknown.state) == (UNKNOWN, UNKNOWN)
        assert (hidden.last_seen_ms, hidden.activity, hidden.group_id) == (0, b"", 0)
        assert hidden.encode()[65:] == unknown.encode()[67:]  # only the address differs
    world_runner(body)


def test_too_many_subscriptions_close_the_device_with_a_reason(world_runner: Runner) -> None:
    async def body(w: World) -> None:
        for i in range(10):
            await w.store.create_user(1, f"u{i}", w.clock.wall_ms())
        bob, link = await w.connect("bob")
        # Addresses that name nobody are answered, not watched: they do not count.
        w.engine.on_extension(bob, subscribe(*(b"u%d" % i for i in range(6)), b"nobody"))
        await w.settle()
        assert link.closed is None
        w.engine.on_extension(bob, subscribe(b"u0", b"u1", b"u6", b"u7", b"u8"))  # 3 new
        await w.settle()
        assert link.closed == (CloseCode.PROTOCOL_ERROR, "more than 8 presence subscriptions")
        assert bob.closed
    world_runner(body, limits=EngineLimits(commit_window_ms=0.0, max_presence_subscriptions=8))


def test_a_subscription_flood_is_served_one_frame_at_a_time(world_runner: Runner) -> None:
    async def body(w: World) -> None:
        bob, link = await w.connect("bob")
        for _ in range(50):
            w.engine.on_extension(bob, subscribe(b"alice", b"carol"))
            w.engine.on_extension(bob, PresenceSubscribe(SubscribeOp.REMOVE, [b"alice"]))
        assert link.paused  # not read from while frames wait
        await w.settle()
        assert not link.paused
        assert len(frames(link)) == 50
        assert list(w.engine.presence.watchers.watching(bob.device_rowid)) == [w.ids["carol"]]
    world_runner(body)


# --- watching ------------------------------------------------------------------------------


def test_a_device_that_disconnects_stops_watching(world_runner: Runner) -> None:
    async def body(w: World) -> None:
        bob, _ = await w.connect("bob")
        w.engine.on_extension(bob, subscribe(b"alice"))
        await w.settle()
        w.engine.close_session(bob)
        assert w.engine.presence.watchers.watched(w.ids["alice"]) is None
        bob2, link2 = await w.connect("bob")
        await w.connect("alice")
        assert states(link2) == []  # subscriptions last as long as the connection
        w.engine.on_extension(bob2, subscribe(b"alice"))
        await w.settle()
        assert states(link2) == [(b"alice", ONLINE)]
    world_runner(body)


def test_a_subscriber_of_500_users_gets_their_states_in_bounded_frames(
        world_runner: Runner) -> None:
    async def body(w: World) -> None:
        names = [f"user-{i:03}" for i in range(500)]
        for name in names:
            await w.store.create_user(1, name, w.clock.wall_ms())
        bob, link = await w.connect("bob")
        w.engine.on_extension(bob, subscribe(*(n.encode() for n in names)))
        await w.settle()
        got = frames(link)
        assert [len(f.entries) for f in got] == [MAX_PRESENCE_ENTRIES, 500 - MAX_PRESENCE_ENTRIES]
        assert [e.address for f in got for e in f.entries] == [n.encode() for n in names]
        assert all(len(f.encode_body()) <= w.engine.limits.max_frame_bytes for f in got)
        assert w.engine.presence.stats_snapshots == 2
    world_runner(body, names=("bob",),
                 limits=EngineLimits(commit_window_ms=0.0, max_presence_subscriptions=1000))
