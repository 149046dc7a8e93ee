"""GROUP_MANAGE from clients, answered GROUP_RESULT (PROTOCOL.md §8.3), on SQLite and MariaDB.

Attacks first: a member without ADMIN, another app's group, reserved and
unknown addresses, a flood of requests, frames that lack what their operation
needs, a client that never asked for extensions.  Then what an admin does,
and what the members hear of it.
"""

from __future__ import annotations

import pytest

from appliance.config.limits import EngineLimits
from appliance.protocol.wire import CloseCode, Message, Status
from appliance.protocol.wire.groups import (
    GroupFlag,
    GroupManage,
    GroupOp,
    GroupResultCode as R,
    Perm,
)
from tests.engine.groups.harness import World, announcements, ordinary, results, run
from tests.storage.conftest import (
    Opener,
    backend as backend,  # the fixture: SQLite and MariaDB
)

DEFAULT, ALL = Perm.DEFAULT, Perm.ALL


async def team(w: World) -> int:
    """alice (admin), bob and carol (send, receive) in a group; returns its id."""
    for name in ("alice", "bob", "carol"):
        await w.user(name)
    info = await w.store.create_group(1, "team", w.clock.wall_ms(), GroupFlag.DEFAULT, [
        (w.users["alice"], ALL), (w.users["bob"], DEFAULT), (w.users["carol"], DEFAULT)])
    return info.group_id


# --- attacks -----------------------------------------------------------------------------------


def test_a_member_without_admin_changes_nothing(backend: Opener) -> None:
    async def body(w: World) -> None:
        gid = await team(w)
        await w.user("dave")
        bob, bob_link = await w.connect("bob")
        before = await w.store.get_group(1, gid)
        for i, frame in enumerate([
                GroupManage(1, GroupOp.ADD, gid, members=((b"dave", ALL),)),
                GroupManage(2, GroupOp.REMOVE, gid, members=((b"alice", 0),)),
                GroupManage(3, GroupOp.SET_PERMS, gid, members=((b"bob", ALL),)),
                GroupManage(4, GroupOp.RENAME, gid, name=b"mine"),
                GroupManage(5, GroupOp.SET_FLAGS, gid, flags=GroupFlag.NO_STORE),
                GroupManage(6, GroupOp.DELETE, gid)], start=1):
            w.engine.on_extension(bob, frame)
            await w.settle()
            assert results(bob_link)[-1] == (i, R.FORBIDDEN, gid, 0)
        assert await w.store.get_group(1, gid) == before
        assert announcements(bob_link) == []
    run(backend, body)


def test_another_apps_group_is_no_group_even_for_its_admin_elsewhere(backend: Opener) -> None:
    async def body(w: World) -> None:
        gid = await team(w)
        other = (await w.store.create_app("other", w.clock.wall_ms())).app_id
        await w.user("mallory", app=other)
        mallory, link = await w.connect("mallory")
        w.engine.on_extension(mallory, GroupManage(1, GroupOp.ADD, gid,
                                                   members=((b"mallory", ALL),)))
        await w.settle()
        w.engine.on_extension(mallory, GroupManage(2, GroupOp.LEAVE, gid))
        await w.settle()
        # And one of its own cannot take this app's users.
        w.engine.on_extension(mallory, GroupManage(3, GroupOp.CREATE, 0, b"x",
                                                   members=((b"bob", DEFAULT),)))
        await w.settle()
        assert results(link) == [(1, R.NO_GROUP, gid, 0), (2, R.NO_GROUP, gid, 0),
                                 (3, R.NO_USER, 0, 0)]
        assert [m.address for m in (await w.store.get_group(1, gid)).members] == [
            b"alice", b"bob", b"carol"]
        assert await w.store.list_groups(other) == []
    run(backend, body)


def test_unknown_and_reserved_addresses_are_no_user(backend: Opener) -> None:
    async def body(w: World) -> None:
        gid = await team(w)
        alice, link = await w.connect("alice")
        for i, address in enumerate((b"nobody", b"@app", b"\xff\xfe"), start=1):
            w.engine.on_extension(alice, GroupManage(i, GroupOp.ADD, gid,
                                                     members=((address, DEFAULT),)))
            await w.settle()
        w.engine.on_extension(alice, GroupManage(4, GroupOp.REMOVE, gid,
                                                 members=((b"alice", 0), (b"nobody", 0))))
        await w.settle()
        w.engine.on_extension(alice, GroupManage(5, GroupOp.SET_PERMS, gid,
                                                 members=((b"nobody", 0),)))
        await w.settle()
        assert [r[1] for r in results(link)] == [R.NO_USER] * 5
        assert len((await w.store.get_group(1, gid)).members) == 3  # nothing of any
    run(backend, body)


def test_frames_that_lack_what_their_operation_needs_are_invalid(backend: Opener) -> None:
    async def body(w: World) -> None:
        gid = await team(w)
        alice, link = await w.connect("alice")
        bad = [
            GroupManage(1, GroupOp.CREATE, gid, b"x"),  # a group id for CREATE
            GroupManage(2, GroupOp.CREATE, 0),  # no name
            GroupManage(3, GroupOp.ADD, 0, members=((b"bob", 3),)),  # no group
            GroupManage(4, GroupOp.ADD, gid),  # no members
            GroupManage(5, GroupOp.RENAME, gid),  # no name
            GroupManage(6, GroupOp.RENAME, gid, b"x", members=((b"bob", 3),)),
            GroupManage(7, GroupOp.REMOVE, gid, members=((b"bob", 3),)),  # perms on a removal
            GroupManage(8, GroupOp.LEAVE, gid, flags=1),
            GroupManage(9, GroupOp.DELETE, gid, b"x"),
            GroupManage(10, GroupOp.RENAME, gid, b"\xff"),  # not UTF-8
            GroupManage(11, GroupOp.RENAME, gid, b"a\x00b"),  # a control character
            GroupManage(12, GroupOp.ADD, gid, members=((b"bob", 3), (b"bob", 1))),  # twice
            GroupManage(13, GroupOp.CREATE, 0, b"x", members=((b"alice", 3),)),  # self too
        ]
        for frame in bad:
            w.engine.on_extension(alice, frame)
            await w.settle()
        assert [(r[0], r[1]) for r in results(link)] == [(f.request_id, R.INVALID) for f in bad]
        assert len(await w.store.list_groups(1)) == 1
    run(backend, body)


def test_one_request_at_a_time_and_the_send_rate(backend: Opener) -> None:
    async def body(w: World) -> None:
        gid = await team(w)
        alice, link = await w.connect("alice")
        for i in range(1, 6):  # in one loop turn: the first runs, the others are BUSY
            w.engine.on_extension(alice, GroupManage(i, GroupOp.RENAME, gid, b"n%d" % i))
        assert w.engine.groups.requests is not None
        assert w.engine.groups.requests.in_flight == 1
        await w.settle()
        assert sorted(results(link)) == [(1, R.OK, gid, 3)] + [(i, R.BUSY, gid, 0)
                                                                for i in range(2, 6)]
        assert (await w.store.get_group(1, gid)).name == "n1"
        # The burst spent (send_burst 1), the user's rate answers before the store is read.
        for i in range(6, 10):
            w.engine.on_extension(alice, GroupManage(i, GroupOp.RENAME, gid, b"again"))
            await w.settle()
        assert [r[1] for r in results(link)[5:]] == [R.RATE_LIMITED] * 4
        assert w.engine.refusals["rate_limited"] == 4
    run(backend, body, EngineLimits(commit_window_ms=0.0, send_burst=1, send_rate_per_s=0.001))


def test_changes_pay_for_the_announcements_they_fan_out(backend: Opener) -> None:
    """Each change is announced to every member: churning a group's membership must
    not amplify as a flood of group messages would (`appliance.engine.fanout`)."""
    async def body(w: World) -> None:
        gid = await team(w)
        alice, link = await w.connect("alice")
        # The first announcement teaches the group's cost: 3 members, 1 device each.
        w.engine.on_extension(alice, GroupManage(1, GroupOp.RENAME, gid, b"n1"))
        await w.settle()
        assert w.engine.quotas.fanout.known(gid) == 3
        for i in range(2, 8):
            w.engine.on_extension(alice, GroupManage(i, GroupOp.RENAME, gid, b"n%d" % i))
            await w.settle()
        # Burst 10: 1 (the first, unknown) + 3 + 3 + 3 paid, then refused.
        codes = [r[1] for r in results(link)]
        assert codes == [R.OK] * 4 + [R.RATE_LIMITED] * 3, codes
        assert w.engine.refusals["fanout_limited"] == 3
        # The announcements themselves (from @app) were never refused.
        _, bob_link = await w.connect("bob")
        assert [a["name"] for a in announcements(bob_link)] == ["n1", "n2", "n3", "n4"]
        # The rate pays the debt back.
        w.clock.advance(10.0)
        w.engine.on_extension(alice, GroupManage(9, GroupOp.RENAME, gid, b"n9"))
        await w.settle()
        assert results(link)[-1][1] == R.OK
    run(backend, body, EngineLimits(commit_window_ms=0.0, fanout_burst=10,
                                    fanout_rate_per_s=1.0))


def test_refused_changes_are_refunded_and_an_add_pays_for_its_new_members(
        backend: Opener) -> None:
    """A change refused (FORBIDDEN, NO_USER, ...) announces nothing, yet kept its
    charge: a member's mistakes spent its fan-out tokens; and an ADD paid the
    group's cost before the change, though the announcement reaches the new
    members too."""
    async def body(w: World) -> None:
        gid = await team(w)
        for name in ("dave", "erin", "frank", "gina", "hugo"):
            await w.user(name)
        alice, link = await w.connect("alice")
        bob, bob_link = await w.connect("bob")
        w.engine.on_extension(alice, GroupManage(1, GroupOp.RENAME, gid, b"n1"))
        await w.settle()
        assert w.engine.quotas.fanout.known(gid) == 3
        rates = w.engine.quotas.fanout.rates
        now = w.clock.monotonic()
        # bob (no ADMIN) is refused six times: each change refunded.
        for i in range(2, 8):
            w.engine.on_extension(bob, GroupManage(i, GroupOp.RENAME, gid, b"mine"))
            await w.settle()
        assert [r[1] for r in results(bob_link)] == [R.FORBIDDEN] * 6
        assert rates.take_cost(w.users["bob"], now, 10)  # his whole burst is left
        # alice adds five members: the announcement reaches 3 + 5, and she pays 8.
        w.engine.on_extension(alice, GroupManage(2, GroupOp.RENAME, gid, b"n2"))
        await w.settle()  # paid 1 (the group's cost unknown), then 3: 10 - 4 = 6 left
        add = tuple((name.encode(), DEFAULT) for name in ("dave", "erin", "frank", "gina",
                                                          "hugo"))
        w.engine.on_extension(alice, GroupManage(8, GroupOp.ADD, gid, members=add))
        await w.settle()
        assert results(link)[-1][1] == R.RATE_LIMITED  # 6 left, 8 asked
        w.clock.advance(2.0)  # 8 left
        w.engine.on_extension(alice, GroupManage(9, GroupOp.ADD, gid, members=add))
        await w.settle()
        assert results(link)[-1][1] == R.OK
        assert not rates.take_cost(w.users["alice"], w.clock.monotonic(), 1)
    run(backend, body, EngineLimits(commit_window_ms=0.0, fanout_burst=10,
                                    fanout_rate_per_s=1.0))


def test_a_change_past_the_groups_most_members_is_full_and_announces_nothing(
        backend: Opener, monkeypatch: pytest.MonkeyPatch) -> None:
    """Removals are announced before the change: one that would then pass the most
    members must be refused before anyone hears of it."""
    from appliance.engine.groups import manager
    from appliance.storage.sql import admin
    monkeypatch.setattr(manager, "MAX_GROUP_MEMBERS", 3)
    monkeypatch.setattr(admin, "MAX_GROUP_MEMBERS", 3)

    async def body(w: World) -> None:
        gid = await team(w)
        for name in ("dave", "erin"):
            await w.user(name)
        alice, link = await w.connect("alice")
        _, bob_link = await w.connect("bob")
        w.engine.on_extension(alice, GroupManage(
            1, GroupOp.ADD, gid, members=((b"dave", DEFAULT),)))
        await w.settle()
        assert results(link)[-1] == (1, R.FULL, gid, 0)
        w.engine.on_extension(alice, GroupManage(
            2, GroupOp.CREATE, 0, b"big", members=((b"bob", DEFAULT), (b"carol", DEFAULT),
                                                  (b"dave", DEFAULT))))
        await w.settle()
        assert results(link)[-1][:2] == (2, R.FULL)
        assert announcements(bob_link) == []
        assert len((await w.store.get_group(1, gid)).members) == 3
    run(backend, body)


def test_a_client_without_extensions_is_closed_not_answered(backend: Opener) -> None:
    async def body(w: World) -> None:
        gid = await team(w)
        alice, link = await w.connect("alice", extensions=False)
        w.engine.on_extension(alice, GroupManage(1, GroupOp.RENAME, gid, b"x"))
        await w.settle()
        assert link.closed is not None
        assert link.closed[0] == CloseCode.PROTOCOL_ERROR
        assert results(link) == []
        assert (await w.store.get_group(1, gid)).name == "team"
    run(backend, body)


# --- what an admin does ----------------------------------------------------------------------


def test_create_add_and_the_members_hear_it_once_offline_ones_on_reconnect(
        backend: Opener) -> None:
    async def body(w: World) -> None:
        for name in ("alice", "bob", "carol"):
            await w.user(name)
        alice, alice_link = await w.connect("alice")
        _bob, bob_link = await w.connect("bob")  # carol is offline
        w.engine.on_extension(alice, GroupManage(1, GroupOp.CREATE, 0, "Équipe".encode(),
                                                 GroupFlag.DEFAULT, ((b"bob", DEFAULT),)))
        await w.settle()
        [(_, code, gid, count)] = results(alice_link)
        assert (code, count) == (R.OK, 2)
        created = {"event": "created", "group": gid, "by": "alice", "name": "Équipe",
                   "flags": ["send_by_selected"],
                   "members": [{"address": "alice", "perms": ["send", "receive", "admin"]},
                               {"address": "bob", "perms": ["send", "receive"]}]}
        assert announcements(bob_link) == [created]
        assert announcements(alice_link) == [created]  # alice is a member too
        w.engine.on_extension(alice, GroupManage(2, GroupOp.ADD, gid,
                                                 members=((b"carol", Perm.RECEIVE),)))
        await w.settle()
        assert results(alice_link)[-1] == (2, R.OK, gid, 3)
        added = {"event": "member_added", "group": gid, "by": "alice",
                 "members": [{"address": "carol", "perms": ["receive"]}]}
        assert announcements(bob_link) == [created, added]
        # carol connects later and gets hers from the store, once.
        carol, carol_link = await w.connect("carol")
        assert announcements(carol_link) == [added]
        seqs = tuple(m.seq for m in carol_link.messages())
        from appliance.protocol.wire import Ack
        w.engine.on_ack(carol, Ack(seqs))
        await w.settle()
        w.engine.close_session(carol)
        _, again = await w.connect("carol")
        assert again.messages() == []
        # No receipts asked: alice's devices get no reports of them.
        assert [s for s in alice_link.statuses() if s[1] != Status.SENT] == []
    run(backend, body)


def test_removed_members_hear_their_own_removal_then_nothing(backend: Opener) -> None:
    async def body(w: World) -> None:
        gid = await team(w)
        alice, alice_link = await w.connect("alice")
        bob, bob_link = await w.connect("bob")
        w.engine.on_extension(alice, GroupManage(1, GroupOp.REMOVE, gid,
                                                 members=((b"bob", 0),)))
        await w.settle()
        assert results(alice_link) == [(1, R.OK, gid, 2)]
        removed = {"event": "member_removed", "group": gid, "by": "alice",
                   "members": [{"address": "bob"}]}
        assert announcements(bob_link) == [removed]
        w.engine.on_message(alice, Message(10, b"", b"after", group_id=gid))
        await w.settle()
        assert ordinary(bob_link) == []
        # bob may not speak there any more.
        w.engine.on_message(bob, Message(11, b"", b"still here?", group_id=gid))
        await w.settle()
        assert (11, Status.NOT_MEMBER) in bob_link.statuses()
    run(backend, body)


def test_perms_flags_rename_leave_and_delete(backend: Opener) -> None:
    async def body(w: World) -> None:
        gid = await team(w)
        alice, alice_link = await w.connect("alice")
        carol, carol_link = await w.connect("carol")
        frames = [GroupManage(1, GroupOp.SET_PERMS, gid, members=((b"bob", Perm.RECEIVE),)),
                  GroupManage(2, GroupOp.RENAME, gid, b"renamed"),
                  GroupManage(3, GroupOp.SET_FLAGS, gid, flags=0)]
        for frame in frames:
            w.engine.on_extension(alice, frame)
            await w.settle()
        assert [r[1] for r in results(alice_link)] == [R.OK] * 3
        assert [(a["event"], a.get("name"), a.get("flags"), a.get("members"))
                for a in announcements(carol_link)] == [
            ("perms_changed", None, None, [{"address": "bob", "perms": ["receive"]}]),
            ("renamed", "renamed", None, None),
            ("flags_changed", None, [], None)]
        # Without SEND_BY_SELECTED, bob (no SEND) may post.
        bob, bob_link = await w.connect("bob")
        w.engine.on_message(bob, Message(5, b"", b"may I?", group_id=gid))
        await w.settle()
        assert (5, Status.SENT) in bob_link.statuses()
        w.engine.on_extension(carol, GroupManage(4, GroupOp.LEAVE, gid))
        await w.settle()
        assert results(carol_link) == [(4, R.OK, gid, 2)]
        assert announcements(carol_link)[-1] == {
            "event": "member_removed", "group": gid, "by": "carol",
            "members": [{"address": "carol"}]}
        w.engine.on_extension(carol, GroupManage(5, GroupOp.LEAVE, gid))
        await w.settle()
        assert results(carol_link)[-1] == (5, R.FORBIDDEN, gid, 0)
        # bob's message waits, unread, for a member offline; then the group goes.
        w.engine.close_session(bob)
        w.engine.on_message(alice, Message(6, b"", b"for bob later", group_id=gid))
        await w.settle()
        w.engine.on_extension(alice, GroupManage(6, GroupOp.DELETE, gid))
        await w.settle()
        assert results(alice_link)[-1] == (6, R.OK, gid, 0)
        assert announcements(alice_link)[-1] == {"event": "deleted", "group": gid,
                                                 "by": "alice"}
        w.engine.on_message(alice, Message(7, b"", b"gone", group_id=gid))
        await w.settle()
        assert (7, Status.INVALID_DEST) in alice_link.statuses()
        # What was accepted before the deletion is still delivered, the deletion told last.
        _, bob_again = await w.connect("bob")
        assert [m.payload for m in ordinary(bob_again)][-1] == b"for bob later"
        assert announcements(bob_again)[-1]["event"] == "deleted"
    run(backend, body)


def test_a_no_store_group_relays_and_stores_nothing(backend: Opener) -> None:
    async def body(w: World) -> None:
        gid = await team(w)
        alice, alice_link = await w.connect("alice")
        w.engine.on_extension(alice, GroupManage(1, GroupOp.SET_FLAGS, gid,
                                                 flags=GroupFlag.NO_STORE | 1))
        await w.settle()
        # Nobody else online: USER_OFFLINE, and nothing waits for bob or carol.
        w.engine.on_message(alice, Message(2, b"", b"anyone?", group_id=gid))
        await w.settle()
        assert alice_link.statuses()[-1] == (2, Status.USER_OFFLINE)
        _bob, bob_link = await w.connect("bob")
        assert ordinary(bob_link) == []
        # The change itself was stored: bob gets that announcement.
        assert [a["flags"] for a in announcements(bob_link)] == [["send_by_selected",
                                                                   "no_store"]]
        w.engine.on_message(alice, Message(3, b"", b"live", group_id=gid, expiry_s=3600))
        await w.settle()
        assert alice_link.statuses()[-1] == (3, Status.SENT)
        [live] = ordinary(bob_link)
        assert (live.payload, live.seq, live.expiry_s) == (b"live", 0, 0)
        assert live.flags & 4  # TRANSIENT, as every real-time message
        _, carol_link = await w.connect("carol")
        assert ordinary(carol_link) == []
    run(backend, body)
