"""Media blobs in the backup archive (issue 15): written streamed, read back verified.

On disk the blobs are `DiskBlobStore`'s: ``<data_dir>/media/blobs/ab/cd/<hex>``,
where ``<hex>`` is the SHA-256 of the bytes.  In the archive they are members
of the same name under ``media/``, after every other member, in name order,
each added from its open file (never read whole: a blob may be as large as
``media.max_file_bytes``, and there may be millions).  The manifest holds
only their count and bytes (`MediaSummary`): the name is the checksum.
``media/tmp`` (unfinished uploads, an image worker's transient outputs) is
not backed up: an upload cut by a restore is started again by its client.

Consistency.  The store is copied first (its consistent moment Tc comes
after the backup began, T0), the blobs after.  A blob the copy refers to was
on disk at Tc: the files service commits a blob's bytes before the store
takes the reference (`FileStore.complete_file`, `save_variant`).  After Tc
it may lose its last reference, at T1 >= Tc, which stamps the row's
``unreferenced_since_ms``; the sweep (`appliance.media.sweep`) deletes only
blobs unreferenced since before ``now - GRACE_MS``, and `DiskBlobStore.delete`
spares one touched since.  So a blob the copy needs stays on disk until
T1 + GRACE_MS >= T0 + GRACE_MS: a blob walk that ends within the grace of
T0 finds all of them.  A longer one is reported (`late`).  A blob that
vanishes during the walk (the sweep removed it: the copy does not need it)
is left out, not an error.  Blobs the copy does not refer to (uploaded
since) are copied too; they cost space, nothing else.

Each blob is hashed before it is added: one whose bytes no longer match its
name (a disk fault) is left out and reported, since it would make restore
refuse the whole archive.

Restore admits a media member only under that exact name (a ``..``, a link,
a device, another prefix is refused), as a plain file 0600 of at most
`MAX_BLOB_BYTES`, in strictly increasing name order (no duplicate, no
memory per blob), within the manifest's count and bytes; `archive` stages
it hashing it against its name.  `install_blobs` then moves the staged
blobs into place, 0600 in directories 0700, owned by the data directory's
owner.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import stat
import struct
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from appliance.backup.files import SafeTree
from appliance.backup.manifest import MAX_BLOB_BYTES, MediaSummary
from appliance.backup.owner import Owner, group_name, user_name
from appliance.errors import LifecycleError
from appliance.media.blobs import DiskBlobStore
from appliance.media.config import MEDIA_DIR

#: Archive names of blobs: what `DiskBlobStore.local_path` makes under ``media``.
BLOB_NAME: Final = re.compile(r"media/blobs/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{64})")
#: The listing of blobs to write, in a file (not memory): SHA-256 and size.
_RECORD: Final = struct.Struct(">32sQ")
_HEX2: Final = re.compile(r"[0-9a-f]{2}")
_CHUNK: Final = 1 << 20
#: Corrupted blobs named in the report (the count is always given).
_NAMED: Final = 20
_DIR_MODE, _FILE_MODE = 0o700, 0o600
_STEP: Final = "backup archive"


def _layout(root: Path) -> DiskBlobStore:
    """The blob store's own layout (paths only: constructing it touches no disk)."""
    return DiskBlobStore(root / MEDIA_DIR)


def blob_name(sha256: bytes) -> str:
    """The archive member name of a blob: ``media/blobs/ab/cd/<hex>``."""
    return _layout(Path()).local_path(sha256).as_posix()


def blob_hex(name: str) -> str | None:
    """The SHA-256 (hex) a member name stands for, or None if it is not a blob's name."""
    match = BLOB_NAME.fullmatch(name)
    if match is None or match[3][:2] != match[1] or match[3][2:4] != match[2]:
        return None
    return match[3]


# --- backup -----------------------------------------------------------------


def list_blobs(data_dir: Path, listing: Path, skipped: list[str]) -> MediaSummary:
    """Write the blobs under `data_dir` to the file `listing`; their count and bytes.

    Anything in the blob tree that is not a blob (a stray file, a symlink, a
    wrong name) goes to `skipped`.
    """
    count = total = 0
    with listing.open("xb") as out:
        for sha256, size in _walk(_layout(data_dir).blob_dir, skipped):
            out.write(_RECORD.pack(sha256, size))
            count += 1
            total += size
    return MediaSummary(True, count, total)


def _walk(blob_dir: Path, skipped: list[str]) -> Iterator[tuple[bytes, int]]:
    """(SHA-256, size) of every blob, in name order; a directory that vanished is empty."""
    for first in _entries(blob_dir, skipped, directories=True):
        for second in _entries(Path(first.path), skipped, directories=True):
            for blob in _entries(Path(second.path), skipped, directories=False):
                digest = blob.name
                if (len(digest) != 64 or digest[:2] != first.name or digest[2:4] != second.name
                        or any(c not in "0123456789abcdef" for c in digest)):
                    skipped.append(f"{blob.path} (not a blob's name)")
                    continue
                try:
                    size = blob.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue  # swept meanwhile
                if size > MAX_BLOB_BYTES:
                    skipped.append(f"{blob.path} (larger than {MAX_BLOB_BYTES} bytes)")
                    continue
                yield bytes.fromhex(digest), size


def _entries(directory: Path, skipped: list[str], *, directories: bool) -> list[os.DirEntry[str]]:
    """The directory's entries of the wanted kind, by name; others go to `skipped`."""
    try:
        with os.scandir(directory) as it:
            found = sorted(it, key=lambda e: e.name)
    except FileNotFoundError:
        return []
    kept = []
    for entry in found:
        if entry.name.startswith("."):
            continue  # a blob store's temporary
        try:
            mode = entry.stat(follow_symlinks=False).st_mode
        except FileNotFoundError:
            continue
        wanted = (stat.S_ISDIR(mode) and _HEX2.fullmatch(entry.name) is not None
                  if directories else stat.S_ISREG(mode))
        if wanted:
            kept.append(entry)
        else:
            skipped.append(f"{entry.path} (not part of the blob store)")
    return kept


@dataclass(slots=True)
class MediaOutcome:
    """What `add_blobs` wrote and left out."""

    written: int = 0
    bytes: int = 0
    #: Deleted (by the sweep) between the listing and the copy.
    vanished: int = 0
    corrupted: int = 0
    #: The first few corrupted blobs' paths.
    corrupted_paths: list[str] = field(default_factory=list)

    def corrupt(self, path: Path) -> None:
        """Count a blob left out because its bytes no longer match its name."""
        self.corrupted += 1
        if len(self.corrupted_paths) < _NAMED:
            self.corrupted_paths.append(str(path))


def add_blobs(tar: tarfile.TarFile, data_dir: Path, listing: Path, outcome: MediaOutcome
              ) -> None:
    """Add the listed blobs to `tar`, each streamed from its open file."""
    layout = _layout(data_dir)
    with listing.open("rb") as records:
        while record := records.read(_RECORD.size):
            sha256, size = _RECORD.unpack(record)
            path = layout.local_path(sha256)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                outcome.vanished += 1  # swept since the listing: the copy does not need it
                continue
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise LifecycleError(f"cannot read {path}: {exc.strerror}", step="backup",
                                         fix="run it as root or as the service's user"
                                         ) from None
                outcome.corrupt(path)  # a symlink now: not a blob
                continue
            with os.fdopen(fd, "rb") as handle:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_size != size \
                        or _digest(handle) != sha256:
                    outcome.corrupt(path)
                    continue
                handle.seek(0)
                tar.addfile(_info(sha256, st), handle)
            outcome.written += 1
            outcome.bytes += size


def _digest(handle: IO[bytes]) -> bytes:
    digest = hashlib.sha256()
    while block := handle.read(_CHUNK):
        digest.update(block)
    return digest.digest()


def _info(sha256: bytes, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(blob_name(sha256))
    info.type, info.mode, info.size = tarfile.REGTYPE, _FILE_MODE, st.st_size
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname, info.gname = user_name(st.st_uid), group_name(st.st_gid)
    info.mtime = st.st_mtime
    return info


# --- restore ----------------------------------------------------------------


@dataclass(slots=True)
class BlobBudget:
    """What an archive may still hold of media, by its manifest, while it is read."""

    summary: MediaSummary
    count: int = 0
    bytes: int = 0
    last: str = ""

    def admit(self, info: tarfile.TarInfo) -> str:
        """The SHA-256 (hex) of a media member, once its name, type, mode and size
        passed; the caller stages it and checks its bytes against that.

        Raises:
            LifecycleError: hostile, out of order, or beyond the manifest.
        """
        name = info.name[:200]
        digest = blob_hex(info.name)
        if digest is None:
            raise LifecycleError(f"hostile member refused: {name!r} is not a media blob's"
                                 " name (media/blobs/ab/cd/<sha256 starting abcd>)", step=_STEP)
        if not self.summary.included:
            raise LifecycleError(f"member {name!r}: the manifest says the archive holds no"
                                 " media", step=_STEP)
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or info.mode != _FILE_MODE \
                or not 0 <= info.size <= MAX_BLOB_BYTES:
            raise LifecycleError(f"member {name!r} is not a plain file 0600 of at most"
                                 f" {MAX_BLOB_BYTES} bytes", step=_STEP)
        if info.name <= self.last:
            raise LifecycleError(f"member {name!r} is out of order or twice in the archive",
                                 step=_STEP)
        self.count += 1
        self.bytes += info.size
        if self.count > self.summary.count or self.bytes > self.summary.bytes:
            raise LifecycleError("the archive holds more media than its manifest says",
                                 step=_STEP)
        self.last = info.name
        return digest


def check_room(staging: Path, data_dir: Path, summary: MediaSummary) -> None:
    """Refuse early when the blobs, staged on another file system, do not fit in
    `data_dir` (then they are copied, not renamed).

    Raises:
        LifecycleError: not enough free space.
    """
    if not summary.count or staging.stat().st_dev == data_dir.stat().st_dev:
        return
    if summary.bytes > shutil.disk_usage(data_dir).free:
        raise LifecycleError(f"the media need {summary.bytes >> 20} MiB; {data_dir} has less"
                             " free", step="restore", fix="free some space")


def install_blobs(staging: Path, data_dir: Path, owner: Owner) -> int:
    """Move the staged (verified) blobs into `data_dir`'s blob store; how many.

    A blob already there is replaced by the same bytes (its name is its hash).
    """
    source = _layout(staging).blob_dir
    if not source.is_dir():
        return 0
    try:
        return _move_all(source, SafeTree(data_dir), owner)
    except OSError as exc:
        raise LifecycleError(f"cannot put the media blobs into {data_dir}: {exc.strerror}",
                             step="restore", fix="fix that, then restore again with --force"
                             ) from None


def _move_all(source: Path, tree: SafeTree, owner: Owner) -> int:
    target = _layout(Path())
    top = [*target.blob_dir.parts]
    tree.make_dir([MEDIA_DIR], _DIR_MODE, owner.uid, owner.gid)
    tree.make_dir(top, _DIR_MODE, owner.uid, owner.gid)
    moved = 0
    for first in sorted(os.listdir(source)):
        tree.make_dir([*top, first], _DIR_MODE, owner.uid, owner.gid)
        for second in sorted(os.listdir(source / first)):
            parts = [*top, first, second]
            tree.make_dir(parts, _DIR_MODE, owner.uid, owner.gid)
            with tree.directory(parts) as dfd:
                for name in sorted(os.listdir(source / first / second)):
                    SafeTree.move_file(dfd, name, source / first / second / name, _FILE_MODE,
                                       owner.uid, owner.gid)
                    moved += 1
                os.fsync(dfd)
    with contextlib.suppress(OSError), tree.directory([MEDIA_DIR]) as fd:
        os.fsync(fd)
    return moved


__all__ = ["BLOB_NAME", "BlobBudget", "MediaOutcome", "add_blobs", "blob_hex", "blob_name",
           "check_room", "install_blobs", "list_blobs"]
