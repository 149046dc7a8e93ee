"""FILE messages in the store (PROTOCOL.md §3.3.1): checked and granted in the message's
own transaction, on SQLite and MariaDB (the `backend` fixture).

The attacks come first: a sender without access, another app's file, an
unfinished or expired file, a payload that lies.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from appliance.protocol.attachments import FILE
from appliance.protocol.wire import Status
from appliance.storage.interface import Storage
from appliance.storage.models import NewMessage, Outcome, Perm, QueueQuota, WriteBatch
from tests.storage.conftest import Opener
from tests.storage.test_files_contract import complete, new_id, record

NOW = 1_700_000_000_000
HOUR = 3_600_000
RETENTION = 30 * 24 * HOUR
SENT, INBOX_FULL, INVALID_FILE = Status.SENT, Status.INBOX_FULL, Status.INVALID_FILE


def run(backend: Opener, fn: Callable[[Storage], Awaitable[None]]) -> None:
    async def main() -> None:
        store = await backend()
        store.file_retention_ms = RETENTION
        try:
            await fn(store)
        finally:
            await store.close()
    asyncio.run(main())


def shares(*ids: str) -> bytes:
    return json.dumps({"files": [{"id": i, "name": "photo.jpg"} for i in ids],
                       "text": "look"}).encode()


def file_msg(sender: int, msg_id: int, payload: bytes, *, peer: bytes = b"bob",
             group: int = 0, app: int = 1, flags: int = FILE | 3) -> NewMessage:
    return NewMessage(app, sender, 0, msg_id, b"" if group else peer, group, 0, NOW + HOUR, 0,
                      flags, 0, payload)


async def write(store: Storage, *messages: NewMessage,
                quota: QueueQuota | None = None) -> list[tuple[Outcome, int]]:
    accepted = (await store.write(WriteBatch(messages=list(messages), quota=quota), NOW)).accepted
    return [(a.outcome, a.status) for a in accepted]


async def setup(store: Storage) -> tuple[int, int, int, int]:
    ids = [(await store.create_user(1, n, NOW)).user_id for n in ("alice", "bob", "carol")]
    other = (await store.create_app("other", NOW)).app_id
    return ids[0], ids[1], ids[2], other


async def queued(store: Storage, user: int) -> int:
    device = (await store.register_device(user, b"phone", NOW, 0)).device_rowid
    return len(await store.pending(device, user, NOW, 100))


def test_a_sender_without_access_is_refused_and_nothing_is_stored(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        alice, bob, carol, other = await setup(store)
        carols = await complete(store, 1, carol, b"carol's")
        mallory = (await store.create_user(other, "mallory", NOW)).user_id
        theirs = await complete(store, other, mallory, b"other app")
        unfinished = record(1, alice)
        await store.create_file(unfinished, 1 << 40)
        expired = await complete(store, 1, alice, b"old", expires_ms=NOW - 1)
        mine = await complete(store, 1, alice, b"mine")
        attempts = [shares(carols), shares(theirs), shares(unfinished.file_id), shares(expired),
                    shares(new_id()), shares(mine, carols), b'{"files": []}', b"not json",
                    shares(mine, mine)]
        results = await write(store, *(file_msg(alice, i + 1, p)
                                       for i, p in enumerate(attempts)))
        assert results == [(Outcome.REJECTED, INVALID_FILE)] * len(attempts)
        assert await queued(store, bob) == 0
        for fid in (carols, theirs, unfinished.file_id, expired, mine):
            assert not await store.may_read(fid, bob, NOW)
        # Another app's user names this app's file (ids are global, apps are not).
        await store.create_user(other, "accomplice", NOW)
        assert await write(store, file_msg(mallory, 1, shares(mine), app=other,
                                           peer=b"accomplice")) == [
            (Outcome.REJECTED, INVALID_FILE)]
        # A good message in the same batch is stored regardless.
        assert await write(store, file_msg(alice, 50, shares(carols)),
                           file_msg(alice, 51, shares(mine))) == [
            (Outcome.REJECTED, INVALID_FILE), (Outcome.STORED, SENT)]
        assert await queued(store, bob) == 1
    run(backend, go)


def test_a_file_message_grants_the_recipient_until_expiry_plus_retention(
        backend: Opener) -> None:
    async def go(store: Storage) -> None:
        alice, bob, carol, _ = await setup(store)
        one, two = await complete(store, 1, alice, b"one"), await complete(store, 1, alice, b"2")
        assert not await store.may_read(one, bob, NOW)
        assert await write(store, file_msg(alice, 1, shares(one, two))) == [(Outcome.STORED,
                                                                             SENT)]
        device = (await store.register_device(bob, b"phone", NOW, 0)).device_rowid
        [pending] = await store.pending(device, bob, NOW, 10)
        assert pending.flags & FILE
        until = NOW + HOUR + RETENTION
        for fid in (one, two):
            assert await store.may_read(fid, bob, until - 1)
            assert not await store.may_read(fid, bob, until)
            assert not await store.may_read(fid, carol, NOW)
            assert (await store.file(fid)).expires_ms == until  # type: ignore[union-attr]
        # bob may pass it on (he holds a grant), carol may not share what she cannot read.
        assert await write(store, file_msg(bob, 1, shares(one), peer=b"carol"),
                           file_msg(carol, 1, shares(two), peer=b"bob")) == [
            (Outcome.STORED, SENT), (Outcome.REJECTED, INVALID_FILE)]
        assert await store.may_read(one, carol, NOW)
        assert not await store.may_read(two, carol, NOW)
        # A resend of a stored message is a duplicate: it grants nothing again.
        assert await write(store, file_msg(alice, 1, shares(one, two), peer=b"carol")) == [
            (Outcome.DUPLICATE, SENT)]
        assert not await store.may_read(two, carol, NOW)
        # Without the flag the payload is the app's business: no check, no grant.
        plain = file_msg(alice, 2, shares(two), peer=b"carol", flags=3)
        assert await write(store, plain) == [(Outcome.STORED, SENT)]
        assert not await store.may_read(two, carol, NOW)
    run(backend, go)


def test_a_group_file_message_grants_the_receiving_members(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        alice, bob, carol, _ = await setup(store)
        dave = (await store.create_user(1, "dave", NOW)).user_id
        group = (await store.create_group(1, "team", NOW)).group_id
        for user, perms in ((alice, Perm.DEFAULT), (bob, Perm.DEFAULT), (carol, Perm.SEND)):
            await store.set_member(1, group, user, perms)
        fid = await complete(store, 1, alice, b"team photo")
        assert await write(store, file_msg(alice, 1, shares(fid), group=group)) == [
            (Outcome.STORED, SENT)]
        assert await store.may_read(fid, bob, NOW + HOUR + RETENTION - 1)
        assert not await store.may_read(fid, bob, NOW + HOUR + RETENTION)
        assert not await store.may_read(fid, carol, NOW)  # no RECEIVE: not sent to her either
        assert not await store.may_read(fid, dave, NOW)
        await store.set_member(1, group, dave, Perm.DEFAULT)
        assert await store.may_read(fid, dave, NOW)  # members at the time of the read
        await store.remove_member(1, group, bob)
        assert not await store.may_read(fid, bob, NOW)
    run(backend, go)


def test_a_file_message_refused_by_a_quota_grants_nothing(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        alice, bob, _, _ = await setup(store)
        fid = await complete(store, 1, alice, b"x")
        full = QueueQuota(max_messages=0, max_bytes=10**9, max_app_bytes=10**9)
        assert await write(store, file_msg(alice, 1, shares(fid)), quota=full) == [
            (Outcome.REJECTED, INBOX_FULL)]
        assert not await store.may_read(fid, bob, NOW)
    run(backend, go)


def test_the_grant_survives_the_retention_setting_of_zero(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        store.file_retention_ms = 0  # until the server sets it: as long as the message
        alice, bob, _, _ = await setup(store)
        fid = await complete(store, 1, alice, b"x")
        assert await write(store, file_msg(alice, 1, shares(fid))) == [(Outcome.STORED, SENT)]
        assert await store.may_read(fid, bob, NOW + HOUR - 1)
        assert not await store.may_read(fid, bob, NOW + HOUR)
    run(backend, go)
