"""The storage contract: every backend must pass these (SPEC M14).

Every test runs on SQLite and on a real MariaDB server (the `backend` fixture,
tests/storage/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from appliance.errors import ConflictError, NotFoundError, StorageError
from appliance.protocol.wire.constants import Status
from appliance.storage.interface import Storage
from appliance.storage.models import NewMessage, Outcome, Perm, QueueQuota, WriteBatch
from tests.storage.conftest import run

NOW = 1_700_000_000_000
HOUR = 3_600_000
SENT, DELIVERED, READ, EXPIRED = Status.SENT, Status.DELIVERED, Status.READ, Status.EXPIRED
INVALID_DEST, NOT_MEMBER, INBOX_FULL = Status.INVALID_DEST, Status.NOT_MEMBER, Status.INBOX_FULL


def msg(sender: int, device: int, msg_id: int, peer: bytes = b"bob", *, group: int = 0,
        prio: int = 0, expires: int = NOW + HOUR, flags: int = 3) -> NewMessage:
    return NewMessage(1, sender, device, msg_id, b"" if group else peer, group, 0, expires, 0,
                      flags, prio, f"payload {msg_id}".encode())


async def _users(store: Storage, *names: str) -> list[int]:
    return [(await store.create_user(1, n, NOW)).user_id for n in names]


def test_store_dedupe_and_delivery_rows_in_one_commit(backend) -> None:  # type: ignore[no-untyped-def]
    async def go(store: Storage) -> None:
        alice, bob = await _users(store, "alice", "bob")
        a1 = (await store.register_device(alice, b"a1", NOW, 0)).device_rowid
        b1 = (await store.register_device(bob, b"b1", NOW, 0)).device_rowid
        first = (await store.write(WriteBatch(messages=[msg(alice, a1, 2**64 - 1)]), NOW)).accepted
        assert first[0].outcome is Outcome.STORED
        assert first[0].targets == (b1,)
        again = (await store.write(WriteBatch(messages=[msg(alice, a1, 2**64 - 1)]), NOW)).accepted
        assert (again[0].outcome, again[0].status, again[0].seq) == (Outcome.DUPLICATE, SENT,
                                                                     first[0].seq)
        rows = await store.pending(b1, bob, NOW, 10)
        assert [(p.msg_id, p.peer, p.outgoing) for p in rows] == [(2**64 - 1, b"alice", False)]
    run(backend, go)


def test_dedupe_holds_whatever_order_ids_come_in(backend) -> None:  # type: ignore[no-untyped-def]
    async def go(store: Storage) -> None:
        alice, _ = await _users(store, "alice", "bob")
        a1 = (await store.register_device(alice, b"a1", NOW, 0)).device_rowid

        async def outcomes(*ids: int) -> list[Outcome]:
            batch = WriteBatch(messages=[msg(alice, a1, i) for i in ids])
            return [a.outcome for a in (await store.write(batch, NOW)).accepted]

        assert await outcomes(10, 11, 11) == [Outcome.STORED, Outcome.STORED, Outcome.DUPLICATE]
        assert await outcomes(5, 10, 12, 2**64 - 1) == [Outcome.STORED, Outcome.DUPLICATE,
                                                        Outcome.STORED, Outcome.STORED]
        assert await outcomes(5, 2**64 - 1, 2**63, 7) == [Outcome.DUPLICATE, Outcome.DUPLICATE,
                                                         Outcome.STORED, Outcome.STORED]
        assert await outcomes(7, 2**63, 13) == [Outcome.DUPLICATE, Outcome.DUPLICATE,
                                                Outcome.STORED]
    run(backend, go)


def test_rejections(backend) -> None:  # type: ignore[no-untyped-def]
    async def go(store: Storage) -> None:
        alice, bob = await _users(store, "alice", "bob")
        a1 = (await store.register_device(alice, b"a1", NOW, 0)).device_rowid
        group = await store.create_group(1, "g", NOW)
        await store.set_member(1, group.group_id, bob, Perm.DEFAULT)
        res = (await store.write(WriteBatch(messages=[
            msg(alice, a1, 1, b"nobody"), msg(alice, a1, 2, group=group.group_id),
            msg(alice, a1, 3, group=999)]), NOW)).accepted
        assert [(r.outcome, r.status) for r in res] == [(Outcome.REJECTED, INVALID_DEST),
                                                        (Outcome.REJECTED, NOT_MEMBER),
                                                        (Outcome.REJECTED, INVALID_DEST)]
    run(backend, go)


def test_ack_read_receipts_move_forward_once(backend) -> None:  # type: ignore[no-untyped-def]
    async def go(store: Storage) -> None:
        alice, bob = await _users(store, "alice", "bob")
        a1 = (await store.register_device(alice, b"a1", NOW, 0)).device_rowid
        b1 = (await store.register_device(bob, b"b1", NOW, 0)).device_rowid
        seq = (await store.write(WriteBatch(messages=[msg(alice, a1, 5)]), NOW)).accepted[0].seq
        r1 = (await store.write(WriteBatch(acks=[(b1, seq, 0), (b1, seq, -1)]), NOW)).receipts
        assert [(r.msg_id, r.status, r.peer) for r in r1] == [(5, DELIVERED, b"bob")]
        r2 = (await store.write(WriteBatch(reads=[(bob, 1, b"alice", 0, (5, 5))]), NOW)).receipts
        assert [(r.status, r.report_seq > r1[0].report_seq) for r in r2] == [(READ, True)]
        r3 = (await store.write(WriteBatch(acks=[(b1, seq, -1)]), NOW)).receipts
        assert r3 == []
        assert await store.pending(b1, bob, NOW, 10) == []
        pending = await store.pending_receipts(alice, 0, 10)
        assert [r.status for r in pending] == [DELIVERED, READ]
        dev = (await store.register_device(alice, b"a1", NOW, 0))
        await store.write(WriteBatch(report_acks={dev.device_rowid: pending[-1].report_seq}), NOW)
        assert (await store.register_device(alice, b"a1", NOW, 0)).report_cursor == \
            pending[-1].report_seq
        dup = (await store.write(WriteBatch(messages=[msg(alice, a1, 5)]), NOW)).accepted[0]
        assert (dup.outcome, dup.status) == (Outcome.DUPLICATE, READ)
    run(backend, go)


def test_pending_order_expiry_and_exclusion(backend) -> None:  # type: ignore[no-untyped-def]
    async def go(store: Storage) -> None:
        alice, bob = await _users(store, "alice", "bob")
        a1 = (await store.register_device(alice, b"a1", NOW, 0)).device_rowid
        b1 = (await store.register_device(bob, b"b1", NOW, 0)).device_rowid
        batch = WriteBatch(messages=[msg(alice, a1, i, prio=p) for i, p in
                                     [(1, 9), (2, 0), (3, 9), (4, 0)]]
                           + [msg(alice, a1, 5, expires=NOW + 10)])
        seqs = {r.seq for r in (await store.write(batch, NOW)).accepted}
        assert len(seqs) == 5
        rows = await store.pending(b1, bob, NOW + 100, 10)
        assert [p.msg_id for p in rows] == [2, 4, 1, 3]
        rows = await store.pending(b1, bob, NOW + 100, 2, frozenset({rows[0].seq}))
        assert [p.msg_id for p in rows] == [4, 1]
        expired = await store.sweep(NOW + 100, HOUR)
        assert [(r.msg_id, r.status, r.peer) for r in expired] == [(5, EXPIRED, b"bob")]
        assert await store.sweep(NOW + 100, HOUR) == []
    run(backend, go)


def test_new_devices_get_what_follows_them_and_copies_go_to_sender_devices(backend) -> None:  # type: ignore[no-untyped-def]
    async def go(store: Storage) -> None:
        alice, bob = await _users(store, "alice", "bob")
        a1 = (await store.register_device(alice, b"a1", NOW, 0)).device_rowid
        a2 = (await store.register_device(alice, b"a2", NOW, 0)).device_rowid
        acc = (await store.write(WriteBatch(messages=[msg(alice, a1, 1)]), NOW)).accepted[0]
        assert a2 in acc.targets
        assert a1 not in acc.targets
        copy = await store.pending(a2, alice, NOW, 10)
        assert [(p.peer, p.outgoing) for p in copy] == [(b"bob", True)]
        first = await store.register_device(bob, b"b1", NOW, 0)
        b1 = first.device_rowid
        assert first.inherited  # what waited for bob before he had a device
        # b1 has not acknowledged it: a second device still gets nothing that
        # was accepted before it registered (PROTOCOL.md §3.1).
        second = await store.register_device(bob, b"b2", NOW, 0)
        b2 = second.device_rowid
        assert not second.inherited
        a3 = (await store.register_device(alice, b"a3", NOW, 0)).device_rowid
        carol = (await store.create_user(1, "carol", NOW)).user_id
        assert not (await store.register_device(carol, b"c1", NOW, 0)).inherited
        assert [p.msg_id for p in await store.pending(b1, bob, NOW, 10)] == [1]
        assert await store.pending(b2, bob, NOW, 10) == []
        assert await store.pending(a3, alice, NOW, 10) == []  # nor an older own copy
        # What is accepted after a device registered reaches it.
        acc = (await store.write(WriteBatch(messages=[msg(alice, a1, 2)]), NOW)).accepted[0]
        assert sorted(acc.targets) == sorted([a2, a3, b1, b2])
        assert [p.msg_id for p in await store.pending(b2, bob, NOW, 10)] == [2]
    run(backend, go)


def test_what_a_new_device_gets_does_not_depend_on_other_devices_acks(backend) -> None:  # type: ignore[no-untyped-def]
    async def go(store: Storage) -> None:
        alice, bob = await _users(store, "alice", "bob")
        a1 = (await store.register_device(alice, b"a1", NOW, 0)).device_rowid
        b1 = (await store.register_device(bob, b"b1", NOW, 0)).device_rowid
        b2 = (await store.register_device(bob, b"b2", NOW, 0)).device_rowid
        seqs = [acc.seq for acc in (await store.write(
            WriteBatch(messages=[msg(alice, a1, i) for i in (1, 2, 3)]), NOW)).accepted]
        # b1 acknowledged the first, b2 the second; the third waits on both.
        await store.write(WriteBatch(acks=[(b1, seqs[0], 0), (b2, seqs[1], 0)]), NOW)
        new = await store.register_device(bob, b"b3", NOW, 0)
        assert not new.inherited
        assert await store.pending(new.device_rowid, bob, NOW, 10) == []
        assert [p.msg_id for p in await store.pending(b1, bob, NOW, 10)] == [2, 3]
    run(backend, go)


def test_group_fan_out_to_member_devices(backend) -> None:  # type: ignore[no-untyped-def]
    async def go(store: Storage) -> None:
        alice, bob, carol = await _users(store, "alice", "bob", "carol")
        a1 = (await store.register_device(alice, b"a1", NOW, 0)).device_rowid
        b1 = (await store.register_device(bob, b"b1", NOW, 0)).device_rowid
        c1 = (await store.register_device(carol, b"c1", NOW, 0)).device_rowid
        g = await store.create_group(1, "g", NOW)
        for u in (alice, bob, carol):
            await store.set_member(1, g.group_id, u, Perm.DEFAULT)
        await store.set_member(1, g.group_id, carol, Perm.SEND)  # carol no longer receives
        acc = (await store.write(WriteBatch(messages=[msg(alice, a1, 1, group=g.group_id)]),
                                 NOW)).accepted[0]
        assert acc.targets == (b1,)
        assert c1 not in acc.targets
        r = (await store.write(WriteBatch(acks=[(b1, acc.seq, 0)]), NOW)).receipts
        # bob was its only recipient: the aggregate follows his report (PROTOCOL.md §8.4).
        assert [(x.peer, x.group_id, x.status) for x in r] == [
            (b"bob", g.group_id, DELIVERED), (b"", g.group_id, Status.DELIVERED_ALL)]
    run(backend, go)


def test_admin_errors(backend) -> None:  # type: ignore[no-untyped-def]
    async def go(store: Storage) -> None:
        await _users(store, "alice")
        with pytest.raises(ConflictError):
            await store.create_user(1, "alice", NOW)
        with pytest.raises(NotFoundError):
            await store.delete_user(1, "nobody")
        with pytest.raises(NotFoundError):
            await store.get_group(1, 42)
        with pytest.raises(NotFoundError):
            await store.app_id("no-such-app")
        assert [u.address for u in await store.list_users(1, "", 10)] == ["alice"]
        await store.delete_user(1, "alice")
        assert await store.list_users(1, "", 10) == []
    run(backend, go)


def test_everything_survives_a_reopen_and_counters_continue(backend) -> None:  # type: ignore[no-untyped-def]
    async def go() -> None:
        store = await backend()
        try:
            alice, bob = await _users(store, "alice", "bob")
            a1 = (await store.register_device(alice, b"a1", NOW, 0)).device_rowid
            b1 = (await store.register_device(bob, b"b1", NOW, 0)).device_rowid
            first = (await store.write(WriteBatch(messages=[msg(alice, a1, 1)]), NOW)).accepted
            receipts = (await store.write(WriteBatch(acks=[(b1, first[0].seq, 0)]), NOW)).receipts
        finally:
            await store.close()
        store = await backend()  # a restart: counters are read back, not reused
        try:
            again = (await store.write(WriteBatch(messages=[msg(alice, a1, 1), msg(alice, a1, 2)]),
                                       NOW)).accepted
            assert (again[0].outcome, again[0].status) == (Outcome.DUPLICATE, DELIVERED)
            assert again[1].outcome is Outcome.STORED
            assert again[1].seq > first[0].seq
            assert [p.msg_id for p in await store.pending(b1, bob, NOW, 10)] == [2]
            more = (await store.write(WriteBatch(acks=[(b1, again[1].seq, 0)]), NOW)).receipts
            assert more[0].report_seq > receipts[0].report_seq
            assert [r.msg_id for r in await store.pending_receipts(alice, 0, 10)] == [1, 2]
        finally:
            await store.close()
    asyncio.run(go())


def test_tokens_authenticate_until_revoked(backend) -> None:  # type: ignore[no-untyped-def]
    async def go(store: Storage) -> None:
        (alice,) = await _users(store, "alice")
        await store.store_token(alice, b"h" * 32, NOW + HOUR, NOW)
        login = await store.authenticate(b"h" * 32, b"dev")
        assert login is not None
        assert (login.principal.user_id, login.principal.address) == (alice, b"alice")
        assert login.principal.token_expires_ms == NOW + HOUR
        assert login.device is None  # never seen: the engine registers it
        dev = await store.register_device(alice, b"dev", NOW, 0)
        login = await store.authenticate(b"h" * 32, b"dev")
        assert login is not None
        assert login.device == dev
        assert await store.authenticate(b"x" * 32, b"dev") is None
        with pytest.raises(NotFoundError):
            await store.store_token(alice + 100, b"y" * 32, NOW + HOUR, NOW)
        assert await store.revoke_tokens(alice) == 1
        assert await store.authenticate(b"h" * 32, b"dev") is None
    run(backend, go)


def test_apps_secrets_and_operator_keys(backend) -> None:  # type: ignore[no-untyped-def]
    async def go(store: Storage) -> None:
        shop = await store.create_app("shop", NOW)
        assert shop.app_id == await store.app_id("shop")
        with pytest.raises(ConflictError):
            await store.create_app("shop", NOW)
        assert "shop" in [a.name for a in await store.list_apps()]
        await store.store_app_secret(shop.app_id, b"s1" * 16, NOW, replace=False)
        await store.store_app_secret(shop.app_id, b"s2" * 16, NOW, replace=False)
        assert (await store.app_for_secret(b"s1" * 16)) == shop
        await store.store_app_secret(shop.app_id, b"s3" * 16, NOW, replace=True)
        assert await store.app_for_secret(b"s1" * 16) is None
        assert await store.app_for_secret(b"s3" * 16) == shop
        assert not await store.is_operator_key(b"k" * 32)
        await store.store_operator_key(b"k" * 32, NOW)
        assert await store.is_operator_key(b"k" * 32)
        # Users are per app: the same address in two apps is two users.
        mine = await store.create_user(shop.app_id, "alice", NOW)
        theirs = await store.create_user(1, "alice", NOW)
        assert mine.user_id != theirs.user_id
        assert await store.find_user(shop.app_id, b"alice") == mine.user_id
    run(backend, go)


def test_rename_and_paged_listing(backend) -> None:  # type: ignore[no-untyped-def]
    async def go(store: Storage) -> None:
        names = [f"user{i:02d}" for i in range(25)]
        ids = await _users(store, *names)
        page1 = await store.list_users(1, "", 10)
        page2 = await store.list_users(1, page1[-1].address, 10)
        page3 = await store.list_users(1, page2[-1].address, 10)
        assert [u.address for u in page1 + page2 + page3] == names
        renamed = await store.rename_user(1, "user00", "zed")
        assert (renamed.user_id, renamed.address) == (ids[0], "zed")
        assert await store.user_address(ids[0]) == b"zed"
        assert await store.find_user(1, b"user00") is None
        with pytest.raises(ConflictError):
            await store.rename_user(1, "user01", "zed")
        with pytest.raises(NotFoundError):
            await store.rename_user(1, "nobody", "x")
        group = await store.create_group(1, "g", NOW)
        await store.set_member(1, group.group_id, ids[1], Perm.DEFAULT)
        await store.set_member(1, group.group_id, ids[2], Perm.DEFAULT)
        await store.remove_member(1, group.group_id, ids[1])
        members = await store.group_members(1, group.group_id)
        assert [m.user_id for m in members or []] == [ids[2]]
        assert [g.name for g in await store.list_groups(1)] == ["g"]
        # A page ends after the group whose members reach max_members (never empty).
        second = await store.create_group(1, "g2", NOW)
        await store.set_member(1, second.group_id, ids[3], Perm.DEFAULT)
        assert [g.name for g in await store.list_groups(1, max_members=1)] == ["g"]
        assert [g.name for g in await store.list_groups(1, max_members=2)] == ["g", "g2"]
        assert [g.name for g in await store.list_groups(1, group.group_id, 5, 0)] == ["g2"]
        await store.delete_group(1, second.group_id)
        await store.delete_group(1, group.group_id)
        assert await store.group_members(1, group.group_id) is None
        with pytest.raises(NotFoundError):
            await store.delete_group(1, group.group_id)
    run(backend, go)


def test_one_server_per_database(backend) -> None:  # type: ignore[no-untyped-def]
    async def go() -> None:
        first = await backend()
        try:
            with pytest.raises(StorageError, match="another tidings server"):
                await backend()
        finally:
            await first.close()
        again = await backend()  # the lock went with the first server
        await again.close()
    asyncio.run(go())


def test_stale_devices_are_forgotten_and_their_queue_passes_on(backend) -> None:  # type: ignore[no-untyped-def]
    async def go(store: Storage) -> None:
        alice, bob = await _users(store, "alice", "bob")
        a1 = (await store.register_device(alice, b"a1", NOW, 0)).device_rowid
        old = (await store.register_device(bob, b"old", NOW, 0)).device_rowid
        await store.write(WriteBatch(messages=[msg(alice, a1, 1, expires=NOW + 99 * HOUR)]), NOW)
        assert [p.msg_id for p in await store.pending(old, bob, NOW, 10)] == [1]
        later = NOW + 10 * HOUR
        # A live device seen since, that acknowledged what it got: it does not
        # change what the stale device's queue holds, nor what passes on.
        live = (await store.register_device(bob, b"live", later, 0)).device_rowid
        await store.write(WriteBatch(messages=[msg(alice, a1, 2, expires=NOW + 99 * HOUR)]),
                          later)
        [two] = await store.pending(live, bob, later, 10)
        await store.write(WriteBatch(acks=[(live, two.seq, 0)]), later)
        fresh = await store.register_device(bob, b"new", later, stale_before_ms=NOW + HOUR)
        # The stale device is gone; what waited for it waits for the new one.
        assert fresh.inherited
        assert await store.pending(old, bob, later, 10) == []
        assert [p.msg_id for p in await store.pending(fresh.device_rowid, bob, later, 10)] == \
            [1, 2]
        again = await store.register_device(bob, b"old", later, 0)
        assert again.device_rowid not in (old, fresh.device_rowid)  # a new device now
        # The same device registering again is the same row, and keeps its cursor.
        same = await store.register_device(bob, b"new", later, 0)
        assert (same.device_rowid, same.report_cursor) == (fresh.device_rowid,
                                                           fresh.report_cursor)
    run(backend, go)


def test_credential_changes_are_logged_in_commit_order(backend) -> None:  # type: ignore[no-untyped-def]
    async def go(store: Storage) -> None:
        alice, bob, carol = await _users(store, "alice", "bob", "carol")
        start = await store.latest_credential_change()
        for user in (alice, bob, carol):
            await store.store_token(user, f"h-{user}".encode().ljust(32, b"."), NOW + HOUR, NOW)
        await store.create_group(1, "g", NOW)  # not a credential change
        assert await store.credential_changes(start, 100) == []
        assert await store.revoke_tokens(alice) == 1
        await store.rename_user(1, "bob", "bobby")
        await store.rename_user(1, "bobby", "bobby")  # no change: nothing logged
        await store.delete_user(1, "carol")
        await store.store_app_secret(1, b"s" * 32, NOW, replace=False)  # adds: nothing logged
        await store.store_app_secret(1, b"t" * 32, NOW, replace=True)
        changes = await store.credential_changes(start, 100)
        assert [(c.app_id, c.user_id) for c in changes] == [(1, alice), (1, bob), (1, carol),
                                                           (1, None)]
        versions = [c.version for c in changes]
        assert versions == sorted(versions)
        assert len(set(versions)) == 4
        assert await store.latest_credential_change() == versions[-1]
        assert await store.credential_changes(versions[1], 2) == changes[2:]
        assert await store.credential_changes(versions[-1], 100) == []
    run(backend, go)


def test_token_owners_reads_many_tokens_at_once(backend) -> None:  # type: ignore[no-untyped-def]
    async def go(store: Storage) -> None:
        alice, bob = await _users(store, "alice", "bob")
        hashes = [i.to_bytes(32, "big") for i in range(1, 1201)]  # more than one chunk
        for i, h in enumerate(hashes):
            await store.store_token(alice if i % 2 else bob, h, NOW + i, NOW)
        owners = await store.token_owners([*hashes, b"x" * 32])
        assert len(owners) == len(hashes)
        assert owners[hashes[1]].user_id == alice
        assert owners[hashes[1]].address == b"alice"
        assert owners[hashes[0]].address == b"bob"
        assert owners[hashes[0]].token_expires_ms == NOW
        await store.revoke_tokens(bob)
        await store.rename_user(1, "alice", "alicia")
        owners = await store.token_owners(hashes)
        assert set(owners) == set(hashes[1::2])
        assert {p.address for p in owners.values()} == {b"alicia"}
        assert await store.token_owners([]) == {}
    run(backend, go)


# --- a value the store cannot hold fails only itself (issue 12) ------------------------------

#: What the store cannot take: too big for a signed 64-bit column (OverflowError from
#: the SQLite driver), or not a value at all (TypeError: a list is not even hashable).
BAD_VALUES = [2**63, 2**64 - 1, [7]]


@pytest.mark.parametrize("bad", BAD_VALUES, ids=repr)
def test_a_bad_row_fails_alone_and_the_next_batch_runs(backend, bad) -> None:  # type: ignore[no-untyped-def]
    async def go(store: Storage) -> None:
        alice, bob, carol = await _users(store, "alice", "bob", "carol")
        a1 = (await store.register_device(alice, b"a1", NOW, 0)).device_rowid
        b1 = (await store.register_device(bob, b"b1", NOW, 0)).device_rowid
        c1 = (await store.register_device(carol, b"c1", NOW, 0)).device_rowid
        seq = (await store.write(WriteBatch(messages=[msg(alice, a1, 1)]), NOW)).accepted[0].seq
        # One batch: good messages around a bad one, a bad ACK beside a good
        # one, a bad READ and a bad report confirmation.
        batch = WriteBatch(
            messages=[msg(carol, c1, 10), msg(carol, c1, 11, group=bad),
                      msg(carol, c1, 12, prio=bad), msg(carol, c1, 13)],
            acks=[(b1, bad, -1), (b1, seq, 0)],
            reads=[(bob, 1, b"alice", bad, (1,))],
            report_acks={c1: bad})
        result = await store.write(batch, NOW)
        got = [(a.outcome, a.status) for a in result.accepted]
        assert got[0] == (Outcome.STORED, SENT)
        assert got[3] == (Outcome.STORED, SENT)
        # The bad ones: refused, never stored (FAILED, or INVALID_DEST when the
        # lookup alone refuses it), never wrapped into another value.
        for outcome, status in (got[1], got[2]):
            assert outcome is Outcome.REJECTED
            assert status in (0x80, INVALID_DEST)
        assert [(r.msg_id, r.status) for r in result.receipts] == [(1, DELIVERED)]
        # Nothing is left open: the next batch of anyone commits.
        nxt = await store.write(WriteBatch(messages=[msg(alice, a1, 2)]), NOW)
        assert [(a.outcome, a.status) for a in nxt.accepted] == [(Outcome.STORED, SENT)]
        assert [p.msg_id for p in await store.pending(b1, bob, NOW, 10)] == [10, 13, 2]
        # Admin changes still commit too.
        await store.create_user(1, "dave", NOW)
    run(backend, go)


@pytest.mark.parametrize("bad", BAD_VALUES, ids=repr)
def test_a_bad_value_in_an_admin_change_or_a_read_is_typed(backend, bad) -> None:  # type: ignore[no-untyped-def]
    async def go(store: Storage) -> None:
        (alice,) = await _users(store, "alice")
        with pytest.raises(StorageError) as refused:
            await store.store_token(alice, b"h" * 32, bad, NOW)
        assert not isinstance(refused.value, ConflictError)
        with pytest.raises(StorageError):  # NotFoundError, or refused: typed either way
            await store.get_group(1, bad)
        with contextlib.suppress(StorageError):  # typed, never the driver's own exception
            assert await store.group_members(1, bad) is None
        # The writer is not stuck in a transaction.
        await store.create_user(1, "bob", NOW)
        assert [u.address for u in await store.list_users(1, "", 10)] == ["alice", "bob"]
    run(backend, go)


@pytest.mark.parametrize("bad", BAD_VALUES, ids=repr)
def test_a_bad_item_alone_is_left_out_not_retried(backend, bad) -> None:  # type: ignore[no-untyped-def]
    async def go(store: Storage) -> None:
        alice, bob = await _users(store, "alice", "bob")
        a1 = (await store.register_device(alice, b"a1", NOW, 0)).device_rowid
        b1 = (await store.register_device(bob, b"b1", NOW, 0)).device_rowid
        # Raising would make the engine retry the acknowledgement with every batch.
        assert (await store.write(WriteBatch(acks=[(b1, bad, -1)]), NOW)).receipts == []
        assert (await store.write(WriteBatch(report_acks={b1: bad}), NOW)).receipts == []
        alone = (await store.write(WriteBatch(messages=[msg(alice, a1, 5, prio=bad)]), NOW))
        assert [a.outcome for a in alone.accepted] == [Outcome.REJECTED]
        ok = await store.write(WriteBatch(messages=[msg(alice, a1, 6)]), NOW)
        assert [(a.outcome, a.status) for a in ok.accepted] == [(Outcome.STORED, SENT)]
    run(backend, go)


def test_inbox_quota_counts_device_copies_and_frees_on_ack_across_reopen(backend) -> None:  # type: ignore[no-untyped-def]
    # Quota: 4 delivery rows per user.  bob has two devices, so 2 messages fit.
    quota = QueueQuota(max_messages=4, max_bytes=10**9, max_app_bytes=10**9)

    async def go(store: Storage) -> None:
        alice, bob = await _users(store, "alice", "bob")
        a1 = (await store.register_device(alice, b"a1", NOW, 0)).device_rowid
        b1 = (await store.register_device(bob, b"b1", NOW, 0)).device_rowid
        b2 = (await store.register_device(bob, b"b2", NOW, 0)).device_rowid
        res = (await store.write(WriteBatch(messages=[msg(alice, a1, i) for i in (1, 2, 3)],
                                            quota=quota), NOW)).accepted
        assert [(r.outcome, r.status) for r in res] == [
            (Outcome.STORED, SENT), (Outcome.STORED, SENT), (Outcome.REJECTED, INBOX_FULL)]
        # A resend of a stored message is a duplicate, not INBOX_FULL (SPEC M4).
        dup = (await store.write(WriteBatch(messages=[msg(alice, a1, 1)], quota=quota),
                                 NOW)).accepted[0]
        assert dup.outcome is Outcome.DUPLICATE
        # One device's ACK frees one row: not enough for a message to two devices.
        await store.write(WriteBatch(acks=[(b1, res[0].seq, 0)]), NOW)
        again = (await store.write(WriteBatch(messages=[msg(alice, a1, 3)], quota=quota),
                                   NOW)).accepted[0]
        assert again.status == INBOX_FULL
        # A stale acknowledgement (priority unknown) frees its row as well.
        await store.write(WriteBatch(acks=[(b2, res[0].seq, -1)]), NOW)
        assert (await store.write(WriteBatch(messages=[msg(alice, a1, 3)], quota=quota),
                                  NOW)).accepted[0].status == SENT
        assert [p.msg_id for p in await store.pending(b1, bob, NOW, 10)] == [2, 3]

    async def after_reopen(store: Storage) -> None:
        a1 = (await store.register_device(1, b"a1", NOW, 0)).device_rowid
        full = (await store.write(WriteBatch(messages=[msg(1, a1, 4)], quota=quota),
                                  NOW)).accepted[0]
        assert full.status == INBOX_FULL  # counted again from the tables
        # Expiry frees rows too.
        await store.sweep(NOW + 2 * HOUR, 48 * HOUR)
        assert (await store.write(WriteBatch(messages=[msg(1, a1, 5, expires=NOW + 3 * HOUR)],
                                             quota=quota), NOW + 2 * HOUR)).accepted[0].status \
            == SENT

    run(backend, go)
    run(backend, after_reopen)


def test_byte_and_app_quotas_and_groups_skip_full_members(backend) -> None:  # type: ignore[no-untyped-def]
    async def go(store: Storage) -> None:
        alice, bob, carol = await _users(store, "alice", "bob", "carol")
        a1 = (await store.register_device(alice, b"a1", NOW, 0)).device_rowid
        b1 = (await store.register_device(bob, b"b1", NOW, 0)).device_rowid
        c1 = (await store.register_device(carol, b"c1", NOW, 0)).device_rowid
        size = len(msg(alice, a1, 1).payload)
        by_bytes = QueueQuota(max_messages=100, max_bytes=2 * size, max_app_bytes=10**9)
        res = (await store.write(WriteBatch(messages=[msg(alice, a1, i) for i in (1, 2, 3)],
                                            quota=by_bytes), NOW)).accepted
        assert [r.status for r in res] == [SENT, SENT, INBOX_FULL]
        # A group message skips bob (full) and reaches carol.
        g = await store.create_group(1, "g", NOW)
        for u in (alice, bob, carol):
            await store.set_member(1, g.group_id, u, Perm.DEFAULT)
        acc = (await store.write(WriteBatch(messages=[msg(alice, a1, 4, group=g.group_id)],
                                            quota=by_bytes), NOW)).accepted[0]
        assert (acc.status, acc.targets) == (SENT, (c1,))
        assert b1 not in acc.targets
        # A group whose every other member is full: INBOX_FULL, as 1:1.
        g2 = await store.create_group(1, "g2", NOW)
        for u in (alice, bob):
            await store.set_member(1, g2.group_id, u, Perm.DEFAULT)
        none = (await store.write(WriteBatch(messages=[msg(alice, a1, 40, group=g2.group_id)],
                                             quota=by_bytes), NOW)).accepted[0]
        assert none.status == INBOX_FULL
        # The app holds 3 messages' bytes: a quota of 3.5 refuses the next one.
        by_app = QueueQuota(max_messages=100, max_bytes=10**9, max_app_bytes=size * 7 // 2)
        late = (await store.write(WriteBatch(messages=[msg(alice, a1, 5, b"carol")],
                                             quota=by_app), NOW)).accepted[0]
        assert late.status == INBOX_FULL
        # Deleting a user gives its queue's bytes back to the app.
        await store.delete_user(1, "bob")
        assert (await store.write(WriteBatch(messages=[msg(alice, a1, 5, b"carol")],
                                             quota=by_app), NOW)).accepted[0].status == SENT
    run(backend, go)


def test_acks_and_reads_naming_thousands_of_unknown_ids(backend) -> None:  # type: ignore[no-untyped-def]
    async def go(store: Storage) -> None:
        alice, bob = await _users(store, "alice", "bob")
        a1 = (await store.register_device(alice, b"a1", NOW, 0)).device_rowid
        b1 = (await store.register_device(bob, b"b1", NOW, 0)).device_rowid
        res = (await store.write(WriteBatch(messages=[
            msg(alice, a1, i, prio=i % 3) for i in (1, 2, 3)]), NOW)).accepted
        seqs = [r.seq for r in res]
        unknown = list(range(10**9, 10**9 + 5000))
        acks = [(b1, s, -1) for s in [*unknown[:2500], seqs[2], seqs[0], *unknown[2500:]]]
        receipts = (await store.write(WriteBatch(acks=acks), NOW)).receipts
        assert [(r.msg_id, r.status) for r in receipts] == [(3, DELIVERED), (1, DELIVERED)]
        assert [p.msg_id for p in await store.pending(b1, bob, NOW, 10)] == [2]
        ids = (*tuple(range(10 ** 9, 10 ** 9 + 5000)), 2, 1, 0)
        read = (await store.write(WriteBatch(reads=[(bob, 1, b"alice", 0, ids)]), NOW)).receipts
        assert [(r.msg_id, r.status) for r in read] == [(2, READ), (1, READ)]
    run(backend, go)


def test_count_deliveries_counts_waiting_rows_up_to_its_limit(backend) -> None:  # type: ignore[no-untyped-def]
    async def go(store: Storage) -> None:
        alice, bob = await _users(store, "alice", "bob")
        a1 = (await store.register_device(alice, b"a1", NOW, 0)).device_rowid
        b1 = (await store.register_device(bob, b"b1", NOW, 0)).device_rowid
        await store.register_device(bob, b"b2", NOW, 0)
        assert await store.count_deliveries(100) == 0
        res = (await store.write(WriteBatch(messages=[msg(alice, a1, i) for i in (1, 2, 3)]),
                                 NOW)).accepted
        assert await store.count_deliveries(100) == 6  # 3 messages x bob's 2 devices
        assert await store.count_deliveries(4) == 4  # the limit bounds the count's work
        await store.write(WriteBatch(acks=[(b1, res[0].seq, 0)]), NOW)
        assert await store.count_deliveries(100) == 5
    run(backend, go)
