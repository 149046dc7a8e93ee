"""`SafeTree.move_file`: a staged file is renamed into place on one file system and
copied across two (a data directory on its own volume), 0600 and never via a symlink."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from appliance.backup.files import SafeTree
from appliance.errors import LifecycleError

#: A tmpfs on every Linux: another file system than the tests' temporary directory.
OTHER_FS = Path("/dev/shm")


def _move(tree: SafeTree, source: Path, parts: list[str]) -> None:
    with tree.directory(parts[:-1], create=True) as dfd:
        SafeTree.move_file(dfd, parts[-1], source, 0o600, os.geteuid(), os.getegid())


def test_same_file_system_renames(tmp_path: Path) -> None:
    staged = tmp_path / "staged"
    staged.write_bytes(b"blob")
    os.chmod(staged, 0o644)
    inode = staged.stat().st_ino
    (tmp_path / "data").mkdir()
    _move(SafeTree(tmp_path / "data"), staged, ["media", "blob"])
    moved = tmp_path / "data" / "media" / "blob"
    assert (moved.stat().st_ino, moved.read_bytes()) == (inode, b"blob")
    assert stat.S_IMODE(moved.stat().st_mode) == 0o600
    assert not staged.exists()


def test_another_file_system_copies(tmp_path: Path) -> None:
    assert OTHER_FS.stat().st_dev != tmp_path.stat().st_dev, "needs two file systems"
    with tempfile.TemporaryDirectory(dir=OTHER_FS) as other:
        staged = Path(other) / "staged"
        staged.write_bytes(b"blob" * 100_000)
        (tmp_path / "data").mkdir()
        _move(SafeTree(tmp_path / "data"), staged, ["blob"])
        moved = tmp_path / "data" / "blob"
        assert moved.read_bytes() == b"blob" * 100_000
        assert stat.S_IMODE(moved.stat().st_mode) == 0o600
        assert not staged.exists()
        assert [p.name for p in (tmp_path / "data").iterdir()] == ["blob"]  # no temporary


def test_a_symlinked_directory_is_refused(tmp_path: Path) -> None:
    staged = tmp_path / "staged"
    staged.write_bytes(b"blob")
    (tmp_path / "data").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "data" / "media").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(LifecycleError, match="a symlink or not a directory"):
        _move(SafeTree(tmp_path / "data"), staged, ["media", "blob"])
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert staged.read_bytes() == b"blob"
