"""`tidings restore` refuses hostile, corrupted, newer or misplaced archives and
changes nothing when it does; it refuses a store in use or already holding data."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.storage.snapshot import known_schema_version
from tests.backup.archives import Edit, Members, refused, rewrite
from tests.conftest import tidings
from tests.support.provision import provision
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A genuine archive of a store with one user and a key in the data directory."""
    root = tmp_path_factory.mktemp("source")
    data = root / "data"
    data.mkdir()
    provision(data, ["alice"])
    (data / "acme").mkdir(mode=0o700)
    (data / "acme" / "key.pem").write_text("secret")
    path = root / "genuine.tar.gz"
    tidings(data, "backup", "--output", str(path))
    return path


def _add_member(info: tarfile.TarInfo, content: bytes | None = None) -> Edit:
    def edit(manifest: dict[str, object], members: Members) -> None:
        if content is not None:
            info.size = len(content)
        members.insert(1, (info, content))
    return edit


def _link(name: str, kind: bytes, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize(("name", "edit", "words"), [
    ("dotdot", _add_member(tarfile.TarInfo("data/../../evil"), b"x"), ("hostile",)),
    ("absolute", _add_member(tarfile.TarInfo("/tmp/tidings-evil"), b"x"), ("hostile",)),
    ("symlink", _add_member(_link("data/acme/x", tarfile.SYMTYPE, "/etc/passwd")),
     ("hostile",)),
    ("symlink-inside", _add_member(_link("data/acme/y", tarfile.SYMTYPE, "key.pem")),
     ("not a plain file",)),
    ("hardlink", _add_member(_link("data/acme/z", tarfile.LNKTYPE, "data/acme/key.pem")),
     ("not a plain file",)),
    ("device", _add_member(_link("data/acme/dev", tarfile.CHRTYPE, "")), ("hostile",)),
    ("fifo", _add_member(_link("data/acme/fifo", tarfile.FIFOTYPE, "")), ("hostile",)),
    ("unlisted", _add_member(tarfile.TarInfo("data/acme/extra"), b"x"), ("not in the manifest",)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_hostile_members_arerefused(tmp_path: Path, archive: Path, name: str, edit: Edit,
                                     words: tuple[str, ...]) -> None:
    refused(tmp_path, rewrite(archive, tmp_path / f"{name}.tar.gz", edit), *words)
    assert not (tmp_path.parent / "evil").exists()
    assert not Path("/tmp/tidings-evil").exists()


def _manifest_edit(change: Callable[[dict[str, object]], None]) -> Edit:
    def edit(manifest: dict[str, object], members: Members) -> None:
        change(manifest)
    return edit


def _entry(manifest: dict[str, object], name: str) -> dict[str, object]:
    entries = manifest["members"]
    assert isinstance(entries, list)
    return next(e for e in entries if e["name"] == name)


def _huge_store(manifest: dict[str, object]) -> None:
    _entry(manifest, "store/tidings.sqlite3")["size"] = (1 << 40) + 1


def _outside_allowlist(manifest: dict[str, object]) -> None:
    _entry(manifest, "data/acme/key.pem")["name"] = "etc/cron.d/evil"


def _setuid(manifest: dict[str, object]) -> None:
    _entry(manifest, "data/acme/key.pem")["mode"] = 0o4755


def _newer_format(manifest: dict[str, object]) -> None:
    manifest["format"] = 3


@pytest.mark.parametrize(("change", "words"), [
    (_huge_store, ("malformed",)),
    (_outside_allowlist, ("not one a backup holds",)),
    (_setuid, ("malformed",)),
    (_newer_format, ("format 3 unknown",)),
], ids=["huge", "allowlist", "setuid", "format"])
def test_hostile_manifests_arerefused(tmp_path: Path, archive: Path,
                                       change: Callable[[dict[str, object]], None],
                                       words: tuple[str, ...]) -> None:
    refused(tmp_path, rewrite(archive, tmp_path / "m.tar.gz", _manifest_edit(change)), *words)


def test_a_member_larger_than_the_manifest_says_isrefused(tmp_path: Path,
                                                           archive: Path) -> None:
    def grow(manifest: dict[str, object], members: Members) -> None:
        for i, (info, content) in enumerate(members):
            if info.name == "data/acme/key.pem":
                info.size = 1 << 20
                members[i] = (info, (content or b"") + b"\0" * ((1 << 20) - len(content or b"")))
    refused(tmp_path, rewrite(archive, tmp_path / "g.tar.gz", grow), "size or mode differ")


def test_a_corrupted_member_is_refused_before_anything_is_written(tmp_path: Path,
                                                                  archive: Path) -> None:
    def corrupt(manifest: dict[str, object], members: Members) -> None:
        # The store comes first: a corrupted key later must still stop it landing.
        for i, (info, _content) in enumerate(members):
            if info.name == "data/acme/key.pem":
                members[i] = (info, b"SECRET")  # same size, other bytes
    refused(tmp_path, rewrite(archive, tmp_path / "c.tar.gz", corrupt), "corrupted")


def test_a_truncated_or_foreign_file_isrefused(tmp_path: Path, archive: Path) -> None:
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    refused(tmp_path, cut, "not a readable backup archive")
    foreign = tmp_path / "foreign.tar.gz"
    with tarfile.open(foreign, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("README"), io.BytesIO(b""))
    refused(tmp_path, foreign, "does not start with MANIFEST.json")


def test_a_newer_schema_isrefused(tmp_path: Path, archive: Path) -> None:
    def newer(manifest: dict[str, object]) -> None:
        manifest["schema_version"] = known_schema_version("sqlite") + 1
    refused(tmp_path, rewrite(archive, tmp_path / "n.tar.gz", _manifest_edit(newer)),
             "newer than this build")


def test_an_older_backup_is_migrated(tmp_path: Path, archive: Path) -> None:
    """A store at schema 6 (before certificates) restores and is migrated to this build."""
    import sqlite3

    def older(manifest: dict[str, object], members: Members) -> None:
        store = tmp_path / "old.sqlite3"
        for i, (info, content) in enumerate(members):
            if info.name == "store/tidings.sqlite3":
                store.write_bytes(content or b"")
                with sqlite3.connect(store) as db:
                    db.execute("DELETE FROM schema_migrations WHERE version = 7")
                    for table in ("certificates", "renewal_state", "leases",
                                  "challenge_answers"):
                        db.execute(f"DROP TABLE IF EXISTS {table}")
                data = store.read_bytes()
                info.size = len(data)
                members[i] = (info, data)
                entry = _entry(manifest, info.name)
                entry["size"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
                manifest["schema_version"] = 6
    old = rewrite(archive, tmp_path / "old.tar.gz", older)
    fresh = tmp_path / "fresh"
    done = tidings(fresh, "--config", str(tmp_path / "t.toml"), "restore", str(old))
    assert "applied migrations 0007" in done.stdout
    assert "alice" in tidings(fresh, "user", "list").stdout


def test_a_data_directory_with_state_needs_force(tmp_path: Path, archive: Path) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "tls").mkdir()
    refused(tmp_path, archive, "already holds tls", "--force")
    (fresh / "tls").rmdir()
    provision(fresh, ["bob"])  # a store with users of its own
    refused(tmp_path, archive, "already holds users")
    done = tidings(fresh, "--config", str(tmp_path / "t.toml"), "restore", str(archive),
                   "--force")
    assert done.returncode == 0
    users = tidings(fresh, "user", "list").stdout.split()
    assert users == ["alice"]
    assert (fresh / "acme" / "key.pem").read_text() == "secret"


def test_a_running_server_isrefused(tmp_path: Path, archive: Path) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    server = ServerProcess(fresh)
    server.start()
    try:
        refused(tmp_path, archive, "another tidings server is using", force=True, live=True)
    finally:
        assert server.stop() == 0


def test_a_sqlite_archive_onto_mariadb_isrefused(tmp_path: Path, archive: Path,
                                                  mariadb: object) -> None:
    from tests.support.mariadb import MariaDBServer

    assert isinstance(mariadb, MariaDBServer)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    mariadb.use_in(fresh, "other")
    refused(tmp_path, archive, "holds a sqlite store", "db copy")
