"""Presence in the engine: devices, watchers, typing, activity, privacy, blocks, apps.

A real SQLite store, fake links decoding what the engine writes with the
client's codec, a clock moved by hand (typing expires when told).  Attacks
first: old clients, other apps, hidden users, floods.
"""

from __future__ import annotations

from collections.abc import Callable

from appliance.config.limits import EngineLimits
from appliance.protocol.wire import CloseCode, Feature, Message, Status, Welcome, WelcomeField
from appliance.protocol.wire.presence import (
    MAX_PRESENCE_ENTRIES,
    PresenceKind,
    PresenceSet,
    PresenceState,
    PresenceSubscribe,
    SubscribeOp,
)
from appliance.storage.models import Privacy
from tests.engine.presence.conftest import World, clear, frames, presence, states

Runner = Callable[..., None]
ONLINE, OFFLINE, UNKNOWN = PresenceState.ONLINE, PresenceState.OFFLINE, PresenceState.UNKNOWN
TYPING, STOPPED = PresenceState.TYPING, PresenceState.TYPING_STOPPED


def subscribe(*names: bytes) -> PresenceSubscribe:
    return PresenceSubscribe(SubscribeOp.ADD, names)


def typing_to(peer: bytes = b"", group: int = 0, active: bool = True) -> PresenceSet:
    kind = PresenceKind.TYPING if active else PresenceKind.TYPING_STOPPED
    return PresenceSet(kind, peer=peer, group_id=group)


# --- attacks ---------------------------------------------------------------------------


def test_an_old_client_never_gets_a_presence_frame(world_runner: Runner) -> None:
    async def body(w: World) -> None:
        old, old_link = await w.connect("bob", "old", extensions=False)
        w.engine.on_extension(old, subscribe(b"alice"))  # taken, never answered
        await w.settle()
        alice, _ = await w.connect("alice")
        w.engine.on_extension(alice, typing_to(b"bob"))
        w.engine.on_extension(alice, PresenceSet(PresenceKind.ACTIVITY, activity=b"busy"))
        await w.settle()
        w.engine.close_session(alice)
        await w.settle()
        assert frames(old_link) == []
        assert old_link.closed is None
    world_runner(body)


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


# --- the union of devices -------------------------------------------------------------------


def test_online_at_the_first_device_offline_only_when_the_last_leaves(
        world_runner: Runner) -> None:
    async def body(w: World) -> None:
        watchers = [await w.connect("bob", f"b{i}") for i in range(3)]
        for session, _ in watchers:
            w.engine.on_extension(session, subscribe(b"alice"))
        await w.settle()
        assert [states(link) for _, link in watchers] == [[(b"alice", OFFLINE)]] * 3
        assert all(e.last_seen_ms == 0 for _, link in watchers for e in presence(link))
        clear(*(link for _, link in watchers))
        alice = [(await w.connect("alice", f"a{i}"))[0] for i in range(3)]
        assert [states(link) for _, link in watchers] == [[(b"alice", ONLINE)]] * 3
        for session in alice[:2]:
            w.engine.close_session(session)
        await w.settle()
        assert [states(link) for _, link in watchers] == [[(b"alice", ONLINE)]] * 3
        w.clock.advance(90)
        w.engine.close_session(alice[2])
        await w.settle()
        last = [presence(link)[-1] for _, link in watchers]
        minute = w.clock.wall_ms() - w.clock.wall_ms() % 60_000
        assert [(e.state, e.last_seen_ms) for e in last] == [(OFFLINE, minute)] * 3
        # Stored with the group commit: a new subscriber reads it.
        carol, c_link = await w.connect("carol")
        w.engine.on_extension(carol, subscribe(b"alice"))
        await w.settle()
        assert [(e.state, e.last_seen_ms) for e in presence(c_link)] == [(OFFLINE, minute)]
    world_runner(body)


def test_a_device_replaced_by_its_reconnect_changes_nothing(world_runner: Runner) -> None:
    async def body(w: World) -> None:
        bob, link = await w.connect("bob")
        w.engine.on_extension(bob, subscribe(b"alice"))
        await w.connect("alice", "phone")
        clear(link)
        await w.connect("alice", "phone")  # REPLACED: the same device again
        await w.connect("alice", "phone")
        assert states(link) == []
    world_runner(body)


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


# --- typing and activity ---------------------------------------------------------------------


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


def test_activity_goes_to_watchers_and_ends_offline(world_runner: Runner) -> None:
    async def body(w: World) -> None:
        bob, link = await w.connect("bob")
        w.engine.on_extension(bob, subscribe(b"alice"))
        alice, _ = await w.connect("alice")
        w.engine.on_extension(alice, PresenceSet(PresenceKind.ACTIVITY, activity="🎧 ".encode()))
        w.engine.on_extension(alice, PresenceSet(PresenceKind.ACTIVITY, activity="🎧 ".encode()))
        await w.settle()
        assert [(e.state, e.activity) for e in presence(link)] == [
            (OFFLINE, b""), (ONLINE, b""), (ONLINE, "🎧 ".encode())]
        carol, c_link = await w.connect("carol")
        w.engine.on_extension(carol, subscribe(b"alice"))
        await w.settle()
        assert [(e.state, e.activity) for e in presence(c_link)] == [(ONLINE, "🎧 ".encode())]
        w.engine.close_session(alice)
        await w.settle()
        assert w.engine.presence.activity == {}
    world_runner(body)


# --- privacy and blocks -----------------------------------------------------------------------


def test_a_privacy_change_is_seen_by_existing_watchers(world_runner: Runner) -> None:
    async def body(w: World) -> None:
        bob, b_link = await w.connect("bob")
        carol, c_link = await w.connect("carol")
        for session in (bob, carol):
            w.engine.on_extension(session, subscribe(b"alice"))
        await w.connect("alice")
        await w.store.set_contacts(1, w.ids["alice"], [b"bob"])
        await w.store.set_privacy(1, w.ids["alice"], Privacy.CONTACTS)
        clear(b_link, c_link)
        await w.engine.presence.users_changed([w.ids["alice"]])
        assert states(b_link) == []  # a contact: still sees
        assert states(c_link) == [(b"alice", UNKNOWN)]
        await w.store.set_privacy(1, w.ids["alice"], Privacy.EVERYONE)
        await w.engine.presence.users_changed([w.ids["alice"]])
        assert states(c_link) == [(b"alice", UNKNOWN), (b"alice", ONLINE)]
    world_runner(body)


def test_a_block_hides_the_blockers_presence_and_typing_and_unblock_restores(
        world_runner: Runner) -> None:
    async def body(w: World) -> None:
        bob, b_link = await w.connect("bob")
        w.engine.on_extension(bob, subscribe(b"alice"))  # made before the block
        alice, _ = await w.connect("alice")
        await w.store.set_block(1, w.ids["alice"], b"bob", True, w.clock.wall_ms())
        await w.engine.presence.users_changed([w.ids["alice"]])
        assert states(b_link) == [(b"alice", OFFLINE), (b"alice", ONLINE), (b"alice", UNKNOWN)]
        clear(b_link)
        w.engine.on_extension(alice, typing_to(b"bob"))
        w.engine.on_extension(alice, PresenceSet(PresenceKind.ACTIVITY, activity=b"x"))
        w.engine.on_extension(bob, typing_to(b"alice"))  # nor the other way
        await w.settle()
        w.engine.close_session(alice)
        await w.connect("alice")
        assert states(b_link) == []
        await w.store.set_block(1, w.ids["alice"], b"bob", False, w.clock.wall_ms())
        await w.engine.presence.users_changed([w.ids["alice"]])
        assert states(b_link) == [(b"alice", ONLINE)]
    world_runner(body)


def test_real_time_messages_to_a_blocker_are_answered_blocked(world_runner: Runner) -> None:
    async def body(w: World) -> None:
        alice, a_link = await w.connect("alice")
        _, b_link = await w.connect("bob")
        await w.store.set_block(1, w.ids["bob"], b"alice", True, w.clock.wall_ms())
        w.engine.presence.blocks.forget([w.ids["bob"]])
        for msg_id in (1, 2):  # the first reads bob's blocks, the second finds them cached
            w.engine.on_message(alice, Message(msg_id, b"bob", b"hi", expiry_s=0))
            await w.settle()
        assert a_link.statuses() == [(1, Status.BLOCKED), (2, Status.BLOCKED)]
        assert b_link.messages() == []
        w.engine.close_session(w.engine.registry.sessions_of(w.ids["bob"])[0])
        w.engine.on_message(alice, Message(3, b"bob", b"hi", expiry_s=0))  # bob offline
        await w.settle()
        assert a_link.statuses()[-1] == (3, Status.BLOCKED)
        await w.store.set_block(1, w.ids["bob"], b"alice", False, w.clock.wall_ms())
        await w.engine.presence.users_changed([w.ids["bob"]])
        _, b_link = await w.connect("bob")
        w.engine.on_message(alice, Message(4, b"bob", b"hi", expiry_s=0))
        await w.settle()
        assert a_link.statuses()[-1] == (4, Status.SENT)
        assert [m.payload for m in b_link.messages()] == [b"hi"]
    world_runner(body)


def test_a_real_time_group_message_skips_the_members_who_block_its_sender(
        world_runner: Runner) -> None:
    async def body(w: World) -> None:
        group = await w.store.create_group(1, "team", w.clock.wall_ms())
        for name in ("alice", "bob", "carol"):
            await w.store.set_member(1, group.group_id, w.ids[name], 3)
        await w.store.set_block(1, w.ids["carol"], b"alice", True, w.clock.wall_ms())
        alice, a_link = await w.connect("alice")
        _, b_link = await w.connect("bob")
        _, c_link = await w.connect("carol")
        w.engine.on_message(alice, Message(1, b"", b"hi all", group_id=group.group_id,
                                           expiry_s=0))
        await w.settle()
        assert a_link.statuses() == [(1, Status.SENT)]
        assert [m.payload for m in b_link.messages()] == [b"hi all"]
        assert c_link.messages() == []
    world_runner(body)


def test_welcome_announces_presence_limits_and_features(world_runner: Runner) -> None:
    async def body(w: World) -> None:
        _, link = await w.connect("bob")
        (welcome,) = [e for e in link.events if isinstance(e, Welcome)]
        assert welcome.info is not None
        assert welcome.info[WelcomeField.MAX_PRESENCE_SUBSCRIPTIONS] == 77
        assert welcome.info[WelcomeField.TYPING_TIMEOUT_S] == 3
        features = Feature(welcome.info[WelcomeField.FEATURES])
        assert Feature.PRESENCE in features
        assert Feature.BLOCKING in features
        w.engine.limits = EngineLimits(max_presence_subscriptions=5, typing_timeout_s=9)
        assert w.engine.welcome_info()[WelcomeField.TYPING_TIMEOUT_S] == 9
        assert w.engine.presence.typing.timers.timeout_s == 9
    world_runner(body, limits=EngineLimits(commit_window_ms=0.0, max_presence_subscriptions=77,
                                           typing_timeout_s=3))


def test_a_stopping_server_writes_the_last_seen_time_of_who_is_online(
        world_runner: Runner) -> None:
    async def body(w: World) -> None:
        await w.connect("alice")
        await w.connect("alice", "second")
        w.clock.advance(600)
        w.engine.presence.stopping()
        await w.engine.drain_writes()
        (record,) = await w.store.presence_of(1, None, [b"alice"])
        now = w.clock.wall_ms()
        assert record is not None
        assert record.last_seen_ms == now - now % 60_000
    world_runner(body)
