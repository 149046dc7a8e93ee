"""`tidings upgrade` on the host (no systemd): every refusal before the swap changes
nothing; a swap keeps the previous executable and a backup; a failed migration
rolls back the executable, and the store when its schema moved.

A booted systemd (restart, health check, downtime, rollback of a running
service) is tests/upgrade/test_systemd.py's.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from appliance.media.blobs import DiskBlobStore
from appliance.release.manifest import MANIFEST, SIGNATURE, SUMS, format_sums, parse_sums
from appliance.release.signature import sign
from appliance.storage.snapshot import known_schema_version
from tests.support.provision import provision
from tests.upgrade.signed import EXE, Keys, ReleaseServer, release_files, script

OLD, NEW = "0.1.0", "0.2.0"


class Install:
    """An "installed" stand-in executable, a data directory with a store, a config."""

    def __init__(self, root: Path, version: str = OLD) -> None:
        self.bin_dir = root / "bin"
        self.bin_dir.mkdir()
        self.bin = self.bin_dir / "tidings"
        self.bin.write_bytes(script(version))
        self.bin.chmod(0o755)
        self.data = root / "data"
        self.data.mkdir()
        provision(self.data, ["alice"])
        self.config = root / "tidings.toml"
        self.config.write_text("[server]\nhost = \"127.0.0.1\"\n")

    def upgrade(self, base_url: str, *args: str, timeout: float = 120
                ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "appliance", "--config", str(self.config), "--data-dir",
             str(self.data), "upgrade", "--bin", str(self.bin), "--base-url", base_url, *args],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=False)

    def state(self) -> dict[str, bytes]:
        """Every file of the install (a refused upgrade must leave it as it was)."""
        return {str(p): p.read_bytes() if p.is_file() else b"dir"
                for root in (self.bin_dir, self.data) for p in sorted(root.rglob("*"))
                if not p.name.endswith(".lock")}


def _upload(data: Path, content: bytes) -> Path:
    """A blob in the data directory's blob store, written by the store; its path."""

    async def go() -> Path:
        store = DiskBlobStore(data / "media")
        writer = await store.writer()
        await writer.write(content)
        return store.local_path((await writer.commit())[0])

    return asyncio.run(go())


@pytest.fixture
def install(tmp_path: Path) -> Install:
    return Install(tmp_path)


def _publish(release_server: ReleaseServer, keys: Keys, version: str = NEW,
             executable: bytes | None = None, **kwargs: str) -> dict[str, bytes]:
    files = release_files(version, executable or script(version), keys, **kwargs)
    release_server.publish(version, files)
    release_server.publish("latest", files)
    return files


def test_upgrade_swaps_migrates_and_keeps_a_backup(trusted: Path, keys: Keys,
                                                   release_server: ReleaseServer,
                                                   install: Install) -> None:
    log = install.data.parent / "migrate.log"
    new = script(NEW, migrate=f'echo "migrated $DATA" >> {log}')
    _publish(release_server, keys, executable=new)
    old = install.bin.read_bytes()
    blob = _upload(install.data, b"an uploaded file")
    done = install.upgrade(release_server.url, "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert install.bin.read_bytes() == new
    assert stat.S_IMODE(install.bin.stat().st_mode) == 0o755
    assert (install.bin_dir / "tidings.prev").read_bytes() == old
    assert log.read_text() == f"migrated {install.data}\n"
    [backup] = (install.data / "backups").glob(f"pre-upgrade-{OLD}-to-{NEW}-*.tar.gz")
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    with tarfile.open(backup) as tar:
        assert {"store/tidings.sqlite3", "config/tidings.toml"} <= set(tar.getnames())
        # An upgrade never rewrites blobs: its backup leaves them out (and says so).
        assert not [n for n in tar.getnames() if n.startswith(("media", "data/media"))]
    assert "not the media files" in done.stdout
    assert blob.read_bytes() == b"an uploaded file"
    for step in ("fetched and verified", "downloaded", f"says {NEW}", "backed up",
                 "swapped", "migrated"):
        assert step in done.stdout, done.stdout
    assert "not restarted" in done.stdout
    assert not list(install.bin_dir.glob(".*partial"))


def test_a_failed_migration_rolls_back_the_executable(trusted: Path, keys: Keys,
                                                      release_server: ReleaseServer,
                                                      install: Install) -> None:
    _publish(release_server, keys, executable=script(NEW, migrate='echo "boom: no" >&2; exit 3'))
    old = install.bin.read_bytes()
    done = install.upgrade(release_server.url, "--yes")
    assert done.returncode == 1
    assert "ROLLED BACK to 0.1.0" in done.stderr
    assert "boom: no" in done.stderr
    assert "the store's schema is still" in done.stdout
    assert install.bin.read_bytes() == old
    assert not (install.bin_dir / "tidings.prev").exists()


def test_a_migration_that_moved_the_schema_restores_the_store(
        trusted: Path, keys: Keys, release_server: ReleaseServer, install: Install) -> None:
    half = (f'{sys.executable} -c "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);'
            " c.execute('INSERT INTO schema_migrations VALUES (99, 1, 1, 0)');"
            " c.execute('DELETE FROM users'); c.commit()\""
            ' "$DATA/tidings.sqlite3"; echo "half way" >&2; exit 4')
    _publish(release_server, keys, executable=script(NEW, migrate=half))
    done = install.upgrade(release_server.url, "--yes")
    assert done.returncode == 1, done.stdout
    schema = known_schema_version("sqlite")
    assert f"moved from {schema} to 99" in done.stdout
    assert "the store was restored from" in done.stderr
    with sqlite3.connect(install.data / "tidings.sqlite3") as db:
        assert db.execute("SELECT MAX(version) FROM schema_migrations").fetchone() == (schema,)
        assert db.execute("SELECT COUNT(*) FROM users").fetchone() == (1,)
    [saved] = (install.data / "backups").glob(f"failed-upgrade-{NEW}-*.tar.gz")
    assert f"saved in {saved}" in done.stderr


def _one_byte(files: dict[str, bytes], keys: Keys) -> None:
    exe = bytearray(files[EXE])
    exe[-2] ^= 1
    files[EXE] = bytes(exe)


def _other_key(files: dict[str, bytes], keys: Keys) -> None:
    files[SIGNATURE] = sign(files[SUMS], Keys().private)


def _wrong_line(files: dict[str, bytes], keys: Keys) -> None:
    sums = parse_sums(files[SUMS])
    sums[EXE] = hashlib.sha256(b"another executable").hexdigest()
    files[SUMS] = format_sums(sums)


def _wrong_line_signed(files: dict[str, bytes], keys: Keys) -> None:
    _wrong_line(files, keys)
    files[SIGNATURE] = sign(files[SUMS], keys.private)


def _manifest_edited(files: dict[str, bytes], keys: Keys) -> None:
    files[MANIFEST] = files[MANIFEST].replace(b'"upgrades_from": "0.0.1"',
                                              b'"upgrades_from": "0.0.2"')


@pytest.mark.parametrize(("tamper", "words"), [
    (_one_byte, "sha256 does not match the signed"),
    (_other_key, "does not verify with any trusted release key"),
    (_wrong_line, "does not verify with any trusted release key"),
    (_wrong_line_signed, "manifest and SHA256SUMS disagree"),
    (_manifest_edited, "manifest.json does not match its line"),
], ids=["one-byte", "other-key", "wrong-line", "wrong-line-signed", "manifest-edited"])
def test_a_tampered_release_changes_nothing(trusted: Path, keys: Keys,
                                            release_server: ReleaseServer, install: Install,
                                            tamper: object, words: str) -> None:
    files = release_files(NEW, script(NEW), keys)
    tamper(files, keys)  # type: ignore[operator]
    release_server.publish("latest", files)
    before = install.state()
    done = install.upgrade(release_server.url, "--yes")
    assert done.returncode == 1
    assert words in done.stderr
    assert install.state() == before


def test_a_new_executable_that_says_another_version_is_refused(
        trusted: Path, keys: Keys, release_server: ReleaseServer, install: Install) -> None:
    _publish(release_server, keys, executable=script(NEW, says="0.2.1"))
    before = install.state()
    done = install.upgrade(release_server.url, "--yes")
    assert done.returncode == 1
    assert "reports 0.2.1, the release is 0.2.0" in done.stderr
    assert install.state() == before


def test_versions(trusted: Path, keys: Keys, release_server: ReleaseServer,
                  install: Install) -> None:
    before = install.state()
    _publish(release_server, keys, version=OLD)
    done = install.upgrade(release_server.url, "--yes")
    assert (done.returncode, done.stdout.strip().splitlines()[-1]) == (
        0, "already up to date (tidings 0.1.0)")
    _publish(release_server, keys, version="0.0.9")
    done = install.upgrade(release_server.url, "--yes")
    assert done.returncode == 1
    assert "0.0.9 is older than the installed 0.1.0" in done.stderr
    _publish(release_server, keys, version="0.3.0", upgrades_from="0.2.0")
    done = install.upgrade(release_server.url, "--yes")
    assert done.returncode == 1
    assert "upgrade to 0.2.0 first (tidings upgrade --version 0.2.0)" in done.stderr
    assert install.state() == before
    done = install.upgrade(release_server.url, "--yes", "--version", "0.0.9", "--allow-downgrade")
    assert done.returncode == 0, done.stderr
    assert b"version 0.0.9" in install.bin.read_bytes()


def test_check_reports_and_changes_nothing(trusted: Path, keys: Keys, release_server: ReleaseServer,
                                           install: Install) -> None:
    before = install.state()
    _publish(release_server, keys)
    done = install.upgrade(release_server.url, "--check")
    assert (done.returncode, done.stdout) == (
        100, "installed: 0.1.0; the release server offers 0.2.0\ntidings 0.1.0 -> 0.2.0\n")
    _publish(release_server, keys, version="0.0.9")
    done = install.upgrade(release_server.url, "--check")
    assert (done.returncode, done.stdout.splitlines()[-1]) == (
        0, "up to date: nothing newer than 0.1.0")
    done = install.upgrade(release_server.url, "--check", "--version", OLD)
    assert done.returncode == 1  # not published: HTTP 404, said so
    assert "HTTP 404" in done.stderr
    assert install.state() == before
    assert not [r for r in release_server.requests if r.endswith(EXE)]


def test_hostile_release_servers_are_bounded(trusted: Path, keys: Keys,
                                             release_server: ReleaseServer,
                                             install: Install) -> None:
    before = install.state()
    cases = {"/latest/SHA256SUMS": (release_server.endless, "more than the 65536 bytes"),
             "/0.2.0/manifest.json": (release_server.huge_length, "more than the 65536 allowed"),
             "/0.3.0/SHA256SUMS": (release_server.hang, "timed out")}
    _publish(release_server, keys)
    release_server.publish("0.3.0", {})
    for path, (behaviour, words) in cases.items():
        release_server.behaviours[path] = behaviour
        version = path.split("/")[1]
        started = time.monotonic()
        done = install.upgrade(release_server.url, "--yes", "--timeout", "1",
                               *(["--version", version] if version != "latest" else []))
        assert done.returncode == 1, path
        assert words in done.stderr, done.stderr
        assert time.monotonic() - started < 20
    assert install.state() == before


def test_plain_http_elsewhere_is_refused(install: Install) -> None:
    done = install.upgrade("http://release_server.example.invalid", "--check")
    assert done.returncode == 1
    assert "must be https://" in done.stderr


def test_no_terminal_and_no_yes_is_refused(trusted: Path, keys: Keys, release_server: ReleaseServer,
                                           install: Install) -> None:
    _publish(release_server, keys)
    before = install.state()
    done = install.upgrade(release_server.url)
    assert done.returncode == 1
    assert "pass --yes" in done.stderr
    assert install.state() == before
