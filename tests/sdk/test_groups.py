"""The SDK's groups (sdk/groups.py): changes, announcements, aggregate reports, real server.

Plus the announcement parser against hostile payloads (pure).
"""

from __future__ import annotations

import asyncio
import json

import pytest

from appliance.protocol.wire import Feature, Flag
from appliance.protocol.wire.groups import GroupFlag, GroupResultCode, Perm
from appliance.sdk import Group, IncomingMessage, Status, StatusUpdate
from appliance.sdk.errors import GroupRequestError
from appliance.sdk.groups import GroupEvent, MemberChange, parse_announcement
from tests.sdk.conftest import World

pytestmark = pytest.mark.slow


async def _next(it, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        return await anext(it)


def test_an_admin_manages_members_and_everyone_hears_it(world: World) -> None:
    async def main() -> None:
        async with world.client("alice") as alice, world.client("bob") as bob:
            bob_events = bob.groups.events()
            async with asyncio.timeout(10):
                await alice.wait_online()
                await bob.wait_online()
            assert Feature.GROUP_MANAGE | Feature.GROUP_RECEIPTS in alice.server_features
            assert alice.groups.supported
            change = await alice.groups.create("club", ["bob"], flags=GroupFlag.DEFAULT)
            assert change.members == 2
            club = change.group
            created: GroupEvent = await _next(bob_events)
            assert (created.event, created.group, created.by, created.name) == (
                "created", club, "alice", "club")
            assert created.members == (MemberChange("alice", Perm.ALL),
                                       MemberChange("bob", Perm.DEFAULT))
            assert created.message.flags & Flag.SYSTEM
            with pytest.raises(GroupRequestError) as refused:
                await bob.groups.add(club, ["carol"])
            assert refused.value.result == GroupResultCode.FORBIDDEN
            assert not refused.value.retryable
            assert (await alice.groups.add(club, {"carol": Perm.RECEIVE})).members == 3
            added = await _next(bob_events)
            assert (added.event, added.members) == ("member_added",
                                                    (MemberChange("carol", Perm.RECEIVE),))
            await alice.groups.rename(club, "the club")
            assert (await _next(bob_events)).name == "the club"
            with pytest.raises(GroupRequestError) as unknown:
                await alice.groups.remove(club, ["nobody"])
            assert unknown.value.result == GroupResultCode.NO_USER
        # carol was offline all along: her announcement waited for her.
        async with world.client("carol") as carol:
            events = carol.groups.events()
            got = await _next(events)
            assert (got.event, got.group) == ("member_added", club)
            assert (await _next(events)).event == "renamed"
            await carol.groups.leave(club)
            assert (await _next(events)).event == "member_removed"  # hers, before she went

    asyncio.run(main())


def test_aggregate_reports_reach_the_sender(world: World) -> None:
    async def main() -> None:
        team = Group(world.groups["team"])
        async with world.client("alice") as alice, world.client("bob") as bob, \
                world.client("carol") as carol:
            updates: list[StatusUpdate] = []
            alice.on_status(updates.append)
            for c in (alice, bob, carol):
                async with asyncio.timeout(10):
                    await c.wait_online()
            message = alice.send(team, "all of you")
            async with asyncio.timeout(10):
                await message.reached(Status.DELIVERED_ALL)
            assert sorted(u.peer for u in updates if u.status == Status.DELIVERED) == [
                "bob", "carol"]
            [everyone] = [u for u in updates if u.status == Status.DELIVERED_ALL]
            assert (everyone.peer, everyone.group_id, everyone.message_id) == (
                "", team.id, message.id)
            bob.mark_read(team)
            carol.mark_read(team)
            async with asyncio.timeout(10):
                await message.reached(Status.READ_ALL)
            assert [u.status for u in updates].count(Status.READ_ALL) == 1
            # Each member's READ came too, and none moved the status back.
            assert sorted(u.peer for u in updates if u.status == Status.READ) == ["bob", "carol"]
            assert message.status == Status.READ_ALL
            mine = alice.read_session(team).older(1)
            assert mine[0].status == Status.READ_ALL  # kept in the local store too

    asyncio.run(main())


# --- the parser (pure) -------------------------------------------------------------------------


def _message(payload: bytes, *, flags: int = Flag.SYSTEM, sender: str = "@app",
             group_id: int = 5) -> IncomingMessage:
    return IncomingMessage(id=1, sender=sender, peer="", group_id=group_id, refid=0, seq=1,
                           timestamp_ms=0, expiry_s=1, type=0, flags=flags, priority=0,
                           payload=payload, outgoing_copy=False)


def test_only_the_servers_group_messages_are_announcements() -> None:
    doc = json.dumps({"event": "deleted", "group": 5, "by": "alice"}).encode()
    assert parse_announcement(_message(doc)) is not None
    assert parse_announcement(_message(doc, flags=0)) is None  # a member's lookalike
    assert parse_announcement(_message(doc, sender="mallory")) is None
    assert parse_announcement(_message(doc, group_id=0)) is None


@pytest.mark.parametrize("payload", [
    b"", b"not json", b"[]", b'{"event": 5}', b"[" * 100_000, b'{"event": "x"' * 1000,
    json.dumps({"event": "member_added", "members": "all"}).encode(),
], ids=lambda p: repr(p[:20]))
def test_junk_is_no_announcement_or_an_empty_one(payload: bytes) -> None:
    event = parse_announcement(_message(payload))
    assert event is None or event.members == ()


def test_fields_of_the_wrong_type_are_left_out() -> None:
    doc = {"event": "member_added", "by": 7, "name": ["x"], "flags": "no_store",
           "members": [{"address": "bob", "perms": ["send", "fly", 3]}, {"address": 9}, "x",
                       {"address": "carol", "perms": "send"}]}
    event = parse_announcement(_message(json.dumps(doc).encode()))
    assert event is not None
    assert (event.by, event.name, event.flags) == ("", None, None)
    assert event.members == (MemberChange("bob", Perm.SEND), MemberChange("carol", None))
