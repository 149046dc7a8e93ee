"""`tidings restore`: an archive back onto a (fresh) install.

Order, so that a refusal changes nothing: read and check the whole archive
into a private staging directory; check its schema against this build, its
configuration, its backend against the configured store; refuse a data
directory or store that already holds state (unless forced) and a store a
server runs on (its lock, then held to the end); only then write the files,
move the media blobs into place (before the store that refers to them),
load the store and migrate it to this build's schema.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.backup.archive import extract_verified
from appliance.backup.files import SafeTree, has_state
from appliance.backup.manifest import CONFIG_MEMBER, DATA_ROOT, BackupManifest, Member
from appliance.backup.media import check_room, install_blobs
from appliance.backup.owner import Owner, as_owner, gid_of, login_as, uid_of
from appliance.backup.store import load
from appliance.config import ApplianceConfig
from appliance.config.database import (
    CHOICE_FILE,
    DatabaseLocation,
    parse_database,
    resolve_database,
)
from appliance.errors import LifecycleError, StorageError
from appliance.service.database import running
from appliance.storage import maintenance, snapshot

#: Loads the configuration from a file (None: defaults), the CLI's overrides applied.
ConfigLoader = Callable[[Path | None], ApplianceConfig]


@dataclass(frozen=True, slots=True)
class RestoreResult:
    manifest: BackupManifest
    data_dir: Path
    location: DatabaseLocation
    config_written: Path | None
    files: int
    migrated: tuple[int, ...]
    #: Media blobs put in place.
    blobs: int = 0


def restore(archive: Path, config_path: Path | None, load_config: ConfigLoader, *,
            force: bool, now_ms: int, store_only: bool = False) -> RestoreResult:
    """Restore `archive`; the configuration goes to `config_path` (None: not restored).

    `store_only` (an upgrade's rollback): the store alone, over what is there.

    Raises:
        LifecycleError: refused or failed; before the writing starts, nothing changed.
        StorageError: the store is unreachable, or a server runs on it.
        ConfigError: the archived configuration is invalid.
    """
    current = load_config(config_path if config_path and config_path.exists() else None)
    parent = current.storage.data_dir.parent
    staging = Path(tempfile.mkdtemp(dir=parent if parent.is_dir() else None,
                                    prefix=".tidings-restore-"))
    try:
        manifest = extract_verified(archive, staging)
        return _restore(manifest, staging, config_path, load_config, current,
                        force=force or store_only, now_ms=now_ms, store_only=store_only)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _restore(manifest: BackupManifest, staging: Path, config_path: Path | None,
             load_config: ConfigLoader, current: ApplianceConfig, *, force: bool,
             now_ms: int, store_only: bool) -> RestoreResult:
    known = snapshot.known_schema_version(manifest.backend)
    if manifest.schema_version > known:
        raise LifecycleError(f"the backup's schema version {manifest.schema_version} is newer"
                             f" than this build's ({known})", step="restore",
                             fix=f"restore with tidings {manifest.tidings_version} or newer")
    members = manifest.by_name()
    staged_config = staging / CONFIG_MEMBER
    write_config = (not store_only and config_path is not None and CONFIG_MEMBER in members)
    config = load_config(staged_config) if write_config else current
    data_dir = config.storage.data_dir
    location = _location(config, staging, data_dir, store_only)
    if location.kind != manifest.backend:
        raise LifecycleError(f"the archive holds a {manifest.backend} store; this install uses"
                             f" {location.describe()}", step="restore",
                             fix="configure the same kind of store, restore, then move it"
                                 " with `tidings db copy`")
    if not force and (state := has_state(data_dir)):
        raise LifecycleError(f"{data_dir} already holds {', '.join(state[:6])}",
                             step="restore", fix="restore onto a fresh install, or --force")
    root = members[DATA_ROOT]
    if not store_only and not data_dir.exists():
        data_dir.mkdir(parents=True, mode=0o700)
    owner = _owner(root, data_dir) if not store_only else Owner.of(data_dir)
    if not store_only:
        check_room(staging, data_dir, manifest.media)
    timeout = config.storage.timeout_s
    with running(location, data_dir), contextlib.ExitStack() as held:
        login = login_as(location, owner)
        with as_owner(owner):
            held.enter_context(snapshot.exclusive(login, timeout))
            if not force and snapshot.holds_users(login, timeout):
                raise LifecycleError(f"{location.describe()} already holds users",
                                     step="restore", fix="restore onto a fresh install, or"
                                                         " --force")
        files = blobs = 0
        if not store_only:
            files = _write_files(manifest, staging, data_dir, owner)
            blobs = install_blobs(staging, data_dir, owner)
            if write_config:
                assert config_path is not None
                _write_config(members[CONFIG_MEMBER], staged_config, config_path)
        _load_store(manifest, staging, location, owner, timeout)
        with as_owner(owner):
            migrated = maintenance.migrate(login, timeout, now_ms)
    return RestoreResult(manifest, data_dir, location, config_path if write_config else None,
                         files, tuple(migrated), blobs)


def _location(config: ApplianceConfig, staging: Path, data_dir: Path,
              store_only: bool) -> DatabaseLocation:
    """The store the restored install uses: the install's own choice (its setting, or
    the one its data directory records: a fresh install's ``db bootstrap``), else
    the archived choice, else the embedded default."""
    setting = config.storage.database
    choice = staging / DATA_ROOT / CHOICE_FILE
    if (not setting.strip() and not store_only and not (data_dir / CHOICE_FILE).exists()
            and choice.is_file()):
        text = choice.read_text(encoding="utf-8").strip()
        return parse_database(text, data_dir, key=f"{CHOICE_FILE} in the archive")
    return resolve_database(setting, data_dir)


def _owner(root: Member, data_dir: Path) -> Owner:
    """The data directory's owner after the restore: the archived names as this machine
    numbers them, else whoever owns it now."""
    st = data_dir.stat()
    uid, gid = uid_of(root.owner, st.st_uid), gid_of(root.group, st.st_gid)
    return Owner(uid, gid, root.owner, root.group)


def _write_files(manifest: BackupManifest, staging: Path, data_dir: Path, owner: Owner) -> int:
    tree = SafeTree(data_dir)
    written = 0
    # Directories first (shallow to deep), so each file lands in its own.
    members = sorted((m for m in manifest.members if m.name.split("/")[0] == DATA_ROOT),
                     key=lambda m: (m.kind != "dir", m.name.count("/"), m.name))
    for member in members:
        parts = member.name.split("/")[1:]
        if parts == [CHOICE_FILE] and (data_dir / CHOICE_FILE).exists():
            continue  # this install's own choice stands (`_location`)
        uid, gid = uid_of(member.owner, owner.uid), gid_of(member.group, owner.gid)
        if member.kind == "dir":
            tree.make_dir(parts, member.mode, uid, gid)
        else:
            tree.write_file(parts, staging / member.name, member.mode, uid, gid)
            written += 1
    return written


def _write_config(member: Member, staged: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    SafeTree(target.parent).write_file([target.name], staged, member.mode,
                                       uid_of(member.owner, 0), gid_of(member.group, 0))


def _load_store(manifest: BackupManifest, staging: Path, location: DatabaseLocation,
                owner: Owner, timeout_s: float) -> None:
    staged = staging / manifest.store_member
    if location.kind == "sqlite":
        assert location.sqlite_path is not None
        path = location.sqlite_path
        member = manifest.by_name()[manifest.store_member]
        snapshot.sqlite_file_version(staged)  # a sound file before it replaces anything
        tree = SafeTree(path.parent)
        # A WAL left by the previous file would be replayed into the new one.
        for suffix in ("-wal", "-shm"):
            tree.remove_file([path.name + suffix])
        tree.write_file([path.name], staged, member.mode or 0o600,
                        uid_of(member.owner, owner.uid), gid_of(member.group, owner.gid))
        return
    try:
        with as_owner(owner):
            snapshot.drop_all_tables(login_as(location, owner), timeout_s)
        load(location, staged, owner)
    except StorageError as exc:
        raise LifecycleError(str(exc), step=f"loading the dump into {location.describe()}"
                             ) from None
