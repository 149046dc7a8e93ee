"""The data directory's state files: which are backed up, and writing them back safely.

Backed up: everything in the data directory but the store itself (the
SQLite files, the private MariaDB server's files: both go in as a consistent
copy instead), the backups, the executable's temporary directory, and
temporaries (dot files), and ``media/`` (issue 15: the uploaded files'
blobs, any number of any size, are streamed into the archive on their own,
`appliance.backup.media`; state files are read whole and bounded).  Today
that is ``tls/`` (the self-signed pair and ACME certificates with their
keys), ``acme/`` (the ACME account and its state), ``ipfilter/`` and
``database`` (the recorded store choice); whatever later state lands there
is included without a change here.

Restore writes through directory file descriptors with ``O_NOFOLLOW``: a
symlink planted in the data directory (by whoever could write there) is
refused, never followed out of it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from appliance.backup.manifest import DATA_ROOT, MAX_DEPTH, MAX_FILE_BYTES, check_name
from appliance.config.database import CHOICE_FILE, PRIVATE_DIR, SQLITE_FILE
from appliance.errors import LifecycleError
from appliance.media.config import MEDIA_DIR

#: Where `tidings upgrade` keeps its pre-upgrade archives (never inside a backup).
BACKUPS_DIR: Final = "backups"
#: Top-level names of the data directory that are not state to back up.
NOT_STATE: Final = frozenset({
    SQLITE_FILE, f"{SQLITE_FILE}-wal", f"{SQLITE_FILE}-shm", f"{SQLITE_FILE}.lock",
    PRIVATE_DIR, BACKUPS_DIR, "tmp", "lost+found"})
#: Left out of the state walk: media blobs are not state files (read whole, 64 MiB
#: each, 256 MiB in all) but content-addressed uploads, streamed by
#: `appliance.backup.media`.  Not in FRESH_INSTALL: blobs are state a restore must
#: not mix with another install's without --force.
_NOT_WALKED: Final = NOT_STATE | {MEDIA_DIR}
#: What a fresh install may already have: a restore onto these needs no --force.
FRESH_INSTALL: Final = NOT_STATE | {CHOICE_FILE}
_READ_CHUNK: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class Found:
    """A file or directory of the data directory, read for the archive."""

    name: str  # "data/..." as in the archive
    st: os.stat_result
    content: bytes | None  # None for a directory


def collect(data_dir: Path, skipped: list[str]) -> list[Found]:
    """Every state file and directory under `data_dir` (directories first, by name).

    Symlinks, sockets and other special files are not state: their paths go
    to `skipped`.

    Raises:
        LifecycleError: a file is larger than the archive admits.
    """
    found = [Found(DATA_ROOT, data_dir.stat(), None)]
    for entry in _walk(data_dir, DATA_ROOT, 1, skipped):
        found.append(entry)
    return found


def _walk(directory: Path, prefix: str, depth: int, skipped: list[str]) -> Iterator[Found]:
    with os.scandir(directory) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        if entry.name.startswith(".") or (depth == 1 and entry.name in _NOT_WALKED):
            continue
        name = f"{prefix}/{entry.name}"
        st = entry.stat(follow_symlinks=False)
        try:
            check_name(name)
        except LifecycleError:
            skipped.append(f"{entry.path} (name)")
            continue
        if stat.S_ISDIR(st.st_mode) and depth < MAX_DEPTH:
            yield Found(name, st, None)
            yield from _walk(Path(entry.path), name, depth + 1, skipped)
        elif stat.S_ISREG(st.st_mode):
            if st.st_size > MAX_FILE_BYTES:
                raise LifecycleError(f"{entry.path} is larger than {MAX_FILE_BYTES} bytes",
                                     step="backup", fix="move it out of the data directory")
            yield Found(name, st, read_bounded(Path(entry.path), MAX_FILE_BYTES))
        else:
            skipped.append(entry.path)


def read_bounded(path: Path, bound: int) -> bytes:
    """The file's bytes, refusing more than `bound` (it may grow while read)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(bound + 1)
    if len(data) > bound:
        raise LifecycleError(f"{path} is larger than {bound} bytes", step="backup")
    return data


def has_state(data_dir: Path) -> list[str]:
    """The entries of `data_dir` that a fresh install does not have."""
    try:
        return sorted(e.name for e in os.scandir(data_dir) if e.name not in FRESH_INSTALL)
    except FileNotFoundError:
        return []


class SafeTree:
    """Writes under a root directory through directory fds, never following a symlink."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextlib.contextmanager
    def directory(self, parts: list[str], *, create: bool = False,
                  mode: int = 0o700) -> Iterator[int]:
        """An fd of root/parts..., each component a real directory (created if asked)."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            for part in parts:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, mode, dir_fd=fd)
                try:
                    child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                    | os.O_CLOEXEC, dir_fd=fd)
                except OSError as exc:
                    raise LifecycleError(f"{self.root}/{'/'.join(parts)}: {exc.strerror}"
                                         " (a symlink or not a directory)", step="restore"
                                         ) from None
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    def make_dir(self, parts: list[str], mode: int, uid: int, gid: int) -> None:
        with self.directory(parts, create=True, mode=mode) as fd:
            _own(fd, mode, uid, gid)

    def write_file(self, parts: list[str], source: Path, mode: int, uid: int, gid: int) -> None:
        """Copy `source` to root/parts atomically (a temporary beside it, then rename)."""
        *dirs, name = parts
        with self.directory(dirs, create=True) as dfd:
            _copy_into(dfd, name, source, mode, uid, gid)
            os.fsync(dfd)

    @staticmethod
    def move_file(dfd: int, name: str, source: Path, mode: int, uid: int, gid: int) -> None:
        """Put `source` (a file of ours in a private directory, fsynced) at `name` in the
        directory `dfd`: renamed when both are on one file system, else copied; either
        way `source` is gone.  The caller fsyncs `dfd`."""
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            _own(fd, mode, uid, gid)
        finally:
            os.close(fd)
        try:
            os.rename(source, name, dst_dir_fd=dfd)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            _copy_into(dfd, name, source, mode, uid, gid)
            source.unlink()

    def remove_file(self, parts: list[str]) -> None:
        *dirs, name = parts
        with self.directory(dirs) as dfd, contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dfd)


def _copy_into(dfd: int, name: str, source: Path, mode: int, uid: int, gid: int) -> None:
    """Copy `source` to `name` in the directory `dfd` through a temporary, fsynced."""
    temp = f".{name}.restoring"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp, dir_fd=dfd)
    out = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                  0o600, dir_fd=dfd)
    try:
        with open(source, "rb") as src:
            while block := src.read(_READ_CHUNK):
                view = memoryview(block)
                while view:
                    view = view[os.write(out, view):]
        _own(out, mode, uid, gid)
        os.fsync(out)
    except BaseException:
        os.close(out)
        os.unlink(temp, dir_fd=dfd)
        raise
    os.close(out)
    os.replace(temp, name, src_dir_fd=dfd, dst_dir_fd=dfd)


def _own(fd: int, mode: int, uid: int, gid: int) -> None:
    if os.geteuid() == 0:
        os.fchown(fd, uid, gid)
    os.fchmod(fd, mode & 0o777)
