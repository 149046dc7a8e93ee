"""`MediaSweeper` on a real store (SQLite and MariaDB) and a real `DiskBlobStore`.

Time: the sweep runs at the disk's "now" (blob and part mtimes are real);
what should look old is stamped in the past (the store's clock, `os.utime`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from pathlib import Path

import pytest

from appliance.media.blobs import DiskBlobStore
from appliance.media.sweep import GRACE_MS, MediaSweeper, SweepReport
from appliance.storage.interface import Storage
from appliance.storage.models import FileRecord, FileVariant
from appliance.storage.sql.store import SqlStorage
from tests.media.test_blobs import disk_now_ms
from tests.storage.conftest import (
    Opener,
    backend as backend,  # the fixture: SQLite and MariaDB
)

DAY = 86_400_000


class Clock:
    def __init__(self, wall_ms: int) -> None:
        self.now = wall_ms

    def wall_ms(self) -> int:
        return self.now


def new_id() -> str:
    return base64.b32encode(os.urandom(16)).decode().rstrip("=").lower()


async def start(store: Storage, owner: int, size: int, expires_ms: int) -> str:
    file_id = new_id()
    await store.create_file(FileRecord(file_id, 1, owner, size, 0, None, "application/x-test",
                                       "f.bin", 0, 0, 0, expires_ms), 1 << 40)
    return file_id


async def upload(store: Storage, blobs: DiskBlobStore, owner: int, data: bytes,
                 expires_ms: int) -> tuple[str, bytes]:
    file_id = await start(store, owner, len(data), expires_ms)
    writer = await blobs.writer(file_id)
    await writer.write(data)
    sha, size = await writer.commit()
    await store.complete_file(file_id, sha, size, "application/x-test", 0, 0)
    return file_id, sha


async def blob(blobs: DiskBlobStore, data: bytes) -> bytes:
    writer = await blobs.writer()
    await writer.write(data)
    return (await writer.commit())[0]


def age(path: Path, ms: int) -> None:
    os.utime(path, (ms / 1000, ms / 1000))


def run(backend: Opener, tmp_path: Path, fn) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        store = await backend()
        try:
            await fn(store, DiskBlobStore(tmp_path / "media"), disk_now_ms(tmp_path))
        finally:
            await store.close()
    asyncio.run(main())


def test_expired_files_go_then_their_unreferenced_blobs(backend: Opener, tmp_path: Path) -> None:
    async def go(store: Storage, blobs: DiskBlobStore, now: int) -> None:
        assert isinstance(store, SqlStorage)
        past = now - 2 * GRACE_MS
        store.clock_ms = lambda: past  # type: ignore[method-assign]  # references went long ago
        alice = (await store.create_user(1, "alice", past)).user_id
        one, a = await upload(store, blobs, alice, b"A" * 1000, now - 1)
        kept, _ = await upload(store, blobs, alice, b"A" * 1000, now + DAY)
        gone, b = await upload(store, blobs, alice, b"B" * 300, now - 1)
        c = await blob(blobs, b"C" * 20)
        await store.save_variant(gone, FileVariant("t96.webp", c, 20, "image/webp", 96, 96))
        for sha in (a, b, c):
            age(blobs.local_path(sha), past)
        sweeper = MediaSweeper(store, blobs, Clock(now))
        assert await sweeper.sweep_once(now) == SweepReport(2, 2, 320, 0)
        assert await store.file(one) is None
        assert await store.file(gone) is None
        assert not blobs.local_path(b).exists()
        assert not blobs.local_path(c).exists()
        assert blobs.local_path(a).exists()  # `kept` still refers to it
        assert await store.may_read(kept, alice, now)
        assert await sweeper.sweep_once(now) == SweepReport()
        # `kept` goes; while its blob waits out the grace, an upload of the same
        # bytes deduplicates onto it (refreshing its mtime) before taking its reference.
        await store.delete_file(kept)
        assert await store.unreferenced_blobs(now - GRACE_MS, 10) == [a]
        racing = await start(store, alice, 1000, now + DAY)
        writer = await blobs.writer(racing)
        await writer.write(b"A" * 1000)
        assert (await writer.commit())[0] == a
        assert await sweeper.sweep_once(now) == SweepReport()  # spared: just wanted
        await store.complete_file(racing, a, 1000, "application/x-test", 0, 0)
        assert await store.unreferenced_blobs(now + GRACE_MS, 10) == []
        with await blobs.open(a) as content:
            assert await asyncio.to_thread(content.read) == b"A" * 1000
        # Without an upload racing, the grace alone decides.
        store.clock_ms = lambda: now  # type: ignore[method-assign]
        await store.delete_file(racing)
        age(blobs.local_path(a), past)
        recent = MediaSweeper(store, blobs, Clock(now))
        assert await recent.sweep_once(now) == SweepReport()  # unreferenced for 0 s
        assert await recent.sweep_once(now + GRACE_MS + 1) == SweepReport(0, 1, 1000, 0)
        assert [p for p in (tmp_path / "media" / "blobs").rglob("*") if p.is_file()] == []
    run(backend, tmp_path, go)


def test_parts_of_expired_or_unknown_uploads_go_after_the_grace(backend: Opener,
                                                                 tmp_path: Path) -> None:
    async def go(store: Storage, blobs: DiskBlobStore, now: int) -> None:
        alice = (await store.create_user(1, "alice", now)).user_id
        paused = await start(store, alice, 100, now + DAY)  # a tus upload, paused for hours
        expired = await start(store, alice, 100, now - 1)  # abandoned: its day is over
        for upload_id in (paused, expired, "orphan", "fresh"):
            writer = await blobs.writer(upload_id)
            await writer.write(b"p" * 10)
            await writer.pause()
            if upload_id != "fresh":
                age(blobs.part_path(upload_id), now - 2 * GRACE_MS)
        # Scratch files a crash left beside the parts: an image worker's output (old), a
        # preview download (being written now); a link is never followed nor removed.
        output, download = blobs.tmp_dir / f"{new_id()}.jpeg", blobs.tmp_dir / "preview-x1"
        output.write_bytes(b"jpeg")
        download.write_bytes(b"html")
        age(output, now - 2 * GRACE_MS)
        outside = tmp_path / "outside.txt"
        outside.write_bytes(b"keep")
        (blobs.tmp_dir / "link").symlink_to(outside)
        age(outside, now - 2 * GRACE_MS)
        sweeper = MediaSweeper(store, blobs, Clock(now))
        assert await sweeper.sweep_once(now) == SweepReport(files_removed=1, parts_removed=2)
        assert not output.exists()
        assert download.exists()
        assert outside.read_bytes() == b"keep"
        assert await blobs.upload_offset(paused) == 10
        assert await blobs.upload_offset(expired) is None
        assert await blobs.upload_offset("orphan") is None
        assert await blobs.upload_offset("fresh") == 10  # being written, perhaps
        assert await store.file(expired) is None
        resumed = await blobs.resume(paused, 10)
        await resumed.write(b"q" * 90)
        await resumed.commit()
        assert await sweeper.sweep_once(now) == SweepReport()
    run(backend, tmp_path, go)


def test_run_logs_a_failing_pass_and_goes_on(backend: Opener, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    async def go(store: Storage, blobs: DiskBlobStore, now: int) -> None:
        assert isinstance(store, SqlStorage)
        alice = (await store.create_user(1, "alice", now)).user_id
        sweeper = MediaSweeper(store, blobs, Clock(now))
        # The disk fails: the uploads directory is not one.
        (tmp_path / "media").mkdir()
        (tmp_path / "media" / "tmp").write_bytes(b"not a directory")
        with caplog.at_level(logging.WARNING, logger="appliance.media.sweep"):
            await sweeper.run(0, rounds=2)
        failures = [r.getMessage() for r in caplog.records
                    if r.name == "appliance.media.sweep"]  # not asyncio's own debug lines
        assert len(failures) == 2
        assert "media sweep failed, retried in 0 s: cannot clean the uploads directory: Not a" \
            " directory" in failures[0]
        (tmp_path / "media" / "tmp").unlink()
        # The store fails: a table is missing (a broken restore, a hand edit).
        expired = await start(store, alice, 100, now - 1)
        await store._meta(lambda conn: conn.execute("DROP TABLE blobs"))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="appliance.media.sweep"):
            await sweeper.run(0, rounds=1)
        assert "media sweep failed" in caplog.records[0].getMessage()
        assert await store.file(expired) is None  # the files pass ran before the failure
    run(backend, tmp_path, go)
