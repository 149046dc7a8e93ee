"""Groups in the store (issue 16), on SQLite and a real MariaDB (the `backend` fixture).

Group changes (`create_group` with members and flags, `update_group`,
`change_members`), each recipient's status (`group_status` as a ledger), the
aggregate receipts DELIVERED_ALL / READ_ALL, and `message_receipts`.  Attacks
first: another app's users and groups, a later member's READ, a hostile page.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from appliance.errors import NotFoundError, StorageError
from appliance.protocol.wire.constants import Flag, Status
from appliance.storage import migrations
from appliance.storage.interface import Storage
from appliance.storage.mariadb.connection import MariaConnection
from appliance.storage.models import (
    GroupFlag,
    GroupMember,
    NewMessage,
    Outcome,
    Perm,
    Receipt,
    WriteBatch,
)
from appliance.storage.sql import migrate as migrate_module
from appliance.storage.sql.dialect import Connection
from appliance.storage.sql.migrate import migrate
from appliance.storage.sqlite.connection import SqliteConnection, open_connection
from tests.storage.conftest import Opener

NOW = 1_700_000_000_000
HOUR = 3_600_000
APP = 1
SENT, DELIVERED, READ, EXPIRED = Status.SENT, Status.DELIVERED, Status.READ, Status.EXPIRED
DELIVERED_ALL, READ_ALL = Status.DELIVERED_ALL, Status.READ_ALL


def run(backend: Opener, fn: Callable[[Storage], Awaitable[None]]) -> None:
    async def main() -> None:
        store = await backend()
        try:
            await fn(store)
        finally:
            await store.close()
    asyncio.run(main())


async def users(store: Storage, *names: str, app: int = APP) -> list[int]:
    return [(await store.create_user(app, n, NOW)).user_id for n in names]


async def device(store: Storage, user: int, name: bytes = b"d") -> int:
    return (await store.register_device(user, name, NOW, 0)).device_rowid


def group_message(sender: int, device_rowid: int, msg_id: int, group: int,
                  flags: int = Flag.DEFAULT, expires: int = NOW + HOUR) -> NewMessage:
    return NewMessage(APP, sender, device_rowid, msg_id, b"", group, 0, expires, 0, flags, 0,
                      b"hi")


def reports(found: list[Receipt]) -> list[tuple[int, bytes, int]]:
    return [(r.msg_id, r.peer, r.status) for r in found]


# --- group changes -------------------------------------------------------------------------


def test_a_group_is_created_with_its_flags_and_members_in_one_go(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        alice, bob = await users(store, "alice", "bob")
        group = await store.create_group(APP, "team", NOW, GroupFlag.NO_STORE,
                                         [(alice, Perm.ALL), (bob, Perm.RECEIVE)])
        assert group.flags == GroupFlag.NO_STORE
        assert group.members == (GroupMember(alice, b"alice", Perm.ALL),
                                 GroupMember(bob, b"bob", Perm.RECEIVE))
        assert await store.get_group(APP, group.group_id) == group
        assert (await store.create_group(APP, "plain", NOW)).flags == GroupFlag.DEFAULT
    run(backend, go)


def test_nothing_crosses_apps_in_group_changes(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        other = (await store.create_app("other", NOW)).app_id
        (mallory,) = await users(store, "mallory", app=other)
        (alice,) = await users(store, "alice")
        with pytest.raises(NotFoundError):  # another app's user is no member candidate
            await store.create_group(APP, "g", NOW, GroupFlag.DEFAULT, [(mallory, Perm.ALL)])
        assert await store.list_groups(APP) == []  # nothing created
        group = await store.create_group(APP, "g", NOW, GroupFlag.DEFAULT, [(alice, Perm.ALL)])
        with pytest.raises(NotFoundError):
            await store.change_members(APP, group.group_id, [(mallory, Perm.DEFAULT)])
        with pytest.raises(NotFoundError):  # the group is not the other app's
            await store.update_group(other, group.group_id, name="mine")
        with pytest.raises(NotFoundError):
            await store.change_members(other, group.group_id, [(mallory, Perm.DEFAULT)])
        assert await store.get_group(APP, group.group_id) == group
    run(backend, go)


def test_update_group_renames_and_sets_flags(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        group = await store.create_group(APP, "g", NOW)
        renamed = await store.update_group(APP, group.group_id, name="renamed")
        assert (renamed.name, renamed.flags) == ("renamed", GroupFlag.DEFAULT)
        flagged = await store.update_group(APP, group.group_id, flags=GroupFlag.NO_STORE)
        assert (flagged.name, flagged.flags) == ("renamed", GroupFlag.NO_STORE)
        roster = await store.group_roster(APP, group.group_id)
        assert roster is not None
        assert roster.flags == GroupFlag.NO_STORE
        for bad in (-1, GroupFlag.ALL + 1, 2**40):
            with pytest.raises(StorageError):
                await store.update_group(APP, group.group_id, flags=bad)
        with pytest.raises(NotFoundError):
            await store.update_group(APP, group.group_id + 1, name="x")
    run(backend, go)


def test_change_members_is_all_or_nothing(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        alice, bob, carol = await users(store, "alice", "bob", "carol")
        group = await store.create_group(APP, "g", NOW, GroupFlag.DEFAULT,
                                         [(alice, Perm.ALL), (bob, Perm.DEFAULT)])
        with pytest.raises(NotFoundError):  # carol is no member: bob stays too
            await store.change_members(APP, group.group_id, [(alice, Perm.SEND)], [bob, carol])
        assert await store.get_group(APP, group.group_id) == group
        changed = await store.change_members(APP, group.group_id,
                                             [(carol, Perm.RECEIVE), (alice, Perm.SEND)], [bob])
        assert [(m.address, m.perms) for m in changed.members] == [
            (b"alice", Perm.SEND), (b"carol", Perm.RECEIVE)]
    run(backend, go)


# --- each recipient's status and the aggregate ------------------------------------------------


def test_aggregate_receipts_count_the_recipients_at_send_time(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        alice, bob, carol, dave, erin = await users(store, "alice", "bob", "carol", "dave",
                                                    "erin")
        a1, a2 = await device(store, alice, b"a1"), await device(store, alice, b"a2")
        b1, c1, d1 = [await device(store, u) for u in (bob, carol, dave)]
        e1 = await device(store, erin)
        group = await store.create_group(APP, "g", NOW, GroupFlag.DEFAULT, [
            (alice, Perm.DEFAULT), (bob, Perm.DEFAULT), (carol, Perm.DEFAULT),
            (dave, Perm.RECEIVE)])
        gid = group.group_id
        (acc,) = (await store.write(WriteBatch(messages=[group_message(alice, a1, 7, gid)]),
                                    NOW)).accepted
        assert acc.outcome is Outcome.STORED
        seq = acc.seq
        # erin joins after: she neither blocks nor counts; carol leaves: she still counts.
        await store.change_members(APP, gid, [(erin, Perm.DEFAULT)], [carol])
        # alice's own other device acknowledging is no report.
        assert (await store.write(WriteBatch(acks=[(a2, seq, 0)]), NOW + 1)).receipts == []
        got = (await store.write(WriteBatch(acks=[(b1, seq, 0)]), NOW + 2)).receipts
        assert reports(got) == [(7, b"bob", DELIVERED)]
        # A later member reporting it read changes nothing (she never got it).
        got = (await store.write(WriteBatch(reads=[(erin, APP, b"alice", gid, (7,))]),
                                 NOW + 3)).receipts
        assert got == []
        assert await store.pending(e1, erin, NOW, 10) == []
        got = (await store.write(WriteBatch(acks=[(c1, seq, 0)]), NOW + 4)).receipts
        assert reports(got) == [(7, b"carol", DELIVERED)]
        # dave reads without an ACK first: counts as delivered and read; the last one.
        got = (await store.write(WriteBatch(reads=[(dave, APP, b"alice", gid, (7,))]),
                                 NOW + 5)).receipts
        assert reports(got) == [(7, b"dave", READ), (7, b"", DELIVERED_ALL)]
        assert all(r.user_id == alice and r.group_id == gid for r in got)
        # dave's ACK now is no news; the aggregate came once.
        assert (await store.write(WriteBatch(acks=[(d1, seq, 0)]), NOW + 6)).receipts == []
        got = (await store.write(WriteBatch(reads=[
            (bob, APP, b"alice", gid, (7,)), (alice, APP, b"alice", gid, (7,))]),
            NOW + 7)).receipts
        assert reports(got) == [(7, b"bob", READ)]  # her own READ is ignored
        # carol is no member now, but was a recipient: her READ completes it.
        got = (await store.write(WriteBatch(reads=[(carol, APP, b"alice", gid, (7, 7))]),
                                 NOW + 8)).receipts
        assert reports(got) == [(7, b"carol", READ), (7, b"", READ_ALL)]
        again = (await store.write(WriteBatch(reads=[(carol, APP, b"alice", gid, (7,))]),
                                   NOW + 9)).receipts
        assert again == []
        found = await store.message_receipts(APP, alice, 7)
        assert found is not None
        assert (found.group_id, found.recipients, found.delivered, found.read) == (gid, 3, 3, 3)
        assert found.delivered_all
        assert found.read_all
        assert [(m.address, m.status, m.timestamp_ms) for m in found.members] == [
            (b"bob", READ, NOW + 7), (b"carol", READ, NOW + 8), (b"dave", READ, NOW + 5)]
    run(backend, go)


def test_the_aggregate_survives_a_reopen(backend: Opener) -> None:
    async def go() -> None:
        store = await backend()
        try:
            alice, bob, carol = await users(store, "alice", "bob", "carol")
            a1, b1, c1 = [await device(store, u) for u in (alice, bob, carol)]
            group = await store.create_group(APP, "g", NOW, GroupFlag.DEFAULT, [
                (alice, Perm.DEFAULT), (bob, Perm.DEFAULT), (carol, Perm.DEFAULT)])
            (acc,) = (await store.write(WriteBatch(messages=[
                group_message(alice, a1, 1, group.group_id)]), NOW)).accepted
            await store.write(WriteBatch(acks=[(b1, acc.seq, 0)]), NOW)
        finally:
            await store.close()
        store = await backend()  # the writer's cached counters are gone: read again
        try:
            got = (await store.write(WriteBatch(acks=[(c1, acc.seq, 0)]), NOW)).receipts
            assert reports(got) == [(1, b"carol", DELIVERED), (1, b"", DELIVERED_ALL)]
        finally:
            await store.close()
    asyncio.run(go())


def test_receipts_flags_decide_ledger_and_aggregate(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        alice, bob = await users(store, "alice", "bob")
        a1, b1 = await device(store, alice), await device(store, bob)
        group = await store.create_group(APP, "g", NOW, GroupFlag.DEFAULT, [
            (alice, Perm.DEFAULT), (bob, Perm.DEFAULT)])
        gid = group.group_id
        batch = WriteBatch(messages=[group_message(alice, a1, 1, gid, Flag.READ_RECEIPT),
                                     group_message(alice, a1, 2, gid, 0)])
        first, second = (await store.write(batch, NOW)).accepted
        got = (await store.write(WriteBatch(acks=[(b1, first.seq, 0), (b1, second.seq, 0)]),
                                 NOW)).receipts
        assert got == []  # no DELIVERY_RECEIPT: neither DELIVERED nor DELIVERED_ALL
        got = (await store.write(WriteBatch(reads=[(bob, APP, b"alice", gid, (1, 2))]),
                                 NOW)).receipts
        assert reports(got) == [(1, b"bob", READ), (1, b"", READ_ALL)]
        plain = await store.message_receipts(APP, alice, 2)
        assert plain is not None
        # No ledger kept for it: no count, and only the statuses reached are known.
        assert plain.recipients == 0
        assert not plain.delivered_all
        assert [(m.address, m.status) for m in plain.members] == [(b"bob", READ)]
    run(backend, go)


async def trio(store: Storage) -> tuple[int, int, int, int]:
    """alice, bob and carol (a device each) in group "g": (alice, her device, bob's device,
    the group id)."""
    alice, bob, carol = await users(store, "alice", "bob", "carol")
    a1, b1 = await device(store, alice), await device(store, bob)
    await device(store, carol)
    group = await store.create_group(APP, "g", NOW, GroupFlag.DEFAULT, [
        (alice, Perm.DEFAULT), (bob, Perm.DEFAULT), (carol, Perm.DEFAULT)])
    return alice, a1, b1, group.group_id


def test_an_expired_recipient_blocks_delivered_all(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        alice, a1, b1, gid = await trio(store)
        (acc,) = (await store.write(WriteBatch(messages=[
            group_message(alice, a1, 1, gid, expires=NOW + 10)]), NOW)).accepted
        await store.write(WriteBatch(acks=[(b1, acc.seq, 0)]), NOW + 1)
        expired = await store.sweep(NOW + 20, HOUR)
        assert reports(expired) == [(1, b"carol", EXPIRED)]
        found = await store.message_receipts(APP, alice, 1)
        assert found is not None
        assert [(m.address, m.status, m.timestamp_ms) for m in found.members] == [
            (b"bob", DELIVERED, NOW + 1), (b"carol", EXPIRED, NOW + 20)]
        assert (found.delivered, found.delivered_all) == (1, False)
        # Past retention the message, its ledger and its aggregate go.
        await store.sweep(NOW + 2 * HOUR, HOUR)
        assert await store.message_receipts(APP, alice, 1) is None
    run(backend, go)


def test_a_recipient_deleted_before_delivering_blocks_delivered_all(backend: Opener) -> None:
    """As an expired one does (PROTOCOL.md §8.4): it never delivers.  The listing
    no longer names it; the count of recipients still does."""
    async def go(store: Storage) -> None:
        alice, a1, b1, gid = await trio(store)
        (acc,) = (await store.write(WriteBatch(messages=[
            group_message(alice, a1, 1, gid)]), NOW)).accepted
        await store.delete_user(APP, "carol")
        got = (await store.write(WriteBatch(acks=[(b1, acc.seq, 0)]), NOW + 1)).receipts
        assert reports(got) == [(1, b"bob", DELIVERED)]
        found = await store.message_receipts(APP, alice, 1)
        assert found is not None
        assert [(m.address, m.status) for m in found.members] == [(b"bob", DELIVERED)]
        assert (found.recipients, found.delivered, found.delivered_all) == (2, 1, False)
    run(backend, go)


def test_full_members_are_no_recipients(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        from appliance.storage.models import QueueQuota
        alice, a1, b1, gid = await trio(store)
        # carol's queue takes one message: the first fills it.
        quota = QueueQuota(1, 2**40, 2**50)
        one = WriteBatch(messages=[NewMessage(APP, alice, a1, 1, b"carol", 0, 0, NOW + HOUR, 0,
                                              3, 0, b"x")], quota=quota)
        await store.write(one, NOW)
        batch = WriteBatch(messages=[group_message(alice, a1, 2, gid)], quota=quota)
        (acc,) = (await store.write(batch, NOW)).accepted
        assert acc.targets == (b1,)
        got = (await store.write(WriteBatch(acks=[(b1, acc.seq, 0)]), NOW)).receipts
        assert reports(got) == [(2, b"bob", DELIVERED), (2, b"", DELIVERED_ALL)]
    run(backend, go)


# --- message_receipts ---------------------------------------------------------------------


def test_message_receipts_pages_and_stays_in_its_app(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        names = [f"m{i:02d}" for i in range(12)]
        sender, *members = await users(store, "sender", *names)
        s1 = await device(store, sender)
        group = await store.create_group(APP, "g", NOW, GroupFlag.DEFAULT,
                                         [(u, Perm.DEFAULT) for u in (sender, *members)])
        await store.write(WriteBatch(messages=[group_message(sender, s1, 5, group.group_id),
                                               NewMessage(APP, sender, s1, 6, b"m00", 0, 0,
                                                          NOW + HOUR, 0, 3, 0, b"x")]), NOW)
        first = await store.message_receipts(APP, sender, 5, limit=5)
        assert first is not None
        assert [m.address for m in first.members] == [n.encode() for n in names[:5]]
        assert all((m.status, m.timestamp_ms) == (SENT, NOW) for m in first.members)
        rest = await store.message_receipts(APP, sender, 5, after=b"m04", limit=1000)
        assert rest is not None
        assert [m.address for m in rest.members] == [n.encode() for n in names[5:]]
        assert (rest.recipients, rest.delivered, rest.read) == (12, 0, 0)
        one = await store.message_receipts(APP, sender, 6)
        assert one is not None
        assert (one.group_id, one.status, one.members) == (0, SENT, ())
        other = (await store.create_app("other", NOW)).app_id
        assert await store.message_receipts(other, sender, 5) is None
        assert await store.message_receipts(APP, members[0], 5) is None  # not its message
        assert await store.message_receipts(APP, sender, 2**64 - 1) is None
        for bad in (0, -1, 1001):
            with pytest.raises(StorageError):
                await store.message_receipts(APP, sender, 5, limit=bad)
    run(backend, go)


# --- migration 0010 -------------------------------------------------------------------------


def _connection(backend: Opener, request: pytest.FixtureRequest, tmp_path: Path) -> Connection:
    if backend.name == "sqlite":
        return SqliteConnection(open_connection(tmp_path / "legacy.sqlite3"))
    location = request.getfixturevalue("mariadb").database("legacy")
    return MariaConnection(location, 10.0)


def _apply(conn: Connection, versions: Callable[[int], bool]) -> None:
    known = [m for m in migrations.load(conn.dialect.name) if versions(m.version)]
    if conn.dialect.transactional_ddl:
        conn.begin()
    migrate_module._apply(conn, known, NOW)
    if conn.dialect.transactional_ddl:
        conn.commit()


def test_migration_0010_keeps_existing_groups_as_they_were(
        backend: Opener, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    conn = _connection(backend, request, tmp_path)
    try:
        _apply(conn, lambda version: version < 10)
        conn.execute("INSERT INTO groups (id, app_id, name, created_ms) VALUES (5, 1, 'old', 0)")
        conn.execute("INSERT INTO group_status VALUES (9, 3, 2)")
        assert migrate(conn, NOW) == [10]
        # Only SEND members posted before the flags: the group keeps that rule.
        assert conn.execute("SELECT flags FROM groups WHERE id = 5").fetchone()[0] \
            == GroupFlag.SEND_BY_SELECTED
        assert tuple(conn.execute("SELECT seq, member_id, status, ts_ms FROM group_status")
                     .fetchone()) == (9, 3, 2, 0)
        if not conn.dialect.transactional_ddl:  # MariaDB: an interrupted run runs again
            for statement in migrations.load("mariadb")[-1].statements():
                conn.execute(statement)
            assert conn.execute("SELECT flags FROM groups WHERE id = 5").fetchone()[0] == 1
    finally:
        conn.close()


def test_a_group_never_passes_its_most_members(backend: Opener,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Every message to a group writes a row per member device and its roster is held
    whole; with no bound, one backend could make a group of millions.  A change that
    would pass `MAX_GROUP_MEMBERS` is refused whole (GroupFullError, HTTP 409)."""
    from appliance.errors import GroupFullError
    from appliance.storage.sql import admin
    monkeypatch.setattr(admin, "MAX_GROUP_MEMBERS", 3)

    async def go(store: Storage) -> None:
        a, b, c, d, e = await users(store, "a", "b", "c", "d", "e")
        with pytest.raises(GroupFullError, match="at most 3 members"):
            await store.create_group(APP, "big", NOW, GroupFlag.DEFAULT,
                                     [(u, Perm.DEFAULT) for u in (a, b, c, d)])
        assert await store.list_groups(APP) == []  # nothing of it was created
        group = await store.create_group(APP, "g", NOW, GroupFlag.DEFAULT,
                                         [(u, Perm.DEFAULT) for u in (a, b, c)])
        with pytest.raises(GroupFullError):
            await store.change_members(APP, group.group_id, [(d, Perm.DEFAULT)], [])
        with pytest.raises(GroupFullError):
            await store.set_member(APP, group.group_id, e, Perm.DEFAULT)
        # A swap within the bound, and a change of permissions, pass.
        info = await store.change_members(APP, group.group_id, [(d, Perm.DEFAULT),
                                                                (a, Perm.ALL)], [b])
        assert sorted(m.address for m in info.members) == [b"a", b"c", b"d"]
        kept = await store.get_group(APP, group.group_id)
        assert len(kept.members) == 3
    run(backend, go)
