"""`tidings backup`: one archive with the store, the configuration and the data directory."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from appliance import __version__
from appliance.backup.archive import Entry, sha256_of, write_archive
from appliance.backup.files import BACKUPS_DIR, collect, read_bounded
from appliance.backup.manifest import (
    BACKENDS,
    CONFIG_MEMBER,
    MAX_FILE_BYTES,
    BackupManifest,
    MediaSummary,
    Member,
)
from appliance.backup.media import MediaOutcome, add_blobs, list_blobs
from appliance.backup.owner import Owner, group_name, switching, user_name
from appliance.backup.store import dump
from appliance.config import ApplianceConfig
from appliance.config.database import resolve_database
from appliance.errors import LifecycleError
from appliance.media.sweep import GRACE_MS


@dataclass(frozen=True, slots=True)
class BackupResult:
    """What `create_backup` wrote."""

    path: Path
    manifest: BackupManifest
    #: Special files and odd names in the data directory that were left out.
    skipped: tuple[str, ...]
    #: The media blobs written (None: left out, ``--no-media``).
    media: MediaOutcome | None = None
    #: What the operator should know (corrupted or late blobs).
    warnings: tuple[str, ...] = ()


def default_output(data_dir: Path, now_ms: int, label: str = "") -> Path:
    """``<data_dir>/backups/tidings-<version>[-label]-<UTC time>.tar.gz``."""
    stamp = datetime.fromtimestamp(now_ms / 1000, UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    name = f"{label}-{stamp}" if label else f"tidings-{__version__}-{stamp}"
    return data_dir / BACKUPS_DIR / f"{name}.tar.gz"


def create_backup(config: ApplianceConfig, config_path: Path | None, output: Path | None,
                  now_ms: int, *, media: bool = True) -> BackupResult:
    """Write the archive (0600) at `output` (default: `default_output`).

    The store is copied consistently while a server may be running on it;
    then, with `media`, the media blobs (`appliance.backup.media` says why
    that order is enough).

    Raises:
        LifecycleError: a step failed (nothing is left behind but what existed).
        StorageError: the store is unreachable.
        ConfigError: the database setting is wrong.
    """
    data_dir = config.storage.data_dir
    if not data_dir.is_dir():
        raise LifecycleError(f"no data directory {data_dir}", step="backup",
                             fix="pass --data-dir or --config")
    location = resolve_database(config.storage.database, data_dir)
    owner = Owner.of(data_dir)
    target = (output or default_output(data_dir, now_ms)).absolute()
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    began = time.monotonic()  # before the store's consistent moment: see backup.media
    # The store's copy is written by its owner (as root: `as_owner`), so it is
    # staged where the owner may write: in the data directory (a dot name is
    # never backed up itself), on the store's file system.
    staging = Path(tempfile.mkdtemp(dir=data_dir, prefix=".backup-"))
    try:
        if switching(owner):
            os.chown(staging, owner.uid, owner.gid)  # the store is copied as its owner
        store_file = staging / "store"
        version = dump(location, data_dir, store_file, owner, config.storage.timeout_s)
        origin = location.sqlite_path if location.kind == "sqlite" else None
        entries = [_file_entry(BACKENDS[location.kind], store_file,
                               (origin or store_file).stat())]
        if config_path is not None:
            data = read_bounded(config_path, MAX_FILE_BYTES)
            entries.append(_file_entry(CONFIG_MEMBER, data, config_path.stat()))
        skipped: list[str] = []
        for found in collect(data_dir, skipped):
            if found.content is None:
                entries.append(_dir_entry(found.name, found.st))
            else:
                entries.append(_file_entry(found.name, found.content, found.st))
        listing = staging / "blobs"
        summary = list_blobs(data_dir, listing, skipped) if media else MediaSummary()
        manifest = BackupManifest(__version__, version, location.kind, now_ms, str(data_dir),
                                  str(config_path or ""), tuple(e.member for e in entries),
                                  summary)
        manifest.check()
        outcome = MediaOutcome() if media else None
        write_archive(target, manifest, entries, None if outcome is None else
                      lambda tar: add_blobs(tar, data_dir, listing, outcome))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    late = time.monotonic() - began > GRACE_MS / 1000
    return BackupResult(target, manifest, tuple(skipped), outcome,
                        _warnings(outcome, late) if outcome is not None else ())


def _warnings(outcome: MediaOutcome, late: bool) -> tuple[str, ...]:
    said = []
    if outcome.corrupted:
        said.append(f"{outcome.corrupted} media blobs no longer match their sha256 (a disk"
                    " fault?) and were left out: " + ", ".join(outcome.corrupted_paths))
    if late:
        said.append(f"the backup took longer than the media sweep's grace"
                    f" ({GRACE_MS // 60000} min): a file deleted meanwhile may be in the"
                    " store's copy without its bytes")
    return tuple(said)


def _file_entry(name: str, source: bytes | Path, st: os.stat_result) -> Entry:
    """A file as the original `st` was: mode and owner (the store's, not the copy's)."""
    digest, size = sha256_of(source)
    member = Member(name, "file", st.st_mode & 0o777, size, digest, user_name(st.st_uid),
                    group_name(st.st_gid))
    return Entry(member, source, st.st_uid, st.st_gid, st.st_mtime)


def _dir_entry(name: str, st: os.stat_result) -> Entry:
    member = Member(name, "dir", st.st_mode & 0o777, owner=user_name(st.st_uid),
                    group=group_name(st.st_gid))
    return Entry(member, None, st.st_uid, st.st_gid, st.st_mtime)
