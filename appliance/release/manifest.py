"""The release manifest and the SHA256SUMS file (formats in `appliance.release`)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Final

from appliance.errors import ReleaseError

MANIFEST: Final = "manifest.json"
SUMS: Final = "SHA256SUMS"
SIGNATURE: Final = "SHA256SUMS.sig"
INSTALLER: Final = "install.sh"
#: The manifest's format number; a reader refuses formats it does not know.
FORMAT: Final = 1
#: Bounds on what is read from a release server before it is verified.
MAX_MANIFEST_BYTES: Final = 64 * 1024
MAX_SUMS_BYTES: Final = 64 * 1024
MAX_FILES: Final = 64
_VERSION: Final = re.compile(r"(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})")
_SUM_LINE: Final = re.compile(r"([0-9a-f]{64})  ([A-Za-z0-9._-]{1,128})")


def parse_version(text: str) -> tuple[int, int, int]:
    """``"1.2.3"`` -> (1, 2, 3); anything else is a ReleaseError."""
    match = _VERSION.fullmatch(text)
    if match is None:
        raise ReleaseError(f"not a release version (MAJOR.MINOR.PATCH): {text[:40]!r}")
    return int(match[1]), int(match[2]), int(match[3])


def executable_name(arch: str) -> str:
    """The executable's file name in a release for `arch` (amd64, arm64)."""
    return f"tidings-linux-{arch}"


@dataclass(frozen=True, slots=True)
class ReleaseFile:
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Manifest:
    version: str
    #: The oldest version this release upgrades from (older ones go through it).
    upgrades_from: str
    files: dict[str, ReleaseFile]

    def to_json(self) -> bytes:
        return json.dumps({
            "format": FORMAT, "version": self.version, "upgrades_from": self.upgrades_from,
            "files": {name: {"sha256": f.sha256, "size": f.size}
                      for name, f in sorted(self.files.items())},
        }, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse and check a manifest; every malformed field is a ReleaseError naming it."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise ReleaseError(f"manifest larger than {MAX_MANIFEST_BYTES} bytes")
        try:
            tree = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ReleaseError(f"manifest is not JSON: {exc}") from None
        if not isinstance(tree, dict):
            raise ReleaseError("manifest is not a JSON object")
        if tree.get("format") != FORMAT:
            raise ReleaseError(f"manifest format {tree.get('format')!r} unknown"
                               f" (this build reads {FORMAT}); upgrade through an"
                               " intermediate release")
        version, oldest = tree.get("version"), tree.get("upgrades_from")
        if not isinstance(version, str) or not isinstance(oldest, str):
            raise ReleaseError("manifest: version and upgrades_from must be strings")
        parse_version(version)
        parse_version(oldest)
        raw = tree.get("files")
        if not isinstance(raw, dict) or not 0 < len(raw) <= MAX_FILES:
            raise ReleaseError(f"manifest: files must be an object of 1..{MAX_FILES} entries")
        files = {}
        for name, entry in raw.items():
            if not isinstance(entry, dict) or _SUM_LINE.fullmatch(
                    f"{entry.get('sha256')}  {name}") is None:
                raise ReleaseError(f"manifest: bad entry for file {str(name)[:64]!r}")
            size = entry.get("size")
            if not isinstance(size, int) or isinstance(size, bool) or not 0 < size < 1 << 40:
                raise ReleaseError(f"manifest: bad size for file {name!r}")
            files[name] = ReleaseFile(entry["sha256"], size)
        return cls(version, oldest, files)


def format_sums(sums: dict[str, str]) -> bytes:
    """``sha256sum`` output for `sums` (name -> hex digest), sorted by name."""
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items())).encode()


def parse_sums(data: bytes) -> dict[str, str]:
    """A SHA256SUMS file -> {name: hex digest}; any other line is a ReleaseError."""
    if len(data) > MAX_SUMS_BYTES:
        raise ReleaseError(f"{SUMS} larger than {MAX_SUMS_BYTES} bytes")
    sums: dict[str, str] = {}
    for number, line in enumerate(data.decode("ascii", "replace").splitlines(), 1):
        match = _SUM_LINE.fullmatch(line)
        if match is None or match[2] in sums or number > MAX_FILES:
            raise ReleaseError(f"{SUMS} line {number} is malformed")
        sums[match[2]] = match[1]
    return sums
