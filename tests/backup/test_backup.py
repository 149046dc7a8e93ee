"""`tidings backup` while real clients send, restored on a fresh data directory.

Every message the server acknowledged SENT before the backup started is in
the restored store and is delivered exactly once; nothing is delivered that
was never sent; files keep their modes.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from tests.conftest import StoreBackend, tidings
from tests.support.provision import provision
from tests.support.server import ServerProcess
from tests.support.traffic import LoopingSender, Progress, drain, register_device

pytestmark = pytest.mark.slow

SENDERS = ("s1", "s2", "s3")


def _backup_while_sending(data: Path, archive: Path, tokens: dict[str, str]
                          ) -> tuple[dict[str, set[int]], dict[str, set[int]], float]:
    """Run senders, take a backup while they send; (acked before, all sent, backup s)."""
    server = ServerProcess(data)
    server.start()
    progress = Progress()
    senders = [LoopingSender(name, tokens[name], progress=progress) for name in SENDERS]

    async def go() -> tuple[dict[str, set[int]], float]:
        await register_device(server.host, server.port, tokens["receiver"])
        stop = asyncio.Event()
        runs = asyncio.gather(*(s.run(server.host, server.port, stop) for s in senders))
        try:
            await progress.reach(300)  # traffic is flowing
            before = {s.name: set(s.acked) for s in senders}
            started = time.monotonic()
            done = await asyncio.to_thread(tidings, data, "backup", "--output", str(archive))
            seconds = time.monotonic() - started
            assert "backup written" in done.stdout
            await progress.reach(progress.count + 100)  # and still flows after it
        finally:
            stop.set()
            await runs
        return before, seconds

    try:
        before, seconds = asyncio.run(go())
    finally:
        assert server.stop() == 0
    return before, {s.name: s.sent for s in senders}, seconds


def test_backup_while_sending_restores_every_acknowledged_message_once(
        tmp_path: Path, store_backend: StoreBackend) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store_backend.prepare(data)
    tokens, _ = provision(data, [*SENDERS, "receiver"])
    archive = tmp_path / "backup.tar.gz"
    before, sent, seconds = _backup_while_sending(data, archive, tokens)
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    store_backend.prepare(fresh)  # a new install: an empty store of the same kind
    done = tidings(fresh, "--config", str(tmp_path / "none.toml"), "restore", str(archive))
    assert "restored the backup" in done.stdout, done.stderr

    server = ServerProcess(fresh)
    server.start()
    try:
        got = asyncio.run(drain(server.host, server.port, tokens["receiver"],
                                ("s1", tokens["s1"])))
    finally:
        assert server.stop() == 0
    acked = {(n.encode(), i) for n, ids in before.items() for i in ids}
    every = {(n.encode(), i) for n, ids in sent.items() for i in ids}
    print(f"\nbackup ({store_backend.name}) while 3 clients sent: {seconds:.2f} s;"
          f" {len(acked)} acknowledged before it, {len(got)} restored,"
          f" {sum(len(v) for v in sent.values())} sent in all")
    assert acked <= set(got), sorted(acked - set(got))[:5]
    assert set(got) <= every
    assert max(got.values()) == 1


def test_restored_files_keep_their_modes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o750)
    provision(data, ["alice"])
    (data / "ipfilter").mkdir(mode=0o750)
    (data / "ipfilter" / "allow.txt").write_text("127.0.0.0/8\n")
    os.chmod(data / "ipfilter" / "allow.txt", 0o640)
    (data / "acme").mkdir(mode=0o700)
    (data / "acme" / "accounts.json").write_text("{}")
    os.chmod(data / "acme" / "accounts.json", 0o600)
    os.symlink("/etc/passwd", data / "acme" / "link")  # not state: left out, said so
    config = tmp_path / "tidings.toml"
    config.write_text("[server]\nport = 0\n")
    os.chmod(config, 0o640)
    archive = tmp_path / "b.tar.gz"
    done = tidings(data, "--config", str(config), "backup", "--output", str(archive))
    assert "not backed up" in done.stderr
    assert "link" in done.stderr

    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("MANIFEST.json").read())  # type: ignore[union-attr]
    assert names[0] == "MANIFEST.json"
    assert {"store/tidings.sqlite3", "config/tidings.toml", "data/ipfilter/allow.txt",
            "data/acme/accounts.json"} <= set(names)
    assert not any(n.startswith("data/tidings.sqlite3") or n == "data/acme/link" for n in names)
    assert manifest["backend"] == "sqlite"
    assert manifest["schema_version"] >= 7
    assert all(len(m["sha256"]) == 64 for m in manifest["members"] if m["kind"] == "file")

    fresh = tmp_path / "fresh"
    restored_config = tmp_path / "etc" / "tidings.toml"
    tidings(fresh, "--config", str(restored_config), "restore", str(archive))
    for rel, mode in (("", 0o750), ("ipfilter", 0o750), ("ipfilter/allow.txt", 0o640),
                      ("acme", 0o700), ("acme/accounts.json", 0o600),
                      ("tidings.sqlite3", 0o600)):
        st = (fresh / rel).stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (mode, os.geteuid()), rel
    assert stat.S_IMODE(restored_config.stat().st_mode) == 0o640
    assert restored_config.read_text() == config.read_text()
    assert (fresh / "ipfilter" / "allow.txt").read_text() == "127.0.0.0/8\n"
    assert "alice" in tidings(fresh, "user", "list").stdout


def test_backup_refuses_to_overwrite(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    provision(data, ["alice"])
    archive = tmp_path / "b.tar.gz"
    archive.write_bytes(b"precious")
    done = tidings(data, "backup", "--output", str(archive), check=False)
    assert done.returncode == 1
    assert "exists" in done.stderr
    assert archive.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_backup_of_a_missing_store_names_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    done = tidings(data, "backup", "--output", str(tmp_path / "b.tar.gz"), check=False)
    assert done.returncode == 1
    assert "no SQLite database" in done.stderr
    assert not (tmp_path / "b.tar.gz").exists()


def test_mariadb_dump_failure_is_reported(tmp_path: Path, mariadb: object) -> None:
    from tests.support.mariadb import MariaDBServer

    assert isinstance(mariadb, MariaDBServer)
    data = tmp_path / "data"
    data.mkdir()
    location = mariadb.use_in(data, "gone")
    provision(data, ["alice"])
    subprocess.run(["mariadb", "--no-defaults", f"--socket={location.socket}", "-e",
                    f"DROP DATABASE {location.database}"], check=True)
    done = tidings(data, "backup", "--output", str(tmp_path / "b.tar.gz"), check=False)
    assert done.returncode != 0
    assert location.database in done.stderr
    assert not (tmp_path / "b.tar.gz").exists()
