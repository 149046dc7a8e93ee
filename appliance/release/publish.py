"""Writing a signed release directory (packaging/release.sh; format in `appliance.release`).

Release tooling, never run by the server: it holds the signing key only for
the length of `write_release`.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from appliance.errors import ReleaseError
from appliance.release.manifest import (
    INSTALLER,
    MANIFEST,
    SIGNATURE,
    SUMS,
    Manifest,
    ReleaseFile,
    executable_name,
    format_sums,
    parse_version,
)
from appliance.release.signature import load_public_keys, public_pem, sign
from appliance.release.verify import sha256_file, verified_manifest

#: Where installer/install.sh gets the release's public key and version.
INSTALLER_KEY_PLACEHOLDER: Final = "@TIDINGS_PUBLIC_KEY@"
INSTALLER_VERSION_PLACEHOLDER: Final = "@TIDINGS_RELEASE_VERSION@"
#: `<base>/latest`: a symlink to the newest version's directory.
LATEST: Final = "latest"
#: The systemd units a release may carry (the installer accepts no others).
UNIT_NAME: Final = re.compile(r"tidings[a-z0-9-]{0,32}\.(service|socket)")
#: `uname -m` -> the architecture in a release's executable name.
ARCHES: Final = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def default_upgrades_from(version: str) -> str:
    """The oldest version a release upgrades from unless the release manager says otherwise.

    ``MAJOR.0.0``: every earlier release of the same major version upgrades
    directly; a new major version's first release upgrades from nothing older
    than itself until its release names the floor (``--upgrades-from``).
    """
    major, _minor, _patch = parse_version(version)
    return f"{major}.0.0"


@dataclass(frozen=True, slots=True)
class ReleaseInputs:
    version: str
    executable: Path
    arch: str
    installer: Path
    units: tuple[Path, ...]
    upgrades_from: str


def installer_text(template: str, version: str, key_pem: bytes) -> str:
    """installer/install.sh with this release's public key and version filled in."""
    for placeholder in (INSTALLER_KEY_PLACEHOLDER, INSTALLER_VERSION_PLACEHOLDER):
        if template.count(placeholder) != 1:
            raise ReleaseError(f"the installer template must hold {placeholder} exactly once")
    key = key_pem.decode("ascii").strip()
    if "'" in key:  # it lands inside single quotes in the script
        raise ReleaseError("the public key PEM holds a quote")
    return (template.replace(INSTALLER_KEY_PLACEHOLDER, key)
            .replace(INSTALLER_VERSION_PLACEHOLDER, version))


def _check(inputs: ReleaseInputs) -> None:
    if parse_version(inputs.upgrades_from) > parse_version(inputs.version):
        raise ReleaseError(f"upgrades_from {inputs.upgrades_from} is newer than the release"
                           f" {inputs.version}")
    if inputs.arch not in set(ARCHES.values()):
        raise ReleaseError(f"unknown architecture {inputs.arch!r}")
    names = [unit.name for unit in inputs.units]
    for name in names:
        if UNIT_NAME.fullmatch(name) is None:
            raise ReleaseError(f"{name}: not a tidings unit name")
    if len(set(names)) != len(names):
        raise ReleaseError("two units have the same name")
    if not inputs.executable.is_file():
        raise ReleaseError(f"{inputs.executable}: no such executable")


def write_release(out: Path, inputs: ReleaseInputs, private_pem: bytes,
                  replace: bool = False) -> Path:
    """Write ``out/<version>/`` (signed) and point ``out/latest`` at the newest version.

    The directory is assembled beside its final place and renamed into it once
    signed and checked, so a reader never sees half a release.

    Raises:
        ReleaseError: bad inputs, or the release exists and `replace` is false.
    """
    _check(inputs)
    key_pem = public_pem(private_pem)
    target = out / inputs.version
    if target.exists() and not replace:
        raise ReleaseError(f"{target} exists: a release is never rewritten in place"
                           " (--replace to re-sign it)")
    out.mkdir(parents=True, exist_ok=True)
    stage = out / f".{inputs.version}.partial"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        shutil.copyfile(inputs.executable, stage / executable_name(inputs.arch))
        os.chmod(stage / executable_name(inputs.arch), 0o755)
        for unit in inputs.units:
            shutil.copyfile(unit, stage / unit.name)
            os.chmod(stage / unit.name, 0o644)
        (stage / INSTALLER).write_text(installer_text(
            inputs.installer.read_text(encoding="utf-8"), inputs.version, key_pem))
        os.chmod(stage / INSTALLER, 0o755)
        _sign_into(stage, inputs, private_pem, key_pem)
        if target.exists():
            old = out / f".{inputs.version}.old"
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            shutil.rmtree(old)
        stage.rename(target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    point_latest(out)
    return target


def _sign_into(stage: Path, inputs: ReleaseInputs, private_pem: bytes, key_pem: bytes) -> None:
    """manifest.json, SHA256SUMS and its signature for the files already in `stage`."""
    files = {path.name: ReleaseFile(sha256_file(path), path.stat().st_size)
             for path in sorted(stage.iterdir())}
    manifest = Manifest(inputs.version, inputs.upgrades_from, files).to_json()
    (stage / MANIFEST).write_bytes(manifest)
    sums = format_sums({**{name: f.sha256 for name, f in files.items()},
                        MANIFEST: sha256_file(stage / MANIFEST)})
    signature = sign(sums, private_pem)
    # Check what is published the way a reader will, before it is published.
    verified_manifest(sums, signature, manifest, load_public_keys(key_pem))
    (stage / SUMS).write_bytes(sums)
    (stage / SIGNATURE).write_bytes(signature)
    for path in stage.iterdir():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())


def point_latest(out: Path, version: str | None = None) -> str:
    """Point ``out/latest`` (a relative symlink) at `version`, by default the newest
    version in `out`; return the version."""
    if version is not None:
        parse_version(version)
        if not (out / version).is_dir():
            raise ReleaseError(f"no release {version} in {out}")
        return _link_latest(out, version)
    versions = []
    for entry in out.iterdir():
        try:
            versions.append((parse_version(entry.name), entry.name))
        except ReleaseError:
            continue
    if not versions:
        raise ReleaseError(f"no release in {out}")
    return _link_latest(out, max(versions)[1])


def _link_latest(out: Path, version: str) -> str:
    link = out / LATEST
    if link.exists() and not link.is_symlink():
        raise ReleaseError(f"{link} is not a symlink; remove it")
    temporary = out / f".{LATEST}.new"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(version)
    temporary.replace(link)
    return version
