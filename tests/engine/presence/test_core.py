"""Presence in the engine: the union of devices, activity, privacy, blocks, WELCOME.

A real SQLite store, fake links decoding what the engine writes with the
client's codec, a clock moved by hand.  Attacks first: old clients.
"""

from __future__ import annotations

from appliance.config.limits import EngineLimits
from appliance.credentials import token_hash
from appliance.protocol.wire import Feature, Message, Status, Welcome, WelcomeField
from appliance.protocol.wire.presence import (
    PresenceKind,
    PresenceSet,
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


# --- the union of devices ------------------------------------------------------------------


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


# --- activity, privacy and blocks ----------------------------------------------------------


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


def test_a_renamed_or_deleted_user_is_no_longer_shown_under_its_old_address(
        world_runner: Runner) -> None:
    """A watch follows a user id, shown under the address it was made with.  A user
    renamed went on being shown under its old address, so a watcher of "alice"
    saw when "alicia" came and went (and a new "alice" could never be told
    apart): the rename ends the watch, with UNKNOWN for the old address."""
    async def body(w: World) -> None:
        bob, b_link = await w.connect("bob")
        carol, c_link = await w.connect("carol")
        w.engine.on_extension(bob, subscribe(b"alice"))
        w.engine.on_extension(carol, subscribe(b"alice", b"bob"))
        alice, _ = await w.connect("alice")
        await w.settle()
        assert states(b_link)[-1] == (b"alice", ONLINE)
        w.engine.close_session(alice)
        await w.settle()
        clear(b_link, c_link)
        await w.store.rename_user(1, "alice", "alicia")
        await w.engine.presence.users_changed([w.ids["alice"]])
        assert states(b_link) == [(b"alice", UNKNOWN)]
        assert states(c_link) == [(b"alice", UNKNOWN)]
        assert w.engine.presence.watchers.watched(w.ids["alice"]) is None
        assert set(w.engine.presence.watchers.watching(carol.device_rowid)) == {w.ids["bob"]}
        await w.store.store_token(w.ids["alice"], token_hash(b"tok-alicia"),
                                  w.clock.wall_ms() + 10**9, w.clock.wall_ms())
        w.tokens["alicia"] = b"tok-alicia"
        await w.connect("alicia")
        await w.settle()
        assert states(b_link) == [(b"alice", UNKNOWN)]  # nothing of alicia as "alice"
        # Deleted: the same.
        w.engine.on_extension(bob, subscribe(b"carol"))
        await w.settle()
        clear(b_link)
        w.engine.close_session(carol)
        await w.settle()
        clear(b_link)
        await w.store.delete_user(1, "carol")
        await w.engine.presence.users_changed([w.ids["carol"]])
        assert states(b_link) == [(b"carol", UNKNOWN)]
        assert w.engine.presence.watchers.watched(w.ids["carol"]) is None
    world_runner(body)
