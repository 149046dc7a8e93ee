"""Writing the backup archive, and reading one back into a staging directory.

The archive is a gzip-compressed POSIX (pax) tar whose first member is
``MANIFEST.json`` (`appliance.backup.manifest`).  It is written to a
temporary file 0600 beside the target and linked into place only when
complete and fsynced: a reader never sees half an archive, and an existing
file is never overwritten.

Reading is one pass over the compressed stream (``r|gz``: no seeking, no
member table read ahead of the data): every member must be a plain file or
directory that the manifest lists, pass tarfile's ``data`` filter (no
absolute path, no ``..``, no link, no device) and our own name allowlist,
have exactly the size the manifest says, and hash to its sha256.  Media
blobs, which the manifest only counts, must pass the same filter and
`appliance.backup.media`'s rules, and hash to their names.  Members are
written only into a private staging directory; the caller installs nothing
until every member has checked out.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from appliance.backup.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, BackupManifest, Member
from appliance.backup.media import BlobBudget
from appliance.errors import LifecycleError

_CHUNK: Final = 1 << 20
#: Free space kept on the staging file system beyond what the archive needs.
_DISK_MARGIN: Final = 64 << 20
_COMPRESSLEVEL: Final = 6
_STEP: Final = "backup archive"


@dataclass(frozen=True, slots=True)
class Entry:
    """A member to write: its manifest entry, its bytes (or a file), its header."""

    member: Member
    source: bytes | Path | None
    uid: int
    gid: int
    mtime: float


def sha256_of(source: bytes | Path) -> tuple[str, int]:
    """(hex sha256, size) of bytes or a file."""
    digest = hashlib.sha256()
    if isinstance(source, bytes):
        digest.update(source)
        return digest.hexdigest(), len(source)
    size = 0
    with source.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def write_archive(target: Path, manifest: BackupManifest, entries: Iterable[Entry],
                  tail: Callable[[tarfile.TarFile], None] | None = None) -> None:
    """Write the archive at `target` (0600), atomically; refuses an existing `target`.

    `tail` adds the members the manifest does not list (the media blobs) last.

    Raises:
        LifecycleError: `target` exists, or the file system refused.
    """
    if target.exists():
        raise LifecycleError(f"{target} exists", step="backup", fix="choose another --output")
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT,
                              compresslevel=_COMPRESSLEVEL) as tar:
                data = manifest.to_json()
                _add(tar, _info(MANIFEST_NAME, "file", 0o600, len(data), 0, 0, "", "",
                                manifest.created_ms / 1000), io.BytesIO(data))
                for entry in entries:
                    _add_entry(tar, entry)
                if tail is not None:
                    tail(tar)
            raw.flush()
            os.fsync(raw.fileno())
        os.link(temp, target)  # no-clobber: fails if someone made `target` meanwhile
        _fsync_dir(target.parent)
    except FileExistsError:
        raise LifecycleError(f"{target} exists", step="backup",
                             fix="choose another --output") from None
    except OSError as exc:
        raise LifecycleError(f"cannot write {target}: {exc.strerror}", step="backup") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def _add_entry(tar: tarfile.TarFile, entry: Entry) -> None:
    m = entry.member
    info = _info(m.name, m.kind, m.mode, m.size, entry.uid, entry.gid, m.owner, m.group,
                 entry.mtime)
    if entry.source is None:
        tar.addfile(info)
    elif isinstance(entry.source, bytes):
        _add(tar, info, io.BytesIO(entry.source))
    else:
        with entry.source.open("rb") as handle:
            _add(tar, info, handle)


def _add(tar: tarfile.TarFile, info: tarfile.TarInfo, handle: IO[bytes]) -> None:
    tar.addfile(info, handle)


def _info(name: str, kind: str, mode: int, size: int, uid: int, gid: int, owner: str,
          group: str, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if kind == "dir" else tarfile.REGTYPE
    info.mode, info.size = mode, size
    info.uid, info.gid, info.uname, info.gname = uid, gid, owner, group
    info.mtime = mtime
    return info


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def extract_verified(archive: Path, staging: Path) -> BackupManifest:
    """Read `archive` into `staging` (an empty private directory), checking every member.

    Raises:
        LifecycleError: unreadable, hostile or corrupted; `staging` may hold
            partial files (the caller removes it), nothing else was written.
    """
    try:
        with archive.open("rb") as raw, tarfile.open(fileobj=raw, mode="r|gz") as tar:
            return _extract(tar, staging)
    except FileNotFoundError:
        raise LifecycleError(f"{archive} not found", step="restore") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise LifecycleError(f"{archive} is not a readable backup archive: {exc}",
                             step=_STEP) from None


def _extract(tar: tarfile.TarFile, staging: Path) -> BackupManifest:
    first = tar.next()
    if first is None or first.name != MANIFEST_NAME or not first.isreg() \
            or not 0 < first.size <= MAX_MANIFEST_BYTES:
        raise LifecycleError(f"the archive does not start with {MANIFEST_NAME}", step=_STEP)
    handle = tar.extractfile(first)
    assert handle is not None
    manifest = BackupManifest.from_json(handle.read(MAX_MANIFEST_BYTES + 1))
    expected = manifest.by_name()
    need = sum(m.size for m in manifest.members) + manifest.media.bytes
    if need + _DISK_MARGIN > shutil.disk_usage(staging).free:
        raise LifecycleError(f"the archive needs {need >> 20} MiB; {staging.parent} has less"
                             " free", step="restore", fix="free some space")
    seen: set[str] = set()
    blobs = BlobBudget(manifest.media)
    while (info := tar.next()) is not None:
        _filter(info, staging)
        if info.name.startswith("media/"):
            digest = blobs.admit(info)
            _stage(_content(tar, info), staging / info.name, info.name, info.size, digest,
                   durable=True)
            continue
        member = _admit(info, expected, seen)
        seen.add(member.name)
        if member.kind == "file":
            _stage(_content(tar, info), staging / member.name, member.name, member.size,
                   member.sha256)
        else:
            (staging / member.name).mkdir(mode=0o700, parents=True, exist_ok=True)
    missing = sorted(set(expected) - seen)
    if missing:
        raise LifecycleError(f"members missing from the archive: {', '.join(missing[:5])}",
                             step=_STEP)
    return manifest


def _content(tar: tarfile.TarFile, info: tarfile.TarInfo) -> IO[bytes]:
    source = tar.extractfile(info)
    assert source is not None  # a plain file: admitted
    return source


def _filter(info: tarfile.TarInfo, staging: Path) -> None:
    """Refuse a member that would leave `staging` or is a link or device, whatever its name."""
    if info.name.startswith("/") or ".." in info.name.split("/"):
        # tarfile's filter would strip the slash; such an archive is hostile all the same.
        raise LifecycleError(f"hostile member refused: {info.name[:200]!r} leaves the"
                             " destination", step=_STEP)
    try:
        tarfile.data_filter(info, str(staging))
    except tarfile.FilterError as exc:
        raise LifecycleError(f"hostile member refused: {exc}", step=_STEP) from None


def _admit(info: tarfile.TarInfo, expected: dict[str, Member], seen: set[str]) -> Member:
    """The manifest entry of `info` (past `_filter`), once it passed every check."""
    if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE):
        raise LifecycleError(f"member {info.name[:200]!r} is not a plain file or directory",
                             step=_STEP)
    member = expected.get(info.name)
    if member is None or info.name in seen:
        raise LifecycleError(f"member {info.name[:200]!r} is not in the manifest (or twice"
                             " in the archive)", step=_STEP)
    kind = "dir" if info.type == tarfile.DIRTYPE else "file"
    if (kind, info.size if kind == "file" else 0, info.mode) != \
            (member.kind, member.size, member.mode):
        raise LifecycleError(f"member {info.name!r}: type, size or mode differ from the"
                             " manifest", step=_STEP)
    return member


def _stage(source: IO[bytes], path: Path, name: str, size: int, sha256: str, *,
           durable: bool = False) -> None:
    """Write `size` bytes of `source` at `path` (new), checking they hash to `sha256`;
    `durable`: fsynced (a blob is renamed into place, not copied)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    digest = hashlib.sha256()
    left = size
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    with os.fdopen(fd, "wb") as out:
        while left > 0:
            block = source.read(min(_CHUNK, left))
            if not block:
                break
            digest.update(block)
            out.write(block)
            left -= len(block)
        if durable:
            out.flush()
            os.fsync(out.fileno())
    if left or digest.hexdigest() != sha256:
        what = "its name" if durable else "the manifest"
        raise LifecycleError(f"member {name!r} is corrupted: its sha256 does not match {what}",
                             step=_STEP, fix="nothing was restored")
