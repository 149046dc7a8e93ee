"""`DiskBlobStore`: content addressing, dedup, tus resume, abort, hostile ids, disk failure.

Real files in the test's tmp_path; a "new process" is a new `DiskBlobStore`
on the same directory (it holds no hash state), and the disk failure is a
real one (a child process whose file size limit the kernel enforces).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from appliance.errors import ConflictError, NotFoundError, UsageError
from appliance.media.blobs import FLUSH_BYTES, MAX_CHUNK, DiskBlobStore

HOSTILE_IDS = ["../x", "..", ".", "", "a/b", "/etc/passwd", "x" * 65, "a.b", "a\x00b",
               "caf\u00e9", "a b", "a\nb"]


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def disk_now_ms(directory: Path) -> int:
    """Now by the clock that stamps mtimes (what `delete` compares with)."""
    marker = directory / "now.marker"
    marker.touch()
    try:
        return marker.stat().st_mtime_ns // 10**6
    finally:
        marker.unlink()


def everything(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_commit_stores_the_bytes_at_their_address_privately(tmp_path: Path) -> None:
    async def go() -> None:
        store = DiskBlobStore(tmp_path / "media")
        data = os.urandom(3 * MAX_CHUNK + 12_345)
        writer = await store.writer()
        for chunk in chunks(data, 64 * 1024):
            await writer.write(chunk)
        assert writer.received == len(data)
        sha, size = await writer.commit()
        assert (sha, size) == (hashlib.sha256(data).digest(), len(data))
        path = store.local_path(sha)
        assert path == tmp_path / "media" / "blobs" / sha.hex()[:2] / sha.hex()[2:4] / sha.hex()
        assert path.read_bytes() == data
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        for directory in (path.parent, path.parent.parent, store.blob_dir, store.tmp_dir):
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert list(store.tmp_dir.iterdir()) == []  # the part became the blob
        with await store.open(sha) as blob:
            assert await asyncio.to_thread(blob.read) == data
        with pytest.raises(UsageError):
            await writer.write(b"more")  # finished
        empty = await store.writer()
        assert await empty.commit() == (hashlib.sha256(b"").digest(), 0)
    asyncio.run(go())


def test_identical_content_is_stored_once_and_its_mtime_refreshed(tmp_path: Path) -> None:
    async def go() -> None:
        store = DiskBlobStore(tmp_path / "media")
        first = await store.writer()
        await first.write(b"same bytes")
        sha, _ = await first.commit()
        path = store.local_path(sha)
        os.utime(path, (1_000_000, 1_000_000))  # long ago
        second = await store.writer()
        await second.write(b"same ")
        await second.write(b"bytes")
        assert (await second.commit())[0] == sha
        assert everything(tmp_path / "media") == [path]
        now_ms = disk_now_ms(tmp_path)
        assert path.stat().st_mtime_ns // 10**6 > now_ms - 60_000  # a sweep now spares it
        assert not await store.delete(sha, older_than_ms=now_ms - 3_600_000)
        assert path.exists()
        assert await store.delete(sha, older_than_ms=now_ms + 1000)
        assert not path.exists()
        assert await store.delete(sha)  # gone already
        with pytest.raises(NotFoundError):
            await store.open(sha)
    asyncio.run(go())


def test_a_paused_upload_resumes_in_this_store_and_in_a_new_process(tmp_path: Path) -> None:
    async def go() -> None:
        root = tmp_path / "media"
        data = os.urandom(FLUSH_BYTES * 3 + 77)
        parts = chunks(data, len(data) // 3 + 1)
        store = DiskBlobStore(root)
        writer = await store.writer("fileabc")
        await writer.write(parts[0])
        await writer.pause()
        assert await store.upload_offset("fileabc") == len(parts[0])
        again = await store.resume("fileabc", len(parts[0]))  # the hash state is held here
        with pytest.raises(ConflictError):
            await store.resume("fileabc", len(parts[0]))  # being written
        await again.write(parts[1])
        await again.pause()
        offset = len(parts[0]) + len(parts[1])
        fresh = DiskBlobStore(root)  # another process: it hashes the part again
        with pytest.raises(ConflictError):
            await fresh.resume("fileabc", offset - 1)
        with pytest.raises(ConflictError):
            await fresh.resume("fileabc", offset + 1)
        last = await fresh.resume("fileabc", offset)
        assert last.received == offset
        await last.write(parts[2])
        assert await last.commit() == (hashlib.sha256(data).digest(), len(data))
        assert await fresh.upload_offset("fileabc") is None
        with pytest.raises(NotFoundError):
            await fresh.resume("fileabc", 10)
        started = await fresh.resume("fileabc", 0)  # offset 0: a new part
        await started.abort()
        await (await fresh.writer("taken")).pause()
        with pytest.raises(ConflictError):
            await fresh.writer("taken")  # a part of that name exists
    asyncio.run(go())


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    async def go() -> None:
        store = DiskBlobStore(tmp_path / "media")
        writer = await store.writer("gone")
        await writer.write(os.urandom(FLUSH_BYTES + 1))
        await writer.abort()
        await writer.abort()  # twice: nothing
        resumed = await store.writer("paused")
        await resumed.write(b"x" * 10)
        await resumed.pause()
        await store.discard("paused")
        assert everything(tmp_path / "media") == []
        assert await store.upload_offset("gone") is None
        assert await store.upload_offset("paused") is None
        with pytest.raises(UsageError):
            await writer.write(b"late")
    asyncio.run(go())


@pytest.mark.parametrize("upload_id", HOSTILE_IDS)
def test_a_hostile_upload_id_is_refused_before_any_disk_access(tmp_path: Path,
                                                                upload_id: str) -> None:
    async def go() -> None:
        root = tmp_path / "deep" / "media"
        store = DiskBlobStore(root)
        (tmp_path / "x.part").write_bytes(b"outside")
        with pytest.raises(UsageError):
            await store.writer(upload_id)
        with pytest.raises(UsageError):
            await store.resume(upload_id, 0)
        with pytest.raises(UsageError):
            await store.resume(upload_id, 7)
        with pytest.raises(UsageError):
            await store.upload_offset(upload_id)
        with pytest.raises(UsageError):
            await store.discard(upload_id)
        assert not root.exists()
        assert (tmp_path / "x.part").read_bytes() == b"outside"
    asyncio.run(go())


def test_bounds_chunk_size_and_hash_length(tmp_path: Path) -> None:
    async def go() -> None:
        store = DiskBlobStore(tmp_path / "media")
        writer = await store.writer()
        with pytest.raises(UsageError):
            await writer.write(b"x" * (MAX_CHUNK + 1))
        await writer.write(b"x" * MAX_CHUNK)
        await writer.abort()
        with pytest.raises(UsageError):
            store.local_path(b"short")
        with pytest.raises(UsageError):
            await store.resume("neg", -1)
    asyncio.run(go())


def test_a_writer_dropped_unfinished_releases_its_upload(tmp_path: Path) -> None:
    async def go() -> None:
        store = DiskBlobStore(tmp_path / "media")
        writer = await store.writer("dropped")
        await writer.write(b"y" * (FLUSH_BYTES + 5))  # written to the part
        await writer.write(b"buffered")  # still in memory: lost with the writer
        del writer
        gc.collect()
        resumed = await store.resume("dropped", FLUSH_BYTES + 5)
        await resumed.abort()
        assert await store.parts(10) == []
    asyncio.run(go())


def test_parts_lists_part_files_for_the_sweep(tmp_path: Path) -> None:
    async def go() -> None:
        store = DiskBlobStore(tmp_path / "media")
        assert await store.parts(10) == []  # nothing created yet
        for name in ("one", "two", "three"):
            await (await store.writer(name)).pause()
        (store.tmp_dir / "stray.txt").write_bytes(b"")
        (store.tmp_dir / "bad.name.part").write_bytes(b"")
        found = await store.parts(10)
        assert sorted(name for name, _ in found) == ["one", "three", "two"]
        now_ms = disk_now_ms(tmp_path)
        assert all(now_ms - 60_000 < mtime <= now_ms + 1000 for _, mtime in found)
        assert len(await store.parts(2)) == 2
    asyncio.run(go())


def test_a_failing_disk_gives_a_typed_error_and_abort_cleans_up(tmp_path: Path) -> None:
    # A child process whose file-size limit is 300 KiB: the kernel refuses the
    # write past it (EFBIG), as a full disk would (ENOSPC).
    script = textwrap.dedent(f"""
        import asyncio, resource, signal, sys
        from pathlib import Path
        from appliance.errors import BlobError
        from appliance.media.blobs import DiskBlobStore
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300 * 1024, 300 * 1024))
        async def go():
            store = DiskBlobStore(Path({str(tmp_path / "media")!r}))
            writer = await store.writer("big")
            try:
                for _ in range(8):
                    await writer.write(b"z" * 200_000)
                await writer.commit()
            except BlobError as exc:
                print("BlobError:", exc.reason)
                await writer.abort()
            print(sorted(p.name for p in Path({str(tmp_path)!r}).rglob("*") if p.is_file()))
        asyncio.run(go())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("BlobError: cannot write upload big: File too large")
    assert lines[1] == "[]"
