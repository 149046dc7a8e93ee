"""The storage contract of media (issue 15): `FileStore`.

Every test runs on SQLite and on a real MariaDB server (the `backend`
fixture, tests/storage/conftest.py).  "Processes" are stores opened on the
same database, each with its own writer thread and connection: at the
database they are separate clients, as processes or nodes would be.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os

import pytest

from appliance.errors import ConflictError, NotFoundError, QuotaError, StorageError
from appliance.storage.interface import Storage
from appliance.storage.models import FileRecord, FileVariant, Perm
from appliance.storage.sql.filestore import wall_ms
from appliance.storage.sql.store import SqlStorage
from tests.storage.conftest import Opener, run

NOW = 1_700_000_000_000
DAY = 86_400_000
MiB = 1 << 20


def new_id() -> str:
    return base64.b32encode(os.urandom(16)).decode().rstrip("=").lower()


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def record(app: int, owner: int, size: int = 100, *, file_id: str | None = None,
           name: str = "photo.jpg", content_type: str = "image/jpeg",
           expires_ms: int | None = NOW + DAY) -> FileRecord:
    return FileRecord(file_id or new_id(), app, owner, size, 0, None, content_type, name, 0, 0,
                      NOW, expires_ms)


async def complete(store: Storage, app: int, owner: int, content: bytes = b"hello",
                   *, expires_ms: int | None = NOW + DAY) -> str:
    """A complete file of `content`, owned by `owner`."""
    rec = record(app, owner, len(content), expires_ms=expires_ms)
    await store.create_file(rec, 1 << 40)
    await store.complete_file(rec.file_id, sha(content), len(content), "image/png", 4, 3)
    return rec.file_id


async def users(store: Storage, app: int, *names: str) -> list[int]:
    return [(await store.create_user(app, n, NOW)).user_id for n in names]


async def raw(store: Storage, sql: str, *params: object) -> list[tuple[object, ...]]:
    """Run a statement on the store's writer (what no API allows: a corrupt row)."""
    assert isinstance(store, SqlStorage)
    return await store._meta(lambda conn: [tuple(r) for r in conn.execute(sql, params)]
                             if sql.startswith("SELECT") else conn.execute(sql, params) and [])


def test_an_upload_is_created_progresses_and_completes(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        (alice,) = await users(store, 1, "alice")
        rec = record(1, alice, 11, name="caf\u00e9 \U0001f600.jpg")
        await store.create_file(rec, 1000)
        assert await store.file(rec.file_id) == rec
        assert not rec.complete
        assert await store.app_stored_bytes(1) == 11
        await store.set_received(rec.file_id, 5)
        assert (await store.file(rec.file_id)).received == 5  # type: ignore[union-attr]
        with pytest.raises(StorageError):
            await store.set_received(rec.file_id, 12)  # past the declared size
        done = await store.complete_file(rec.file_id, sha(b"hello world"), 11, "image/jpeg",
                                         4000, 3000)
        assert done.complete
        assert done.sha256 == sha(b"hello world")
        assert (done.size, done.received, done.width, done.height) == (11, 11, 4000, 3000)
        assert await store.file(rec.file_id) == done
        # A re-encoded image: stored size differs; `received` keeps the declared length.
        grown = record(1, alice, 11)
        await store.create_file(grown, 10**9)
        done = await store.complete_file(grown.file_id, sha(b"bigger"), 20, "image/png", 4, 3)
        assert (done.size, done.received) == (20, 11)
        with pytest.raises(ConflictError):
            await store.complete_file(rec.file_id, sha(b"x"), 1, "image/jpeg", 0, 0)
        with pytest.raises(ConflictError):
            await store.set_received(rec.file_id, 3)
        with pytest.raises(NotFoundError):
            await store.set_received(new_id(), 3)
        assert await store.file(new_id()) is None
    run(backend, go)


@pytest.mark.parametrize("bad", [
    {"file_id": "../x"}, {"file_id": "A" * 26}, {"file_id": "a" * 27}, {"file_id": ""},
    {"size": -1}, {"size": 2**63}, {"received": 101},
    {"name": "n" * 256}, {"name": "\u00e9" * 128}, {"name": "bad\udcff"},
    {"content_type": ""}, {"content_type": "t" * 128}, {"content_type": "image/\u00e9"},
    {"width": 2**31}, {"sha256": b"short"},
])
def test_a_record_out_of_bounds_is_refused_and_nothing_stored(backend: Opener,
                                                                bad: dict[str, object]) -> None:
    async def go(store: Storage) -> None:
        (alice,) = await users(store, 1, "alice")
        fields = {"file_id": new_id(), "app_id": 1, "owner_id": alice, "size": 100,
                  "received": 0, "sha256": None, "content_type": "image/jpeg", "name": "a.jpg",
                  "width": 0, "height": 0, "created_ms": NOW, "expires_ms": NOW + DAY} | bad
        with pytest.raises(StorageError):
            await store.create_file(FileRecord(**fields), 1 << 40)  # type: ignore[arg-type]
        assert await store.app_stored_bytes(1) == 0
    run(backend, go)


def test_create_checks_the_app_the_owner_and_the_id(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        other = (await store.create_app("other", NOW)).app_id
        (alice,) = await users(store, 1, "alice")
        (mallory,) = await users(store, other, "mallory")
        with pytest.raises(NotFoundError):  # an owner of another app
            await store.create_file(record(1, mallory), 1000)
        with pytest.raises(NotFoundError):
            await store.create_file(record(999, alice), 1000)
        rec = record(1, alice)
        await store.create_file(rec, 1000)
        with pytest.raises(ConflictError):
            await store.create_file(record(other, mallory, file_id=rec.file_id), 1000)
        assert await store.file(rec.file_id) == rec
        await store.create_file(record(1, 0), 1000)  # owner 0: the server's own (a preview)
    run(backend, go)


def test_the_app_quota_counts_declared_sizes_complete_or_not(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        other = (await store.create_app("other", NOW)).app_id
        (alice,) = await users(store, 1, "alice")
        (olga,) = await users(store, other, "olga")
        await store.create_file(record(1, alice, 600), 1000)
        await complete(store, 1, alice, b"x" * 300)
        with pytest.raises(QuotaError) as refused:
            await store.create_file(record(1, alice, 101), 1000)
        assert (refused.value.limit, refused.value.allowed) == ("media.max_app_bytes", 1000)
        await store.create_file(record(1, alice, 100), 1000)  # exactly the limit
        assert await store.app_stored_bytes(1) == 1000
        await store.create_file(record(other, olga, 1000), 1000)  # apps count apart
        with pytest.raises(QuotaError):
            await store.create_file(record(1, alice, 1), 1000)
    run(backend, go)


def test_concurrent_creates_from_several_processes_never_pass_the_quota(
        backend: Opener) -> None:
    async def go() -> None:
        stores = [await backend(server=False) for _ in range(4)]
        try:
            (alice,) = await users(stores[0], 1, "alice")
            limit, size, attempts = 10 * 100, 100, 8

            async def one(store: Storage) -> int:
                try:
                    await store.create_file(record(1, alice, size), limit)
                except QuotaError:
                    return 0
                return 1

            done = await asyncio.gather(*(one(s) for s in stores for _ in range(attempts)))
            assert sum(done) == limit // size
            assert await stores[0].app_stored_bytes(1) == limit
        finally:
            for store in stores:
                await store.close()
    asyncio.run(go())


def test_may_read_owner_user_grant_group_grant_and_expiry(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        alice, bob, carol, dave = await users(store, 1, "alice", "bob", "carol", "dave")
        fid = await complete(store, 1, alice)
        assert await store.may_read(fid, alice, NOW)
        assert not await store.may_read(fid, bob, NOW)
        assert not await store.may_read(fid, 0, NOW)
        assert not await store.may_read(new_id(), alice, NOW)
        await store.grant_file(fid, user_id=bob, expires_ms=NOW + 2 * DAY)
        assert await store.may_read(fid, bob, NOW + 2 * DAY - 1)
        assert not await store.may_read(fid, bob, NOW + 2 * DAY)
        await store.grant_file(fid, user_id=bob, expires_ms=NOW + DAY)  # never shortened
        assert await store.may_read(fid, bob, NOW + 2 * DAY - 1)
        # The file lives as long as its grants.
        assert (await store.file(fid)).expires_ms == NOW + 2 * DAY  # type: ignore[union-attr]
        group = (await store.create_group(1, "team", NOW)).group_id
        await store.set_member(1, group, carol, Perm.DEFAULT)
        await store.set_member(1, group, dave, Perm.SEND)  # no RECEIVE: the message skips dave
        await store.grant_file(fid, group_id=group, expires_ms=NOW + 3 * DAY)
        assert await store.may_read(fid, carol, NOW + 3 * DAY - 1)
        assert not await store.may_read(fid, dave, NOW)
        assert not await store.may_read(fid, carol, NOW + 3 * DAY)  # expired (and the file too)
        await store.remove_member(1, group, carol)
        assert not await store.may_read(fid, carol, NOW)  # membership is read at read time
        with pytest.raises(StorageError):
            await store.grant_file(fid, expires_ms=NOW + DAY)
        with pytest.raises(StorageError):
            await store.grant_file(fid, user_id=bob, group_id=group, expires_ms=NOW + DAY)
        with pytest.raises(NotFoundError):
            await store.grant_file(new_id(), user_id=bob, expires_ms=NOW + DAY)
        # An expired file is read by nobody, its owner included, until the sweep takes it.
        assert not await store.may_read(fid, alice, NOW + 3 * DAY)
    run(backend, go)


def test_nothing_crosses_apps(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        other = (await store.create_app("other", NOW)).app_id
        (alice,) = await users(store, 1, "alice")
        (mallory,) = await users(store, other, "mallory")
        theirs = (await store.create_group(other, "theirs", NOW)).group_id
        await store.set_member(other, theirs, mallory, Perm.DEFAULT)
        fid = await complete(store, 1, alice)
        with pytest.raises(NotFoundError):
            await store.grant_file(fid, user_id=mallory, expires_ms=NOW + DAY)
        with pytest.raises(NotFoundError):
            await store.grant_file(fid, group_id=theirs, expires_ms=NOW + DAY)
        with pytest.raises(NotFoundError):  # another app's file as one's picture
            await store.set_picture(other, "user", mallory, fid)
        with pytest.raises(NotFoundError):  # another app's user
            await store.set_picture(1, "user", mallory, None)
        # Even rows that slipped in (a bug, a hand edit) grant nothing across apps.
        await raw(store, "INSERT INTO file_grants VALUES (?, ?, 0, ?)", fid, mallory, NOW + DAY)
        await raw(store, "INSERT INTO file_grants VALUES (?, 0, ?, ?)", fid, theirs, NOW + DAY)
        assert not await store.may_read(fid, mallory, NOW)
        assert await store.may_read(fid, alice, NOW)
    run(backend, go)


def test_variants_and_blob_references(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        (alice,) = await users(store, 1, "alice")
        one = await complete(store, 1, alice, b"same bytes")
        two = await complete(store, 1, alice, b"same bytes")  # deduplicated: one blob, 2 refs
        thumb = FileVariant("t320.webp", sha(b"thumb"), 5, "image/webp", 320, 240)
        await store.save_variant(one, thumb)
        assert await store.variant(one, "t320.webp") == thumb
        assert await store.variant(one, "t96.webp") is None
        assert await store.variant(two, "t320.webp") is None
        newer = FileVariant("t320.webp", sha(b"thumb2"), 6, "image/webp", 320, 240)
        await store.save_variant(one, newer)  # replaced: the old thumbnail loses its ref
        assert await store.variant(one, "t320.webp") == newer
        with pytest.raises(StorageError):
            await store.save_variant(one, FileVariant("x" * 33, sha(b"t"), 1, "image/webp", 1, 1))
        pending = record(1, alice)
        await store.create_file(pending, 1000)
        with pytest.raises(ConflictError):
            await store.save_variant(pending.file_id, thumb)
        later = wall_ms() + 1
        assert await store.unreferenced_blobs(later, 10) == [sha(b"thumb")]
        assert not await store.unreferenced_blobs(NOW, 10)  # the grace: not long enough ago
        await store.delete_file(one)
        assert sorted(await store.unreferenced_blobs(wall_ms() + 1, 10)) == sorted(
            [sha(b"thumb"), sha(b"thumb2")])  # the content blob still has `two`
        assert await store.file(one) is None
        assert await store.variant(one, "t320.webp") is None
        await store.delete_file(one)  # gone already: nothing happens
        await store.delete_file(two)
        blobs = await store.unreferenced_blobs(wall_ms() + 1, 10)
        assert sha(b"same bytes") in blobs
        assert await store.unreferenced_blobs(wall_ms() + 1, 1) == blobs[:1]
        # An upload completing with the same bytes takes the blob back before the sweep.
        again = await complete(store, 1, alice, b"same bytes")
        assert not await store.forget_blob(sha(b"same bytes"))
        assert await store.forget_blob(sha(b"thumb"))
        assert not await store.forget_blob(sha(b"thumb"))
        assert sha(b"thumb") not in await store.unreferenced_blobs(wall_ms() + 1, 10)
        assert await store.may_read(again, alice, NOW)
    run(backend, go)


def test_pictures_replace_expire_and_go_with_their_user_or_group(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        alice, bob = await users(store, 1, "alice", "bob")
        group = (await store.create_group(1, "team", NOW)).group_id
        first = await complete(store, 1, alice, b"first")
        second = await complete(store, 1, alice, b"second")
        assert await store.picture(1, "user", alice) is None
        assert await store.set_picture(1, "user", alice, first) is None
        assert await store.picture(1, "user", alice) == first
        assert (await store.file(first)).expires_ms is None  # type: ignore[union-attr]
        assert await store.set_picture(1, "user", alice, first) == first  # unchanged
        assert await store.set_picture(1, "user", alice, second) == first
        assert first in await store.expired_files(wall_ms() + 1, 10)  # the sweep takes it
        assert second not in await store.expired_files(wall_ms() + 1, 10)
        assert await store.set_picture(1, "group", group, second) is None
        with pytest.raises(StorageError):
            await store.set_picture(1, "app", alice, second)
        with pytest.raises(NotFoundError):
            await store.set_picture(1, "user", alice, new_id())
        pending = record(1, alice)
        await store.create_file(pending, 1000)
        with pytest.raises(ConflictError):
            await store.set_picture(1, "user", alice, pending.file_id)
        shared = await complete(store, 1, alice, b"shared")
        await store.grant_file(shared, user_id=bob, expires_ms=NOW + 5 * DAY)
        await store.grant_file(shared, group_id=group, expires_ms=NOW + 5 * DAY)
        await store.set_picture(1, "user", bob, await complete(store, 1, bob, b"bob"))
        await store.delete_user(1, "bob")
        assert await store.picture(1, "user", bob) is None
        (bob2,) = await users(store, 1, "bob2")
        await store.set_member(1, group, bob2, Perm.DEFAULT)
        assert await store.may_read(shared, bob2, NOW)  # through the group grant
        await store.delete_group(1, group)
        assert await store.picture(1, "group", group) is None
        assert not await store.may_read(shared, bob2, NOW)
        assert await raw(store, "SELECT user_id, group_id FROM file_grants WHERE file_id = ?",
                         shared) == []
        assert await store.set_picture(1, "user", alice, None) == second
        assert await store.picture(1, "user", alice) is None
        assert await store.set_picture(1, "user", alice, second) is None
        await store.delete_file(second)  # deleting the picture's file unsets it
        assert await store.picture(1, "user", alice) is None
        # A deleted owner owns nothing any more: its uploads in progress expire now.
        await store.delete_user(1, "alice")
        assert (await store.file(shared)).owner_id == 0  # type: ignore[union-attr]
        assert pending.file_id in await store.expired_files(wall_ms() + 1, 100)
    run(backend, go)


def test_expired_files_oldest_first_and_bounded(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        (alice,) = await users(store, 1, "alice")
        ids = []
        for i in (3, 1, 2):
            rec = record(1, alice, expires_ms=NOW + i)
            await store.create_file(rec, 1 << 40)
            ids.append((i, rec.file_id))
        await store.create_file(record(1, alice, expires_ms=None), 1 << 40)
        assert await store.expired_files(NOW, 10) == []
        assert await store.expired_files(NOW + 3, 10) == [f for _, f in sorted(ids)]
        assert await store.expired_files(NOW + 3, 2) == [f for _, f in sorted(ids)][:2]
        assert await store.expired_files(2**62, 10) == [f for _, f in sorted(ids)]
    run(backend, go)


def test_the_signing_key_is_made_once_and_shared(backend: Opener) -> None:
    async def go() -> None:
        one = await backend(server=False)
        two = await backend(server=False)
        try:
            keys = await asyncio.gather(one.media_signing_key(), two.media_signing_key())
            assert keys[0] == keys[1]
            assert len(keys[0]) == 32
            assert await one.media_signing_key() == keys[0]
        finally:
            await one.close()
            await two.close()
        three = await backend()
        try:
            assert await three.media_signing_key() == keys[0]
        finally:
            await three.close()
    asyncio.run(go())
