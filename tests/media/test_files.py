"""`FileService` under attack and in races: a real SQLite store, a real `DiskBlobStore`.

The request bodies are the input here (`Body` hands chunks over as the
transport would, and can hold the next one back): that is how two requests
on one upload, a termination or a sweep are made to meet mid-upload.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from appliance.engine.clock import FakeClock
from appliance.errors import (
    ApplianceError,
    BodyAbortedError,
    ConflictError,
    ForbiddenError,
    MediaError,
    NotFoundError,
    QuotaError,
    UsageError,
)
from appliance.media import files as files_module
from appliance.media.blobs import DiskBlobStore
from appliance.media.config import MediaConfig
from appliance.media.files import FileService
from appliance.media.images.model import ImageInfo, ImageLimits
from appliance.media.images.pool import ImagePool
from appliance.storage.models import Principal
from appliance.storage.sql.store import SqlStorage
from appliance.storage.sqlite import SqliteStorage
from appliance.transport.tasks import spawn
from tests.storage.conftest import MIGRATED_MS

START_MS = 1_700_000_000_000


class Body:
    """A request body: `chunks` one by one; `hold` waits before the chunk of that index;
    `then` is raised at the end instead of b"" (a client that went away)."""

    def __init__(self, *chunks: bytes, hold: int | None = None,
                 then: BaseException | None = None) -> None:
        self.chunks = list(chunks)
        self.length: int | None = None
        self.hold = hold
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()
        self.then = then
        self._index = 0

    async def read(self) -> bytes:
        if self._index == self.hold:
            self.waiting.set()
            await self.gate.wait()
        if self._index < len(self.chunks):
            self._index += 1
            return self.chunks[self._index - 1]
        if self.then is not None:
            raise self.then
        return b""


@dataclass
class World:
    service: FileService
    store: SqlStorage
    blobs: DiskBlobStore
    clock: FakeClock
    alice: Principal
    bob: Principal
    root: Path

    def blob_files(self) -> set[str]:
        return {p.name for p in (self.root / "blobs").rglob("*") if p.is_file()}

    def part_files(self) -> list[Path]:
        return sorted((self.root / "tmp").glob("*.part"))


@asynccontextmanager
async def world(tmp_path: Path, images: ImagePool | None = None,
                **config: int) -> AsyncIterator[World]:
    store = await SqliteStorage.open(tmp_path / "store.sqlite3", MIGRATED_MS, server=True)
    assert isinstance(store, SqlStorage)
    try:
        clock = FakeClock(START_MS)
        store.clock_ms = clock.wall_ms  # type: ignore[method-assign]
        ids = []
        for name in ("alice", "bob"):  # made by an earlier `world` on the same store
            found = await store.find_user(1, name.encode())
            ids.append(found or (await store.create_user(1, name, START_MS)).user_id)
        alice, bob = (Principal(1, i, n, START_MS * 2) for i, n in zip(ids, (b"alice", b"bob"),
                                                                         strict=True))
        blobs = DiskBlobStore(tmp_path / "media")
        service = FileService(store, blobs, images, MediaConfig(**config), clock)
        yield World(service, store, blobs, clock, alice, bob, tmp_path / "media")
    finally:
        await store.close()


def test_a_patch_longer_than_the_upload_leaves_it_resumable(tmp_path: Path) -> None:
    """The bytes written before the one past the end are in the part: the recorded
    offset must say so, or every later PATCH is a 409 (the part's size never matches)."""
    async def go() -> None:
        async with world(tmp_path) as w:
            record = await w.service.create(w.alice, 100, "application/x-test", "a.bin")
            with pytest.raises(UsageError):
                await w.service.receive(record, Body(b"a" * 60, b"b" * 60), 0)
            record = await w.service.owned_upload(w.alice, record.file_id)
            assert record.received == w.part_files()[0].stat().st_size
            rest = (b"a" * 60)[record.received:] + b"c" * 40
            done = await w.service.receive(record, Body(rest), record.received)
            assert done.sha256 == hashlib.sha256(b"a" * 60 + b"c" * 40).digest()
    asyncio.run(go())


def test_a_second_request_with_a_stale_offset_stores_nothing(tmp_path: Path) -> None:
    """Two PATCHes at offset 0 (a retry racing the original): the second read the record
    before the first completed it.  It must be refused before writing: else its bytes
    become a blob that no row refers to, which the sweep never finds (disk past quota)."""
    async def go() -> None:
        async with world(tmp_path) as w:
            record = await w.service.create(w.alice, 5, "application/x-test", "a.bin")
            stale = await w.service.owned_upload(w.alice, record.file_id)
            done = await w.service.receive(stale, Body(b"hello"), 0)
            with pytest.raises(ConflictError):
                await w.service.receive(stale, Body(b"world"), 0)
            assert done.sha256 is not None
            assert w.blob_files() == {done.sha256.hex()}
            assert w.part_files() == []
    asyncio.run(go())


def test_termination_waits_for_the_patch_under_way(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A DELETE while a PATCH is still receiving (past the settle wait) is a 409: else it
    frees the quota while the PATCH goes on writing to disk, and the PATCH then fails
    with an OSError (a 500 and a traceback)."""
    monkeypatch.setattr(files_module, "SETTLE_WAIT_S", 0.05)

    async def go() -> None:
        async with world(tmp_path) as w:
            record = await w.service.create(w.alice, 10, "application/x-test", "a.bin")
            body = Body(b"01234", b"56789", hold=1)
            patch = spawn(w.service.receive(record, body, 0), "patch")
            await body.waiting.wait()
            current = await w.service.owned_upload(w.alice, record.file_id)  # the wait ends
            with pytest.raises(ConflictError):
                await w.service.discard(current)
            body.gate.set()
            done = await patch
            assert done.complete
            assert await w.store.app_stored_bytes(1) == 10
    asyncio.run(go())


def test_an_upload_swept_mid_patch_fails_typed_and_leaves_nothing(tmp_path: Path) -> None:
    """The sweep removes an expired upload (its row, then its part) while a PATCH is
    receiving: the PATCH ends with a typed error, and no blob is left behind."""
    async def go() -> None:
        async with world(tmp_path) as w:
            record = await w.service.create(w.alice, 10, "application/x-test", "a.bin")
            body = Body(b"01234", b"56789", hold=1)
            patch = spawn(w.service.receive(record, body, 0), "patch")
            await body.waiting.wait()
            await w.store.delete_file(record.file_id)  # what MediaSweeper does
            await w.blobs.discard(record.file_id)
            body.gate.set()
            with pytest.raises(ApplianceError):
                await patch
            assert w.blob_files() == set()
            assert w.part_files() == []
    asyncio.run(go())


def test_another_users_request_does_not_wait_on_an_upload(tmp_path: Path) -> None:
    """Ownership is checked before waiting for a PATCH under way: bob's HEAD on alice's
    upload is a 404 at once, not after `SETTLE_WAIT_S` (which would also tell him that
    the id is an upload receiving now)."""
    async def go() -> None:
        async with world(tmp_path) as w:
            record = await w.service.create(w.alice, 10, "application/x-test", "a.bin")
            body = Body(b"01234", b"56789", hold=1)
            patch = spawn(w.service.receive(record, body, 0), "patch")
            await body.waiting.wait()
            with pytest.raises(NotFoundError):
                await asyncio.wait_for(w.service.owned_upload(w.bob, record.file_id), 2.0)
            body.gate.set()
            assert (await patch).complete
    asyncio.run(go())


def test_a_one_shot_upload_cut_short_frees_its_quota(tmp_path: Path) -> None:
    """A one-shot upload cannot be resumed: when its client goes away, its row (and the
    declared size it holds against the app's quota) and its part go at once, not after
    ``upload_expiry_s``: else a few aborted 100 MiB POSTs block the app for a day."""
    async def go() -> None:
        async with world(tmp_path, max_file_bytes=1000, max_app_bytes=1500) as w:
            for _ in range(3):
                record = await w.service.create(w.alice, 1000, "application/x-test", "a.bin")
                body = Body(b"x" * 10, then=BodyAbortedError("the client went away"))
                with pytest.raises(BodyAbortedError):
                    await w.service.receive_whole(record, body)
                assert await w.store.file(record.file_id) is None
            assert await w.store.app_stored_bytes(1) == 0
            assert w.part_files() == []
    asyncio.run(go())


def test_an_image_that_cannot_be_processed_now_is_dropped_not_stuck(tmp_path: Path) -> None:
    """The image workers fail for a reason other than the image (busy, shut down): the
    upload must not stay with its part whole and its offset behind (every PATCH a 409
    until it expires, its size held against the quota)."""
    async def go() -> None:
        pool = ImagePool(1, 0, 5.0, ImageLimits(10**6, 4096, 10))
        await pool.close()  # jobs now fail with MediaError, as when shutting down
        async with world(tmp_path, pool) as w:
            png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
            record = await w.service.create(w.alice, len(png), "image/png", "a.png")
            with pytest.raises(MediaError):
                await w.service.receive(record, Body(png), 0)
            assert await w.store.file(record.file_id) is None
            assert await w.store.app_stored_bytes(1) == 0
            assert w.part_files() == []
    asyncio.run(go())


def test_an_expired_file_is_not_served_by_link_either(tmp_path: Path) -> None:
    """A file past its expiry (not swept yet: the sweep runs every few minutes and
    removes a bounded number per pass) is gone for its readers: for a signed link's
    holder too, whose link may outlive the file by days."""
    async def go() -> None:
        async with world(tmp_path, upload_expiry_s=60) as w:
            record = await w.service.create(w.alice, 2, "application/x-test", "a.bin")
            record = await w.service.receive(record, Body(b"hi"), 0)
            query, _ = await w.service.link(record, 7 * 86400)
            exp, sig = (part.partition("=")[2] for part in query.split("&"))
            assert (await w.service.readable(record.file_id, link=(exp, sig))).complete
            w.clock.advance(61)
            with pytest.raises((NotFoundError, ForbiddenError)):
                await w.service.readable(record.file_id, user=w.alice)
            with pytest.raises(NotFoundError):
                await w.service.readable(record.file_id, link=(exp, sig))
    asyncio.run(go())


def _palette_noise(side: int) -> bytes:
    """A PNG of `side`² random palette indices: cleaned, it becomes RGB, 2.5 times larger."""
    image = Image.frombytes("P", (side, side), os.urandom(side * side))
    image.putpalette(list(os.urandom(768)))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_a_cleaned_image_larger_than_a_file_may_be_is_refused(tmp_path: Path) -> None:
    """The quota is checked against the declared size; the clean copy (re-encoded) may
    be larger: a palette PNG of noise grows 2.5 times as RGB, so a 64 MB upload would
    store 160 MB past ``max_file_bytes``.  The clean copy must fit the limit too."""
    async def go() -> None:
        pool = ImagePool(1, 0, 10.0, ImageLimits(10**7, 4096, 10))
        try:
            async with world(tmp_path, pool, max_file_bytes=1 << 20) as w:
                png = _palette_noise(800)
                assert len(png) < 1 << 20
                record = await w.service.create(w.alice, len(png), "image/png", "n.png")
                with pytest.raises(QuotaError) as refused:
                    await w.service.receive(record, Body(png), 0)
                assert refused.value.limit == "media.max_file_bytes"
                assert await w.store.file(record.file_id) is None
                assert w.blob_files() == set()
                assert list((w.root / "tmp").iterdir()) == []
        finally:
            await pool.close()
    asyncio.run(go())


class GatedPool:
    """The real pool, whose thumbnails start only once `gate` is set."""

    def __init__(self, pool: ImagePool) -> None:
        self.pool = pool
        self.started = asyncio.Event()
        self.gate = asyncio.Event()

    async def thumbnail(self, src: Path, dst: Path, **options: Any) -> ImageInfo:
        self.started.set()
        await self.gate.wait()
        return await self.pool.thumbnail(src, dst, **options)


def test_a_thumbnail_of_a_file_deleted_meanwhile_leaves_no_blob(tmp_path: Path) -> None:
    """A user asks for a thumbnail and deletes the file (tus DELETE) at once: the
    thumbnail must not be stored as a blob that nothing refers to (the sweep never finds
    those: repeated, disk fills past the quota).  A DELETE while it is being made waits
    for it (409); a thumbnail asked on a record read before the DELETE stores nothing."""
    async def go() -> None:
        pool = ImagePool(1, 2, 10.0, ImageLimits(10**7, 4096, 10))
        try:
            async with world(tmp_path, pool, thumbnail_sizes=(96,)) as w:
                out = io.BytesIO()
                Image.new("RGB", (300, 200), "teal").save(out, "JPEG")
                photo = out.getvalue()
                record = await w.service.create(w.alice, len(photo), "image/jpeg", "p.jpg")
                record = await w.service.receive(record, Body(photo), 0)
                assert record.sha256 is not None
                gated = GatedPool(pool)
                w.service.derived.images = gated  # type: ignore[assignment]
                making = spawn(w.service.variant(record, 96, "webp", square=False), "thumb")
                await gated.started.wait()
                with pytest.raises(ConflictError):
                    await w.service.discard(record)
                gated.gate.set()
                thumb = await making
                w.service.derived.images = pool
                await w.service.discard(record)
                assert await w.store.file(record.file_id) is None
                # A request that read the record before the DELETE.
                again = await w.service.create(w.alice, len(photo), "image/jpeg", "p.jpg")
                again = await w.service.receive(again, Body(photo), 0)
                await w.service.discard(again)
                with pytest.raises(NotFoundError):
                    await w.service.variant(again, 96, "jpeg", square=False)
                assert w.blob_files() == {record.sha256.hex(), thumb.sha256.hex()}
        finally:
            await pool.close()
    asyncio.run(go())


def test_an_upload_resumes_after_a_crash_mid_patch(tmp_path: Path) -> None:
    """kill -9 during a PATCH: the part holds bytes past the offset recorded (the
    progress is recorded when a PATCH ends).  The restarted server reports the recorded
    offset, and the PATCH the client then sends at it must succeed, not be a 409 for
    ever (the part's size never matching again) -- the first PATCH included."""
    async def go() -> None:
        async with world(tmp_path) as w:
            first = await w.service.create(w.alice, 10, "application/x-test", "a.bin")
            first = await w.service.receive(first, Body(b"01234"), 0)
            fresh = await w.service.create(w.alice, 4, "application/x-test", "b.bin")
            with w.blobs.part_path(first.file_id).open("ab") as part:
                part.write(b"56")  # written, never recorded
            with w.blobs.part_path(fresh.file_id).open("ab") as part:
                part.write(b"ab")
        async with world(tmp_path) as w:  # the restarted server: a new process's state
            record = await w.service.owned_upload(w.alice, first.file_id)
            assert record.received == 5
            done = await w.service.receive(record, Body(b"56789"), 5)
            assert done.sha256 == hashlib.sha256(b"0123456789").digest()
            record = await w.service.owned_upload(w.alice, fresh.file_id)
            assert record.received == 0
            done = await w.service.receive(record, Body(b"abcd"), 0)
            assert done.sha256 == hashlib.sha256(b"abcd").digest()
    asyncio.run(go())
