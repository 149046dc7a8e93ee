"""Media blobs in backups (issue 15): streamed in, verified by name on the way out.

A backup of many blobs and one larger than a state file may be succeeds with
a bounded memory; a restore gives the same blobs back, 0600 in directories
0700; a blob whose bytes or name were changed, a link, a name outside the
layout, more blobs than the manifest says are refused and nothing is written;
``--no-media`` leaves the blobs out; blobs the sweep deletes during a backup
are skipped; blobs rotten on disk are left out and reported.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pwd
import stat
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from appliance.backup import backup as backup_module
from appliance.backup.backup import create_backup
from appliance.backup.media import MediaOutcome, add_blobs, blob_hex, blob_name, list_blobs
from appliance.backup.restore import restore
from appliance.config import load_config
from appliance.media.blobs import DiskBlobStore
from tests.backup.archives import Edit, Members, refused, rewrite
from tests.conftest import tidings
from tests.support.components import missing
from tests.support.provision import provision

MiB = 1 << 20
#: The backup's child process may grow this much over one without media (RSS, MiB).
RSS_GROWTH_MIB = 32
RSS_MAX_MIB = 100


def _store_blobs(media: Path, contents: list[bytes], *, unfinished: bytes = b"") -> list[bytes]:
    """Write `contents` as blobs through the real blob store (and leave an unfinished
    upload's part in media/tmp); their SHA-256s."""

    async def go() -> list[bytes]:
        store = DiskBlobStore(media)
        shas = []
        for content in contents:
            writer = await store.writer()
            for at in range(0, len(content), MiB):
                await writer.write(content[at:at + MiB])
            shas.append((await writer.commit())[0])
        if unfinished:
            writer = await store.writer("unfinished")
            await writer.write(unfinished)
            await writer.pause()
        return shas

    return asyncio.run(go())


def _blobs(data: Path) -> dict[str, bytes]:
    root = data / "media" / "blobs"
    return {p.relative_to(data).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _media_members(archive: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(archive) as tar:
        return [m for m in tar.getmembers() if m.name.startswith("media/")]


def _manifest(archive: Path) -> dict[str, object]:
    with tarfile.open(archive) as tar:
        handle = tar.extractfile("MANIFEST.json")
        assert handle is not None
        parsed: dict[str, object] = json.loads(handle.read())
    return parsed


#: Runs its arguments as a child and prints the child's peak RSS.  An intermediary,
#: because Linux keeps a process's peak across exec: a child spawned straight from
#: this test would count the test's own memory at the fork (the random blobs).
_MEASURE = ("import resource, subprocess, sys\n"
            "code = subprocess.call(sys.argv[1:])\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
            "sys.exit(code)\n")


def _backup_peak_rss_mib(data: Path, archive: Path, *args: str) -> tuple[float, str]:
    """Run `tidings backup` as a child; its peak RSS (RUSAGE_CHILDREN, KiB on Linux)."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, sys.executable, "-m", "appliance", "--data-dir",
         str(data), "backup", "--output", str(archive), *args], capture_output=True, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=False)
    assert done.returncode == 0, done.stderr
    *said, peak = done.stderr.strip().splitlines()
    return int(peak) / 1024, done.stdout + "\n".join(said)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A data directory with a user and five small blobs, and its archive."""
    root = tmp_path_factory.mktemp("media-source")
    data = root / "data"
    data.mkdir()
    provision(data, ["alice"])
    _store_blobs(data / "media", [f"blob {i}".encode() * (i + 1) for i in range(5)])
    archive = root / "small.tar.gz"
    tidings(data, "backup", "--output", str(archive))
    return data, archive


@pytest.mark.slow
def test_many_blobs_and_a_large_one_back_up_in_bounded_memory_and_restore_identical(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    provision(data, ["alice"])
    baseline, _ = _backup_peak_rss_mib(data, tmp_path / "empty.tar.gz")
    # 300 blobs (more than the state walk's 4096/256 MiB bounds would matter for
    # count, and one larger than its 64 MiB per file), incompressible.
    contents = [os.urandom(1000 + 97 * i) for i in range(300)] + [os.urandom(80 * MiB)]
    shas = _store_blobs(data / "media", contents, unfinished=b"half an upload")
    (data / "media" / "blobs" / "zz").mkdir()  # not the blob store's: left out, said so
    archive = tmp_path / "media.tar.gz"
    peak, said = _backup_peak_rss_mib(data, archive)
    print(f"\nbackup of 301 blobs ({sum(map(len, contents)) / MiB:.0f} MiB): peak RSS"
          f" {peak:.0f} MiB (without media: {baseline:.0f} MiB),"
          f" archive {archive.stat().st_size / MiB:.0f} MiB")
    assert peak < RSS_MAX_MIB
    assert peak - baseline < RSS_GROWTH_MIB
    assert "301 media files" in said
    assert "zz" in said
    assert "not backed up" in said

    members = _media_members(archive)
    assert [m.name for m in members] == sorted(blob_name(s) for s in shas)
    assert all(m.mode == 0o600 and m.isreg() for m in members)
    media = _manifest(archive)["media"]
    assert media == {"included": True, "count": 301, "bytes": sum(map(len, contents))}

    fresh = tmp_path / "fresh"
    done = tidings(fresh, "--config", str(tmp_path / "etc.toml"), "restore", str(archive))
    assert "301 media files" in done.stdout
    print(done.stdout.strip().splitlines()[-1])
    assert _blobs(fresh) == _blobs(data)
    assert not (fresh / "media" / "tmp").exists()  # unfinished uploads are not kept
    for path in (fresh / "media").rglob("*"):
        st = path.stat()
        mode = 0o700 if path.is_dir() else 0o600
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (mode, os.geteuid()), path
    assert stat.S_IMODE((fresh / "media").stat().st_mode) == 0o700


def test_blobs_restored_by_root_belong_to_the_service_user() -> None:
    if os.geteuid() != 0:
        missing("needs root (the case is root restoring for the service user)")
    nobody = pwd.getpwnam("nobody")
    # Not under pytest's 0700 directory: the store is worked on as its owner.
    with tempfile.TemporaryDirectory(prefix="tidings-media-") as where:
        root = Path(where)
        root.chmod(0o711)
        data = root / "data"
        data.mkdir()
        provision(data, ["alice"])
        _store_blobs(data / "media", [b"one", b"two"])
        for path in [data, *data.rglob("*")]:
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        archive = root / "b.tar.gz"
        tidings(data, "backup", "--output", str(archive))
        fresh = root / "fresh"  # a fresh install's, the service user's
        fresh.mkdir()
        os.chown(fresh, nobody.pw_uid, nobody.pw_gid)
        # In this process: the child would import modules lazily as the owner, and this
        # test interpreter lives where root alone may read (the executable does not).
        import appliance.storage.sqlite  # noqa: F401
        result = restore(archive, None, lambda p: load_config(p, {"storage.data_dir": fresh}),
                         force=False, now_ms=0)
        assert result.blobs == 2
        media = [fresh / "media", *(fresh / "media").rglob("*")]
        assert len(media) == 2 + 2 * 3  # media, blobs, and ab, cd, blob for each
        for path in media:
            st = path.stat()
            mode = 0o700 if path.is_dir() else 0o600
            assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == \
                (mode, nobody.pw_uid, nobody.pw_gid), path


def test_no_media_leaves_the_blobs_out(tmp_path: Path, source: tuple[Path, Path]) -> None:
    data, _ = source
    archive = tmp_path / "bare.tar.gz"
    done = tidings(data, "backup", "--no-media", "--output", str(archive))
    assert "no media (--no-media)" in done.stdout
    assert _media_members(archive) == []
    assert _manifest(archive)["media"] == {"included": False, "count": 0, "bytes": 0}
    fresh = tmp_path / "fresh"
    done = tidings(fresh, "--config", str(tmp_path / "t.toml"), "restore", str(archive))
    assert "0 media files" in done.stdout
    assert "the archive holds no media" in done.stdout
    assert not (fresh / "media").exists()


def _first_blob(members: Members) -> int:
    return next(i for i, (info, _c) in enumerate(members) if info.name.startswith("media/"))


def test_a_tampered_blob_is_refused_before_anything_is_written(
        tmp_path: Path, source: tuple[Path, Path]) -> None:
    def tamper(manifest: dict[str, object], members: Members) -> None:
        # The last blob: the state files and the store before it must not land either.
        i = max(i for i, (info, _c) in enumerate(members) if info.name.startswith("media/"))
        info, content = members[i]
        assert content
        members[i] = (info, bytes([content[0] ^ 1]) + content[1:])  # same name, same size
    refused(tmp_path, rewrite(source[1], tmp_path / "t.tar.gz", tamper),
            "corrupted", "does not match its name")


def _hex_under(prefix: str) -> str:
    """A real blob name whose own first four digits are not `prefix`."""
    digest = hashlib.sha256(b"x").hexdigest()
    assert digest[:4] != prefix
    return digest


def _append(info: tarfile.TarInfo, content: bytes | None = b"x") -> Edit:
    def edit(manifest: dict[str, object], members: Members) -> None:
        if content is not None:
            info.size = len(content)
        info.mode = 0o600
        members.append((info, content))
    return edit


def _link(name: str, kind: bytes, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


_AABB = "aabb" + hashlib.sha256(b"y").hexdigest()[4:]


@pytest.mark.parametrize(("info", "content", "words"), [
    (tarfile.TarInfo("media/blobs/../../x"), b"x", ("hostile", "leaves the destination")),
    (tarfile.TarInfo("media/blobs/../../../tmp/tidings-evil"), b"x", ("hostile",)),
    (_link(f"media/blobs/aa/bb/{_AABB}", tarfile.SYMTYPE, "/etc/passwd"), None, ("hostile",)),
    (_link(f"media/blobs/aa/bb/{_AABB}", tarfile.SYMTYPE, "other"), None,
     ("not a plain file",)),
    (_link(f"media/blobs/aa/bb/{_AABB}", tarfile.LNKTYPE, "store/tidings.sqlite3"), None,
     ("not a plain file",)),
    (_link(f"media/blobs/aa/bb/{_AABB}", tarfile.CHRTYPE, ""), None, ("hostile",)),
    (tarfile.TarInfo(f"media/blobs/aa/bb/{_hex_under('aabb')}"), b"x",
     ("hostile", "not a media blob's name")),
    (tarfile.TarInfo("media/tmp/unfinished.part"), b"x", ("not a media blob's name",)),
    (tarfile.TarInfo("media/blobs/aa/bb/" + "A" * 64), b"x", ("not a media blob's name",)),
], ids=["dotdot", "dotdot-out", "symlink-out", "symlink-in", "hardlink", "device",
        "wrong-prefix", "tmp", "uppercase"])
def test_hostile_media_members_are_refused(tmp_path: Path, source: tuple[Path, Path],
                                           info: tarfile.TarInfo, content: bytes | None,
                                           words: tuple[str, ...]) -> None:
    hostile = rewrite(source[1], tmp_path / "h.tar.gz", _append(info, content))
    refused(tmp_path, hostile, *words)
    assert not (tmp_path.parent / "x").exists()
    assert not Path("/tmp/tidings-evil").exists()


def _copy_of_blob(manifest: dict[str, object], members: Members) -> None:
    info, content = members[_first_blob(members)]
    members.append((info, content))  # twice: out of order


def _more_than_declared(manifest: dict[str, object], members: Members) -> None:
    media = manifest["media"]
    assert isinstance(media, dict)
    media["count"] -= 1


def _fewer_bytes_declared(manifest: dict[str, object], members: Members) -> None:
    media = manifest["media"]
    assert isinstance(media, dict)
    media["bytes"] -= 1


def _none_declared(manifest: dict[str, object], members: Members) -> None:
    manifest["media"] = {"included": False, "count": 0, "bytes": 0}


def _executable_blob(manifest: dict[str, object], members: Members) -> None:
    members[_first_blob(members)][0].mode = 0o755


def _declared_without_media(manifest: dict[str, object], members: Members) -> None:
    manifest["media"] = {"included": False, "count": 3, "bytes": 3}


@pytest.mark.parametrize(("edit", "words"), [
    (_copy_of_blob, ("out of order or twice",)),
    (_more_than_declared, ("more media than its manifest",)),
    (_fewer_bytes_declared, ("more media than its manifest",)),
    (_none_declared, ("holds no media",)),
    (_executable_blob, ("not a plain file 0600",)),
    (_declared_without_media, ("media section is malformed",)),
], ids=["twice", "count", "bytes", "none", "mode", "malformed"])
def test_media_beyond_the_manifest_is_refused(tmp_path: Path, source: tuple[Path, Path],
                                              edit: Edit, words: tuple[str, ...]) -> None:
    refused(tmp_path, rewrite(source[1], tmp_path / "m.tar.gz", edit), *words)


def test_a_format_1_archive_still_restores(tmp_path: Path, source: tuple[Path, Path]) -> None:
    def issue_14(manifest: dict[str, object], members: Members) -> None:
        manifest["format"] = 1
        del manifest["media"]
        members[:] = [(i, c) for i, c in members if not i.name.startswith("media/")]
    old = rewrite(source[1], tmp_path / "f1.tar.gz", issue_14)
    fresh = tmp_path / "fresh"
    done = tidings(fresh, "--config", str(tmp_path / "t.toml"), "restore", str(old))
    assert "restored the backup" in done.stdout
    assert "alice" in tidings(fresh, "user", "list").stdout


def test_a_data_directory_with_blobs_needs_force(tmp_path: Path,
                                                 source: tuple[Path, Path]) -> None:
    fresh = tmp_path / "fresh"
    _store_blobs(fresh / "media", [b"someone else's"])
    refused(tmp_path, source[1], "already holds media", "--force")
    done = tidings(fresh, "--config", str(tmp_path / "t.toml"), "restore", str(source[1]),
                   "--force")
    assert "5 media files" in done.stdout
    assert set(_blobs(source[0])) < set(_blobs(fresh))


def _tar(path: Path) -> tarfile.TarFile:
    return tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT)


def test_blobs_swept_during_the_backup_are_skipped_and_rotten_ones_left_out(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    shas = _store_blobs(data / "media", [b"kept", b"swept", b"rotten", b"also kept", b"linked"])
    layout = DiskBlobStore(data / "media")
    skipped: list[str] = []
    summary = list_blobs(data, tmp_path / "listing", skipped)
    assert (summary.count, summary.bytes, skipped) == (5, 30, [])
    layout.local_path(shas[1]).unlink()  # the sweep, between the listing and the copy
    layout.local_path(shas[2]).write_bytes(b"rotted")  # a disk fault
    (tmp_path / "elsewhere").write_bytes(b"linked")
    layout.local_path(shas[4]).unlink()
    layout.local_path(shas[4]).symlink_to(tmp_path / "elsewhere")  # never followed
    outcome = MediaOutcome()
    archive = tmp_path / "a.tar.gz"
    with _tar(archive) as tar:
        add_blobs(tar, data, tmp_path / "listing", outcome)
    assert (outcome.written, outcome.bytes, outcome.vanished, outcome.corrupted) == (2, 13, 1, 2)
    assert set(outcome.corrupted_paths) == {str(layout.local_path(shas[i])) for i in (2, 4)}
    with tarfile.open(archive) as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert got == {blob_name(shas[0]): b"kept", blob_name(shas[3]): b"also kept"}


def test_a_backup_longer_than_the_sweeps_grace_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    data.mkdir()
    provision(data, ["alice"])
    _store_blobs(data / "media", [b"one"])
    monkeypatch.setattr(backup_module, "GRACE_MS", 0)  # any backup outlasts no grace
    config = load_config(None, {"storage.data_dir": data})
    result = create_backup(config, None, tmp_path / "b.tar.gz", 0)
    assert result.media is not None
    assert result.media.written == 1
    assert [w for w in result.warnings if "longer than the media sweep's grace" in w]
    bare = create_backup(config, None, tmp_path / "bare.tar.gz", 0, media=False)
    assert (bare.media, bare.warnings) == (None, ())


def test_blob_names_are_the_blob_stores_layout(tmp_path: Path) -> None:
    sha = hashlib.sha256(b"z").digest()
    name = blob_name(sha)
    assert name == DiskBlobStore(Path("media")).local_path(sha).as_posix()
    assert blob_hex(name) == sha.hex()
    for bad in (name + "/", "/" + name, name.replace("media/", "data/"), name[:-1],
                name.replace(sha.hex()[:2], "00", 1), f"media/blobs/{sha.hex()}"):
        assert blob_hex(bad) is None, bad


def test_a_symlinked_blob_is_not_followed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    [sha] = _store_blobs(data / "media", [b"real"])
    secret = tmp_path / "secret"
    secret.write_bytes(b"not yours")
    fake = hashlib.sha256(b"not yours").hexdigest()
    where = data / "media" / "blobs" / fake[:2] / fake[2:4]
    where.mkdir(parents=True)
    (where / fake).symlink_to(secret)
    skipped: list[str] = []
    summary = list_blobs(data, tmp_path / "listing", skipped)
    assert summary.count == 1
    assert skipped == [f"{where / fake} (not part of the blob store)"]
    with _tar(tmp_path / "a.tar.gz") as tar:
        outcome = MediaOutcome()
        add_blobs(tar, data, tmp_path / "listing", outcome)
    assert _media_members(tmp_path / "a.tar.gz")[0].name == blob_name(sha)
