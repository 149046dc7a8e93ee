"""The one group routing rule (storage.routing) and the roster the store gives it.

The pure function is checked against every combination of permissions; the
store's `group_roster` on SQLite and a real MariaDB (the `backend` fixture),
and the writer is shown to decide as the function does for the same group.
Attacks first: another app's group, a member without SEND, hostile ids.
"""

from __future__ import annotations

import itertools

import pytest

from appliance.errors import StorageError
from appliance.protocol.wire.constants import Flag, Status
from appliance.storage.interface import Storage
from appliance.storage.models import (
    GroupFlag,
    GroupRoster,
    NewMessage,
    Outcome,
    Perm,
    WriteBatch,
)
from appliance.storage.routing import group_recipients, group_stores, peer_recipients
from tests.storage.conftest import Opener, run

NOW = 1_700_000_000_000
APP, OTHER_APP = 1, 2
SENDER = 10
ALL_PERMS = range((Perm.SEND | Perm.RECEIVE | Perm.ADMIN) + 1)


def expected(members: dict[int, int], sender: int) -> list[int] | Status:
    """The rule as SPEC M5 and PROTOCOL.md §4 state it, written out separately."""
    if sender not in members or members[sender] & Perm.SEND == 0:
        return Status.NOT_MEMBER
    return [user for user in members if members[user] & Perm.RECEIVE == Perm.RECEIVE]


# --- attacks ---------------------------------------------------------------------


def test_another_apps_group_is_no_destination_even_for_its_admin() -> None:
    roster = GroupRoster(OTHER_APP, {SENDER: Perm.SEND | Perm.RECEIVE | Perm.ADMIN, 11: 3})
    assert group_recipients(roster, APP, SENDER) is Status.INVALID_DEST


def test_no_such_group_is_no_destination() -> None:
    assert group_recipients(None, APP, SENDER) is Status.INVALID_DEST


@pytest.mark.parametrize("perms", [p for p in ALL_PERMS if not p & Perm.SEND])
def test_a_member_without_send_may_not_post(perms: int) -> None:
    roster = GroupRoster(APP, {SENDER: perms, 11: Perm.DEFAULT})
    assert group_recipients(roster, APP, SENDER) is Status.NOT_MEMBER


def test_a_non_member_may_not_post_to_a_group_of_its_app() -> None:
    assert group_recipients(GroupRoster(APP, {11: Perm.DEFAULT}), APP, SENDER) \
        is Status.NOT_MEMBER
    assert group_recipients(GroupRoster(APP, {}), APP, SENDER) is Status.NOT_MEMBER


def test_the_recipients_are_a_new_list_the_caller_may_change() -> None:
    members = {SENDER: Perm.DEFAULT, 11: Perm.RECEIVE}
    roster = GroupRoster(APP, members)
    first = group_recipients(roster, APP, SENDER)
    assert isinstance(first, list)
    first.append(99)
    assert group_recipients(roster, APP, SENDER) == [SENDER, 11]
    assert members == {SENDER: Perm.DEFAULT, 11: Perm.RECEIVE}


# --- every combination -----------------------------------------------------------


@pytest.mark.parametrize("sender_perms", [None, *ALL_PERMS])
def test_every_combination_of_permissions(sender_perms: int | None) -> None:
    """The sender absent or with each of the 8 permission sets, beside two other
    members with each of theirs (in both orders): 8 * 8 * 9 rosters, each app."""
    checked = 0
    for a, b in itertools.product(ALL_PERMS, repeat=2):
        for order in ((11, a, 12, b), (12, b, 11, a)):
            members = {order[0]: order[1], order[2]: order[3]}
            if sender_perms is not None:
                members = {**members, SENDER: sender_perms}
            want = expected(members, SENDER)
            assert group_recipients(GroupRoster(APP, members), APP, SENDER) == want
            assert group_recipients(GroupRoster(OTHER_APP, members), APP, SENDER) \
                is Status.INVALID_DEST
            checked += 1
    assert checked == 2 * 8 * 8


def test_recipients_keep_the_rosters_order_and_include_a_receiving_sender() -> None:
    roster = GroupRoster(APP, {13: Perm.RECEIVE, SENDER: Perm.DEFAULT, 11: Perm.SEND,
                               12: Perm.RECEIVE | Perm.ADMIN})
    assert group_recipients(roster, APP, SENDER) == [13, SENDER, 12]
    send_only = GroupRoster(APP, {SENDER: Perm.SEND, 11: Perm.RECEIVE})
    assert group_recipients(send_only, APP, SENDER) == [11]
    alone = GroupRoster(APP, {SENDER: Perm.SEND})
    assert group_recipients(alone, APP, SENDER) == []


def test_a_large_group_routes_in_one_pass() -> None:
    members = {user: Perm.DEFAULT if user % 3 else Perm.SEND for user in range(1, 10_001)}
    found = group_recipients(GroupRoster(APP, members), APP, 1)
    assert isinstance(found, list)
    assert len(found) == 10_000 - 3333
    assert 3 not in found
    assert 1 in found


def test_a_one_to_one_message_needs_its_peer_in_the_app() -> None:
    assert peer_recipients(None) is Status.INVALID_DEST
    assert peer_recipients(7) == [7]


# --- the store's roster, and the writer deciding alike -----------------------------


def test_a_roster_never_crosses_apps(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        await store.create_app("other", NOW)
        other_app = await store.app_id("other")
        mallory = (await store.create_user(other_app, "mallory", NOW)).user_id
        theirs = await store.create_group(other_app, "theirs", NOW)
        await store.set_member(other_app, theirs.group_id, mallory, Perm.DEFAULT)
        assert await store.group_roster(APP, theirs.group_id) is None
        assert await store.group_roster(other_app, theirs.group_id) == GroupRoster(
            other_app, {mallory: Perm.DEFAULT})
    run(backend, go)


@pytest.mark.parametrize("bad", [0, -1, 2**63 - 1, 2**63, 2**64 - 1])
def test_a_hostile_group_id_reads_as_no_group(backend: Opener, bad: int) -> None:
    async def go(store: Storage) -> None:
        try:
            assert await store.group_roster(APP, bad) is None
        except StorageError:
            assert bad >= 2**63  # beyond what a column holds: refused, typed
        # The store still answers.
        group = await store.create_group(APP, "g", NOW)
        assert await store.group_roster(APP, group.group_id) == GroupRoster(APP, {})
    run(backend, go)


def test_the_roster_follows_membership_changes(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        alice, bob, carol = [(await store.create_user(APP, n, NOW)).user_id
                             for n in ("alice", "bob", "carol")]
        group = await store.create_group(APP, "g", NOW)
        gid = group.group_id
        assert await store.group_roster(APP, gid) == GroupRoster(APP, {})
        await store.set_member(APP, gid, alice, Perm.DEFAULT)
        await store.set_member(APP, gid, bob, Perm.RECEIVE)
        await store.set_member(APP, gid, carol, Perm.SEND | Perm.ADMIN)
        roster = await store.group_roster(APP, gid)
        assert roster == GroupRoster(APP, {alice: Perm.DEFAULT, bob: Perm.RECEIVE,
                                           carol: Perm.SEND | Perm.ADMIN})
        await store.set_member(APP, gid, bob, Perm.DEFAULT)
        await store.remove_member(APP, gid, carol)
        assert await store.group_roster(APP, gid) == GroupRoster(
            APP, {alice: Perm.DEFAULT, bob: Perm.DEFAULT})
        await store.delete_group(APP, gid)
        assert await store.group_roster(APP, gid) is None
    run(backend, go)


def test_the_writer_routes_as_the_rule_says_for_every_sender(backend: Opener) -> None:
    """The relay will route with `group_recipients(group_roster(...))`; the writer, from
    its cache, must decide the same for each member's permissions."""
    async def go(store: Storage) -> None:
        names = [f"u{perms}" for perms in ALL_PERMS]
        users = {perms: (await store.create_user(APP, name, NOW)).user_id
                 for perms, name in zip(ALL_PERMS, names, strict=True)}
        outsider = (await store.create_user(APP, "outsider", NOW)).user_id
        devices = {user: (await store.register_device(user, b"d", NOW, 0)).device_rowid
                   for user in [*users.values(), outsider]}
        owner = {device: user for user, device in devices.items()}
        group = await store.create_group(APP, "g", NOW)
        for perms, user in users.items():
            await store.set_member(APP, group.group_id, user, perms)
        roster = await store.group_roster(APP, group.group_id)
        assert roster is not None
        for msg_id, sender in enumerate([*users.values(), outsider], start=1):
            message = NewMessage(APP, sender, devices[sender], msg_id, b"", group.group_id, 0,
                                 NOW + 60_000, 0, 0, 0, b"hi")
            (accepted,) = (await store.write(WriteBatch(messages=[message]), NOW)).accepted
            rule = group_recipients(roster, APP, sender)
            if isinstance(rule, Status):
                assert (accepted.outcome, accepted.status) == (Outcome.REJECTED, rule)
            else:
                assert (accepted.outcome, accepted.status) == (Outcome.STORED, Status.SENT)
                reached = {owner[d] for d in accepted.targets}
                # Every recipient's device; the sender's own device sent it.
                assert reached == set(rule) - {sender}
        # The other app never sees the group (the writer's cache is by global id).
        other = (await store.create_app("other", NOW)).app_id
        stranger = (await store.create_user(other, "u3", NOW)).user_id
        probe = NewMessage(other, stranger, 0, 99, b"", group.group_id, 0, NOW + 60_000, 0, 0,
                           0, b"hi")
        (accepted,) = (await store.write(WriteBatch(messages=[probe]), NOW)).accepted
        assert (accepted.outcome, accepted.status) == (Outcome.REJECTED, Status.INVALID_DEST)
        assert await store.group_roster(other, group.group_id) is None
    run(backend, go)


# --- group flags and the server's own messages (issue 16) ------------------------------


def test_without_send_by_selected_every_member_posts_and_outsiders_still_do_not() -> None:
    for perms in ALL_PERMS:
        roster = GroupRoster(APP, {SENDER: perms, 11: Perm.RECEIVE}, flags=0)
        want = [u for u, bits in ((SENDER, perms), (11, Perm.RECEIVE)) if bits & Perm.RECEIVE]
        assert group_recipients(roster, APP, SENDER) == want
    assert group_recipients(GroupRoster(APP, {11: Perm.DEFAULT}, flags=0), APP, SENDER) \
        is Status.NOT_MEMBER
    assert group_recipients(GroupRoster(OTHER_APP, {SENDER: 3}, flags=0), APP, SENDER) \
        is Status.INVALID_DEST


def test_a_roster_has_send_by_selected_unless_told_otherwise() -> None:
    assert GroupRoster(APP, {}).flags == GroupFlag.SEND_BY_SELECTED == GroupFlag.DEFAULT
    assert group_recipients(GroupRoster(APP, {SENDER: Perm.RECEIVE}), APP, SENDER) \
        is Status.NOT_MEMBER


def test_a_system_message_needs_no_membership_but_never_crosses_apps() -> None:
    roster = GroupRoster(APP, {11: Perm.DEFAULT, 12: Perm.SEND, 13: Perm.RECEIVE})
    assert group_recipients(roster, APP, SENDER, system=True) == [11, 13]
    assert group_recipients(roster, OTHER_APP, SENDER, system=True) is Status.INVALID_DEST
    assert group_recipients(None, APP, SENDER, system=True) is Status.INVALID_DEST


def test_no_store_groups_relay_members_messages_but_keep_system_ones() -> None:
    assert group_stores(GroupRoster(APP, {}))
    no_store = GroupRoster(APP, {}, flags=GroupFlag.NO_STORE | GroupFlag.SEND_BY_SELECTED)
    assert not group_stores(no_store)
    assert group_stores(no_store, system=True)


def test_the_writer_relays_no_store_groups_and_stores_system_messages(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        alice, bob, app_user = [(await store.create_user(APP, n, NOW)).user_id
                                for n in ("alice", "bob", "@app")]
        a1 = (await store.register_device(alice, b"a1", NOW, 0)).device_rowid
        b1 = (await store.register_device(bob, b"b1", NOW, 0)).device_rowid
        group = await store.create_group(APP, "live", NOW, GroupFlag.NO_STORE,
                                         [(alice, Perm.RECEIVE), (bob, Perm.DEFAULT)])
        gid = group.group_id

        def message(sender: int, device: int, msg_id: int, flags: int = 3) -> NewMessage:
            return NewMessage(APP, sender, device, msg_id, b"", gid, 0, NOW + 60_000, 0,
                              flags, 0, b"hi")

        # alice has no SEND: NO_STORE without SEND_BY_SELECTED lets every member post.
        (relayed,) = (await store.write(WriteBatch(messages=[message(alice, a1, 1)]),
                                        NOW)).accepted
        assert (relayed.outcome, relayed.status) == (Outcome.RELAY, Status.SENT)
        assert set(relayed.targets) == {alice, bob}  # user ids: the relay's recipients
        assert await store.pending(b1, bob, NOW, 10) == []
        # Not stored, so not deduplicated either: the same id is relayed again.
        (again,) = (await store.write(WriteBatch(messages=[message(alice, a1, 1)]),
                                      NOW)).accepted
        assert again.outcome is Outcome.RELAY
        (system,) = (await store.write(WriteBatch(messages=[
            message(app_user, 0, 2, Flag.SYSTEM)]), NOW)).accepted
        assert (system.outcome, set(system.targets)) == (Outcome.STORED, {a1, b1})
        assert [(p.peer, p.flags) for p in await store.pending(b1, bob, NOW, 10)] == [
            (b"@app", Flag.SYSTEM)]
        # An outsider's SYSTEM-less message is refused as before.
        (refused,) = (await store.write(WriteBatch(messages=[message(app_user, 0, 3)]),
                                        NOW)).accepted
        assert (refused.outcome, refused.status) == (Outcome.REJECTED, Status.NOT_MEMBER)
    run(backend, go)
