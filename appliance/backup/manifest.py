"""The backup archive's manifest and the names its members may have.

A member name is the allowlist's, nothing else: ``store/<file>``,
``config/tidings.toml``, ``data`` (the data directory itself) and
``data/<relative path>`` whose every component is a plain name (no ``..``,
no leading dot, no slash, bounded length and depth).  A hostile archive is
refused on its names before any byte of it is written.

Format 2 (issue 15) adds the media blobs: members ``media/blobs/ab/cd/<hex>``
that the manifest does not list one by one (there may be millions; a blob's
name is its SHA-256, which is what restore checks), only as a `MediaSummary`
(`appliance.backup.media`).  Format 1 archives (issue 14) have none and are
still read.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Final

from appliance.errors import LifecycleError

MANIFEST_NAME: Final = "MANIFEST.json"
#: The archive format written; a reader refuses formats it does not know.
FORMAT: Final = 2
#: The formats this build reads: 1 (issue 14) has no media section.
READABLE_FORMATS: Final = frozenset({1, FORMAT})
MAX_MANIFEST_BYTES: Final = 1 << 20
MAX_MEMBERS: Final = 4096
#: A configuration file, key, certificate or list in the data directory.
MAX_FILE_BYTES: Final = 64 << 20
#: Everything but the store together.
MAX_FILES_TOTAL_BYTES: Final = 256 << 20
#: The store itself (an embedded SQLite file or a MariaDB dump).
MAX_STORE_BYTES: Final = 1 << 40
MAX_DEPTH: Final = 8
#: One media blob.  Generous: `media.max_file_bytes` has no ceiling of its own; what
#: really bounds a restore is the free space checked against `MediaSummary.bytes`.
MAX_BLOB_BYTES: Final = 1 << 40
#: All media blobs together, and how many (range checks, not policy).
MAX_MEDIA_BYTES: Final = 1 << 56
MAX_MEDIA_BLOBS: Final = 1 << 40

SQLITE_MEMBER: Final = "store/tidings.sqlite3"
MARIADB_MEMBER: Final = "store/mariadb.sql"
CONFIG_MEMBER: Final = "config/tidings.toml"
DATA_ROOT: Final = "data"
BACKENDS: Final = {"sqlite": SQLITE_MEMBER, "mariadb": MARIADB_MEMBER}

_COMPONENT: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@+=-]{0,127}")
_SHA256: Final = re.compile(r"[0-9a-f]{64}")
_OWNER: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,31}")
_STEP: Final = "backup archive"


def check_name(name: str) -> None:
    """Raise LifecycleError unless `name` is one the allowlist admits."""
    if name in (SQLITE_MEMBER, MARIADB_MEMBER, CONFIG_MEMBER, DATA_ROOT):
        return
    parts = name.split("/")
    if (parts[0] == DATA_ROOT and 1 < len(parts) <= MAX_DEPTH + 1 and len(name) <= 1024
            and all(_COMPONENT.fullmatch(p) for p in parts[1:])):
        return
    raise LifecycleError(f"member {name[:200]!r} is not one a backup holds", step=_STEP,
                         fix="this archive was not written by `tidings backup`")


@dataclass(frozen=True, slots=True)
class Member:
    """One file or directory of the archive, as the backup saw it."""

    name: str
    kind: str  # "file" or "dir"
    mode: int
    size: int = 0
    sha256: str = ""
    owner: str = ""
    group: str = ""

    def check(self) -> None:
        """Raise LifecycleError unless every field is in range."""
        check_name(self.name)
        bound = MAX_STORE_BYTES if self.name.startswith("store/") else MAX_FILE_BYTES
        ok = (self.kind in ("file", "dir") and 0 <= self.mode <= 0o777
              and _OWNER.fullmatch(self.owner or "x") is not None
              and _OWNER.fullmatch(self.group or "x") is not None)
        if self.kind == "file":
            ok = ok and 0 <= self.size <= bound and _SHA256.fullmatch(self.sha256) is not None
        else:
            ok = ok and self.size == 0 and not self.sha256 and (
                self.name == DATA_ROOT or self.name.startswith(DATA_ROOT + "/"))
        if not ok:
            raise LifecycleError(f"manifest entry for {self.name!r} is malformed", step=_STEP)


@dataclass(frozen=True, slots=True)
class MediaSummary:
    """The media blobs of an archive, as counted before they were written.

    `count` and `bytes` are upper bounds: a blob the sweep deleted while the
    backup ran is left out (`appliance.backup.media`), so an archive may hold
    fewer.  `included` is False for ``--no-media`` and pre-upgrade backups.
    """

    included: bool = False
    count: int = 0
    bytes: int = 0

    def check(self) -> None:
        if not (0 <= self.count <= MAX_MEDIA_BLOBS and 0 <= self.bytes <= MAX_MEDIA_BYTES
                and (self.included or self.count == self.bytes == 0)):
            raise LifecycleError("the manifest's media section is malformed", step=_STEP)


@dataclass(frozen=True, slots=True)
class BackupManifest:
    """What the archive holds and where it came from."""

    tidings_version: str
    schema_version: int
    backend: str
    created_ms: int
    #: Where the data directory and configuration were (informative).
    data_dir: str
    config_path: str
    members: tuple[Member, ...]
    media: MediaSummary = MediaSummary()
    format: int = FORMAT

    @property
    def store_member(self) -> str:
        return BACKENDS[self.backend]

    def by_name(self) -> dict[str, Member]:
        return {m.name: m for m in self.members}

    def to_json(self) -> bytes:
        tree = asdict(self)
        tree["members"] = [asdict(m) for m in self.members]
        return json.dumps(tree, indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> BackupManifest:
        """Parse and check; anything malformed or out of range is a LifecycleError."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise LifecycleError(f"{MANIFEST_NAME} is larger than {MAX_MANIFEST_BYTES} bytes",
                                 step=_STEP)
        try:
            tree = json.loads(data)
            if tree["format"] not in READABLE_FORMATS:
                raise LifecycleError(f"archive format {tree['format']!r} unknown (this build"
                                     f" reads up to {FORMAT}); restore with a newer tidings",
                                     step=_STEP)
            raw = tree["members"]
            if not isinstance(raw, list) or not 0 < len(raw) <= MAX_MEMBERS:
                raise LifecycleError(f"the manifest lists 1..{MAX_MEMBERS} members", step=_STEP)
            members = tuple(Member(_str(e["name"]), _str(e["kind"]), _int(e["mode"]),
                                   _int(e["size"]), _str(e["sha256"]), _str(e["owner"]),
                                   _str(e["group"])) for e in raw)
            manifest = cls(_str(tree["tidings_version"]), _int(tree["schema_version"]),
                           _str(tree["backend"]), _int(tree["created_ms"]),
                           _str(tree["data_dir"]), _str(tree["config_path"]), members,
                           _media(tree), _int(tree["format"]))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise LifecycleError(f"{MANIFEST_NAME} is malformed: {exc!r}"[:300],
                                 step=_STEP) from None
        manifest.check()
        return manifest

    def check(self) -> None:
        self.media.check()
        if self.backend not in BACKENDS or not 0 <= self.schema_version < 1 << 31:
            raise LifecycleError(f"unknown backend {self.backend!r} or schema version",
                                 step=_STEP)
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise LifecycleError("the manifest names a member twice", step=_STEP)
        for member in self.members:
            member.check()
            if member.name.startswith("store/") and member.name != self.store_member:
                raise LifecycleError(f"{member.name} does not belong to a {self.backend}"
                                     " backup", step=_STEP)
        if self.store_member not in names:
            raise LifecycleError(f"the archive has no {self.store_member}", step=_STEP)
        if sum(m.size for m in self.members
               if not m.name.startswith("store/")) > MAX_FILES_TOTAL_BYTES:
            raise LifecycleError("the configuration and data files exceed"
                                 f" {MAX_FILES_TOTAL_BYTES} bytes", step=_STEP)


def _media(tree: dict[str, object]) -> MediaSummary:
    """The media section: format 1 has none (no media then), format 2 must have it."""
    if tree["format"] == 1:
        if "media" in tree:
            raise ValueError("a format 1 manifest has no media section")
        return MediaSummary()
    raw = tree["media"]
    if not isinstance(raw, dict):
        raise TypeError("media is not an object")
    included = raw["included"]
    if not isinstance(included, bool):
        raise TypeError("media.included is not a boolean")
    return MediaSummary(included, _int(raw["count"]), _int(raw["bytes"]))


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{value!r:.40} is not an integer")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str) or len(value) > 4096:
        raise TypeError(f"{value!r:.40} is not a string")
    return value
